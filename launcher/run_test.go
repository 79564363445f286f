package launcher

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/secrets"
)

// exitErr runs a shell that ends as script says and returns its error.
func exitErr(t *testing.T, script string) error {
	t.Helper()
	err := exec.Command("/bin/sh", "-c", script).Run()
	if err == nil {
		t.Fatalf("%q exited 0", script)
	}
	return err
}

func TestFinish(t *testing.T) {
	for _, tc := range []struct {
		name        string
		pre         Result // outcome set by supervise before the exit
		err         func(t *testing.T) error
		wantOutcome string
		wantExit    int
		wantStatus  int
		wantReason  string
	}{
		{"success", Result{}, func(*testing.T) error { return nil }, OutcomeExited, 0, 0, ""},
		{"own failure", Result{}, func(t *testing.T) error { return exitErr(t, "exit 3") }, OutcomeFailed, 3, 3, ""},
		{"exit 1", Result{}, func(t *testing.T) error { return exitErr(t, "exit 1") }, OutcomeFailed, 1, 1, ""},
		{"signal as exit status", Result{}, func(t *testing.T) error { return exitErr(t, "exit 130") }, OutcomeSignaled, 130, 130, "killed by signal SIGINT"},
		{"signaled", Result{}, func(t *testing.T) error { return exitErr(t, "kill -KILL $$") }, OutcomeSignaled, 137, 137, "killed by signal SIGKILL"},
		{"real-time signal", Result{}, func(t *testing.T) error { return exitErr(t, "exit 192") }, OutcomeSignaled, 192, 192, "killed by signal 64"},
		{"above signals", Result{}, func(t *testing.T) error { return exitErr(t, "exit 200") }, OutcomeFailed, 200, 200, ""},
		{"stopped", Result{Outcome: OutcomeStopped, Reason: "stopped by INT"}, func(t *testing.T) error { return exitErr(t, "kill -TERM $$") }, OutcomeStopped, 143, 143, "stopped by INT"},
		{"stopped, exits cleanly", Result{Outcome: OutcomeStopped, Reason: "stopped by TERM"}, func(*testing.T) error { return nil }, OutcomeStopped, 0, 0, "stopped by TERM"},
		{"violation", Result{Outcome: OutcomeViolation, ExitCode: ExitPolicy, Reason: "network: 1.2.3.4:443"}, func(t *testing.T) error { return exitErr(t, "kill -KILL $$") }, OutcomeViolation, 123, 137, "network: 1.2.3.4:443"},
		{"limit", Result{Outcome: OutcomeLimit, ExitCode: ExitLimit, Reason: "wall time"}, func(t *testing.T) error { return exitErr(t, "kill -TERM $$") }, OutcomeLimit, 124, 143, "wall time"},
		{"limit, job exits 0", Result{Outcome: OutcomeLimit, ExitCode: ExitLimit}, func(*testing.T) error { return nil }, OutcomeLimit, 124, 0, ""},
		{"warm sandbox killed", Result{Outcome: OutcomeLimit, ExitCode: ExitLimit, sandboxKilled: true}, func(t *testing.T) error { return exitErr(t, "exit 128") }, OutcomeLimit, 124, 137, ""},
		{"128 of its own", Result{}, func(t *testing.T) error { return exitErr(t, "exit 128") }, OutcomeFailed, 128, 128, ""},
		{"wait failed", Result{}, func(*testing.T) error { return errors.New("wait: no child") }, OutcomeFailed, ExitRefused, ExitRefused, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.pre
			res.finish(tc.err(t))
			if res.Outcome != tc.wantOutcome || res.ExitCode != tc.wantExit || res.JobStatus != tc.wantStatus || res.Reason != tc.wantReason {
				t.Errorf("got outcome %q exit %d status %d reason %q\nwant outcome %q exit %d status %d reason %q",
					res.Outcome, res.ExitCode, res.JobStatus, res.Reason, tc.wantOutcome, tc.wantExit, tc.wantStatus, tc.wantReason)
			}
		})
	}
}

func TestExitCodesDistinct(t *testing.T) {
	codes := []int{ExitPolicy, ExitLimit, ExitRefused}
	for i, c := range codes {
		if c <= 0 || c > 127 || slices.Contains(codes[i+1:], c) {
			t.Errorf("exit code %d collides or overlaps signals (128+N)", c)
		}
	}
	if ExitPolicy != 123 || ExitLimit != 124 || ExitRefused != 125 {
		t.Errorf("documented exit codes changed: %d %d %d", ExitPolicy, ExitLimit, ExitRefused)
	}
}

func TestCleanup(t *testing.T) {
	var c cleanup
	var order []int
	e2, e4 := errors.New("step 2 failed"), errors.New("step 4 failed")
	for i := 1; i <= 5; i++ {
		c.pushRemoving([]jobstate.Resource{{Kind: "k", Name: strconv.Itoa(i)}}, func() error {
			order = append(order, i)
			switch i {
			case 2:
				return e2
			case 4:
				return e4
			}
			return nil
		})
	}
	c.push(func() error { return nil }) // removes nothing recorded
	removed, err := c.run()
	if !slices.Equal(order, []int{5, 4, 3, 2, 1}) {
		t.Errorf("order %v, want every step in reverse", order)
	}
	if !errors.Is(err, e2) || !errors.Is(err, e4) {
		t.Errorf("joined error %v lacks a step's error", err)
	}
	if strings.Index(err.Error(), "step 4") > strings.Index(err.Error(), "step 2") {
		t.Errorf("errors not in undo order: %q", err)
	}
	var names []string
	for _, r := range removed {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"5", "3", "1"}) {
		t.Errorf("removed %v, want only the steps that succeeded (5 3 1)", names)
	}
	order = nil
	if removed, err := c.run(); err != nil || len(order) != 0 || len(removed) != 0 {
		t.Errorf("second run: %v, ran %v, removed %v", err, order, removed)
	}
	var empty cleanup
	if _, err := empty.run(); err != nil {
		t.Errorf("empty: %v", err)
	}
}

// TestTeardownKeepsStateWhenAStepFails: a teardown step that fails (Vault
// unreachable when the job ends) keeps the job's state for gc, naming only
// what remains, with its lock released; gc then keeps it while the step
// still fails, and removes it once it succeeds. A clean teardown removes it.
func TestTeardownKeepsStateWhenAStepFails(t *testing.T) {
	l, _ := gcHost(t)
	store := l.Store()
	h, err := store.Create(JobState{ID: "leftover0001", Status: StatusRunning})
	if err != nil {
		t.Fatal(err)
	}
	var undo cleanup
	home := filepath.Join(t.TempDir(), "home")
	if err := l.record(h, &undo, jobstate.Resource{Kind: KindDir, Name: home}); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(home, 0o700)
	// The token is recorded twice, as secrets.Issue does (role, then accessor
	// and leases): both records stay, the report names the latest.
	tok := jobstate.Resource{Kind: secrets.KindToken, Name: "leftover0001", Attrs: map[string]string{"role": "securetrain-job"}}
	tok2 := jobstate.Resource{Kind: secrets.KindToken, Name: "leftover0001", Attrs: map[string]string{"accessor": "acc123", "leases": "database/creds/r/abc"}}
	h.Record(tok)
	h.Record(tok2)
	unreachable := errors.New("vault: dial tcp 127.0.0.1:8200: connect: connection refused")
	undo.pushRemoving([]jobstate.Resource{tok}, func() error { return unreachable })
	undo.push(func() error { return nil }) // a step that owns no record

	err = l.teardown(h, &undo)
	var left *LeftoverError
	if !errors.As(err, &left) || !errors.Is(err, unreachable) {
		t.Fatalf("teardown = %v, want a *LeftoverError wrapping the failed step", err)
	}
	if len(left.Remaining) != 1 || left.Remaining[0].Attrs["accessor"] != "acc123" {
		t.Errorf("remaining %v, want the token's latest record only", left.Remaining)
	}
	if msg := err.Error(); !strings.Contains(msg, `left 1 resource(s) for securetrain gc: vault-token "leftover0001" accessor=acc123 leases=database/creds/r/abc: vault: dial tcp`) {
		t.Errorf("message %q must name what remains and why", msg)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the steps after the failed one must still run: %s left (%v)", home, err)
	}
	st, err := store.Load("leftover0001")
	if err != nil {
		t.Fatalf("the state must stay for gc: %v", err)
	}
	if st.Live || st.Status != StatusLeftover || len(st.Resources) != 2 || st.Resources[0].Kind != secrets.KindToken || st.Resources[1].Attrs["accessor"] != "acc123" {
		t.Errorf("kept state %+v: want unlocked, status leftover, only the token's records", st)
	}

	// gc with no Vault identity cannot revoke: it keeps the state.
	if _, err := l.GCLeftovers(context.Background()); err == nil || !strings.Contains(err.Error(), "vault login for gc") {
		t.Errorf("gc without Vault = %v, want the login error", err)
	}
	if _, err := store.Load("leftover0001"); err != nil {
		t.Errorf("gc dropped a state whose token it could not revoke: %v", err)
	}

	// A clean teardown removes the state.
	h2, err := store.Create(JobState{ID: "cleanjob0001"})
	if err != nil {
		t.Fatal(err)
	}
	var undo2 cleanup
	if err := l.record(h2, &undo2, jobstate.Resource{Kind: KindDir, Name: filepath.Join(t.TempDir(), "h2")}); err != nil {
		t.Fatal(err)
	}
	if err := l.teardown(h2, &undo2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h2.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("clean teardown left its state: %v", err)
	}
}

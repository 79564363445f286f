package launcher

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
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
	l := &Launcher{}
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
		{"wait failed", Result{}, func(*testing.T) error { return errors.New("wait: no child") }, OutcomeFailed, ExitRefused, ExitRefused, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.pre
			l.finish(&res, tc.err(t))
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
		c.push(func() error {
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
	err := c.run()
	if !slices.Equal(order, []int{5, 4, 3, 2, 1}) {
		t.Errorf("order %v, want every step in reverse", order)
	}
	if !errors.Is(err, e2) || !errors.Is(err, e4) {
		t.Errorf("joined error %v lacks a step's error", err)
	}
	if strings.Index(err.Error(), "step 4") > strings.Index(err.Error(), "step 2") {
		t.Errorf("errors not in undo order: %q", err)
	}
	order = nil
	if err := c.run(); err != nil || len(order) != 0 {
		t.Errorf("second run: %v, ran %v", err, order)
	}
	var empty cleanup
	if err := empty.run(); err != nil {
		t.Errorf("empty: %v", err)
	}
}

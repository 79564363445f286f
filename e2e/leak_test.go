package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNoLeaksAfterManyRuns runs 20 jobs, one of them with its launcher
// SIGKILLed mid-job, then `securetrain gc`: nothing may be left (runsc
// state, bundles, mounts, processes, cgroups, homes).
func TestNoLeaksAfterManyRuns(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	for i := 0; i < 19; i++ {
		r := e.job(t, dir, nil, "/bin/sh", "-c", fmt.Sprintf("echo run-%d > outputs/run-%d", i, i))
		if r.code != 0 {
			t.Fatalf("run %d: %s", i, r)
		}
	}
	// The 20th: SIGKILL the launcher while the job runs.
	c := e.cmd(context.Background(), dir, nil, "run", "--user", jobUser, "--", "/bin/sh", "-c", "echo ready; exec sleep 300")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	syscall.Kill(c.Process.Pid, syscall.SIGKILL)
	c.Wait()
	ents, _ := os.ReadDir(filepath.Join(stateDir, "jobs"))
	if len(ents) != 1 {
		t.Fatalf("a SIGKILLed launcher leaves its job state for gc; found %d state dirs", len(ents))
	}
	ps := e.run(t, dir, nil, "ps", "--all")
	if !strings.Contains(ps.stdout, "dead (gc)") {
		t.Errorf("ps --all must show the dead launcher's job: %s", ps)
	}
	gc := e.run(t, dir, nil, "gc")
	if gc.code != 0 || !strings.Contains(gc.stdout, "gc: 1 job(s) cleaned") {
		t.Fatalf("gc: %s", gc)
	}
	// The sandbox of the killed launcher must be gone too (no runsc, no sleep).
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if out, _ := exec.Command("pgrep", "-f", stateDir+"/runsc").Output(); len(out) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 19; i++ {
		if _, err := os.Stat(filepath.Join(dir, "outputs", fmt.Sprintf("run-%d", i))); err != nil {
			t.Errorf("run %d left no output: %v", i, err)
		}
	}
	assertCleanMode(t, e, true)
}

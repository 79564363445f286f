package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ExtraSlurmJob is the JobState.Extra key that names the Slurm job a
// securetrain job runs inside (set through Request.Extra by whoever
// established it: the run verb as root, or the daemon for its caller).
const ExtraSlurmJob = "slurm_job_id"

// StopWhere stops every live job for which match is true, as the Slurm
// epilog does for the jobs of an ending allocation: SIGTERM to each job's
// launcher (which forwards it and tears down), then, for those still live
// after grace, SIGKILL to the sandbox and the launcher. It returns the ids it
// stopped. Dead jobs are left to GC, which the caller runs next.
func (l *Launcher) StopWhere(ctx context.Context, match func(JobState) bool, grace time.Duration) ([]string, error) {
	store := l.Store()
	jobs, err := store.List()
	if err != nil {
		return nil, err
	}
	var ids []string
	var errs []error
	pids := map[string]int{}
	for _, j := range jobs {
		if !j.Live || !match(j) {
			continue
		}
		ids = append(ids, j.ID)
		pids[j.ID] = j.LauncherPID
		if err := l.Kill(ctx, Viewer{Admin: true}, j.ID, false); err != nil {
			l.Log.Warn("stop: SIGTERM", "job", j.ID, "err", err)
		}
	}
	left := l.waitDead(ctx, ids, pids, grace)
	for _, id := range left {
		st, _ := store.Load(id)
		if err := l.runsc().Kill(ctx, id, "KILL", true); err != nil {
			l.Log.Warn("stop: kill sandbox", "job", id, "err", err)
		}
		if st.LauncherPID > 1 && isLauncher(st.LauncherPID) {
			_ = syscall.Kill(st.LauncherPID, syscall.SIGKILL)
		}
	}
	for _, id := range l.waitDead(ctx, left, pids, 10*time.Second) {
		errs = append(errs, fmt.Errorf("job %s: still live after SIGKILL", id))
	}
	return ids, errors.Join(errs...)
}

// waitDead waits until each job's launcher is done: its state directory is
// gone (it tore down), or its lock is free and its process has exited (it
// died; gc cleans up). A launcher still removing its state counts as live,
// so that gc does not race its teardown. It returns the jobs still live at
// the deadline.
func (l *Launcher) waitDead(ctx context.Context, ids []string, pids map[string]int, d time.Duration) []string {
	store := l.Store()
	deadline := time.Now().Add(d)
	for {
		var live []string
		for _, id := range ids {
			if _, err := os.Stat(filepath.Join(store.Dir, id)); err != nil {
				continue
			}
			if st, err := store.Load(id); err == nil && st.Live {
				live = append(live, id)
				continue
			}
			if pid := pids[id]; pid > 1 && isLauncher(pid) {
				live = append(live, id)
			}
		}
		if len(live) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return live
		}
		time.Sleep(100 * time.Millisecond)
	}
}

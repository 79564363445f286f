package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"

	"github.com/securetrain/securetrain/jobstate"
)

// GCReport says what gc removed.
type GCReport struct {
	Jobs      []string // job state directories cleaned
	Resources []jobstate.Resource
	Orphans   []string // runsc containers no job state named
}

// GC removes everything a dead launcher left: for every job whose lock is
// free it runs each recorded resource's cleanup (newest first), then removes
// the state; then it deletes runsc containers that no live job owns. Live
// jobs are never touched. "Not found" counts as clean.
func (l *Launcher) GC(ctx context.Context) (GCReport, error) {
	var rep GCReport
	var errs []error
	store := l.Store()
	jobs, err := store.List()
	if err != nil {
		return rep, err
	}
	live := map[string]bool{}
	cleaners := l.cleaners()
	for _, j := range jobs {
		if j.Live {
			live[j.ID] = true
			continue
		}
		h, err := store.Claim(j.ID)
		if err != nil {
			live[j.ID] = true // another launcher or gc has it now
			continue
		}
		st := h.State()
		var jerrs []error
		n0 := len(rep.Resources)
		res := slices.Clone(st.Resources)
		slices.Reverse(res)
		for _, r := range res {
			clean, ok := cleaners[r.Kind]
			if !ok {
				jerrs = append(jerrs, fmt.Errorf("job %s: no cleaner for %s", j.ID, r))
				continue
			}
			if err := clean(ctx, r); err != nil {
				jerrs = append(jerrs, fmt.Errorf("job %s: removing %s: %w", j.ID, r, err))
				continue
			}
			rep.Resources = append(rep.Resources, r)
		}
		if len(res) > 0 {
			l.auditGC(ctx, j.ID, rep.Resources[n0:], jerrs)
		}
		if len(jerrs) > 0 {
			// Keep the state so the next gc tries again.
			h.Release()
			errs = append(errs, jerrs...)
			continue
		}
		if err := h.Remove(); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Jobs = append(rep.Jobs, j.ID)
	}
	// runsc containers under our root that no live job owns.
	rs := l.runsc()
	if _, err := os.Stat(rs.Root); err == nil {
		cs, err := rs.List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, c := range cs {
			// Ask the lock again: a job started after the listing above
			// recorded itself and took its lock before runsc created its
			// container, so its container is not an orphan.
			if live[c.ID] {
				continue
			}
			if store.live(c.ID) {
				live[c.ID] = true
				continue
			}
			if err := rs.Delete(ctx, c.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			rep.Orphans = append(rep.Orphans, c.ID)
		}
		if len(live) == 0 && len(errs) == 0 {
			// No job lives: release what runsc keeps for all sandboxes.
			if err := rs.ReleaseShared(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return rep, errors.Join(errs...)
}

// ErrNoJob is returned for an unknown job id.
var ErrNoJob = errors.New("no such job")

// Kill stops a running job: SIGTERM to its launcher, which forwards it to the
// job and kills it after the stop grace; with force the sandbox is killed at
// once. Only the job's owner (uid) or root may kill it.
func (l *Launcher) Kill(ctx context.Context, id string, callerUID int, force bool) error {
	store := l.Store()
	st, err := store.Load(id)
	if err != nil {
		return fmt.Errorf("job %s: %w", id, ErrNoJob)
	}
	if callerUID != 0 && callerUID != st.UID {
		return fmt.Errorf("job %s: %w", id, ErrNoJob)
	}
	if !st.Live {
		return fmt.Errorf("job %s is not running (its launcher is gone; run securetrain gc)", id)
	}
	if force {
		return l.runsc().Kill(ctx, id, "KILL", true)
	}
	pid := st.LauncherPID
	if pid <= 1 || !isLauncher(pid) {
		return fmt.Errorf("job %s: launcher pid %d is not a securetrain process", id, pid)
	}
	return syscall.Kill(pid, syscall.SIGTERM)
}

func isLauncher(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return false
	}
	self, _ := os.Executable()
	return len(b) > 0 && (exe == self || slices.Contains([]string{"securetrain", "launcher.test"}, baseName(exe)))
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

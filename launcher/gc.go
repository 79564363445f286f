package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/sandbox"
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
	rep, live, err := l.gcStates(ctx, false)
	if err != nil && live == nil {
		return rep, err
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	store := l.Store()
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
	if len(live) == 0 {
		// Views of the host's /etc from before it changed (HostEtcView):
		// no job shows them any more.
		if err := sandbox.RemoveStaleEtcViews(filepath.Join(l.Host.StateDir, "etc"), sandbox.HostEtcEntries("/")); err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// GCLeftovers retries what teardowns (or dead launchers) left: the states of
// jobs whose lock is free, as GC does, but no sweep of runsc containers, and
// a directory without a readable state (a job being created this instant) is
// left alone. The daemon calls it periodically while jobs run.
func (l *Launcher) GCLeftovers(ctx context.Context) (GCReport, error) {
	rep, _, err := l.gcStates(ctx, true)
	return rep, err
}

// gcStates cleans the state of every job whose lock is free, and returns the
// jobs found live (nil when the store could not be listed). With recordedOnly,
// a state that cannot be read is skipped.
func (l *Launcher) gcStates(ctx context.Context, recordedOnly bool) (GCReport, map[string]bool, error) {
	var rep GCReport
	var errs []error
	store := l.Store()
	jobs, err := store.List()
	if err != nil {
		return rep, nil, err
	}
	live := map[string]bool{}
	cleaners := l.cleaners()
	for _, j := range jobs {
		if j.Live {
			live[j.ID] = true
			continue
		}
		if recordedOnly && j.Status == statusUnknown {
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
	return rep, live, errors.Join(errs...)
}

// ErrNoJob is returned for an unknown job id.
var ErrNoJob = errors.New("no such job")

// Kill stops a running job: SIGTERM to its launcher, which forwards it to the
// job and kills it after the stop grace; with force the sandbox is killed at
// once. Only a viewer who sees the job (its owner, root, an admin of the
// daemon) may kill it; to anyone else it does not exist.
func (l *Launcher) Kill(ctx context.Context, v Viewer, id string, force bool) error {
	st, err := l.Store().Load(id)
	if err != nil || !v.Sees(st.UID) {
		return fmt.Errorf("job %s: %w", id, ErrNoJob) // another user's job does not exist for v
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

// LeftoverError is a teardown that could not remove everything (Vault
// unreachable when the job ended, ...): the job's state stays, naming what
// remains, until gc — by hand, or the daemon's periodic retry — removes it.
type LeftoverError struct {
	Job       string
	Remaining []jobstate.Resource // the latest record of each, oldest first
	Err       error               // what the failed steps said
}

func (e *LeftoverError) Error() string {
	names := make([]string, 0, len(e.Remaining))
	for _, r := range e.Remaining {
		n := r.String()
		for _, k := range []string{"accessor", "leases"} {
			if v := r.Attrs[k]; v != "" {
				n += " " + k + "=" + v
			}
		}
		names = append(names, n)
	}
	return fmt.Sprintf("left %d resource(s) for securetrain gc: %s: %v", len(e.Remaining), strings.Join(names, ", "), e.Err)
}

func (e *LeftoverError) Unwrap() error { return e.Err }

// keepForGC ends a teardown in which a step failed: the job's state keeps
// every record no successful step removed, its lock is released, and gc
// finishes the job (the way GC itself keeps a state when a cleaner fails).
func (l *Launcher) keepForGC(h *Handle, removed []jobstate.Resource, err error) error {
	gone := map[string]bool{}
	for _, r := range removed {
		gone[resourceKey(r)] = true
	}
	var remaining []jobstate.Resource
	uerr := h.Update(func(s *JobState) {
		s.Resources = slices.DeleteFunc(s.Resources, func(r jobstate.Resource) bool { return gone[resourceKey(r)] })
		s.Status = StatusLeftover
		remaining = latestRecords(s.Resources)
	})
	h.Release()
	// The caller reports it: one stderr line (securetrain run), the
	// daemon's log and the caller's note (daemon), the result record.
	return &LeftoverError{Job: filepath.Base(h.Dir()), Remaining: remaining, Err: errors.Join(err, uerr)}
}

// resourceKey names a resource across its records (a Vault token's record
// is rewritten as its accessor and leases become known).
func resourceKey(r jobstate.Resource) string { return r.Kind + "\x00" + r.Name }

// latestRecords keeps the last record of each resource, in record order.
func latestRecords(rs []jobstate.Resource) []jobstate.Resource {
	last := map[string]int{}
	for i, r := range rs {
		last[resourceKey(r)] = i
	}
	var out []jobstate.Resource
	for i, r := range rs {
		if last[resourceKey(r)] == i {
			out = append(out, r)
		}
	}
	return out
}

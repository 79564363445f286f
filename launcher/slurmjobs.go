package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/securetrain/securetrain/slurm"
)

// SlurmJobExtra is the Request.Extra of a job that runs inside Slurm job
// id: it names the job (ExtraSlurmJob), so that the epilog finds it.
func SlurmJobExtra(id uint64) map[string]string {
	return map[string]string{ExtraSlurmJob: strconv.FormatUint(id, 10)}
}

// SlurmJobOf is the Slurm job a job's state names (ExtraSlurmJob); false
// when it names none.
func SlurmJobOf(j JobState) (uint64, bool) {
	id, err := slurm.ParseJobID(j.Extra[ExtraSlurmJob])
	return id, err == nil
}

// SlurmRunExtra is the Request.Extra of a run started as root inside a
// Slurm job (getenv is the run's environment): the job is established from
// this process through slurmd, not from SLURM_JOB_ID, which only says
// whether to ask. Nil outside Slurm, or when slurmd does not know the
// process (logged: the epilog will not find the job).
func (l *Launcher) SlurmRunExtra(ctx context.Context, getenv func(string) string) map[string]string {
	if getenv("SLURM_JOB_ID") == "" {
		return nil
	}
	cl := &slurm.Client{Conf: getenv("SLURM_CONF"), NodeName: getenv("SLURMD_NODENAME"), Log: l.Log}
	id, err := cl.JobOfPID(ctx, os.Getpid())
	if err != nil {
		l.Log.Warn("inside a Slurm job, but slurmd does not know this process; the epilog will not find this job", "err", err)
		return nil
	}
	return SlurmJobExtra(id)
}

// slurmStore keeps the allocations the prolog records (state_dir/slurm).
func (l *Launcher) slurmStore() *slurm.Store {
	return &slurm.Store{Dir: filepath.Join(l.Host.StateDir, "slurm")}
}

// SlurmProlog is slurm.conf's Prolog for Slurm job id. It fails (which
// drains the node) only when no sandboxed job can run here: a required
// preflight check fails or the allocation cannot be recorded. The
// allocation is read with job; when Slurm cannot be asked, fallback (what
// slurmd's environment says) is recorded instead, and that is logged.
func (l *Launcher) SlurmProlog(ctx context.Context, id uint64, job func(context.Context, uint64) (slurm.JobInfo, error), fallback slurm.JobInfo) error {
	var failed []string
	for _, ch := range l.Preflight(ctx) {
		if !ch.OK && ch.Required {
			failed = append(failed, ch.Name+" ("+ch.Detail+")")
		}
	}
	if len(failed) > 0 {
		// Draining is right here: no sandboxed job can run on this node.
		return fmt.Errorf("slurm prolog: job %d: node cannot run sandboxed jobs: %v", id, failed)
	}
	ji, err := job(ctx, id)
	if err != nil {
		// Not a reason to drain: record what slurmd told us and go on.
		l.Log.Warn("slurm prolog: allocation not readable from Slurm; recording slurmd's environment", "slurm_job", id, "err", err)
		ji = fallback
	}
	if err := l.slurmStore().Save(ji); err != nil {
		return fmt.Errorf("slurm prolog: job %d: %w", id, err)
	}
	l.Log.Info("slurm prolog", "slurm_job", id, "uid", ji.UID, "cpus", ji.CPUs, "memory_mb", ji.MemoryMB, "gpus", ji.GPUs)
	return nil
}

// SlurmEpilog is slurm.conf's Epilog for Slurm job id: it stops the jobs
// that run inside it (StopWhere, grace before SIGKILL), runs gc, which
// removes what they and any dead job left, and then the recorded
// allocation. It fails (which drains the node) only when something could
// not be stopped or removed.
func (l *Launcher) SlurmEpilog(ctx context.Context, id uint64, grace time.Duration) error {
	stopped, stopErr := l.StopWhere(ctx, func(j JobState) bool {
		in, ok := SlurmJobOf(j)
		return ok && in == id
	}, grace)
	rep, gcErr := l.GC(ctx)
	var rmErr error
	if stopErr == nil && gcErr == nil {
		rmErr = l.slurmStore().Remove(id)
	}
	l.Log.Info("slurm epilog", "slurm_job", id, "stopped", stopped, "gc_jobs", rep.Jobs, "orphans", rep.Orphans)
	if err := errors.Join(stopErr, gcErr, rmErr); err != nil {
		return fmt.Errorf("slurm epilog: job %d: %w", id, err)
	}
	return nil
}

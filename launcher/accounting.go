package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/usage"
	"github.com/securetrain/securetrain/violation"
)

// accounting samples the job while it runs (the sandbox's cgroup, for
// gVisor's own processes and the live view) and reads the final account from
// the job's parent cgroup once runsc is done.
type accounting struct {
	job      string
	start    time.Time
	live     *usage.Sampler // /securetrain/<id>/sandbox
	final    *usage.Sampler // /securetrain/<id>
	viol     <-chan violation.Violation
	view     *usage.Live
	cancel   context.CancelFunc
	memLimit uint64
	pids     int64
}

func (l *Launcher) startAccounting(ctx context.Context, j *job, start time.Time) (*accounting, error) {
	p, id, pl, rs := j.pl.prof.Limits, j.id, j.pl, j.rs
	a := &accounting{job: id, start: start, memLimit: uint64(p.Memory), pids: p.Pids}
	var err error
	a.live, err = usage.NewSampler(usage.Config{
		CgroupPath: sandboxCgroup(j.cgroup()), Runsc: rs.Path, RunscRoot: rs.Root, ContainerID: id,
		GPUs: pl.gpus, Logger: l.Log.With("job", id),
	})
	if err != nil {
		return nil, fmt.Errorf("usage accounting: %w", err)
	}
	a.final, err = usage.NewSampler(usage.Config{CgroupPath: jobCgroup(j.cgroup()), GPUs: nil, Logger: l.Log})
	if err != nil {
		a.live.Close()
		return nil, fmt.Errorf("usage accounting: %w", err)
	}
	enf, err := usage.NewEnforcer(usage.Limits{
		CPUs: p.CPUs, CPUGrace: p.Grace.CPUs.D(), CPUSeconds: p.CPUSeconds, GPUSeconds: p.GPUSeconds,
		GPUMemory: uint64(p.GPUMemory), GPUMemoryGrace: p.Grace.GPUMemory.D(), Start: start, Job: id,
	})
	if err != nil {
		a.live.Close()
		a.final.Close()
		return nil, fmt.Errorf("usage limits: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	src := publishing{src: a.live, path: filepath.Join(l.Store().Dir, id, LiveFile)}
	a.viol, a.view = usage.Watch(wctx, src, enf, l.SampleInterval)
	return a, nil
}

// LiveFile, in a running job's state directory, holds its newest usage
// sample: `securetrain ps` and the daemon's metrics read it, so a job's live
// figures have one source whichever process asks.
const LiveFile = "usage.json"

// publishing writes every sample to the job's state directory.
type publishing struct {
	src  usage.Source
	path string
}

func (p publishing) Sample(ctx context.Context) (usage.Sample, error) {
	s, err := p.src.Sample(ctx)
	if err == nil {
		_ = writeJSONAtomic(p.path, s, 0o644)
	}
	return s, err
}

// LiveUsage reads a running job's newest sample; ok is false before the
// first one.
func (s *Store) LiveUsage(id string) (usage.Sample, bool) {
	var u usage.Sample
	b, err := os.ReadFile(filepath.Join(s.Dir, id, LiveFile))
	if err != nil || json.Unmarshal(b, &u) != nil {
		return u, false
	}
	return u, true
}

// finish stops sampling and returns the record: the final counters from the
// parent cgroup, the job's share of CPU from the last live sample, and the
// OOM and pids-limit verdicts. status is the job's exit status; stoppedByUs
// says the launcher killed it (so a SIGKILL is not an OOM).
func (a *accounting) finish(ctx context.Context, end time.Time, status int, stoppedByUs bool) usage.Record {
	a.cancel()
	for range a.viol {
	}
	last := a.view.Latest()
	f, err := a.final.Final(ctx)
	if err != nil {
		// The parent is ours and still there; without it, fall back to the
		// last live sample rather than report nothing.
		f = usage.Final{Sample: last}
	}
	if f.MemPeak < last.MemPeak {
		f.MemPeak = last.MemPeak
	}
	// The parent has no processes of its own; gVisor's share is what the
	// live samples saw of the sentry and gofer.
	f.GVisorCPU = last.GVisorCPU
	f.HostProcs, f.MemRSS, f.IORead, f.IOWrite = last.HostProcs, last.MemRSS, last.IORead, last.IOWrite
	f.Sandbox, f.GPUs = last.Sandbox, last.GPUs
	// cgroup v1 counts an OOM kill in the sandbox's own cgroup, which runsc
	// removes on exit: a SIGKILL the launcher did not send, at a peak that
	// reached the limit, is the kernel's OOM killer.
	if f.OOMKills == 0 && status == 128+9 && !stoppedByUs && a.memLimit > 0 && float64(f.MemPeak) >= 0.97*float64(a.memLimit) {
		f.OOMKills = 1
	}
	// Likewise a sandbox that died at its pids limit.
	if f.PidsMaxHit == 0 && status != 0 && !stoppedByUs && a.pids > 0 && int64(last.HostTasks) >= a.pids*9/10 {
		f.PidsMaxHit = 1
	}
	rec := usage.NewRecord(a.job, a.start, end, f, a.memLimit, a.pids)
	a.live.Close()
	a.final.Close()
	return rec
}

// account is the job's end: the violations recorded before it started, the
// final counters with the OOM and pids verdicts, egress, the inputs'
// recheck and the run's provenance, and the audit record of the end.
func (j *job) account(ctx context.Context) error {
	res := j.res
	// After the job's own (a kill names the violation that caused it).
	for _, v := range j.pl.req.Recorded {
		v.Job = j.id
		res.Violations = append(res.Violations, v)
	}
	rec := j.acct.finish(ctx, time.Now(), res.JobStatus, res.killedByUs)
	if j.guard != nil {
		rec.EgressBytes = j.guard.EgressBytes()
		if j.pl.req.Learn {
			res.Suggested = netguard.SuggestAllowlist(j.guard.Contacted())
		}
	}
	for _, v := range rec.Violations {
		if res.Outcome != OutcomeViolation && res.Outcome != OutcomeLimit {
			res.Outcome, res.ExitCode, res.Reason = OutcomeLimit, ExitLimit, v.String()
		}
	}
	rec.Violations = append(rec.Violations, res.Violations...)
	res.Violations = rec.Violations
	rec.Exit = usage.ExitStatus{Code: res.JobStatus, Reason: res.Reason}
	if res.JobStatus > 128 && res.JobStatus < 128+65 {
		rec.Exit.Signal = unix.SignalName(syscall.Signal(res.JobStatus - 128))
	}
	res.Usage = &rec
	res.Summary = rec.Summary()
	return errors.Join(j.finishInputs(ctx), j.auditEnd(ctx))
}

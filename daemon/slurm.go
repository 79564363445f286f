package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/oneline"
	"github.com/securetrain/securetrain/slurm"
	"github.com/securetrain/securetrain/violation"
)

// SlurmJobs establishes the Slurm job of a caller's process from Slurm
// itself; *slurm.Client satisfies it.
type SlurmJobs interface {
	CallerJob(ctx context.Context, pid int) (slurm.JobInfo, error)
}

// SlurmUsageReporter reports a finished run's usage into its Slurm job
// (AdminComment); *slurm.Client satisfies it.
type SlurmUsageReporter interface {
	ReportUsage(ctx context.Context, id uint64, text string) error
}

// ErrNoSlurmJob is wrapped when slurm.require_job refuses a caller who is
// in no Slurm job on this node.
var ErrNoSlurmJob = errors.New("this node runs jobs only inside a Slurm allocation (srun/sbatch)")

// slurmBinding is what the daemon established about a caller's Slurm job.
type slurmBinding struct {
	job    slurm.JobInfo
	forged []violation.Violation // the caller's SLURM_* variables that Slurm contradicts
}

// slurmCaller establishes the caller's Slurm job from the caller's process
// (the socket's peer pid; never its SLURM_* variables). It returns nil when
// Slurm is off, or when the caller is in no job and no job is required. Any
// other failure to establish the job refuses the run (fail closed).
func (s *Server) slurmCaller(ctx context.Context, id Identity, args *RunArgs, now time.Time) (*slurmBinding, error) {
	if s.Slurm == nil {
		return nil, nil
	}
	ji, err := s.Slurm.CallerJob(ctx, id.PID)
	switch {
	case errors.Is(err, slurm.ErrNotInJob):
		if s.Launcher.Host.Slurm.RequireJob {
			return nil, fmt.Errorf("slurm: pid %d (uid %d) is in no running Slurm job on this node: %w", id.PID, id.UID, ErrNoSlurmJob)
		}
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("slurm: the caller's job cannot be established: %w", oneline.Error(err))
	}
	env := map[string]string{}
	for _, kvs := range [][]string{args.CallerEnv, args.Env} { // --env may forge them as well
		for _, kv := range kvs {
			if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "SLURM_") {
				env[k] = v
			}
		}
	}
	return &slurmBinding{job: ji, forged: slurm.Forged(env, ji, now)}, nil
}

// capToJob bounds a profile by the job's allocation on this node: CPUs and
// memory at most the allocation's divided by share (the step's tasks on
// this node, taskShare), GPUs only the allocation's. The caller names GPUs
// as the job sees them (allocated GPUs renumbered from 0, as under Slurm's
// own confinement); they are translated to host indices. It returns the
// capped copy and the GPUs the allocator may hand out. What the
// allocation's other runs hold is the ledger's to count (holds.go).
func capToJob(p *configs.Profile, ji slurm.JobInfo, share int) (*configs.Profile, []int, error) {
	q := *p
	share = max(share, 1)
	if c := float64(ji.CPUs) / float64(share); ji.CPUs > 0 && (q.Limits.CPUs == 0 || q.Limits.CPUs > c) {
		q.Limits.CPUs = c
	}
	if ji.MemoryMB > 0 {
		m := configs.ByteSize((ji.MemoryMB << 20) / int64(share))
		if q.Limits.Memory == 0 || q.Limits.Memory > m {
			q.Limits.Memory = m
		}
		if q.Limits.Shm > q.Limits.Memory {
			q.Limits.Shm = q.Limits.Memory / 2
		}
	}
	maps := ji.SandboxGPUs()
	host := make([]int, len(maps))
	for i, m := range maps {
		host[i] = m.Host
	}
	want := q.Limits.GPUs
	switch {
	case want.None():
	case want.All:
		q.Limits.GPUs = configs.GPUSet{Indices: host}
		if len(host) == 0 {
			q.Limits.GPUs = configs.GPUSet{}
		}
	case len(want.Indices) > 0:
		var got []int
		for _, i := range want.Indices {
			if i < 0 || i >= len(host) {
				return nil, nil, fmt.Errorf("--gpus %s: Slurm job %d has %d GPU(s) on this node, numbered 0-%d inside the job: %w", want, ji.ID, len(host), len(host)-1, ErrDenied)
			}
			got = append(got, host[i])
		}
		q.Limits.GPUs = configs.GPUSet{Indices: got}
	default:
		if want.Count > len(host) {
			return nil, nil, fmt.Errorf("--gpus %d: Slurm job %d has %d GPU(s) on this node; ask Slurm for more (--gres=gpu:N): %w", want.Count, ji.ID, len(host), ErrDenied)
		}
	}
	return &q, host, nil
}

// slurmAvail is the allocator's choice for a job in Slurm: the allocation's
// GPUs that the host has.
func slurmAvail(alloc, host []int) []int {
	var out []int
	for _, g := range alloc {
		if slices.Contains(host, g) {
			out = append(out, g)
		}
	}
	return out
}

// gpuMapString renders the allocation's host-to-sandbox GPU numbering for
// the job's state, e.g. "2:0,5:1".
func gpuMapString(ji slurm.JobInfo) string {
	var parts []string
	for _, m := range ji.SandboxGPUs() {
		parts = append(parts, strconv.Itoa(m.Host)+":"+strconv.Itoa(m.Sandbox))
	}
	return strings.Join(parts, ",")
}

// reportToSlurm writes the run's usage line into its Slurm job, where the
// Slurm client can: the sandbox runs in the daemon's cgroups, not the
// job's, so Slurm's own accounting does not see it (see package doc).
func (s *Server) reportToSlurm(ctx context.Context, sj *slurmBinding, summary string) {
	r, ok := s.Slurm.(SlurmUsageReporter)
	if sj == nil || !ok || summary == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := r.ReportUsage(ctx, sj.job.ID, summary); err != nil {
		s.Log.Warn("slurm: usage not reported to the job", "slurm_job", sj.job.ID, "err", err)
	}
}

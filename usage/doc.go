// Package usage measures what a sandboxed job uses — CPU, memory, I/O,
// processes and GPUs — enforces the soft limits of its profile, and writes
// the job's usage record.
//
// Sources, for a gVisor (runsc) sandbox:
//
//   - The sandbox's host cgroup (cgroup v1 or v2; the OCI spec's cgroupsPath)
//     holds gVisor's sentry, gofer and systrap stub processes, not the job's
//     own processes. Its counters (CPU, memory usage and peak, OOM kills,
//     pids, block I/O) are what the node pays and what the hard limits of
//     the spec apply to; runsc removes the cgroup in `runsc delete`, so the
//     final counters must be read with [Sampler.Final] before that.
//   - The sandbox's host processes, through /proc (resident memory, bytes read
//     and written: the gofer and the sentry do all of the job's file I/O).
//   - `runsc events --stats`, the figures inside the sandbox: the job's CPU
//     time, memory and the number of its processes.
//   - NVML (libnvidia-ml, loaded at run time) for GPUs. Without the library or
//     a GPU the GPU fields are absent (nil), never zero.
//
// # Use by the launcher
//
//	s, err := usage.NewSampler(usage.Config{CgroupPath: spec.Linux.CgroupsPath,
//		Runsc: runsc, RunscRoot: root, ContainerID: id, GPUs: gpus, Logger: log})
//	e, err := usage.NewEnforcer(usage.Limits{...from the profile...})
//	// runsc run --detach (or create + start), then runsc wait at once
//	ctx, cancel := context.WithCancel(jobCtx)
//	viols, live := usage.Watch(ctx, s, e, time.Second) // live: ps and metrics
//	// supervise: on <-viols kill the job (runsc kill --all ID KILL)
//	// job exited (runsc wait returned):
//	cancel(); for range viols {}
//	f, err := s.Final(jobCtx)         // BEFORE runsc delete
//	rec := usage.NewRecord(id, start, time.Now(), f, memLimit, pidsLimit)
//	rec.Exit, rec.EgressBytes = ..., ...; rec.Violations = append(rec.Violations, acted...)
//	// runsc delete --force ID; s.Close(); write rec; print rec.Summary()
//
// A foreground `runsc run` deletes the container, cgroup included, before
// it returns: Final then finds nothing (ErrNoCgroup). Run detached and
// delete after Final. `runsc wait` must be started while the job runs:
// on a created, unstarted container, or after the sandbox exited, it says
// "sandbox no longer running and its exit status is unavailable".
//
// # Which CPU figure
//
// Under systrap the job's code runs in stub processes on the host; the
// sentry (runsc-sandbox) and the gofer (runsc-gofer) are gVisor's own. The
// cgroup's CPU (Sample.CPUSeconds, Record.CPUSeconds) is what the node paid;
// Sample.JobCPU leaves out the sentry and gofer and is what budgets and the
// sustained-CPU rule count: it matches the same work run natively (within
// 10%, tested), while the sentry's share grows with host contention (its
// polling; seen 4.2 s of work cost 6.3 s on a loaded host). The job's CPU as
// gVisor itself reports it (Sample.Sandbox, time.process_time inside) is
// counted from wall-clock time and overstates CPU on a contended host; it
// is shown, never enforced.
//
// # What pids limits under gVisor
//
// The host cgroup's pids controller counts host tasks (threads) of the
// sandbox, not the job's processes. Measured with the pinned runsc (systrap
// platform, 2 CPUs): an idle sandbox holds about 19 host tasks (sentry and
// gofer threads, one stub); every further process inside the sandbox adds
// two host tasks (its systrap stub process and stub thread) — 10 sleeping
// children gave 39 host tasks, 20 gave 59. So pids.max = L admits roughly
// (L-19)/2 job processes, and the sentry's own thread count grows with the
// host's CPU count. When a fork bomb reaches pids.max the sentry cannot
// create the host task it needs and the whole sandbox dies (`runsc wait`:
// "sandbox no longer running and its exit status is unavailable");
// pids.events "max" (Final.PidsMaxHit) then names the cause. The limit thus
// contains a fork bomb by ending the job, not by failing its fork(2).
package usage

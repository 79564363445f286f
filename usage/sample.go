package usage

import (
	"errors"
	"log/slog"
	"time"
)

// Sample is one reading of a running sandbox. Counters (CPU seconds, I/O
// bytes, GPU busy seconds) are cumulative since the sandbox started.
type Sample struct {
	Time time.Time `json:"time"`

	// Host cgroup of the sandbox (sentry, gofer and stubs).
	CPUUser    float64 `json:"cpu_user_s"`   // seconds
	CPUSystem  float64 `json:"cpu_system_s"` // seconds
	MemUsage   uint64  `json:"mem_usage"`    // bytes charged now (what memory limits apply to)
	MemPeak    uint64  `json:"mem_peak"`     // highest MemUsage the cgroup saw (kernel counter where there is one)
	BlockRead  uint64  `json:"block_read"`   // bytes read from block devices
	BlockWrite uint64  `json:"block_write"`  // bytes written to block devices
	HostTasks  int     `json:"host_tasks"`   // host tasks (threads) in the cgroup: what pids limits

	// Host processes of the sandbox, from /proc.
	HostProcs int `json:"host_procs"`
	// GVisorCPU is the CPU seconds of gVisor's own processes, sentry and
	// gofer (last seen for ones that exited); the rest of the cgroup's CPU
	// ran in systrap stubs, which execute the job's code: see JobCPU.
	GVisorCPU float64 `json:"gvisor_cpu_s"`
	MemRSS    uint64  `json:"mem_rss"`  // sum of resident sets; pages shared by sentry and stubs count once per process
	IORead    uint64  `json:"io_read"`  // bytes read through syscalls (rchar), processes that exited included
	IOWrite   uint64  `json:"io_write"` // bytes written through syscalls (wchar), likewise

	// Sandbox is what runsc reports from inside the sandbox; nil when runsc
	// was not asked or did not answer.
	Sandbox *SandboxStats `json:"sandbox,omitempty"`

	// GPUs is nil when no GPU is assigned or NVML is unavailable: absent,
	// not zero.
	GPUs []GPUSample `json:"gpus,omitempty"`
}

// CPUSeconds is the sandbox's host CPU time, user plus system: what the node
// paid, gVisor's overhead included.
func (s Sample) CPUSeconds() float64 { return s.CPUUser + s.CPUSystem }

// JobCPU is the host CPU time of the job's own code: the cgroup's CPU less
// gVisor's processes (sentry, gofer). It is what budgets and the sustained
// CPU rule count. Unlike gVisor's own clock it does not grow when the host
// is contended; unlike CPUSeconds it leaves out the sentry's polling, which
// does. The sentry's CPU is read from /proc while it runs, so JobCPU needs
// samples during the job (Watch): at the very end it includes the
// sentry's CPU since the last sample, and a Final with no sample before it
// counts all of the sentry's CPU as the job's.
func (s Sample) JobCPU() float64 { return s.CPUSeconds() - s.GVisorCPU }

// SandboxStats are the figures `runsc events` gives for the
// container: its own processes, as the sentry sees them.
type SandboxStats struct {
	Time   time.Time `json:"time"`
	CPU    float64   `json:"cpu_s"` // job CPU seconds inside the sandbox
	Memory uint64    `json:"memory"`
	Pids   int       `json:"pids"` // job processes
}

// GPUSample is one GPU's reading.
type GPUSample struct {
	Index    int     `json:"index"`
	UUID     string  `json:"uuid"`
	Util     float64 `json:"util"`     // percent of time a kernel ran, over the driver's last period
	MemUtil  float64 `json:"mem_util"` // percent of time memory was read or written
	MemUsed  uint64  `json:"mem_used"` // bytes used on the device, by anyone
	MemTotal uint64  `json:"mem_total"`
	// JobMemUsed is the memory used by the sandbox's host processes, when
	// the driver reports per-process figures (JobMemKnown).
	JobMemUsed  uint64 `json:"job_mem_used,omitempty"`
	JobMemKnown bool   `json:"job_mem_known,omitempty"`
	// JobMemPeak is the highest JobMem seen by this sampler.
	JobMemPeak uint64 `json:"job_mem_peak"`
	// BusySeconds integrates Util over the samples: seconds the GPU was busy.
	BusySeconds float64 `json:"busy_s"`
}

// JobMem is the memory charged to the job: its own processes' use where the
// driver reports it, else the whole device's.
func (g GPUSample) JobMem() uint64 {
	if g.JobMemKnown {
		return g.JobMemUsed
	}
	return g.MemUsed
}

// Final is the last reading of a sandbox, taken after the job ended and
// before `runsc delete` removes its cgroup.
type Final struct {
	Sample
	// OOMKills counts processes the kernel's OOM killer ended in the cgroup
	// (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).
	OOMKills uint64 `json:"oom_kills"`
	// MemFailcnt counts times usage hit the memory limit (v1 memory.failcnt,
	// v2 memory.events max).
	MemFailcnt uint64 `json:"mem_failcnt"`
	// PidsMaxHit counts forks refused at pids.max (pids.events max).
	PidsMaxHit uint64 `json:"pids_max_hit"`
}

// OOMKilled reports whether the memory limit ended the job.
func (f Final) OOMKilled() bool { return f.OOMKills > 0 }

// Config says which sandbox a Sampler reads.
type Config struct {
	// CgroupPath is the OCI spec's linux.cgroupsPath, e.g. "/securetrain/<jobid>".
	CgroupPath string
	// CgroupRoot is where cgroups are mounted; "" means /sys/fs/cgroup.
	// Version 2 is chosen when CgroupRoot/cgroup.controllers exists
	// (a unified hierarchy), else version 1 with one directory per controller.
	CgroupRoot string
	// Runsc, RunscRoot and ContainerID let the sampler keep one
	// `runsc --root RunscRoot events --interval=N ContainerID` running from
	// its first sample to Close. Runsc "" skips it.
	Runsc, RunscRoot, ContainerID string
	// EventsInterval is how often that runsc asks the sentry (whole
	// seconds, at least 1); 0 means DefaultEventsInterval. Samples carry the
	// newest answer.
	EventsInterval time.Duration
	// GPUs are the NVML indices of the GPUs the job was given; none means
	// no GPU sampling at all.
	GPUs []int
	// NVML, if set, replaces the real library (tests).
	NVML   NVML
	Logger *slog.Logger
}

// Errors.
var (
	// ErrNoCgroup: the sandbox's cgroup does not exist (not created yet, or
	// already removed by runsc delete).
	ErrNoCgroup = errors.New("usage: sandbox cgroup not found")
	// ErrConfig: a Config field is missing or malformed.
	ErrConfig = errors.New("usage: bad config")
	// ErrNoNVML: the NVML library could not be loaded (no driver, or a
	// build without cgo). GPU figures are then absent.
	ErrNoNVML = errors.New("usage: NVML not available")
)

package usage

import (
	"fmt"
	"strings"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// Record is a job's usage account, written as JSON into the job's state and,
// when asked, to --report FILE.
type Record struct {
	Job   string    `json:"job"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// WallSeconds is End-Start.
	WallSeconds float64 `json:"wall_s"`
	// Host CPU of the sandbox (job, sentry, gofer): what the node paid.
	CPUSeconds float64 `json:"cpu_s"`
	CPUUser    float64 `json:"cpu_user_s"`
	CPUSystem  float64 `json:"cpu_system_s"`
	// JobCPUSeconds is the CPU of the job's own code (Sample.JobCPU),
	// GVisorCPUSeconds that of gVisor's sentry and gofer.
	JobCPUSeconds    float64 `json:"job_cpu_s"`
	GVisorCPUSeconds float64 `json:"gvisor_cpu_s"`
	// SandboxCPUSeconds is the job's own CPU as runsc last reported it;
	// absent when runsc never answered.
	SandboxCPUSeconds *float64 `json:"sandbox_cpu_s,omitempty"`
	MemPeak           uint64   `json:"mem_peak"`
	IORead            uint64   `json:"io_read"`
	IOWrite           uint64   `json:"io_write"`
	BlockRead         uint64   `json:"block_read"`
	BlockWrite        uint64   `json:"block_write"`
	// GPU figures are absent without GPUs or NVML.
	GPUSeconds *float64    `json:"gpu_s,omitempty"`
	GPUMemPeak *uint64     `json:"gpu_mem_peak,omitempty"`
	GPUs       []GPUSample `json:"gpus,omitempty"`
	OOMKilled  bool        `json:"oom_killed"`
	OOMKills   uint64      `json:"oom_kills,omitempty"`
	PidsMaxHit uint64      `json:"pids_max_hit,omitempty"`
	// EgressBytes per destination, filled by the launcher from netguard.
	EgressBytes map[string]uint64 `json:"egress_bytes,omitempty"`
	// Exit is filled by the launcher.
	Exit       ExitStatus            `json:"exit"`
	Violations []violation.Violation `json:"violations"`
}

// ExitStatus is how the job's process ended.
type ExitStatus struct {
	Code   int    `json:"code"`             // as runsc wait reports it; 128+n for signal n
	Signal string `json:"signal,omitempty"` // e.g. SIGKILL, when known
	// Reason is a word for the cause: "exited", "killed", "oom", "pids",
	// "violation", "unknown" (the launcher's choice).
	Reason string `json:"reason,omitempty"`
}

// NewRecord builds the record from the final reading. Violations the
// supervisor acted on are appended by the caller, as are Exit and
// EgressBytes; OOM and pids-limit violations found in f are added here
// (see Final.Violations).
func NewRecord(job string, start, end time.Time, f Final, memLimit uint64, pidsLimit int64) Record {
	r := Record{
		Job: job, Start: start, End: end,
		WallSeconds: round(end.Sub(start).Seconds()),
		CPUSeconds:  round(f.CPUSeconds()), CPUUser: round(f.CPUUser), CPUSystem: round(f.CPUSystem),
		JobCPUSeconds: round(f.JobCPU()), GVisorCPUSeconds: round(f.GVisorCPU),
		MemPeak: f.MemPeak, IORead: f.IORead, IOWrite: f.IOWrite, BlockRead: f.BlockRead, BlockWrite: f.BlockWrite,
		OOMKilled: f.OOMKilled(), OOMKills: f.OOMKills, PidsMaxHit: f.PidsMaxHit,
		Violations: f.Violations(job, memLimit, pidsLimit),
	}
	if f.Sandbox != nil {
		c := round(f.Sandbox.CPU)
		r.SandboxCPUSeconds = &c
	}
	if f.GPUs != nil {
		var sec float64
		var peak uint64
		for _, g := range f.GPUs {
			sec += g.BusySeconds
			peak = max(peak, g.JobMemPeak)
		}
		sec = round(sec)
		r.GPUSeconds, r.GPUMemPeak, r.GPUs = &sec, &peak, f.GPUs
	}
	return r
}

// Violations returns the hard-limit violations the final counters show: an
// OOM kill (limits.memory) and forks refused at pids.max (limits.pids).
// Limits are for the message; 0 if unknown.
func (f Final) Violations(job string, memLimit uint64, pidsLimit int64) []violation.Violation {
	var vs []violation.Violation
	if f.OOMKilled() {
		vs = append(vs, violation.Violation{Kind: violation.Memory, Job: job, Time: f.Time, Action: violation.Killed,
			Limit: LimitMemory, Measured: mib(f.MemPeak), Threshold: mib(memLimit), Unit: "MiB",
			Detail: fmt.Sprintf("OOM kill by the kernel (%d), peak %s", f.OOMKills, bytesHuman(f.MemPeak))})
	}
	if f.PidsMaxHit > 0 {
		vs = append(vs, violation.Violation{Kind: violation.Pids, Job: job, Time: f.Time, Action: violation.Killed,
			Limit: LimitPids, Measured: float64(pidsLimit), Threshold: float64(pidsLimit), Unit: " host tasks",
			Detail: fmt.Sprintf("%d host task creations refused at pids.max; under gVisor this ends the sandbox", f.PidsMaxHit)})
	}
	return vs
}

// Summary is a short account for stderr, at most a few lines.
func (r Record) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "securetrain: job %s %s after %s: cpu %.1fs (+%.1fs gVisor), peak memory %s, read %s, written %s",
		r.Job, r.exitWords(), time.Duration(r.WallSeconds*float64(time.Second)).Round(100*time.Millisecond),
		r.JobCPUSeconds, r.GVisorCPUSeconds, bytesHuman(r.MemPeak), bytesHuman(r.IORead), bytesHuman(r.IOWrite))
	if r.GPUSeconds != nil {
		fmt.Fprintf(&b, ", gpu %.1fs busy, peak gpu memory %s", *r.GPUSeconds, bytesHuman(*r.GPUMemPeak))
	}
	if n := len(r.EgressBytes); n > 0 {
		var tot uint64
		for _, v := range r.EgressBytes {
			tot += v
		}
		fmt.Fprintf(&b, ", egress %s to %d destination(s)", bytesHuman(tot), n)
	}
	for _, v := range r.Violations {
		b.WriteString("\n  ")
		b.WriteString(v.String())
	}
	return b.String()
}

func (r Record) exitWords() string {
	switch {
	case r.OOMKilled:
		return fmt.Sprintf("killed for memory (OOM, exit %d)", r.Exit.Code)
	case r.Exit.Signal != "":
		return fmt.Sprintf("killed by %s (exit %d)", r.Exit.Signal, r.Exit.Code)
	}
	return fmt.Sprintf("exited %d", r.Exit.Code)
}

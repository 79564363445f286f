package usage

import (
	"fmt"
	"math"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// Limits are a job's soft limits, enforced by the Enforcer from samples; the
// hard ones (memory, cpu quota, pids) are in the OCI spec and applied by the
// kernel. A zero field means no limit. The launcher fills it from the
// profile's limits section.
type Limits struct {
	// CPUs: the job's CPU use (Sample.JobCPU, cores, averaged between two samples) above
	// CPUs*(1+CPUTolerance) for longer than CPUGrace is a violation of
	// limits.cpus. With a CFS quota of CPUs in the spec this only fires
	// when the quota is not in force.
	CPUs     float64
	CPUGrace time.Duration
	// CPUSeconds is a budget of the job's CPU seconds (Sample.JobCPU: host
	// CPU time of the job's code, gVisor's own processes left out).
	CPUSeconds float64
	// GPUSeconds is a budget of GPU busy seconds, summed over the job's
	// GPUs (utilization integrated over time).
	GPUSeconds float64
	// GPUMemory is the most memory the job may hold on any one GPU
	// (GPUSample.JobMem), for longer than GPUMemoryGrace.
	GPUMemory      uint64
	GPUMemoryGrace time.Duration
	// WallTime counts from Start (zero: the first sample's time).
	WallTime time.Duration
	Start    time.Time
	// Job names the job in violations.
	Job string
}

// CPUTolerance is the share by which measured CPU use may exceed Limits.CPUs
// before it counts as over: CFS enforces a quota per period, so a rate
// measured over a sampling interval may exceed it slightly.
const CPUTolerance = 0.10

// Profile field names, used as violation.Violation.Limit.
const (
	LimitCPUs       = "limits.cpus"
	LimitCPUSeconds = "limits.cpu_seconds"
	LimitGPUSeconds = "limits.gpu_seconds"
	LimitGPUMemory  = "limits.gpu_memory"
	LimitWallTime   = "limits.wall_time"
	LimitMemory     = "limits.memory"
	LimitPids       = "limits.pids"
)

// Validate checks the limits; an error names the field.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"cpus", l.CPUs}, {"cpu_grace", l.CPUGrace.Seconds()}, {"cpu_seconds", l.CPUSeconds},
		{"gpu_seconds", l.GPUSeconds}, {"gpu_memory_grace", l.GPUMemoryGrace.Seconds()},
		{"wall_time", l.WallTime.Seconds()},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("%w: limits.%s is %v; allowed: a finite number >= 0 (0 = no limit)", ErrConfig, f.name, f.v)
		}
	}
	return nil
}

// Enforcer turns samples into violations of soft limits. It is pure: no
// clock, no I/O; time comes from the samples. It is not safe for concurrent
// use (Watch calls it from one goroutine).
type Enforcer struct {
	l        Limits
	start    time.Time
	prev     *Sample
	cpuOver  time.Time
	gpuOver  map[int]time.Time
	reported map[string]bool
}

// NewEnforcer checks l and returns an Enforcer.
func NewEnforcer(l Limits) (*Enforcer, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Enforcer{l: l, start: l.Start, gpuOver: map[int]time.Time{}, reported: map[string]bool{}}, nil
}

// Observe takes the next sample (in time order) and returns the first
// violation it shows that was not returned before, or nil. Each limit (each
// GPU, for gpu_memory) is reported once; if several break at once, later
// calls return the others. The Action is violation.Killed: the supervisor
// ends the job.
func (e *Enforcer) Observe(s Sample) *violation.Violation {
	if e.start.IsZero() {
		e.start = s.Time
	}
	type hit struct {
		key string
		v   violation.Violation
	}
	var found []hit
	add := func(key string, v violation.Violation) {
		if e.reported[key] {
			return
		}
		v.Kind, v.Job, v.Time, v.Action = kindOf(v.Limit), e.l.Job, s.Time, violation.Killed
		found = append(found, hit{key, v})
	}

	if e.l.WallTime > 0 {
		if d := s.Time.Sub(e.start); d > e.l.WallTime {
			add(LimitWallTime, violation.Violation{Limit: LimitWallTime, Measured: round(d.Seconds()), Threshold: e.l.WallTime.Seconds(), Unit: "s"})
		}
	}
	if e.l.CPUSeconds > 0 && s.JobCPU() > e.l.CPUSeconds {
		add(LimitCPUSeconds, violation.Violation{Limit: LimitCPUSeconds, Measured: round(s.JobCPU()), Threshold: e.l.CPUSeconds, Unit: "s",
			Detail: fmt.Sprintf("CPU time of the job's code; %.1fs with gVisor's own", s.CPUSeconds())})
	}
	if e.l.GPUSeconds > 0 {
		var busy float64
		for _, g := range s.GPUs {
			busy += g.BusySeconds
		}
		if busy > e.l.GPUSeconds {
			add(LimitGPUSeconds, violation.Violation{Limit: LimitGPUSeconds, Measured: round(busy), Threshold: e.l.GPUSeconds, Unit: "s",
				Detail: fmt.Sprintf("GPU busy time over %d GPU(s)", len(s.GPUs))})
		}
	}
	if e.l.CPUs > 0 && e.prev != nil && s.Time.After(e.prev.Time) {
		rate := (s.JobCPU() - e.prev.JobCPU()) / s.Time.Sub(e.prev.Time).Seconds()
		if rate > e.l.CPUs*(1+CPUTolerance) {
			if e.cpuOver.IsZero() {
				e.cpuOver = e.prev.Time
			}
			if over := s.Time.Sub(e.cpuOver); over > e.l.CPUGrace {
				add(LimitCPUs, violation.Violation{Limit: LimitCPUs, Measured: round(rate), Threshold: e.l.CPUs, Unit: " CPUs",
					Detail: fmt.Sprintf("above the limit for %s, grace %s", over.Round(time.Millisecond), e.l.CPUGrace)})
			}
		} else {
			e.cpuOver = time.Time{}
		}
	}
	if e.l.GPUMemory > 0 {
		for _, g := range s.GPUs {
			used := g.JobMem()
			if used <= e.l.GPUMemory {
				delete(e.gpuOver, g.Index)
				continue
			}
			since, ok := e.gpuOver[g.Index]
			if !ok {
				since = s.Time
				e.gpuOver[g.Index] = since
			}
			if over := s.Time.Sub(since); over >= e.l.GPUMemoryGrace {
				who := "the whole device (no per-process figures)"
				if g.JobMemKnown {
					who = "the job's processes"
				}
				add(fmt.Sprintf("%s/%d", LimitGPUMemory, g.Index), violation.Violation{Limit: LimitGPUMemory, Measured: mib(used), Threshold: mib(e.l.GPUMemory), Unit: "MiB",
					Detail: fmt.Sprintf("GPU %d %s: %s used by %s for %s, grace %s", g.Index, g.UUID, bytesHuman(used), who, over.Round(time.Millisecond), e.l.GPUMemoryGrace)})
			}
		}
	}
	p := s
	e.prev = &p
	if len(found) == 0 {
		return nil
	}
	e.reported[found[0].key] = true
	return &found[0].v
}

func kindOf(limit string) violation.Kind {
	switch limit {
	case LimitCPUs:
		return violation.CPU
	case LimitCPUSeconds:
		return violation.CPUSeconds
	case LimitGPUSeconds:
		return violation.GPUSeconds
	case LimitGPUMemory:
		return violation.GPUMemory
	case LimitWallTime:
		return violation.WallTime
	case LimitMemory:
		return violation.Memory
	case LimitPids:
		return violation.Pids
	}
	return violation.Kind(limit)
}

// mib is b in MiB, to 0.1: violations carry memory in MiB.
func mib(b uint64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

package usage

import "strconv"

// Metric is one figure of a Sample in a form both `securetrain ps` and a
// Prometheus collector can use without knowing Sample's fields. Names follow
// Prometheus conventions; counters end in _total.
type Metric struct {
	Name    string
	Help    string
	Counter bool // else a gauge
	Value   float64
	Labels  map[string]string // e.g. gpu index and uuid
}

// Metrics lists the sample's figures. GPU metrics are absent when the
// sample has no GPU figures; sandbox ones when runsc did not answer.
func (s Sample) Metrics() []Metric {
	ms := []Metric{
		{Name: "securetrain_job_cpu_user_seconds_total", Help: "Host CPU user time of the sandbox.", Counter: true, Value: s.CPUUser},
		{Name: "securetrain_job_cpu_system_seconds_total", Help: "Host CPU system time of the sandbox.", Counter: true, Value: s.CPUSystem},
		{Name: "securetrain_job_code_cpu_seconds_total", Help: "Host CPU time of the job's own code (gVisor's sentry and gofer left out).", Counter: true, Value: s.JobCPU()},
		{Name: "securetrain_job_memory_bytes", Help: "Memory charged to the sandbox's cgroup.", Value: float64(s.MemUsage)},
		{Name: "securetrain_job_memory_peak_bytes", Help: "Highest memory charged to the sandbox's cgroup.", Value: float64(s.MemPeak)},
		{Name: "securetrain_job_rss_bytes", Help: "Summed resident set of the sandbox's host processes.", Value: float64(s.MemRSS)},
		{Name: "securetrain_job_io_read_bytes_total", Help: "Bytes read by the sandbox's host processes.", Counter: true, Value: float64(s.IORead)},
		{Name: "securetrain_job_io_write_bytes_total", Help: "Bytes written by the sandbox's host processes.", Counter: true, Value: float64(s.IOWrite)},
		{Name: "securetrain_job_host_tasks", Help: "Host tasks in the sandbox's cgroup (what pids limits).", Value: float64(s.HostTasks)},
	}
	if sb := s.Sandbox; sb != nil {
		ms = append(ms,
			Metric{Name: "securetrain_job_sandbox_cpu_seconds_total", Help: "CPU time of the job inside the sandbox, as runsc reports it.", Counter: true, Value: sb.CPU},
			Metric{Name: "securetrain_job_sandbox_memory_bytes", Help: "Memory of the job inside the sandbox, as runsc reports it.", Value: float64(sb.Memory)},
			Metric{Name: "securetrain_job_processes", Help: "Processes of the job inside the sandbox.", Value: float64(sb.Pids)},
		)
	}
	for _, g := range s.GPUs {
		l := map[string]string{"gpu": strconv.Itoa(g.Index), "uuid": g.UUID}
		ms = append(ms,
			Metric{Name: "securetrain_job_gpu_utilization_ratio", Help: "GPU busy share over the driver's last period.", Value: g.Util / 100, Labels: l},
			Metric{Name: "securetrain_job_gpu_memory_bytes", Help: "GPU memory charged to the job.", Value: float64(g.JobMem()), Labels: l},
			Metric{Name: "securetrain_job_gpu_busy_seconds_total", Help: "GPU busy time of the job.", Counter: true, Value: g.BusySeconds, Labels: l},
		)
	}
	return ms
}

package e2e

import "github.com/securetrain/securetrain/violation"

// report is the part of the result record (--report FILE) the tests read.
type report struct {
	ID         string                `json:"id"`
	ExitCode   int                   `json:"exit_code"`
	Outcome    string                `json:"outcome"`
	Reason     string                `json:"reason"`
	Violations []violation.Violation `json:"violations"`
	Usage      struct {
		WallS       float64           `json:"wall_s"`
		CPUS        float64           `json:"cpu_s"`
		JobCPUS     float64           `json:"job_cpu_s"`
		MemPeak     uint64            `json:"mem_peak"`
		OOMKilled   bool              `json:"oom_killed"`
		PidsMaxHit  uint64            `json:"pids_max_hit"`
		GPUs        any               `json:"gpus"`
		GPUS        *float64          `json:"gpu_s"`
		EgressBytes map[string]uint64 `json:"egress_bytes"`
	} `json:"usage"`
	Suggested []string `json:"suggested_allowlist"`
}

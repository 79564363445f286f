package slurm

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// ForgedEnv is the violation kind of a caller whose SLURM_* variables claim
// more than (or other than) what Slurm allocated. The job still gets only
// what Slurm allocated; the violation is recorded, not enforced by a kill.
const ForgedEnv violation.Kind = "slurm_env"

// Forged compares the Slurm variables in a caller's environment with the
// job Slurm established for the caller (CallerJob) and returns one violation
// per contradiction: another job's id or uid, GPUs outside the allocation,
// more CPUs or memory than allocated. Absent variables are not violations.
func Forged(env map[string]string, ji JobInfo, now time.Time) []violation.Violation {
	var out []violation.Violation
	add := func(name, val, want string) {
		out = append(out, violation.Violation{
			Kind: ForgedEnv, Time: now, Action: violation.Recorded,
			Detail: fmt.Sprintf("%s=%s in the caller's environment, but Slurm says %s (job %d)", name, val, want, ji.ID),
		})
	}
	for _, name := range []string{"SLURM_JOB_ID", "SLURM_JOBID"} {
		if v, ok := env[name]; ok && v != strconv.FormatUint(ji.ID, 10) {
			add(name, v, strconv.FormatUint(ji.ID, 10))
		}
	}
	if v, ok := env["SLURM_JOB_UID"]; ok && v != strconv.Itoa(ji.UID) {
		add("SLURM_JOB_UID", v, strconv.Itoa(ji.UID))
	}
	for _, name := range []string{"SLURM_JOB_GPUS", "SLURM_STEP_GPUS"} {
		v, ok := env[name]
		if !ok || v == "" {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || !slices.Contains(ji.GPUs, n) {
				add(name, v, fmt.Sprintf("GPUs %v", ji.GPUs))
				break
			}
		}
	}
	if v, ok := env["SLURM_CPUS_ON_NODE"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n > ji.CPUs {
			add("SLURM_CPUS_ON_NODE", v, strconv.Itoa(ji.CPUs))
		}
	}
	if v, ok := env["SLURM_MEM_PER_NODE"]; ok && ji.MemoryMB > 0 {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n > ji.MemoryMB {
			add("SLURM_MEM_PER_NODE", v, strconv.FormatInt(ji.MemoryMB, 10))
		}
	}
	return out
}

// ForgedName returns the variable a Forged violation is about (its Detail
// starts NAME=VALUE; Limit stays empty, which would read as a resource
// limit measured at 0).
func ForgedName(v violation.Violation) string {
	name, _, _ := strings.Cut(v.Detail, "=")
	return name
}

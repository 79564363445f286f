package slurm

import (
	"errors"
	"strconv"
	"time"
)

// HookJobID reads SLURM_JOB_ID from getenv (os.Getenv in a hook), which
// slurmd, not the job's user, sets for the prolog and epilog.
func HookJobID(getenv func(string) string) (uint64, error) {
	v := getenv("SLURM_JOB_ID")
	if v == "" {
		return 0, errors.New("SLURM_JOB_ID is not set: run this only as slurm.conf's Prolog/Epilog")
	}
	return ParseJobID(v)
}

// HookJob is what slurmd's environment for a prolog says of job id on node,
// for when Slurm cannot be asked: its user, uid and gid, no allocation.
func HookJob(id uint64, node string, getenv func(string) string) JobInfo {
	ji := JobInfo{ID: id, User: getenv("SLURM_JOB_USER"), Node: node, Read: time.Now().UTC()}
	ji.UID, _ = strconv.Atoi(getenv("SLURM_JOB_UID"))
	ji.GID, _ = strconv.Atoi(getenv("SLURM_JOB_GID"))
	return ji
}

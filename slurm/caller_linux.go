package slurm

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CallerJob establishes which Slurm job process pid belongs to and reads that
// job's allocation from Slurm. Nothing comes from the process's environment:
// SLURM_JOB_ID, SLURM_JOB_GPUS, CUDA_VISIBLE_DEVICES and the rest are the
// caller's to forge. The job is the one slurmd tracks the process in
// (scontrol pidinfo); where the process sits in a Slurm cgroup (proctrack or
// task cgroup), that cgroup must name the same job. The job must be running
// and belong to the process's real uid (root's processes excepted), and the
// pid must still be the same process afterwards (not exited and reused).
//
// The daemon calls this with the peer pid of a caller's socket; callers who
// are in no job get ErrNotInJob.
func (c *Client) CallerJob(ctx context.Context, pid int) (JobInfo, error) {
	start, uid, err := procIdentity(pid)
	if err != nil {
		return JobInfo{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	id, err := c.JobOfPID(ctx, pid)
	if err != nil {
		return JobInfo{}, err
	}
	if cg, ok := cgroupJob(pid); ok && cg != id {
		return JobInfo{}, fmt.Errorf("pid %d: slurmd says job %d, its cgroup says job %d: %w", pid, id, cg, ErrMismatch)
	}
	ji, err := c.Job(ctx, id)
	if err != nil {
		return JobInfo{}, err
	}
	if st := ji.State; !strings.Contains(st, "RUNNING") && !strings.Contains(st, "CONFIGURING") {
		return JobInfo{}, fmt.Errorf("pid %d: job %d is %s, not running: %w", pid, id, st, ErrNotInJob)
	}
	if uid != 0 && uid != ji.UID {
		return JobInfo{}, fmt.Errorf("pid %d runs as uid %d, job %d belongs to uid %d: %w", pid, uid, id, ji.UID, ErrMismatch)
	}
	if ji.Node == "" {
		return JobInfo{}, fmt.Errorf("pid %d: job %d has no allocation on node %q (nodes %s): %w", pid, id, c.nodeName(), ji.NodeList, ErrMismatch)
	}
	if start2, uid2, err := procIdentity(pid); err != nil || start2 != start || uid2 != uid {
		return JobInfo{}, fmt.Errorf("pid %d exited or changed while its job was read: %w", pid, ErrMismatch)
	}
	c.log().Debug("slurm caller", "pid", pid, "slurm_job", id, "uid", ji.UID, "cpus", ji.CPUs, "memory_mb", ji.MemoryMB, "gpus", ji.GPUs)
	return ji, nil
}

// procIdentity returns the process's start time (clock ticks since boot)
// and real uid, which together tell a reused pid apart.
func procIdentity(pid int) (start uint64, uid int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unreadable", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22, starttime
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				uid, err = strconv.Atoi(fs[0])
				return start, uid, err
			}
		}
	}
	return 0, 0, fmt.Errorf("/proc/%d/status: no Uid line", pid)
}

// cgroupJob reads the Slurm job a process's cgroup names, if any
// (.../slurm/uid_U/job_J/step_S/... under proctrack/cgroup or task/cgroup).
func cgroupJob(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return 0, false
	}
	return parseCgroupJob(string(b))
}

// JobCgroups returns the cgroup directories of Slurm job id that process pid
// sits in (one per hierarchy Slurm manages: freezer, memory, cpuset, devices
// on cgroup v1; one on v2). The launcher can place a sandbox's cgroup below
// them so that the sandbox's usage stays inside the job's accounting and
// Slurm's limits. None under proctrack/linuxproc without task/cgroup.
func JobCgroups(pid int, id uint64) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, err
	}
	return jobCgroupDirs(string(b), "/sys/fs/cgroup", id), nil
}

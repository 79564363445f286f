package slurm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/slurmtest"
	"github.com/securetrain/securetrain/slurm"
)

// CallerJob against a real slurmctld and slurmd: a job submitted by an
// unprivileged user sets SLURM_JOB_ID to another user's job and claims GPUs
// in SLURM_JOB_GPUS and CUDA_VISIBLE_DEVICES; what CallerJob returns is the
// job slurmd tracks the process in, with the allocation Slurm made.
//
// It runs under both process trackers: linuxproc (slurmd follows the process
// tree) and cgroup (slurmd's freezer/cgroup, which CallerJob cross-checks).
func TestCallerJobReal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Slurm cluster (-short)")
	}
	for _, pt := range []string{"proctrack/linuxproc", "proctrack/cgroup"} {
		t.Run(strings.ReplaceAll(pt, "/", "-"), func(t *testing.T) { testCallerJob(t, pt) })
	}
}

func testCallerJob(t *testing.T, proctrack string) {
	cl := slurmtest.Start(t, slurmtest.Options{Proctrack: proctrack})
	alice, aliceDir := slurmtest.NewUser(t, "st-slurm-a")
	bob, bobDir := slurmtest.NewUser(t, "st-slurm-b")
	c := &slurm.Client{Conf: cl.Conf, NodeName: cl.Node}

	// Bob's job: the one Alice pretends to be in.
	bobJob := cl.Sbatch(t, bob, bobDir, "echo $$ > pid\nexec sleep 300", "-c", "1", "--mem", "64M", "-o", "/dev/null")
	bobPid := readPid(t, filepath.Join(bobDir, "pid"))
	aliceJob := cl.Sbatch(t, alice, aliceDir, fmt.Sprintf(
		"export SLURM_JOB_ID=%d SLURM_JOBID=%d SLURM_JOB_GPUS=0,1,2,3 CUDA_VISIBLE_DEVICES=0,1,2,3 SLURM_CPUS_ON_NODE=64 SLURM_MEM_PER_NODE=999999\necho $$ > pid\nexec sleep 300",
		bobJob, bobJob), "-c", "1", "--mem", "96M", "-o", "/dev/null")
	alicePid := readPid(t, filepath.Join(aliceDir, "pid"))
	if proctrack == "proctrack/cgroup" {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", alicePid))
		if !strings.Contains(string(cg), fmt.Sprintf("/job_%d/", aliceJob)) {
			t.Fatalf("test setup: alice's process is not in its job's cgroup:\n%s", cg)
		}
	}
	cgs, err := slurm.JobCgroups(alicePid, aliceJob)
	if err != nil {
		t.Fatal(err)
	}
	if proctrack == "proctrack/cgroup" {
		if len(cgs) != 1 || !strings.HasSuffix(cgs[0], fmt.Sprintf("/uid_%d/job_%d", alice.UID, aliceJob)) {
			t.Errorf("JobCgroups = %v, want the freezer job_%d cgroup", cgs, aliceJob)
		} else if _, err := os.Stat(cgs[0]); err != nil {
			t.Errorf("JobCgroups: %v", err)
		}
	} else if len(cgs) != 0 {
		t.Errorf("JobCgroups under linuxproc = %v, want none", cgs)
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", alicePid))
	if !strings.Contains(string(env), fmt.Sprintf("SLURM_JOB_ID=%d", bobJob)) {
		t.Fatalf("test setup: alice's process does not carry the forged SLURM_JOB_ID")
	}

	ctx := context.Background()
	ji, err := c.CallerJob(ctx, alicePid)
	if err != nil {
		t.Fatalf("CallerJob(alice's pid %d): %v", alicePid, err)
	}
	if ji.ID != aliceJob || ji.UID != alice.UID || ji.User != alice.Name {
		t.Errorf("alice's process: job %d uid %d user %q; want job %d uid %d %s", ji.ID, ji.UID, ji.User, aliceJob, alice.UID, alice.Name)
	}
	if ji.CPUs != 1 || ji.MemoryMB != 96 || len(ji.GPUs) != 0 || len(ji.SandboxGPUs()) != 0 || ji.Node != cl.Node {
		t.Errorf("alice's allocation: cpus %d memory %dMB gpus %v node %q; want 1, 96, none, %s", ji.CPUs, ji.MemoryMB, ji.GPUs, ji.Node, cl.Node)
	}
	// What alice's environment claims is recorded as violations.
	var forged []string
	for _, v := range slurm.Forged(environ(env), ji, time.Now()) {
		forged = append(forged, slurm.ForgedName(v))
	}
	if want := "SLURM_JOB_ID SLURM_JOBID SLURM_JOB_GPUS SLURM_CPUS_ON_NODE SLURM_MEM_PER_NODE"; strings.Join(forged, " ") != want {
		t.Errorf("forged variables reported: %v, want %s", forged, want)
	}
	bj, err := c.CallerJob(ctx, bobPid)
	if err != nil || bj.ID != bobJob || bj.UID != bob.UID || bj.MemoryMB != 64 {
		t.Errorf("bob's process: %+v, %v; want job %d uid %d 64MB", bj, err, bobJob, bob.UID)
	}
	// A process outside every job (this test) is in none, whatever it sets.
	t.Setenv("SLURM_JOB_ID", strconv.FormatUint(aliceJob, 10))
	if _, err := c.CallerJob(ctx, os.Getpid()); !errors.Is(err, slurm.ErrNotInJob) {
		t.Errorf("CallerJob(test process) = %v, want ErrNotInJob", err)
	}
	// The allocation read directly agrees.
	if j, err := c.Job(ctx, aliceJob); err != nil || j.MemoryMB != 96 || j.UID != alice.UID {
		t.Errorf("Job(%d) = %+v, %v", aliceJob, j, err)
	}
	if _, err := c.Job(ctx, 999999); !errors.Is(err, slurm.ErrNoSuchJob) {
		t.Errorf("Job(999999) = %v, want ErrNoSuchJob", err)
	}
	// Once the job ends, its processes belong to no job.
	cl.Run(t, alice, aliceDir, "scancel", strconv.FormatUint(aliceJob, 10))
	cl.WaitState(t, aliceJob, "CANCELLED")
	if _, err := c.CallerJob(ctx, alicePid); err == nil {
		t.Errorf("CallerJob after scancel: no error")
	}
}

func environ(b []byte) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	s := slurmtest.WaitFile(t, path)
	pid, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("%s: %q", path, s)
	}
	return pid
}

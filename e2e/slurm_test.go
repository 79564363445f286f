package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/slurmtest"
)

// The Slurm tests use state and data directories of their own: the epilog
// runs gc, which must never touch the jobs of other e2e tests running at the
// same time.
const (
	slurmStateRoot = "/run/securetrain-slurm-e2e"
	slurmDataRoot  = "/var/lib/securetrain-slurm-e2e"
)

// slurmSetup is setup with its own host configuration (state and data
// directories) and its own leak check.
func slurmSetup(t *testing.T) *env {
	t.Helper()
	// Not setup(t): its leak check looks at the shared e2e directories,
	// which other tests running at the same time use.
	e := *baseSetup(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	e.config = filepath.Join(dir, "securetrain.yaml")
	body := fmt.Sprintf("version: 1\nrunsc: %s\nstate_dir: %s\ndata_dir: %s\nprofile_dir: %s\n", e.runsc, slurmStateRoot, slurmDataRoot, filepath.Join(dir, "profiles"))
	if err := os.WriteFile(e.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		assertSlurmClean(t, &e)
		exec.Command(e.bin, "--config", e.config, "gc").Run()
		os.RemoveAll(slurmStateRoot)
		os.RemoveAll(slurmDataRoot)
	})
	return &e
}

// assertSlurmClean is assertClean for the Slurm tests' directories.
func assertSlurmClean(t *testing.T, e *env) {
	t.Helper()
	left := leftovers(e.runsc, slurmStateRoot, slurmDataRoot, false)
	ents, _ := os.ReadDir(filepath.Join(slurmStateRoot, "slurm"))
	for _, x := range ents {
		left = append(left, "slurm state "+x.Name())
	}
	if len(left) > 0 {
		t.Errorf("leaked:\n  %s", strings.Join(left, "\n  "))
	}
}

// slurmCluster starts a one-node cluster whose Prolog and Epilog are the
// built securetrain with the test host config.
func (e *env) slurmCluster(t *testing.T) *slurmtest.Cluster {
	t.Helper()
	hook := func(verb string) []string {
		return []string{e.bin, "--config", e.config, "slurm", verb}
	}
	return slurmtest.Start(t, slurmtest.Options{Prolog: hook("prolog"), Epilog: hook("epilog")})
}

func slurmStateDir(id uint64) string {
	return filepath.Join(slurmStateRoot, "slurm", strconv.FormatUint(id, 10))
}

// A job an unprivileged user submits passes through the real Prolog, which
// records its allocation as Slurm made it, and the real Epilog, which
// removes it after scancel.
func TestSlurmPrologEpilogUserJob(t *testing.T) {
	e := slurmSetup(t)
	cl := e.slurmCluster(t)
	u, dir := slurmtest.NewUser(t, "st-slurm-e2e")
	id := cl.Sbatch(t, u, dir, "echo $$ > pid\nexec sleep 300", "-c", "1", "--mem", "80M", "-o", "/dev/null")
	slurmtest.WaitFile(t, filepath.Join(dir, "pid"))
	var alloc struct {
		ID       uint64 `json:"id"`
		UID      int    `json:"uid"`
		CPUs     int    `json:"cpus"`
		MemoryMB int64  `json:"memory_mb"`
		Node     string `json:"node"`
	}
	b, err := os.ReadFile(filepath.Join(slurmStateDir(id), "allocation.json"))
	if err != nil {
		t.Fatalf("the prolog recorded no allocation for job %d: %v", id, err)
	}
	if err := json.Unmarshal(b, &alloc); err != nil {
		t.Fatal(err)
	}
	if alloc.ID != id || alloc.UID != u.UID || alloc.CPUs != 1 || alloc.MemoryMB != 80 || alloc.Node != cl.Node {
		t.Errorf("prolog's allocation record: %s\nwant job %d uid %d, 1 CPU, 80 MB on %s", b, id, u.UID, cl.Node)
	}
	cl.Run(t, u, dir, "scancel", strconv.FormatUint(id, 10))
	cl.WaitState(t, id, "CANCELLED")
	cl.WaitIdle(t)
	if _, err := os.Stat(slurmStateDir(id)); !os.IsNotExist(err) {
		t.Errorf("after the epilog, %s: %v (want it removed)", slurmStateDir(id), err)
	}
}

// rootRunJob submits, as root, a batch job that runs `securetrain run --user`
// in the allocation, waits until its sandbox runs, and returns the Slurm job
// id and the securetrain job id (whose state records the Slurm job).
func (e *env) rootRunJob(t *testing.T, cl *slurmtest.Cluster) (uint64, string, string) {
	t.Helper()
	dir := e.project(t, nil)
	out := filepath.Join(dir, "slurm.out")
	script := fmt.Sprintf("exec %s --config %s run --user %s -- /bin/sh -c 'echo ready; exec sleep 300'", e.bin, e.config, jobUser)
	id := cl.Sbatch(t, slurmtest.Root, dir, script, "-c", "1", "--mem", "512M", "-o", out)
	slurmtest.WaitFor(t, 2*time.Minute, "the sandboxed job to print ready", func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), "ready")
	})
	var job string
	paths, _ := filepath.Glob(filepath.Join(slurmStateRoot, "jobs", "*", "state.json"))
	for _, p := range paths {
		var st struct {
			ID    string            `json:"id"`
			Extra map[string]string `json:"extra"`
		}
		b, _ := os.ReadFile(p)
		if json.Unmarshal(b, &st) == nil && st.Extra["slurm_job_id"] == strconv.FormatUint(id, 10) {
			job = st.ID
		}
	}
	if job == "" {
		b, _ := os.ReadFile(out)
		t.Fatalf("no securetrain job state records Slurm job %d (%d state files); job output:\n%s", id, len(paths), b)
	}
	return id, job, out
}

// The epilog stops a securetrain job of its Slurm job that is still running
// (as it must for jobs the daemon runs outside the job's processes), then
// gc removes everything of it.
func TestSlurmEpilogStopsLiveJob(t *testing.T) {
	e := slurmSetup(t)
	cl := e.slurmCluster(t)
	id, job, out := e.rootRunJob(t, cl)
	// slurmd runs the epilog with SLURM_JOB_ID and SLURM_CONF; so do we,
	// while the job still runs.
	c := exec.Command(e.bin, "--config", e.config, "slurm", "--node-name", cl.Node, "epilog", "--grace", "5s")
	c.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "SLURM_JOB_ID=" + strconv.FormatUint(id, 10), "SLURM_CONF=" + cl.Conf}
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("epilog: %v: %s", err, b)
	}
	if _, err := os.Stat(filepath.Join(slurmStateRoot, "jobs", job)); !os.IsNotExist(err) {
		t.Errorf("securetrain job %d after the epilog: %v (want its state gone)", id, err)
	}
	// The batch script's securetrain run has ended, so the Slurm job ends.
	cl.WaitState(t, id, "COMPLETED", "FAILED", "CANCELLED")
	cl.WaitIdle(t)
	if _, err := os.Stat(slurmStateDir(id)); !os.IsNotExist(err) {
		t.Errorf("%s after the epilog: %v", slurmStateDir(id), err)
	}
	b, _ := os.ReadFile(out)
	t.Logf("job output:\n%s", b)
	if strings.Contains(string(b), "teardown") {
		t.Errorf("the stopped launcher's teardown failed (did gc race it?):\n%s", b)
	}
}

// scancel of a running job: whatever Slurm's signals leave behind (a
// SIGKILLed launcher leaves its sandbox, state, cgroups and home), the real
// Epilog removes.
func TestSlurmScancelLeavesNothing(t *testing.T) {
	e := slurmSetup(t)
	cl := e.slurmCluster(t)
	for _, sig := range []string{"", "KILL"} {
		id, job, _ := e.rootRunJob(t, cl)
		args := []string{strconv.FormatUint(id, 10)}
		if sig != "" {
			// Signal every process of the job at once: the launcher gets no
			// chance to tear down.
			args = append([]string{"--full", "--signal", sig}, args...)
		}
		cl.Run(t, slurmtest.Root, cl.Dir, "scancel", args...)
		cl.WaitState(t, id, "CANCELLED", "FAILED", "COMPLETED")
		cl.WaitIdle(t)
		if _, err := os.Stat(filepath.Join(slurmStateRoot, "jobs", job)); !os.IsNotExist(err) {
			t.Errorf("scancel %v: securetrain job %s state after the epilog: %v", args, job, err)
		}
		if _, err := os.Stat(slurmStateDir(id)); !os.IsNotExist(err) {
			t.Errorf("scancel %v: %s after the epilog: %v", args, slurmStateDir(id), err)
		}
		assertSlurmClean(t, e)
	}
}

// The shipped packaging/slurm files, installed by their install.sh: the
// Prolog and Epilog wrappers run, and the TaskProlog routes an unprivileged
// user's `srun python3` through securetrain (which, without the daemon,
// refuses a non-root caller with its one line) instead of running python3.
func TestSlurmPackagingTaskProlog(t *testing.T) {
	e := slurmSetup(t)
	root, err := os.MkdirTemp("", "st-slurm-pkg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	inst := filepath.Join(root, "lib")
	if b, err := exec.Command("../packaging/slurm/install.sh", inst, e.bin, e.config, "debug").CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v: %s", err, b)
	}
	cl := slurmtest.Start(t, slurmtest.Options{
		Prolog: []string{filepath.Join(inst, "prolog")}, Epilog: []string{filepath.Join(inst, "epilog")},
		TaskProlog: filepath.Join(inst, "task-prolog"),
	})
	u, dir := slurmtest.NewUser(t, "st-slurm-e2e")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// python3 prints the kernel it sees: the host's when it ran outside the
	// sandbox, gVisor's own otherwise. Without the daemon, securetrain
	// refuses the non-root caller with its one line instead.
	hostKernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	c := cl.Cmd(ctx, u, dir, "srun", "-c", "1", "--mem", "64M", "python3", "-c", "import platform; print('kernel=' + platform.release())")
	b, _ := c.CombinedOutput()
	out := string(b)
	t.Logf("srun python3 -> %s", strings.TrimSpace(out))
	if strings.Contains(out, "kernel="+strings.TrimSpace(string(hostKernel))) {
		t.Errorf("srun python3 on the partition ran outside the sandbox:\n%s", out)
	}
	if !strings.Contains(out, "securetrain: ") && !strings.Contains(out, "kernel=") {
		t.Errorf("srun python3 on the partition did not go through securetrain:\n%s", out)
	}
	// Other programs run as they are (the shims name python, python3, torchrun).
	if got := cl.Run(t, u, dir, "srun", "-c", "1", "--mem", "64M", "sh", "-c", "echo $SECURETRAIN_SLURM_TASK; command -v python3"); !strings.HasPrefix(got, "1\n"+filepath.Join(inst, "shims", "python3")) {
		t.Errorf("task environment: %q; want SECURETRAIN_SLURM_TASK=1 and python3 from the shims", got)
	}
	cl.WaitIdle(t)
	if ents, _ := os.ReadDir(filepath.Join(slurmStateRoot, "slurm")); len(ents) != 0 {
		t.Errorf("slurm state after the installed epilog: %d entries", len(ents))
	}
}

// A node that cannot run sandboxed jobs (here: the host config names a runsc
// that is not there) fails the prolog, which is what drains it.
func TestSlurmPrologDrainsBrokenNode(t *testing.T) {
	e := slurmSetup(t)
	bad := filepath.Join(t.TempDir(), "broken.yaml")
	body := fmt.Sprintf("version: 1\nrunsc: /nonexistent/runsc\nstate_dir: %s\ndata_dir: %s\n", slurmStateRoot, slurmDataRoot)
	if err := os.WriteFile(bad, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(bad), 0o755)
	cl := slurmtest.Start(t, slurmtest.Options{Prolog: []string{e.bin, "--config", bad, "slurm", "prolog"}})
	u, dir := slurmtest.NewUser(t, "st-slurm-e2e")
	id := cl.Sbatch(t, u, dir, "true", "-c", "1", "--mem", "32M", "-o", "/dev/null")
	var st string
	slurmtest.WaitFor(t, 2*time.Minute, "the node to drain", func() bool {
		st = strings.TrimSpace(cl.Run(t, slurmtest.Root, cl.Dir, "sinfo", "-h", "-n", cl.Node, "-o", "%T"))
		return strings.HasPrefix(st, "drain")
	})
	reason := cl.Run(t, slurmtest.Root, cl.Dir, "sinfo", "-h", "-n", cl.Node, "-o", "%E")
	t.Logf("node %s: %s, reason %s", cl.Node, st, strings.TrimSpace(reason))
	if _, err := os.Stat(slurmStateDir(id)); !os.IsNotExist(err) {
		t.Errorf("a failed prolog recorded state for job %d: %v", id, err)
	}
	cl.Run(t, slurmtest.Root, cl.Dir, "scancel", strconv.FormatUint(id, 10))
}

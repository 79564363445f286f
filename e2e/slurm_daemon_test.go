package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/slurmtest"
	"github.com/securetrain/securetrain/netguard"
)

// slurmDaemonUser is the unprivileged user who submits the jobs.
const slurmDaemonUser = "st-slurm-e2e"

// slurmPool is the Slurm daemon's job pool (apart from the other e2e
// tests' 10.217.0.0/24 and netguard's own tests').
const slurmPool = "10.218.0.0/24"

// slurmDaemon starts a one-node cluster whose Prolog and Epilog are the
// built securetrain, and the daemon with slurm.enabled and require_job, in
// the Slurm tests' own state and data directories (so the epilog's gc and
// the leak check see exactly these jobs).
func slurmDaemon(t *testing.T) (*env, *slurmtest.Cluster, *daemonEnv, slurmtest.User, string) {
	t.Helper()
	e := slurmSetup(t)
	cl := e.slurmCluster(t) // the hooks read e.config, rewritten below
	u, dir := slurmtest.NewUser(t, slurmDaemonUser)
	cfgDir := filepath.Dir(e.config)
	// The job's user reads the host config (to find the socket): the test's
	// temporary directory above it must be searchable.
	os.Chmod(filepath.Dir(cfgDir), 0o755)
	d := &daemonEnv{env: e, bin: e.bin, config: e.config, socket: filepath.Join(slurmStateRoot, "securetrain.sock"),
		audit: filepath.Join(cfgDir, "audit.jsonl")}
	body := fmt.Sprintf(`version: 1
runsc: %s
state_dir: %s
data_dir: %s
profile_dir: %s
audit:
  path: %s
daemon:
  socket: %s
slurm:
  enabled: true
  require_job: true
  conf: %s
  node_name: %s
policy:
  rules:
    - users: [%s]
      profiles: [default, dist]
      max_cpus: 4
      max_memory: 4G
      max_wall_time: 1h
      max_gpus: 4
network:
  pool: %s
  upstreams: ["127.0.0.1"]
`, e.runsc, slurmStateRoot, slurmDataRoot, filepath.Join(cfgDir, "profiles"), d.audit, d.socket, cl.Conf, cl.Node, slurmDaemonUser, slurmPool)
	if err := os.WriteFile(e.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// dist: a sandbox network whose only destinations are the allocation's
	// peers (no allowlist).
	if err := os.MkdirAll(filepath.Join(cfgDir, "profiles"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "profiles", "dist.yaml"), []byte(distProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start(t, true)
	return e, cl, d, u, dir
}

// auditEvents returns the audit log's events of type typ (all when empty).
func auditEvents(t *testing.T, path, typ string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if typ == "" || ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// slurmJobEvent is the daemon's slurm_job audit event for Slurm job id.
func slurmJobEvent(t *testing.T, path string, id uint64) map[string]any {
	t.Helper()
	for _, ev := range auditEvents(t, path, "slurm_job") {
		if data, _ := ev["data"].(map[string]any); data != nil && fmt.Sprint(data["slurm_job"]) == strconv.FormatUint(id, 10) {
			data["job"] = ev["job"]
			return data
		}
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("no slurm_job audit event for Slurm job %d; audit log:\n%s", id, b)
	return nil
}

// waitJob waits for a batch job to end and returns its output file.
func waitJob(t *testing.T, cl *slurmtest.Cluster, id uint64, out string) string {
	t.Helper()
	cl.WaitState(t, id, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
	b, _ := os.ReadFile(out)
	return string(b)
}

const printKernel = `import platform; print("kernel=" + platform.release())`

// Unprivileged users' sbatch and srun tasks run `securetrain run`, which
// goes through the daemon: the job runs sandboxed as the user, bounded by
// the allocation Slurm reports for the caller's process; forged SLURM_*
// variables get nothing extra and are recorded; a wall-time violation is
// reported; a caller outside any job is refused; scancel of a running job
// leaves nothing behind.
func TestSlurmDaemon(t *testing.T) {
	e, cl, d, u, dir := slurmDaemon(t)
	hostKernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	host := "kernel=" + strings.TrimSpace(string(hostKernel))
	st := fmt.Sprintf("%s --config %s", e.bin, e.config)
	var otherJob uint64 // a real job of the cluster, for the forger to claim

	t.Run("sbatch", func(t *testing.T) {
		out := filepath.Join(dir, "sbatch.out")
		id := cl.Sbatch(t, u, dir, fmt.Sprintf("exec %s run -- /usr/bin/python3 -c '%s'", st, printKernel), "-c", "1", "--mem", "200M", "-o", out)
		otherJob = id
		got := waitJob(t, cl, id, out)
		t.Logf("sbatch job %d:\n%s", id, got)
		if !strings.Contains(got, "kernel=") || strings.Contains(got, host) {
			t.Fatalf("sbatch task did not run sandboxed (want gVisor's kernel, not %s):\n%s", host, got)
		}
		ev := slurmJobEvent(t, d.audit, id)
		if ev["cpus"] != 1.0 || ev["memory_bytes"] != float64(200<<20) || ev["gpus"] != "none" || fmt.Sprint(ev["uid"]) != strconv.Itoa(u.UID) {
			t.Errorf("daemon's record of Slurm job %d: %v; want 1 CPU, 200 MiB, no GPUs, uid %d", id, ev, u.UID)
		}
		// The sandbox's usage, outside the job's cgroups, is reported into the job.
		show := cl.Run(t, slurmtest.Root, cl.Dir, "scontrol", "show", "job", strconv.FormatUint(id, 10))
		if !strings.Contains(show, "AdminComment=securetrain: job "+fmt.Sprint(ev["job"])+" exited 0 after") {
			t.Errorf("Slurm job %d does not carry the sandbox's usage:\n%s", id, show)
		}
	})

	t.Run("srun", func(t *testing.T) {
		got := cl.Run(t, u, dir, "srun", "-c", "1", "--mem", "100M", e.bin, "--config", e.config, "run", "--", "/usr/bin/python3", "-c", printKernel)
		if !strings.Contains(got, "kernel=") || strings.Contains(got, host) {
			t.Fatalf("srun task did not run sandboxed:\n%s", got)
		}
	})

	t.Run("forged", func(t *testing.T) {
		out := filepath.Join(dir, "forged.out")
		if otherJob == 0 {
			otherJob = 999999
		}
		script := fmt.Sprintf("export SLURM_JOB_GPUS=0,1,2,3 SLURM_STEP_GPUS=0 SLURM_JOB_ID=%d SLURM_JOBID=%d CUDA_VISIBLE_DEVICES=0,1,2,3 SLURM_CPUS_ON_NODE=64\nexec %s run -- /usr/bin/python3 -c '%s'", otherJob, otherJob, st, printKernel)
		id := cl.Sbatch(t, u, dir, script, "-c", "1", "--mem", "200M", "-o", out)
		got := waitJob(t, cl, id, out)
		t.Logf("forging job %d:\n%s", id, got)
		if !strings.Contains(got, "kernel=") || strings.Contains(got, host) {
			t.Errorf("the forging job did not run sandboxed:\n%s", got)
		}
		if !strings.Contains(got, "recorded as forged (slurm_env): SLURM_JOB_ID, SLURM_JOBID, SLURM_JOB_GPUS, SLURM_STEP_GPUS, SLURM_CPUS_ON_NODE; it got only Slurm job "+strconv.FormatUint(id, 10)+"'s allocation: 1 CPU(s)") {
			t.Errorf("the caller was not told which variables were recorded as forged and what it got:\n%s", got)
		}
		if !strings.Contains(got, "slurm_env violation (SLURM_JOB_GPUS=0,1,2,3 in the caller's environment") {
			t.Errorf("the job's summary does not list the forged SLURM_JOB_GPUS:\n%s", got)
		}
		ev := slurmJobEvent(t, d.audit, id)
		if ev["cpus"] != 1.0 || ev["gpus"] != "none" || ev["forged"] == 0.0 {
			t.Errorf("forging job %d got %v; want its own allocation (1 CPU, no GPUs) and forgeries counted", id, ev)
		}
		var kinds []string
		for _, v := range auditEvents(t, d.audit, "violation") {
			if v["job"] == ev["job"] {
				data, _ := v["data"].(map[string]any)
				name, _, _ := strings.Cut(fmt.Sprint(data["detail"]), "=")
				kinds = append(kinds, fmt.Sprint(data["kind"], ":", name))
			}
		}
		if !strings.Contains(strings.Join(kinds, " "), "slurm_env:SLURM_JOB_GPUS") || !strings.Contains(strings.Join(kinds, " "), "slurm_env:SLURM_JOB_ID") {
			t.Errorf("audit violations of job %v: %v; want slurm_env for SLURM_JOB_GPUS and SLURM_JOB_ID", ev["job"], kinds)
		}
		for _, v := range auditEvents(t, d.audit, "job_start") {
			if v["job"] == ev["job"] {
				if data, _ := v["data"].(map[string]any); data["gpus"] != nil {
					t.Errorf("forging job started with GPUs %v", data["gpus"])
				}
			}
		}
	})

	t.Run("wall-time violation", func(t *testing.T) {
		out := filepath.Join(dir, "wall.out")
		id := cl.Sbatch(t, u, dir, fmt.Sprintf("%s run --wall-time 2s -- /usr/bin/python3 -c 'import time; time.sleep(120)'\necho exit=$?", st), "-c", "1", "--mem", "200M", "-o", out)
		got := waitJob(t, cl, id, out)
		t.Logf("wall-time job %d:\n%s", id, got)
		if !strings.Contains(got, "exit=124") || !strings.Contains(got, "killed") {
			t.Errorf("a job over its wall time: want exit 124 and the kill reported:\n%s", got)
		}
		ev := slurmJobEvent(t, d.audit, id)
		found := false
		for _, v := range auditEvents(t, d.audit, "violation") {
			data, _ := v["data"].(map[string]any)
			if v["job"] == ev["job"] && strings.Contains(fmt.Sprint(data["kind"]), "wall") {
				found = true
			}
		}
		if !found {
			t.Errorf("no wall-time violation in the audit log for job %v", ev["job"])
		}
	})

	// One Slurm job, two tasks, each a securetrain run through the daemon:
	// the Slurm job is their allocation, so the two sandboxes reach each
	// other on the profile's peer ports, rank 0 at the allocation's address
	// that the node's Slurm name resolves to, and they train together.
	t.Run("allocation", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, "dist.py"), []byte(allocScript), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chown(filepath.Join(dir, "dist.py"), u.UID, u.GID)
		out := filepath.Join(dir, "alloc.out")
		id := cl.Sbatch(t, u, dir, fmt.Sprintf(`srun -n 2 -c 1 sh -c 'exec %s run --profile dist --env MASTER_ADDR=$SLURMD_NODENAME -- /usr/bin/python3 -I dist.py'`, st),
			"-n", "2", "-c", "1", "--mem", "1800M", "-o", out)
		got := waitJob(t, cl, id, out)
		t.Logf("allocation job %d:\n%s", id, got)
		rdzv, _ := netguard.AllocationAddr(netip.MustParsePrefix(slurmPool), strconv.FormatUint(id, 10), 1)
		if strings.Count(got, "allreduce [3.0, 3.0, 3.0, 3.0]") != 2 || !strings.Contains(got, fmt.Sprintf("rank:0 me:%s master:%s", rdzv, rdzv)) || !strings.Contains(got, "rank:1 ") {
			t.Errorf("the two tasks of Slurm job %d did not train together with rank 0 at %s:\n%s", id, rdzv, got)
		}
		// Each task got its share of the allocation (which bounds both together).
		for _, ev := range auditEvents(t, d.audit, "slurm_job") {
			if data, _ := ev["data"].(map[string]any); fmt.Sprint(data["slurm_job"]) == strconv.FormatUint(id, 10) && (data["cpus"] != 1.0 || data["memory_bytes"] != float64(900<<20)) {
				t.Errorf("a task of Slurm job %d (2 tasks, 2 CPUs, 1800M) got %v CPU(s), %v bytes; want its share, 1 CPU and 900 MiB", id, data["cpus"], data["memory_bytes"])
			}
		}
		assertSlurmClean(t, e)
	})

	t.Run("outside a job", func(t *testing.T) {
		r := d.userRun(t, slurmDaemonUser, dir, "run", "--", "/bin/true")
		if r.code == 0 || !strings.Contains(r.stderr, "is in no running Slurm job on this node") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("a caller outside any Slurm job (require_job): want one refusal line, got %s", r)
		}
	})

	// scancel, and scancel --full --signal KILL (the client dies without a
	// word; the daemon sees its hang-up, the epilog finds the job by its
	// Slurm job id).
	for _, sig := range []string{"", "KILL"} {
		t.Run("scancel"+sig, func(t *testing.T) {
			out := filepath.Join(dir, "cancel"+sig+".out")
			id := cl.Sbatch(t, u, dir, fmt.Sprintf("exec %s run -- /bin/sh -c 'echo ready; exec sleep 300'", st), "-c", "1", "--mem", "200M", "-o", out)
			slurmtest.WaitFor(t, 2*time.Minute, "the sandboxed job to print ready", func() bool {
				b, _ := os.ReadFile(out)
				return strings.Contains(string(b), "ready")
			})
			job := fmt.Sprint(slurmJobEvent(t, d.audit, id)["job"])
			b, err := os.ReadFile(filepath.Join(slurmStateRoot, "jobs", job, "state.json"))
			var state struct{ Extra map[string]string }
			if err != nil || json.Unmarshal(b, &state) != nil || state.Extra["slurm_job_id"] != strconv.FormatUint(id, 10) {
				t.Fatalf("running job %s: state %s, %v; want it to name Slurm job %d", job, b, err, id)
			}
			args := []string{strconv.FormatUint(id, 10)}
			if sig != "" {
				args = append([]string{"--full", "--signal", sig}, args...)
			}
			cl.Run(t, u, dir, "scancel", args...)
			cl.WaitState(t, id, "CANCELLED", "FAILED", "COMPLETED")
			cl.WaitIdle(t)
			// The epilog has run: nothing of the job is left.
			if _, err := os.Stat(filepath.Join(slurmStateRoot, "jobs", job)); !os.IsNotExist(err) {
				t.Errorf("job %s state after scancel and the epilog: %v", job, err)
			}
			if _, err := os.Stat(filepath.Join("/run/netns", "securetrain-"+job)); !os.IsNotExist(err) {
				t.Errorf("netns securetrain-%s after scancel and the epilog: %v", job, err)
			}
			if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/securetrain/" + job); len(cgs) > 0 {
				t.Errorf("cgroups of job %s after scancel and the epilog: %v", job, cgs)
			}
			assertSlurmClean(t, e)
		})
	}
}

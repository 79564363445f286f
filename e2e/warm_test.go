package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/nettest"
	"github.com/securetrain/securetrain/netguard"
)

// warmConfig turns on the daemon's warm sandboxes for the default profile.
func warmConfig(t *testing.T, d *daemonEnv) {
	t.Helper()
	b, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "  metrics_addr: 127.0.0.1:0\n", "  metrics_addr: 127.0.0.1:0\n  warm:\n    profiles: [default]\n    size: 1\n", 1)
	if err := os.WriteFile(d.config, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// warmReady waits until the daemon's pool holds a booted sandbox other than
// the ones in used, and returns its id.
func warmReady(t *testing.T, d *daemonEnv, used ...string) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := exec.Command(d.runsc, "--root", filepath.Join(daemonStateDir, "runsc"), "list", "--format=json").Output()
		var cs []struct{ ID, Status string }
		_ = json.Unmarshal(out, &cs)
		for _, c := range cs {
			if strings.HasPrefix(c.ID, "warm-") && c.Status == "running" && !slices.Contains(used, c.ID) {
				return c.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warm sandbox ready (runsc list: %s); daemon log:\n%s", out, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmGone waits until nothing of the warm sandbox id is left: its runsc
// container, its state, its cgroups and its processes.
func warmGone(t *testing.T, d *daemonEnv, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var left []string
		out, _ := exec.Command(d.runsc, "--root", filepath.Join(daemonStateDir, "runsc"), "list", "-quiet").Output()
		if slices.Contains(strings.Fields(string(out)), id) {
			left = append(left, "runsc container")
		}
		if _, err := os.Stat(filepath.Join(daemonStateDir, "jobs", id)); err == nil {
			left = append(left, "state")
		}
		if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/securetrain/" + id); len(cgs) > 0 {
			left = append(left, "cgroups "+strings.Join(cgs, " "))
		}
		if ps, _ := exec.Command("pgrep", "-f", "runsc-.* "+id+"$").Output(); len(ps) > 0 {
			left = append(left, "processes "+strings.Join(strings.Fields(string(ps)), " "))
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm sandbox %s not deleted: %s", id, strings.Join(left, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmProbe is what each job of TestDaemonWarmStart runs: it reports its
// gVisor kernel's age (/proc/uptime counts from the sandbox's boot), host
// name and any process or file another job could have left, then leaves
// such things itself: files in /tmp, $HOME and /dev/shm, and a process in
// the background.
const warmProbe = `echo up=$(cut -d' ' -f1 /proc/uptime)
echo host=$(hostname)
for f in /tmp/mark "$HOME/mark" /dev/shm/mark; do [ -e "$f" ] && echo found=$f; done
for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in *"sleep infinity "|"sleep 4242 ") echo "proc=$c";; esac; done
for f in /tmp/mark "$HOME/mark" /dev/shm/mark; do echo secret > "$f" || echo nowrite=$f; done
sleep 4242 >/dev/null 2>&1 &
echo done`

// warmJob runs warmProbe through the daemon and returns its output's
// key=value lines and the sandbox its result names.
func warmJob(t *testing.T, d *daemonEnv, dir, report string) (map[string][]string, string) {
	t.Helper()
	r := d.userRun(t, daemonUser, dir, "run", "-q", "--report", report, "--", "/bin/sh", "-c", warmProbe)
	if r.code != 0 || !strings.Contains(r.stdout, "done") {
		t.Fatalf("warm job: %s\ndaemon log:\n%s", r, d.log)
	}
	kv := map[string][]string{}
	for _, l := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[k] = append(kv[k], v)
		}
	}
	var res struct {
		Warm string `json:"warm_sandbox"`
	}
	b, err := os.ReadFile(report)
	if err != nil || json.Unmarshal(b, &res) != nil {
		t.Fatalf("report %s: %v %s", report, err, b)
	}
	return kv, res.Warm
}

// TestDaemonWarmStart: with daemon.warm, a job starts in a sandbox booted
// before it was asked for, and two jobs from the pool share nothing: the
// second runs in another gVisor kernel (one younger than the first job:
// a reused sandbox's kernel would be older), sees none of the first's
// files (/tmp, $HOME, /dev/shm) or processes (its background process, the
// pool's holder), and the first's sandbox is deleted with everything of it
// (runsc container, state, cgroups, processes). A daemon SIGKILLed with a
// sandbox in its pool leaves it to gc, which removes it. Were a pooled
// sandbox handed to a second job, the second would find the first's files.
func TestDaemonWarmStart(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	warmConfig(t, d)
	d.start(t, false)
	dir := userProject(t, daemonUser)

	first := warmReady(t, d)
	// Let the first kernel age a second before job A: a kernel that served
	// A is then at least a second older than A's start, and one booted
	// after A took its sandbox is younger.
	time.Sleep(time.Second)
	startA := time.Now()
	a, warmA := warmJob(t, d, dir, filepath.Join(dir, "a.json"))
	if warmA != first {
		t.Fatalf("job A ran in %q, want the ready sandbox %s", warmA, first)
	}
	if len(a["found"]) > 0 || len(a["proc"]) > 0 || len(a["nowrite"]) > 0 {
		t.Errorf("job A, the first in a fresh sandbox: %v", a)
	}
	if want := "st-" + first; len(a["host"]) != 1 || a["host"][0] != want {
		t.Errorf("job A's host name %v, want %s", a["host"], want)
	}
	warmGone(t, d, first)

	second := warmReady(t, d, first)
	for id := range psRows(t, e.run(t, dir, nil, "--config", d.config, "ps", "--all")) {
		if strings.HasPrefix(id, "warm-") {
			t.Errorf("ps --all lists the pool's sandbox %s as a job", id)
		}
	}
	b, warmB := warmJob(t, d, dir, filepath.Join(dir, "b.json"))
	if warmB != second {
		t.Fatalf("job B ran in %q, want the replacement %s", warmB, second)
	}
	if len(b["found"]) > 0 || len(b["proc"]) > 0 {
		t.Errorf("job B sees what job A or the pool left: files %v, processes %v", b["found"], b["proc"])
	}
	sinceA := time.Since(startA).Seconds()
	if len(b["up"]) != 1 {
		t.Fatalf("job B's uptime: %v", b["up"])
	}
	if up, err := strconv.ParseFloat(b["up"][0], 64); err != nil || up >= sinceA {
		t.Errorf("job B's kernel is %s s old, job A started %.2f s ago: B ran in a kernel booted before A's start", b["up"][0], sinceA)
	}
	warmGone(t, d, second)

	// A pooled sandbox that died while it waited is not handed out: the
	// job starts cold, and the dead one is deleted.
	dead := warmReady(t, d, first, second)
	if out, err := exec.Command("pkill", "-KILL", "-f", "runsc-sandbox .* "+dead+"$").CombinedOutput(); err != nil {
		t.Fatalf("killing %s's sandbox: %v %s", dead, err, out)
	}
	c, warmC := warmJob(t, d, dir, filepath.Join(dir, "c.json"))
	if warmC == dead || len(c["up"]) != 1 {
		t.Errorf("job C ran in %q (the killed sandbox %s): %v", warmC, dead, c)
	}
	warmGone(t, d, dead)

	// A SIGKILLed daemon's pool is gc's.
	third := warmReady(t, d, first, second, dead)
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	if _, err := os.Stat(filepath.Join(daemonStateDir, "jobs", third)); err != nil {
		t.Fatalf("the killed daemon's pooled sandbox has no state for gc: %v", err)
	}
	if out, err := exec.Command(d.bin, "--config", d.config, "gc").CombinedOutput(); err != nil {
		t.Fatalf("gc: %v: %s", err, out)
	}
	warmGone(t, d, third)
}

// TestDaemonWarmStartNetwork: a profile with an allowlist is pooled with
// its network up (namespace, veth, table, DNS proxy made at the boot). A
// job from the pool reaches the allowed server by name; the next job gets
// a fresh table: the address job A's lookup put in A's table is not in
// B's, so B, dialling it without a lookup of its own, is killed for it (the
// pooled sandbox's own netguard enforces the allowlist, and the kill goes
// to the pooled sandbox). With a reused sandbox or table B would reach it
// (checked). Each job's table is gone after it.
func TestDaemonWarmStartNetwork(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	w := nettest.New(t, nettest.Options{Octet: worldOctet, JobIfPrefix: netguard.VethPrefix})
	prof := "version: 1\nname: warmnet\nnetwork:\n  mode: sandbox\n  allow: [\"allowed.test:8080\"]\n"
	if err := os.WriteFile(filepath.Join(d.profiles, "warmnet.yaml"), []byte(prof), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  metrics_addr: 127.0.0.1:0\n", "  metrics_addr: 127.0.0.1:0\n  warm:\n    profiles: [warmnet]\n", 1)
	cfg = strings.Replace(cfg, "      profiles: [default]\n", "      profiles: [default, warmnet]\n", 1)
	cfg += fmt.Sprintf("network:\n  pool: %s\n  upstreams: [%q]\n  internal_ranges: [%q]\n", w.Pool, w.Resolver, w.Servers)
	if err := os.WriteFile(d.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start(t, false)
	dir := userProject(t, daemonUser)
	u, _ := user.Lookup(daemonUser)
	uid, _ := strconv.Atoi(u.Uid)
	if err := os.WriteFile(filepath.Join(dir, "net.py"), []byte(netScript), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(dir, "net.py"), uid, -1)
	allowed := w.AllowedIP.String()
	netJob := func(name string, actions ...string) (result, report) {
		rp := filepath.Join(dir, name+".json")
		r := d.userRun(t, daemonUser, dir, append([]string{"run", "--profile", "warmnet", "--report", rp, "--", "/usr/bin/python3", "-I", "net.py"}, actions...)...)
		return r, readReport(t, rp, r)
	}
	warmOf := func(rp string) string {
		var res struct {
			Warm string `json:"warm_sandbox"`
		}
		b, _ := os.ReadFile(filepath.Join(dir, rp+".json"))
		json.Unmarshal(b, &res)
		return res.Warm
	}

	first := warmReady(t, d)
	if !tableExists(t, netguard.NamePrefix+first) {
		t.Fatalf("the pooled sandbox's table %s is not up before any job", netguard.NamePrefix+first)
	}
	r, rep := netJob("a", "resolve", "allowed.test", "dial", "allowed.test", "8080")
	if warmOf("a") != first {
		t.Fatalf("job A ran in %q, want the pooled %s\n%s", warmOf("a"), first, r)
	}
	for _, want := range []string{"resolved:allowed.test:" + allowed, "said:allowed.test:8080:allowed", "done"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("job A's output lacks %q:\n%s", want, r)
		}
	}
	if r.code != 0 || len(rep.Violations) > 0 {
		t.Errorf("job A: %s, violations %+v", r, rep.Violations)
	}
	warmGone(t, d, first)
	if tableExists(t, netguard.NamePrefix+first) {
		t.Errorf("job A's table %s outlived its sandbox", netguard.NamePrefix+first)
	}

	second := warmReady(t, d, first)
	r, rep = netJob("b", "dial", allowed, "8080")
	if warmOf("b") != second {
		t.Fatalf("job B ran in %q, want the replacement %s\n%s", warmOf("b"), second, r)
	}
	if strings.Contains(r.stdout, "said:") {
		t.Errorf("job B reached %s:8080, which only job A's lookup allowed:\n%s", allowed, r)
	}
	wantKilled(t, r, rep, "tcp", allowed, 8080)
	warmGone(t, d, second)
}

// tableExists reports whether the inet nftables table name exists.
func tableExists(t *testing.T, name string) bool {
	t.Helper()
	return slices.Contains(inetTables(t), name)
}

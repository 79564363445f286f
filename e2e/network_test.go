package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/securetrain/securetrain/internal/nettest"
	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/violation"
)

// worldOctet places the e2e test world (10.216.0.0/16 servers, job pool
// 10.217.0.0/24) apart from netguard's own tests (214).
const worldOctet = 216

// netScript is the job: a list of actions from argv, one output line each.
const netScript = `import socket, sys, time
def out(*a): print(*a, flush=True)
a, i = sys.argv[1:], 0
while i < len(a):
    c = a[i]; i += 1
    if c in ("dial", "try"):  # try: a dial expected to be dropped
        h, p = a[i], int(a[i+1]); i += 2
        try:
            s = socket.create_connection((h, p), timeout=5 if c == "dial" else 1)
            out("said:%s:%d:%s" % (h, p, s.recv(64).decode()))
            s.sendall(b"x" * 4096)
            s.close()
        except OSError as e:
            out("failed:%s:%d:%s" % (h, p, e))
    elif c == "udp":  # one datagram, no wait
        h, p = a[i], int(a[i+1]); i += 2
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (h, p))
    elif c == "resolve":
        n = a[i]; i += 1
        try:
            out("resolved:%s:%s" % (n, socket.gethostbyname(n)))
        except OSError as e:
            out("unresolved:%s:%s" % (n, e))
    elif c == "ping":
        h = a[i]; i += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.settimeout(3)
        s.sendto(b"\x08\x00\x00\x00\x00\x07\x00\x01ping", (h, 0))
        try:
            s.recv(64); out("pong:" + h)
        except OSError as e:
            out("noping:%s:%s" % (h, e))
    elif c == "stamp":
        out("stamp:%d" % time.time_ns())
    elif c == "probe":  # stamp, then at once the connect's first packet (socket made before)
        h, p = a[i], int(a[i+1]); i += 2
        s = socket.socket(); s.setblocking(False)
        out("stamp:%d" % time.time_ns())
        s.connect_ex((h, p))
    elif c == "wait":
        out("waiting"); sys.stdin.readline()
    elif c == "sleep":
        time.sleep(float(a[i])); i += 1
out("done")
`

// netEnv is the shared environment with a test world and a host config
// whose network section points at it.
type netEnv struct {
	*env
	w *nettest.World
}

// setupNet builds a world (test servers, resolver, backstop) and a host
// config: upstreams = the world's resolver, a pool of its own, its servers
// declared internal.
func setupNet(t *testing.T) *netEnv {
	t.Helper()
	return newNetEnv(t, setup(t))
}

func newNetEnv(t testing.TB, e *env) *netEnv {
	t.Helper()
	w := nettest.New(t, nettest.Options{Octet: worldOctet, JobIfPrefix: netguard.VethPrefix})
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	body := string(base) + fmt.Sprintf("network:\n  pool: %s\n  upstreams: [%q]\n  internal_ranges: [%q]\n", w.Pool, w.Resolver, w.Servers)
	cfg := filepath.Join(t.TempDir(), "securetrain.yaml")
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ne := *e
	ne.config = cfg
	return &netEnv{env: &ne, w: w}
}

// project is a code directory with the job script.
func (n *netEnv) project(t *testing.T, files map[string]string) string {
	t.Helper()
	all := map[string]string{"net.py": netScript}
	for k, v := range files {
		all[k] = v
	}
	return n.env.project(t, all)
}

// netJob runs net.py with actions under flags, writing the report to
// dir/report.json, and returns the result and the parsed report.
func (n *netEnv) netJob(t *testing.T, dir string, flags []string, actions ...string) (result, report) {
	t.Helper()
	rp := filepath.Join(dir, "report.json")
	os.Remove(rp)
	r := n.job(t, dir, append([]string{"--report", rp}, flags...), append([]string{"/usr/bin/python3", "-I", "net.py"}, actions...)...)
	return r, readReport(t, rp, r)
}

func readReport(t *testing.T, path string, r result) report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no report %s: %v\n%s", path, err, r)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report %s: %v", path, err)
	}
	return rep
}

// wantKilled checks a job killed for contacting dest:port (proto "dns": for
// looking up the name dest).
func wantKilled(t *testing.T, r result, rep report, proto, dest string, port int) {
	t.Helper()
	if r.code != launcher.ExitPolicy {
		t.Fatalf("want exit %d (policy violation) for %s %s:%d, got %s", launcher.ExitPolicy, proto, dest, port, r)
	}
	if strings.Contains(r.stdout, "done") {
		t.Errorf("the job ran on after the violation:\n%s", r)
	}
	where := dest
	if port != 0 {
		where = fmt.Sprintf("%s port %d", dest, port)
	}
	if !strings.Contains(r.stderr, "killed") || !strings.Contains(r.stderr, where) {
		t.Errorf("stderr must say the job was killed and name %q:\n%s", where, r.stderr)
	}
	if rep.Outcome != launcher.OutcomeViolation || rep.ExitCode != launcher.ExitPolicy || len(rep.Violations) == 0 {
		t.Fatalf("report: outcome %q exit %d violations %+v; want a violation", rep.Outcome, rep.ExitCode, rep.Violations)
	}
	kind := violation.Network
	if proto == "dns" {
		kind = violation.DNS
	}
	v := rep.Violations[0] // the one that killed (more may follow while it dies)
	if v.Kind != kind || v.Proto != proto || v.Dest != dest || v.Port != port || v.Action != violation.Killed {
		t.Errorf("report violation = %+v; want network %s %s port %d killed\n%s", v, proto, dest, port, r)
	}
}

// TestNetworkAllowlistEnforced: by name and by IP to the allowed server,
// then the evil server: killed (exit 123), named on stderr and in the
// report. The bytes sent to the allowed server were counted on the host veth.
func TestNetworkAllowlistEnforced(t *testing.T) {
	n := setupNet(t)
	dir := n.project(t, nil)
	allowed, evil := n.w.AllowedIP.String(), n.w.EvilIP.String()
	r, rep := n.netJob(t, dir, []string{"--allow", "allowed.test:8080", "--allow", "tcp:" + allowed + ":9090"},
		"resolve", "allowed.test", "dial", "allowed.test", "8080", "dial", allowed, "9090",
		"dial", evil, "8080")
	for _, want := range []string{"resolved:allowed.test:" + allowed, "said:allowed.test:8080:allowed", "said:" + allowed + ":9090:allowed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("job output lacks %q:\n%s", want, r)
		}
	}
	if !n.w.Seen("allowed.test") {
		t.Error("the allowed name never reached the test resolver")
	}
	wantKilled(t, r, rep, "tcp", evil, 8080)
	if rep.Usage.EgressBytes[allowed] < 2*4096 {
		t.Errorf("egress bytes for %s = %d, want at least the 8 KiB sent (counted on the host veth): %v", allowed, rep.Usage.EgressBytes[allowed], rep.Usage.EgressBytes)
	}
}

// TestNetworkBlocked, each ending the job: a lookup of an unlisted name
// (refused; the test resolver never sees it), the metadata address (even
// allowlisted), an allowed IP on a port it is not allowed on, and an ICMP
// echo to evil.
func TestNetworkBlocked(t *testing.T) {
	n := setupNet(t)
	dir := n.project(t, nil)
	allowed, evil := n.w.AllowedIP.String(), n.w.EvilIP.String()
	for _, c := range []struct {
		name    string
		flags   []string
		actions []string
		proto   string
		dest    string
		port    int
	}{
		{"unlisted name", []string{"--allow", "allowed.test:8080"}, []string{"resolve", "unlisted.test", "dial", evil, "8080"}, "dns", "unlisted.test", 0},
		{"metadata", []string{"--allow", "169.254.169.254:80"}, []string{"dial", "169.254.169.254", "80"}, "tcp", "169.254.169.254", 80},
		{"allowed IP, other port", []string{"--allow", "tcp:" + allowed + ":8080"}, []string{"dial", allowed, "8080", "dial", allowed, "53"}, "tcp", allowed, 53},
		{"ICMP echo", []string{"--allow", "tcp:" + evil + ":8080"}, []string{"ping", evil}, "icmp", evil, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, rep := n.netJob(t, dir, c.flags, c.actions...)
			if strings.Contains(r.stdout, "said:"+c.dest+":"+fmt.Sprint(c.port)) || strings.Contains(r.stdout, "pong:") {
				t.Errorf("the job got through:\n%s", r)
			}
			wantKilled(t, r, rep, c.proto, c.dest, c.port)
			if c.proto == "dns" && n.w.Seen(c.dest) {
				t.Errorf("the test resolver was asked the unlisted name %s", c.dest)
			}
		})
	}
}

// TestNetworkBlockPolicy: policy block drops and records, the job goes on;
// a datagram sent just before the job exits is recorded too.
func TestNetworkBlockPolicy(t *testing.T) {
	n := setupNet(t)
	prof := "version: 1\nname: blocking\nnetwork:\n  mode: sandbox\n  policy: block\n  allow: [\"allowed.test:8080\"]\n"
	dir := n.project(t, map[string]string{"block.yaml": prof})
	evil := n.w.EvilIP.String()
	r, rep := n.netJob(t, dir, []string{"--profile", "block.yaml"}, "try", evil, "8080", "dial", "allowed.test", "8080", "udp", evil, "7777")
	if r.code != 0 || !strings.Contains(r.stdout, "failed:"+evil+":8080") || !strings.Contains(r.stdout, "said:allowed.test:8080:allowed") || !strings.Contains(r.stdout, "done") {
		t.Fatalf("block: want the evil dial to fail and the job to go on and exit 0:\n%s", r)
	}
	i := slices.IndexFunc(rep.Violations, func(v violation.Violation) bool { return v.Dest == evil && v.Port == 8080 })
	if i < 0 || rep.Violations[i].Action != violation.Blocked || rep.Violations[i].Kind != violation.Network {
		t.Fatalf("report must record the blocked contact: %+v", rep.Violations)
	}
	if !slices.ContainsFunc(rep.Violations, func(v violation.Violation) bool { return v.Dest == evil && v.Port == 7777 && v.Proto == "udp" }) {
		t.Errorf("the datagram sent as the job exited is not in the report: %+v", rep.Violations)
	}
}

// TestNetworkLearn: --learn lets everything through (inside the test world)
// and suggests an allowlist naming what was contacted.
func TestNetworkLearn(t *testing.T) {
	n := setupNet(t)
	dir := n.project(t, nil)
	evil := n.w.EvilIP.String()
	r, rep := n.netJob(t, dir, []string{"--learn"}, "dial", "allowed.test", "8080", "dial", evil, "9090")
	if r.code != 0 || !strings.Contains(r.stdout, "said:allowed.test:8080:allowed") || !strings.Contains(r.stdout, "said:"+evil+":9090:evil") {
		t.Fatalf("--learn must let the job through:\n%s", r)
	}
	for _, want := range []string{"allowed.test:8080", evil + ":9090"} {
		if !slices.ContainsFunc(rep.Suggested, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("suggested allowlist %q lacks %s", rep.Suggested, want)
		}
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr's suggested allowlist lacks %s:\n%s", want, r.stderr)
		}
	}
}

// TestNetworkConcurrentJobsKeepTheirOwnAllowlists: job A may reach only the
// allowed server, job B only the evil one; both run at once, each reaches
// its own, then tries the other's and is killed. While both wait, their
// traffic is seen on the host end of their veths (nftables counters).
func TestNetworkConcurrentJobsKeepTheirOwnAllowlists(t *testing.T) {
	n := setupNet(t)
	allowed, evil := n.w.AllowedIP.String(), n.w.EvilIP.String()
	type run struct {
		name, dir string
		*fedJob
	}
	start := func(name, allow, own, other string) *run {
		dir := n.project(t, nil)
		c := n.cmd(t.Context(), dir, nil, "run", "--user", jobUser, "--allow", allow, "--report", filepath.Join(dir, "report.json"), "--",
			"/usr/bin/python3", "-I", "net.py", "dial", own, "8080", "wait", "dial", other, "8080")
		return &run{name: name, dir: dir, fedJob: startFed(t, c)}
	}
	a := start("A", "tcp:"+allowed+":8080", allowed, evil)
	b := start("B", "tcp:"+evil+":8080", evil, allowed)
	waitFor(t, a.out, "said:"+allowed+":8080:allowed")
	waitFor(t, b.out, "said:"+evil+":8080:evil")
	waitFor(t, a.out, "waiting")
	waitFor(t, b.out, "waiting")
	tables := jobTables(t)
	if len(tables) != 2 {
		t.Fatalf("want 2 job tables while both jobs run, got %v", tables)
	}
	for _, tb := range tables {
		if p := vethPackets(t, tb); p == 0 {
			t.Errorf("table %s: no packet counted from the job's veth: the sandbox's traffic did not cross the host veth", tb)
		}
	}
	a.in.Write([]byte("go\n"))
	b.in.Write([]byte("go\n"))
	for _, j := range []*run{a, b} {
		<-j.done
		r := result{j.out.String(), j.errb.String(), j.code}
		other := evil
		if j == b {
			other = allowed
		}
		wantKilled(t, r, readReport(t, filepath.Join(j.dir, "report.json"), r), "tcp", other, 8080)
	}
}

// jobTables lists the inet nftables tables of launcher jobs.
func jobTables(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, name := range inetTables(t) {
		if id, ok := strings.CutPrefix(name, netguard.NamePrefix); ok && isJobID(id) {
			out = append(out, name)
		}
	}
	return out
}

// inetTables lists the names of the host's inet nftables tables.
func inetTables(t *testing.T) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, tb.Name)
	}
	return out
}

// vethPackets sums the counters of the rules in chain "pre", where packets
// from the job's veth enter the table.
func vethPackets(t *testing.T, table string) uint64 {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: "pre", Table: tbl})
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				n += ctr.Packets
			}
		}
	}
	return n
}

// TestNetworkGCAfterLauncherKilled: a networked job whose launcher is
// SIGKILLed leaves its namespace, veth, table and lease to gc, which
// removes them all (checked by the leak check at cleanup).
func TestNetworkGCAfterLauncherKilled(t *testing.T) {
	n := setupNet(t)
	dir := n.project(t, nil)
	c := n.cmd(t.Context(), dir, nil, "run", "--user", jobUser, "--allow", "allowed.test:8080", "--",
		"/usr/bin/python3", "-I", "net.py", "dial", "allowed.test", "8080", "sleep", "300")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "said:allowed.test:8080:allowed")
	syscall.Kill(c.Process.Pid, syscall.SIGKILL)
	c.Wait()
	if len(jobTables(t)) != 1 || len(netLeaks()) == 0 {
		t.Fatalf("a SIGKILLed launcher leaves its network to gc; found tables %v, leftovers %v", jobTables(t), netLeaks())
	}
	gc := n.run(t, dir, nil, "gc")
	if gc.code != 0 || !strings.Contains(gc.stdout, "gc: 1 job(s) cleaned") {
		t.Fatalf("gc: %s", gc)
	}
	// The sandbox of the killed launcher is gone with its namespace.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && len(netLeaks()) > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	if left := netLeaks(); len(left) > 0 {
		t.Fatalf("after gc: %v", left)
	}
}

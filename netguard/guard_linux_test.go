package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/violation"
	"github.com/vishvananda/netlink"
)

func TestEnforce(t *testing.T) {
	w := newWorld(t)
	g := setup(t, w.config(t, Enforce, "allowed.test:8080", "tcp:10.214.1.2:9090", "rebind.test", "*.svc.test:8080"))
	const K = violation.Killed
	evil := evilIP.String()

	t.Run("allowed by name", func(t *testing.T) {
		r, err := jobLookup(g, "allowed.test")
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != allowedIP.String() {
			t.Fatalf("lookup allowed.test = %v, %v", r, err)
		}
		if got, err := jobDial(g, "tcp4", "10.214.1.2:8080"); got != "allowed" {
			t.Fatalf("dial allowed.test:8080 = %q, %v", got, err)
		}
		if _, err := jobLookup(g, "api.svc.test"); err != nil {
			t.Fatal(err)
		}
		// DNS over TCP to the proxy.
		err = inNetns(g.NetnsPath(), func() error {
			m := new(dns.Msg)
			m.SetQuestion("allowed.test.", dns.TypeA)
			r, _, err := (&dns.Client{Net: "tcp", Timeout: 3 * time.Second}).Exchange(m, netip.AddrPortFrom(g.ProxyAddr(), 53).String())
			if err == nil && len(r.Answer) != 1 {
				err = fmt.Errorf("answer %v", r)
			}
			return err
		})
		if err != nil {
			t.Fatalf("lookup over TCP: %v", err)
		}
		// A repeated answer refreshes the set element instead of failing.
		if r, err := jobLookup(g, "allowed.test"); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("second lookup of allowed.test = %v, %v", r, err)
		}
	})
	t.Run("allowed by IP", func(t *testing.T) {
		if got, err := jobDial(g, "tcp4", "10.214.1.2:9090"); got != "allowed" {
			t.Fatalf("dial 10.214.1.2:9090 = %q, %v", got, err)
		}
		noPendingViolation(t, g, 40001)
	})
	t.Run("unlisted name refused, not forwarded", func(t *testing.T) {
		r, err := jobLookup(g, "evil.test")
		if err != nil || r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Fatalf("lookup evil.test = %v, %v; want REFUSED", r, err)
		}
		expectViolation(t, g, violation.DNS, "dns", "evil.test", 0, K)
		if w.seen("evil.test") {
			t.Fatal("the upstream resolver saw evil.test")
		}
		if !w.seen("allowed.test") {
			t.Fatal("the upstream resolver never saw allowed.test: test resolver not in use")
		}
	})
	t.Run("evil by IP", func(t *testing.T) {
		if got, err := jobDial(g, "tcp4", evil+":8080"); err == nil || got != "" {
			t.Fatalf("dial evil = %q, %v; want failure", got, err)
		}
		v := expectViolation(t, g, violation.Network, "tcp", evil, 8080, K)
		if !strings.Contains(v.String(), "10.214.2.2 port 8080") {
			t.Errorf("violation text %q does not name address and port", v)
		}
	})
	t.Run("allowed IP on other port", func(t *testing.T) {
		if got, err := jobDial(g, "tcp4", "10.214.1.2:53"); err == nil || got != "" {
			t.Fatalf("dial 10.214.1.2:53 = %q, %v; want failure", got, err)
		}
		expectViolation(t, g, violation.Network, "tcp", "10.214.1.2", 53, K)
	})
	t.Run("metadata", func(t *testing.T) {
		if _, err := jobDial(g, "tcp4", "169.254.169.254:80"); err == nil {
			t.Fatal("metadata reachable")
		}
		v := expectViolation(t, g, violation.Network, "tcp", "169.254.169.254", 80, K)
		if !strings.Contains(v.Detail, "always-denied") {
			t.Errorf("detail %q", v.Detail)
		}
	})
	t.Run("host service", func(t *testing.T) {
		addr := netip.AddrPortFrom(g.ProxyAddr(), uint16(w.hostSvc)).String()
		if got, err := jobDial(g, "tcp4", addr); err == nil || got != "" {
			t.Fatalf("host service reachable: %q, %v", got, err)
		}
		expectViolation(t, g, violation.Network, "tcp", g.ProxyAddr().String(), w.hostSvc, K)
	})
	t.Run("DNS around the proxy", func(t *testing.T) {
		must(t, jobUDP(g, evil+":53"))
		v := expectViolation(t, g, violation.Network, "udp", evil, 53, K)
		if !strings.Contains(v.Detail, "DNS") {
			t.Errorf("detail %q", v.Detail)
		}
	})
	t.Run("ICMP echo", func(t *testing.T) {
		if err := jobPing(g, evilIP); err == nil {
			t.Fatal("ping to evil answered")
		}
		expectViolation(t, g, violation.Network, "icmp", evil, 0, K)
	})
	t.Run("raw socket", func(t *testing.T) {
		must(t, jobRaw(g, evilIP))
		expectViolation(t, g, violation.Network, "ip-proto-253", evil, 0, K)
	})
	t.Run("IPv6", func(t *testing.T) {
		if got, err := jobDial(g, "tcp6", netip.AddrPortFrom(evil6, 8080).String()); err == nil || got != "" {
			t.Fatalf("IPv6 egress worked: %q, %v", got, err)
		}
	})
	t.Run("rebinding answer dropped", func(t *testing.T) {
		r, err := jobLookup(g, "rebind.test")
		if err != nil || len(r.Answer) != 0 {
			t.Fatalf("lookup rebind.test = %v, %v; want no answer", r, err)
		}
	})
	t.Run("egress bytes", func(t *testing.T) {
		eb := g.EgressBytes()
		if eb[allowedIP.String()] == 0 {
			t.Fatalf("EgressBytes = %v, want bytes for %s", eb, allowedIP)
		}
		if eb[evil] != 0 {
			t.Fatalf("EgressBytes counts denied traffic: %v", eb)
		}
	})
}

func TestBlockMode(t *testing.T) {
	w := newWorld(t)
	g := setup(t, w.config(t, Block, "tcp:10.214.1.2:8080"))
	if _, err := jobDial(g, "tcp4", "10.214.2.2:8080"); err == nil {
		t.Fatal("evil reachable in block mode")
	}
	expectViolation(t, g, violation.Network, "tcp", evilIP.String(), 8080, violation.Blocked)
	if got, err := jobDial(g, "tcp4", "10.214.1.2:8080"); got != "allowed" {
		t.Fatalf("after a blocked packet the job lost its allowed host: %q, %v", got, err)
	}
	if _, err := jobLookup(g, "evil.test"); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, g, violation.DNS, "dns", "evil.test", 0, violation.Blocked)
}

func TestAuditMode(t *testing.T) {
	w := newWorld(t)
	g := setup(t, w.config(t, Audit))
	r, err := jobLookup(g, "evil.test")
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("audit lookup evil.test = %v, %v", r, err)
	}
	if got, err := jobDial(g, "tcp4", "10.214.2.2:8080"); got != "evil" {
		t.Fatalf("audit mode blocked evil: %q, %v", got, err)
	}
	expectViolation(t, g, violation.Network, "tcp", evilIP.String(), 8080, violation.Recorded)
	if got, err := jobDial(g, "tcp4", "10.214.1.2:9090"); got != "allowed" {
		t.Fatalf("audit mode blocked allowed: %q, %v", got, err)
	}
	expectViolation(t, g, violation.Network, "tcp", allowedIP.String(), 9090, violation.Recorded)
	// Always-denied stays denied in audit mode.
	if _, err := jobDial(g, "tcp4", "169.254.169.254:80"); err == nil {
		t.Fatal("metadata reachable in audit mode")
	}
	expectViolation(t, g, violation.Network, "tcp", "169.254.169.254", 80, violation.Blocked)
	got := SuggestAllowlist(g.Contacted())
	want := []string{"tcp:10.214.1.2:9090", "tcp:evil.test:8080"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("SuggestAllowlist = %q, want %q", got, want)
	}
}

func TestTwoGuardsKeepTheirOwnPermissions(t *testing.T) {
	w := newWorld(t)
	c1 := w.config(t, Enforce, "allowed.test:8080")
	c2 := w.config(t, Enforce, "tcp:10.214.2.2:8080")
	c2.StateDir = c1.StateDir // one host, one state dir
	g1, g2 := setup(t, c1), setup(t, c2)
	if g1.JobAddr() == g2.JobAddr() || g1.HostIf() == g2.HostIf() {
		t.Fatalf("guards share address or veth: %s %s", g1.JobAddr(), g2.JobAddr())
	}
	if _, err := jobLookup(g1, "allowed.test"); err != nil {
		t.Fatal(err)
	}
	if got, _ := jobDial(g1, "tcp4", "10.214.1.2:8080"); got != "allowed" {
		t.Fatalf("g1 cannot reach its allowed host: %q", got)
	}
	if got, _ := jobDial(g2, "tcp4", "10.214.2.2:8080"); got != "evil" {
		t.Fatalf("g2 cannot reach its allowed host: %q", got)
	}
	// g1 resolved allowed.test: that must not open it for g2.
	if got, err := jobDial(g2, "tcp4", "10.214.1.2:8080"); err == nil || got != "" {
		t.Fatalf("g2 used g1's permission: %q", got)
	}
	expectViolation(t, g2, violation.Network, "tcp", allowedIP.String(), 8080, violation.Killed)
	if got, err := jobDial(g1, "tcp4", "10.214.2.2:8080"); err == nil || got != "" {
		t.Fatalf("g1 used g2's permission: %q", got)
	}
	expectViolation(t, g1, violation.Network, "tcp", evilIP.String(), 8080, violation.Killed)
	// Jobs cannot reach each other.
	if err := jobUDP(g1, netip.AddrPortFrom(g2.JobAddr(), 9).String()); err != nil {
		t.Fatal(err)
	}
	v := expectViolation(t, g1, violation.Network, "udp", g2.JobAddr().String(), 9, violation.Killed)
	if !strings.Contains(v.Detail, "always-denied") {
		t.Errorf("detail %q", v.Detail)
	}
}

// failingRecorder refuses to record one kind, as a full disk would.
type failingRecorder struct {
	jobstate.MemRecorder
	kind string
}

var errDiskFull = errors.New("disk full")

func (f *failingRecorder) Record(r jobstate.Resource) error {
	if r.Kind == f.kind {
		return errDiskFull
	}
	return f.MemRecorder.Record(r)
}

func TestSetupFailsClosed(t *testing.T) {
	w := newWorld(t)
	for _, kind := range []string{KindNetns, KindVeth, KindTable} {
		t.Run(kind, func(t *testing.T) {
			rec := &failingRecorder{kind: kind}
			g, err := Setup(t.Context(), w.config(t, Enforce, "allowed.test"), rec)
			if !errors.Is(err, errDiskFull) || g != nil {
				t.Fatalf("Setup = %v, %v; want error wrapping %v", g, err, errDiskFull)
			}
			assertGone(t, rec.Snapshot())
		})
	}
	t.Run("nflog group taken", func(t *testing.T) {
		cfg := w.config(t, Enforce)
		r, err := openNFLog(cfg.NFLogGroup + 0) // slot 0 of a fresh state dir
		must(t, err)
		defer r.close()
		rec := &jobstate.MemRecorder{}
		if g, err := Setup(t.Context(), cfg, rec); err == nil {
			g.Close()
			t.Fatal("Setup succeeded with its NFLOG group taken")
		}
		assertGone(t, rec.Snapshot())
	})
	t.Run("invalid config has no side effect", func(t *testing.T) {
		cfg := w.config(t, Enforce, "*")
		rec := &jobstate.MemRecorder{}
		if _, err := Setup(t.Context(), cfg, rec); !errors.Is(err, ErrAllowsAll) {
			t.Fatalf("Setup with * = %v, want ErrAllowsAll", err)
		}
		if len(rec.Snapshot()) != 0 {
			t.Fatalf("recorded %v before validating", rec.Snapshot())
		}
	})
}

func TestGCAfterCrash(t *testing.T) {
	w := newWorld(t)
	rec := &jobstate.MemRecorder{}
	g, err := Setup(t.Context(), w.config(t, Enforce, "allowed.test"), rec)
	must(t, err)
	res := rec.Snapshot()
	// The launcher died: gc runs each record, newest first.
	for i := len(res) - 1; i >= 0; i-- {
		if err := GC(t.Context(), res[i]); err != nil {
			t.Errorf("GC %s: %v", res[i], err)
		}
	}
	assertGone(t, res)
	// A second gc, and the (in-process) guard's own Close, find nothing left.
	for _, r := range res {
		if err := GC(t.Context(), r); err != nil {
			t.Errorf("second GC %s: %v", r, err)
		}
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close after GC: %v", err)
	}
	kinds := map[string]bool{}
	for _, r := range res {
		kinds[r.Kind] = true
	}
	for _, k := range []string{KindLease, KindNetns, KindVeth, KindTable} {
		if !kinds[k] {
			t.Errorf("no %s record", k)
		}
	}
}

func TestPeers(t *testing.T) {
	w := newWorld(t)
	peer := func() Config {
		c := w.config(t, Enforce)
		c.Peers, c.PeerPorts = []netip.Prefix{testPool}, []PortRange{{29500, 29510}}
		return c
	}
	c1, c2, c3 := peer(), peer(), w.config(t, Enforce)
	c2.StateDir, c3.StateDir = c1.StateDir, c1.StateDir
	g1, g2, g3 := setup(t, c1), setup(t, c2), setup(t, c3)
	for _, k := range []string{"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"} {
		if g1.Env()[k] != JobIfName {
			t.Errorf("Env %s = %q", k, g1.Env()[k])
		}
	}
	// Rank 2 listens inside its namespace and reports who connected.
	echoCaller(t, g2, 29500)
	to := netip.AddrPortFrom(g2.JobAddr(), 29500).String()
	got, err := jobDial(g1, "tcp4", to)
	if err != nil || got != g1.JobAddr().String() {
		t.Fatalf("peer dial = %q, %v; want to be seen as %s (no NAT)", got, err, g1.JobAddr())
	}
	if _, err := jobDial(g1, "tcp4", netip.AddrPortFrom(g2.JobAddr(), 29600).String()); err == nil {
		t.Fatal("peer reachable outside the peer ports")
	}
	expectViolation(t, g1, violation.Network, "tcp", g2.JobAddr().String(), 29600, violation.Killed)
	if _, err := jobDial(g3, "tcp4", to); err == nil {
		t.Fatal("a job outside the allocation reached a peer")
	}
	expectViolation(t, g3, violation.Network, "tcp", g2.JobAddr().String(), 29500, violation.Killed)
}

func TestEgressBudget(t *testing.T) {
	w := newWorld(t)
	cfg := w.config(t, Enforce, "tcp:10.214.1.2:8080")
	cfg.EgressBudget = 64 << 10
	g := setup(t, cfg)
	must(t, inNetns(g.NetnsPath(), func() error {
		c, err := net.DialTimeout("tcp4", "10.214.1.2:8080", dialTimeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, 256<<10))
		return err
	}))
	v := nextViolation(t, g)
	if v.Kind != violation.EgressBytes || v.Threshold != float64(cfg.EgressBudget) || v.Measured <= v.Threshold || v.Action != violation.Killed {
		t.Fatalf("violation = %+v, want egress budget exceeded", v)
	}
	// Write returns once the data is in the socket buffer, not when it has
	// crossed the veth: the counter is checked against what the violation
	// measured (it only grows), not against the 256 KiB written.
	if b := g.EgressBytes()[allowedIP.String()]; float64(b) < v.Measured || b <= uint64(cfg.EgressBudget) {
		t.Fatalf("EgressBytes[%s] = %d, want at least the %.0f bytes the violation measured, over the budget %d", allowedIP, b, v.Measured, cfg.EgressBudget)
	}
}

// ownNetnsEnv names the test a re-executed test binary runs in a network
// namespace of its own (see inOwnNetns).
const ownNetnsEnv = "NETGUARD_TEST_OWN_NETNS"

// inOwnNetns runs the calling test again in a child test binary in a fresh
// network namespace, whose net.ipv4.ip_forward is the test's to set (it
// starts at 0), and reports false in the parent, which only relays the
// child's verdict. In the child it brings loopback up and reports true.
func inOwnNetns(t *testing.T) bool {
	t.Helper()
	testenv.RequireRoot(t)
	if os.Getenv(ownNetnsEnv) == t.Name() {
		lo, err := netlink.LinkByName("lo")
		must(t, err)
		must(t, netlink.LinkSetUp(lo))
		must(t, os.WriteFile(ipForwardSysctl, []byte("0"), 0o644))
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), ownNetnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace of its own:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s in its own network namespace: %v", t.Name(), err)
	}
	return false
}

// TestForwardingConfined: while a guard has switched forwarding on, the host
// routes for job veths only, and the last Close switches it off again. It
// runs in a network namespace of its own (forwarding is per namespace), so
// the host's own forwarding does not matter.
func TestForwardingConfined(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	w := newWorld(t)
	g := setup(t, w.config(t, Enforce, "tcp:10.214.2.2:8080"))
	if b, _ := os.ReadFile(ipForwardSysctl); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("ip_forward %q while a job runs, want 1", b)
	}
	if got, _ := jobDial(g, "tcp4", "10.214.2.2:8080"); got != "evil" {
		t.Fatalf("job cannot reach its allowed host: %q", got)
	}
	// From the "allowed" namespace through the host to the "evil" one: not a job veth.
	err := inNetns(w.ServerNetns("allowed"), func() error {
		c, err := net.DialTimeout("tcp4", "10.214.2.2:8080", dialTimeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("the host forwarded between two interfaces that are not job veths")
	}
	must(t, g.Close())
	if after, _ := os.ReadFile(ipForwardSysctl); strings.TrimSpace(string(after)) != "0" {
		t.Errorf("ip_forward %q after the last job, want 0 again", after)
	}
}

// TestForwardingHandedOver: something else on the host starts depending on
// forwarding while securetrain owns it (a bridge appears, as Docker's
// docker0 does): it forwards through that bridge while jobs run, and the
// last job leaves forwarding on, without securetrain's table or claim.
func TestForwardingHandedOver(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	w := newWorld(t)
	cfg := w.config(t, Enforce, "tcp:10.214.2.2:8080")
	g := setup(t, cfg)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "sttdock" + w.tag[:4]}}
	must(t, netlink.LinkAdd(br))
	t.Cleanup(func() { netlink.LinkDel(br) })
	must(t, g.Close())
	if after, _ := os.ReadFile(ipForwardSysctl); strings.TrimSpace(string(after)) != "1" {
		t.Errorf("ip_forward %q after the last job, want 1: %s appeared meanwhile and may depend on it", after, br.Name)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "forwarding-owned")); err == nil {
		t.Error("securetrain still claims forwarding after handing it over")
	}
	c, err := nftables.New()
	must(t, err)
	if _, err := c.ListTableOfFamily(fwdTable, nftables.TableFamilyINet); err == nil {
		t.Errorf("table %s left after the last job", fwdTable)
	}
}

// TestAllocationMates: jobs of one allocation on a node reach each other on
// the peer ports (no NAT); a job of another allocation does not; the first
// job takes the allocation's address; an allocation whose address is held
// by another one does not start; a job that leaves grants nothing to the
// next holder of its address.
func TestAllocationMates(t *testing.T) {
	w := newWorld(t)
	alloc := func(id string) Config {
		c := w.config(t, Enforce)
		c.Allocation, c.PeerPorts = id, []PortRange{{29500, 29510}}
		return c
	}
	ca0, ca1, cb := alloc("7"), alloc("7"), alloc("8")
	ca0.HostNames = map[string]netip.Addr{"node-a": netip.MustParseAddr("10.214.0.30")}
	ca1.StateDir, cb.StateDir = ca0.StateDir, ca0.StateDir
	a0 := setup(t, ca0)
	a1 := setup(t, ca1)
	b := setup(t, cb)
	if want, _ := AllocationAddr(testPool, "7", 1); a0.JobAddr() != want {
		t.Fatalf("first job of allocation 7 at %s, want the allocation's address %s", a0.JobAddr(), want)
	}
	if want, _ := AllocationAddr(testPool, "8", 1); b.JobAddr() != want {
		t.Fatalf("first job of allocation 8 at %s, want %s", b.JobAddr(), want)
	}
	if h := string(a0.Hosts("job-7")); !strings.HasSuffix(h, a0.JobAddr().String()+"\tjob-7\n10.214.0.30\tnode-a\n") {
		t.Errorf("Hosts() = %q, want the job's own address under its host name, then the allocation's node names", h)
	}
	echoCaller(t, a0, 29500)
	stopA1 := echoCaller(t, a1, 29500)
	to := func(g *Guard) string { return netip.AddrPortFrom(g.JobAddr(), 29500).String() }
	if got, err := jobDial(a1, "tcp4", to(a0)); err != nil || got != a1.JobAddr().String() {
		t.Fatalf("mate dial = %q, %v; want to be seen as %s (no NAT)", got, err, a1.JobAddr())
	}
	if got, err := jobDial(a0, "tcp4", to(a1)); err != nil || got != a0.JobAddr().String() {
		t.Fatalf("mate dial back = %q, %v; want %s", got, err, a0.JobAddr())
	}
	if _, err := jobDial(b, "tcp4", to(a0)); err == nil {
		t.Fatal("a job of another allocation reached the allocation")
	}
	expectViolation(t, b, violation.Network, "tcp", a0.JobAddr().String(), 29500, violation.Killed)

	// 16391 = 7 + the pool's 16384 slots: the same address, held.
	clash := alloc("16391")
	clash.StateDir = ca0.StateDir
	if g, err := Setup(t.Context(), clash, &jobstate.MemRecorder{}); err == nil {
		g.Close()
		t.Fatal("an allocation whose address is held started")
	} else if !strings.Contains(err.Error(), "allocation 16391: its address "+a0.JobAddr().String()+" (task 0) on this node is held by job "+ca0.JobID) {
		t.Fatalf("clash error = %v", err)
	}

	// a1 leaves; the next job at its address (a peer of a0 by its own
	// configuration) is not let in by a0.
	old := a1.JobAddr()
	if m := mates(t, a0); len(m) != 1 || m[0] != old {
		t.Fatalf("mates of the first job = %v, want [%s]", m, old)
	}
	stopA1() // the job's own sockets die with it
	must(t, a1.Close())
	if m := mates(t, a0); len(m) != 0 {
		t.Fatalf("mates of the first job after its mate left = %v, want none", m)
	}
	// Its veth goes with its namespace, moments later; until then a new
	// job prefers another slot.
	if !linkGoneWithin(a1.hostIf, 5*time.Second) {
		t.Fatalf("%s outlived its job", a1.hostIf)
	}
	cc := alloc("8")
	cc.StateDir = ca0.StateDir
	cc.Peers = []netip.Prefix{netip.PrefixFrom(a0.JobAddr(), 32)}
	c := setup(t, cc)
	if c.JobAddr() != old {
		t.Fatalf("new job at %s, want the address %s the leaver freed", c.JobAddr(), old)
	}
	if got, err := jobDial(c, "tcp4", to(a0)); err == nil {
		t.Fatalf("the next holder of a departed mate's address reached the allocation (%q)", got)
	}
}

// mates reads a guard's set of allocation mates from the kernel.
func mates(t *testing.T, g *Guard) []netip.Addr {
	t.Helper()
	c, err := nftables.New()
	must(t, err)
	s, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: g.Table()}, setMates)
	must(t, err)
	els, err := c.GetSetElements(s)
	must(t, err)
	var out []netip.Addr
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		out = append(out, a)
	}
	return out
}

// echoCaller listens on port inside g's namespace until the test ends and
// answers each connection with the address it came from.
func echoCaller(t *testing.T, g *Guard, port int) (stop func()) {
	t.Helper()
	var ln net.Listener
	must(t, inNetns(g.NetnsPath(), func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).IP.String()))
			c.Close()
		}
	}()
	return func() { ln.Close() }
}

// TestAllocationBlock: with a block of 4, task 2 takes the block's third
// address; a task outside the block takes some other free slot.
func TestAllocationBlock(t *testing.T) {
	w := newWorld(t)
	task := func(i int) Config {
		c := w.config(t, Enforce)
		c.Allocation, c.PeerPorts, c.AllocationBlock, c.AllocationIndex = "9", []PortRange{{29500, 29510}}, 4, i
		return c
	}
	c2, c5 := task(2), task(5)
	c5.StateDir = c2.StateDir
	g2, g5 := setup(t, c2), setup(t, c5)
	block, err := AllocationAddrs(testPool, "9", 4)
	must(t, err)
	if g2.JobAddr() != block[2] {
		t.Errorf("task 2 at %s, want %s of block %v", g2.JobAddr(), block[2], block)
	}
	if slices.Contains(block, g5.JobAddr()) {
		t.Errorf("task 5 (outside a block of 4) at %s, inside the block %v", g5.JobAddr(), block)
	}
	if m := mates(t, g2); len(m) != 1 || m[0] != g5.JobAddr() {
		t.Errorf("mates of task 2 = %v, want [%s]", m, g5.JobAddr())
	}
}

// TestGCOfAllocationMate: a job of an allocation whose launcher died is
// collected by gc; its mate's set forgets its address then, not only on a
// clean Close.
func TestGCOfAllocationMate(t *testing.T) {
	w := newWorld(t)
	alloc := func() Config {
		c := w.config(t, Enforce)
		c.Allocation, c.PeerPorts = "11", []PortRange{{29500, 29510}}
		return c
	}
	c0, c1 := alloc(), alloc()
	c1.StateDir = c0.StateDir
	g0 := setup(t, c0)
	rec := &jobstate.MemRecorder{}
	g1, err := Setup(t.Context(), c1, rec)
	must(t, err)
	if m := mates(t, g0); len(m) != 1 || m[0] != g1.JobAddr() {
		t.Fatalf("mates = %v, want [%s]", m, g1.JobAddr())
	}
	res := rec.Snapshot()
	for i := len(res) - 1; i >= 0; i-- {
		if err := GC(t.Context(), res[i]); err != nil {
			t.Errorf("GC %s: %v", res[i], err)
		}
	}
	if m := mates(t, g0); len(m) != 0 {
		t.Errorf("mates after gc of the crashed mate = %v, want none", m)
	}
	if err := g1.Close(); err != nil {
		t.Errorf("Close after GC: %v", err)
	}
}

// TestCloseCutsVethOfHeldNamespace: Close lets the kernel remove the job's
// veth pair with its namespace instead of deleting it (which waits for an
// RCU grace period). A process that still holds the namespace (a sandbox
// that outlived its job, or anyone who opened it) keeps the pair alive: the
// host end is down, so it reaches neither the host's services nor the
// allowed server, the next job of the state directory takes another slot,
// and the pair goes when the namespace is let go.
func TestCloseCutsVethOfHeldNamespace(t *testing.T) {
	w := newWorld(t)
	cfg := w.config(t, Enforce, "tcp:10.214.1.2:9090")
	rec := &jobstate.MemRecorder{}
	g, err := Setup(t.Context(), cfg, rec)
	must(t, err)
	t.Cleanup(func() { g.Close() })
	hostSvc := netip.AddrPortFrom(g.ProxyAddr(), uint16(w.hostSvc)).String()
	if got, err := jobDial(g, "tcp4", "10.214.1.2:9090"); got != "allowed" {
		t.Fatalf("dial 10.214.1.2:9090 before Close = %q, %v", got, err)
	}
	held, err := os.Open(g.NetnsPath())
	must(t, err)
	defer held.Close()
	must(t, g.Close())
	heldPath := fmt.Sprintf("/proc/self/fd/%d", held.Fd())
	for _, addr := range []string{hostSvc, "10.214.1.2:9090"} {
		err := inNetns(heldPath, func() error {
			c, err := net.DialTimeout("tcp4", addr, dialTimeout)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			t.Errorf("the held namespace reached %s after Close", addr)
		}
	}
	if !releasedVeth(g.hostIf) {
		t.Fatalf("after Close with the namespace held, %s is not a veth that is down", g.hostIf)
	}
	cfg2 := cfg
	cfg2.JobID = "t" + randTag()
	g2 := setup(t, cfg2)
	if g2.hostIf == g.hostIf {
		t.Errorf("the next job took %s, whose veth is still there", g.hostIf)
	}
	held.Close()
	if !linkGoneWithin(g.hostIf, 2*time.Second) {
		t.Errorf("%s outlived its namespace", g.hostIf)
	}
	assertGone(t, rec.Snapshot())
}

// TestStaleVethOfSlot: a job whose slot still has an earlier job's veth
// (down, going away) removes it; a link of that name that is up is not an
// earlier job's, and Setup refuses rather than take it down.
func TestStaleVethOfSlot(t *testing.T) {
	w := newWorld(t)
	for _, up := range []bool{false, true} {
		cfg := w.config(t, Enforce)
		cfg.Allocation, cfg.AllocationBlock, cfg.PeerPorts = "stale"+randTag(), 1, []PortRange{{29500, 29510}}
		name := vethPrefix + strconv.FormatInt(int64(AllocationSlot(cfg.Pool, cfg.Allocation, 1)), 16)
		stale := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		must(t, netlink.LinkAdd(stale))
		t.Cleanup(func() { netlink.LinkDel(stale) })
		if up {
			must(t, netlink.LinkSetUp(stale))
		}
		rec := &jobstate.MemRecorder{}
		g, err := Setup(t.Context(), cfg, rec)
		switch {
		case !up && err != nil:
			t.Fatalf("Setup over a released veth %s: %v", name, err)
		case up && err == nil:
			g.Close()
			t.Fatalf("Setup took over %s, which is up", name)
		case up && !strings.Contains(err.Error(), "file exists"):
			t.Errorf("Setup over a live %s: %v; want file exists", name, err)
		}
		if g != nil {
			must(t, g.Close())
		}
		res := rec.Snapshot()
		if up {
			// Still the other owner's, and up.
			if l, err := netlink.LinkByName(name); err != nil || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("the live %s was touched: %v", name, err)
			}
			res = slices.DeleteFunc(res, func(r jobstate.Resource) bool { return r.Kind == KindVeth })
		}
		assertGone(t, res)
	}
}

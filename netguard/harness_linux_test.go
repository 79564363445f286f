package netguard

// Kernel-tier test harness: the shared test world (internal/nettest: an
// "allowed" and an "evil" server in their own namespaces, a test upstream
// resolver, a backstop that keeps job traffic on the machine) plus the
// job-side actions run inside a Guard's namespace.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/securetrain/securetrain/internal/nettest"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/violation"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// The world of netguard's tests (internal/nettest, octet 214): servers in
// 10.214.0.0/16, job pool 10.215.0.0/24.
var (
	allowedIP = netip.MustParseAddr("10.214.1.2")
	evilIP    = netip.MustParseAddr("10.214.2.2")
	evil6     = netip.MustParseAddr("fd99:214::2")
	testPool  = netip.MustParsePrefix("10.215.0.0/24")
	testRange = netip.MustParsePrefix("10.214.0.0/16")
)

// testNFLogGroup keeps these tests' NFLOG groups apart from the launcher's
// (DefaultNFLogGroup) when e2e tests run at the same time.
const testNFLogGroup = 0x6300

var inNetns = nettest.InNetns

func randTag() string { return nettest.RandTag() }

type world struct {
	*nettest.World
	tag      string
	resolver string // upstream "127.0.0.1:port"
	hostSvc  int    // a TCP port the host listens on (must stay unreachable)
}

func (w *world) seen(name string) bool { return w.Seen(name) }

// newWorld builds the test namespaces, servers, resolver and harness guard,
// and removes them all at cleanup.
func newWorld(t testing.TB) *world {
	t.Helper()
	testenv.RequireRoot(t)
	nw := nettest.New(t, nettest.Options{Octet: 214, JobIfPrefix: vethPrefix})
	if nw.AllowedIP != allowedIP || nw.EvilIP != evilIP || nw.Evil6 != evil6 || nw.Pool != testPool || nw.Servers != testRange {
		t.Fatalf("nettest world %+v does not match this package's constants", nw)
	}
	return &world{World: nw, tag: nw.Tag, resolver: nw.Resolver, hostSvc: nw.HostPort}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testConfig is a Config for this world.
func (w *world) config(t testing.TB, mode Mode, allow ...string) Config {
	cfg := Config{JobID: "t" + randTag(), Mode: mode, Upstreams: []string{w.resolver},
		InternalRanges: []netip.Prefix{testRange}, Pool: testPool, StateDir: t.TempDir(), NFLogGroup: testNFLogGroup}
	for _, a := range allow {
		r, err := ParseRule(a)
		must(t, err)
		cfg.Allow = append(cfg.Allow, r)
	}
	return cfg
}

// setup starts a guard and registers Close plus the leak check.
func setup(t testing.TB, cfg Config) *Guard {
	t.Helper()
	rec := &jobstate.MemRecorder{}
	g, err := Setup(t.Context(), cfg, rec)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := g.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		assertGone(t, rec.Snapshot())
	})
	return g
}

// assertGone fails for any recorded resource still present.
func assertGone(t testing.TB, res []jobstate.Resource) {
	t.Helper()
	for _, r := range res {
		var present bool
		switch r.Kind {
		case KindNetns:
			_, err := os.Stat("/var/run/netns/" + r.Name)
			present = err == nil
		case KindVeth:
			// Close lets the kernel remove the pair with the namespace
			// (releaseVeth): gone within moments, not at once.
			present = !linkGoneWithin(r.Name, 2*time.Second)
		case KindTable:
			c, _ := nftables.New()
			_, err := c.ListTableOfFamily(r.Name, nftables.TableFamilyINet)
			present = err == nil
		case KindLease:
			_, err := os.Stat(leasePath(r.Attrs["state_dir"], atoi(r.Attrs["slot"])))
			present = err == nil
		case KindRoute:
			present = ourRoute(t, netip.MustParsePrefix(r.Name))
		case KindForwarding:
			// The sysctl's value is TestForwardingConfined's: a Close may
			// hand forwarding over (TestForwardingHandedOver).
			_, err := os.Stat(r.Attrs["state_dir"] + "/forwarding-owned")
			present = err == nil
			c, _ := nftables.New()
			if _, err := c.ListTableOfFamily(fwdTable, nftables.TableFamilyINet); err == nil {
				present = true
			}
		}
		if present {
			t.Errorf("leaked after Close: %s", r)
		}
	}
}

// linkGoneWithin waits up to d for the link to be gone.
func linkGoneWithin(name string, d time.Duration) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if _, err := netlink.LinkByName(name); err != nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// Job-side actions, run inside the job's namespace.

const dialTimeout = 1500 * time.Millisecond

func jobDial(g *Guard, network, addr string) (string, error) {
	var got string
	err := inNetns(g.NetnsPath(), func() error {
		c, err := net.DialTimeout(network, addr, dialTimeout)
		if err != nil {
			return err
		}
		// Closed with a reset: no socket of the test's own lingers in the
		// job's namespace (and keeps it, and its veth, alive) after it.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(dialTimeout))
		b := make([]byte, 64)
		n, err := c.Read(b)
		got = string(b[:n])
		return err
	})
	return got, err
}

func jobLookup(g *Guard, name string) (*dns.Msg, error) {
	var r *dns.Msg
	err := inNetns(g.NetnsPath(), func() error {
		c := &dns.Client{Timeout: 3 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		var err error
		r, _, err = c.Exchange(m, netip.AddrPortFrom(g.ProxyAddr(), 53).String())
		return err
	})
	return r, err
}

// jobPing sends one ICMP echo through a raw socket and waits for a reply.
func jobPing(g *Guard, dst netip.Addr) error {
	return inNetns(g.NetnsPath(), func() error {
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: 1, Data: []byte("x")}}
		b, _ := msg.Marshal(nil)
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(dialTimeout))
		buf := make([]byte, 512)
		_, _, err = c.ReadFrom(buf)
		return err
	})
}

// jobRaw sends one raw IP packet of protocol 253 (experimental).
func jobRaw(g *Guard, dst netip.Addr) error {
	return inNetns(g.NetnsPath(), func() error {
		c, err := net.ListenPacket("ip4:253", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteTo([]byte("exfil"), &net.IPAddr{IP: dst.AsSlice()})
		return err
	})
}

// jobUDP sends one UDP datagram.
func jobUDP(g *Guard, addr string) error {
	return inNetns(g.NetnsPath(), func() error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
}

// nextViolation waits for the next violation (failing after 10 s: the
// events are synchronous with the packets; the bound only ends a broken run).
func nextViolation(t testing.TB, g *Guard) violation.Violation {
	t.Helper()
	select {
	case v := <-g.Violations():
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no violation event")
	}
	return violation.Violation{}
}

// expectViolation waits for the next violation and checks it.
func expectViolation(t testing.TB, g *Guard, kind violation.Kind, proto, dest string, port int, action violation.Action) violation.Violation {
	t.Helper()
	v := nextViolation(t, g)
	if v.Kind != kind || v.Proto != proto || v.Dest != dest || v.Port != port || v.Action != action || v.Job != g.cfg.JobID {
		t.Fatalf("violation = %+v, want kind %s %s %s port %d action %s", v, kind, proto, dest, port, action)
	}
	return v
}

// noPendingViolation proves nothing was reported before a marker: it sends
// a forbidden UDP datagram to a fresh port and expects exactly that event next.
func noPendingViolation(t testing.TB, g *Guard, port int) {
	t.Helper()
	must(t, jobUDP(g, netip.AddrPortFrom(evilIP, uint16(port)).String()))
	v := nextViolation(t, g)
	if v.Dest != evilIP.String() || v.Port != port {
		t.Fatalf("unexpected violation before marker: %+v", v)
	}
}

func listNetns() ([]string, error) {
	es, err := os.ReadDir("/var/run/netns")
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}

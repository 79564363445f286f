package netguard

// Kernel-tier test harness: an "allowed" and an "evil" server, each in its
// own network namespace reached through a veth from the host, a test
// upstream resolver on loopback, and a harness table that drops any job
// traffic bound for something other than the test namespaces.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/miekg/dns"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/violation"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

var (
	allowedIP = netip.MustParseAddr("10.214.1.2")
	evilIP    = netip.MustParseAddr("10.214.2.2")
	evil6     = netip.MustParseAddr("fd99::2")
	testPool  = netip.MustParsePrefix("10.215.0.0/24")
	testRange = netip.MustParsePrefix("10.214.0.0/16")
)

// inNetns runs f on a thread switched into the namespace at path; sockets f
// creates stay in that namespace.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err) // thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func randTag() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type world struct {
	tag      string
	resolver string // upstream "127.0.0.1:port"
	mu       sync.Mutex
	queries  []string
	hostSvc  int // a TCP port the host listens on (must stay unreachable)
}

func (w *world) seen(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, q := range w.queries {
		if q == name {
			return true
		}
	}
	return false
}

// newWorld builds the test namespaces, servers, resolver and harness guard,
// and removes them all at cleanup.
func newWorld(t testing.TB) *world {
	t.Helper()
	testenv.RequireRoot(t)
	w := &world{tag: randTag()}
	w.addServer(t, "a", allowedIP, netip.Addr{}, "allowed")
	w.addServer(t, "e", evilIP, evil6, "evil")
	w.startResolver(t, map[string]string{
		"allowed.test.": allowedIP.String(), "api.svc.test.": allowedIP.String(),
		"evil.test.": evilIP.String(), "rebind.test.": "127.0.0.1", "meta.test.": "169.254.169.254",
	})
	w.harnessGuard(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serve(ln, "host")
	w.hostSvc = ln.Addr().(*net.TCPAddr).Port
	return w
}

func (w *world) addServer(t testing.TB, role string, ip, ip6 netip.Addr, greeting string) {
	ns, hostIf := "stt-"+w.tag+"-"+role, "stt"+role+w.tag
	if err := newNamedNetns(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := delLink(hostIf); err != nil {
			t.Error(err)
		}
		if err := delNetns(ns); err != nil {
			t.Error(err)
		}
	})
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h))}); err != nil {
		t.Fatal(err)
	}
	host, _ := netlink.LinkByName(hostIf)
	must(t, netlink.AddrAdd(host, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(ip.Prev(), 30))}))
	if ip6.IsValid() {
		must(t, netlink.AddrAdd(host, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(ip6.Prev(), 64)), Flags: unix.IFA_F_NODAD}))
	}
	must(t, netlink.LinkSetUp(host))
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	lo, _ := nh.LinkByName("lo")
	must(t, nh.LinkSetUp(lo))
	eth, _ := nh.LinkByName("eth0")
	must(t, nh.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(ip, 30))}))
	if ip6.IsValid() {
		must(t, nh.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(ip6, 64)), Flags: unix.IFA_F_NODAD}))
	}
	must(t, nh.LinkSetUp(eth))
	must(t, nh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(ip.Prev().AsSlice())}))
	var lns []net.Listener
	must(t, inNetns("/var/run/netns/"+ns, func() error {
		for _, addr := range []string{":8080", ":9090", ":53"} {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	}))
	for _, ln := range lns {
		t.Cleanup(func() { ln.Close() })
		go serve(ln, greeting)
	}
}

func serve(ln net.Listener, greeting string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			c.Write([]byte(greeting))
			io.Copy(io.Discard, io.LimitReader(c, 1<<20))
			c.Close()
		}()
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (w *world) startResolver(t testing.TB, records map[string]string) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(rw dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		w.mu.Lock()
		w.queries = append(w.queries, strings.ToLower(strings.TrimSuffix(q.Name, ".")))
		w.mu.Unlock()
		if a, ok := records[strings.ToLower(q.Name)]; ok && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(a)})
		} else if !ok {
			m.Rcode = dns.RcodeNameError
		}
		rw.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	w.resolver = pc.LocalAddr().String()
}

// harnessGuard is the backstop behind netguard: in the forward hook, after
// netguard's own chains, it drops any job packet (from a stg* veth) that is
// routed anywhere but the test range or the test pool, so a netguard bug
// cannot send test traffic off the machine.
func (w *world) harnessGuard(t testing.TB) {
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "stt-harness-" + w.tag})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "backstop", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(100), Policy: &accept})
	fromJob := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(vethPrefix)},
	}
	// IPv4 outside 10.214.0.0/15 (test servers and test pool): drop.
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(append([]expr.Any{}, fromJob...),
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 254, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{10, 214, 0, 0}},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	// IPv6 global unicast (2000::/3): drop.
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(append([]expr.Any{}, fromJob...),
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0xe0}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x20}},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	must(t, c.Flush())
	t.Cleanup(func() {
		if err := delTable("stt-harness-" + w.tag); err != nil {
			t.Error(err)
		}
	})
}

// testConfig is a Config for this world.
func (w *world) config(t testing.TB, mode Mode, allow ...string) Config {
	cfg := Config{JobID: "t" + randTag(), Mode: mode, Upstreams: []string{w.resolver},
		InternalRanges: []netip.Prefix{testRange}, Pool: testPool, StateDir: t.TempDir()}
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
			_, err := netlink.LinkByName(r.Name)
			present = err == nil
		case KindTable:
			c, _ := nftables.New()
			_, err := c.ListTableOfFamily(r.Name, nftables.TableFamilyINet)
			present = err == nil
		case KindLease:
			_, err := os.Stat(leasePath(r.Attrs["state_dir"], atoi(r.Attrs["slot"])))
			present = err == nil
		case KindForwarding:
			b, _ := os.ReadFile(ipForwardSysctl)
			_, err := os.Stat(r.Attrs["state_dir"] + "/forwarding-owned")
			present = strings.TrimSpace(string(b)) != "0" || err == nil
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

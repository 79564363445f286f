package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/miekg/dns"
	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Backstop is the only IPv4 range job traffic may be forwarded to while a
// World exists: every world's servers and job pools lie inside it.
var Backstop = netip.MustParsePrefix("10.208.0.0/12")

// Ports the test servers listen on (TCP); each connection gets the server's
// greeting ("allowed" or "evil") and is read until EOF.
var Ports = []int{8080, 9090, 53}

// Options shape a World.
type Options struct {
	// Octet places the world: servers in 10.Octet.0.0/16, the job pool
	// 10.(Octet+1).0.0/24. Even, from 208 to 222; default 214.
	Octet byte
	// JobIfPrefix is the name prefix of job veths on the host (netguard's
	// "stg"); the backstop drops their traffic outside Backstop. Required.
	JobIfPrefix string
	// Records are extra A records of the test resolver (name -> IPv4).
	Records map[string]string
}

// World is one test's hosts, resolver and backstop.
type World struct {
	Tag       string       // random, in every name the world creates
	Resolver  string       // the test upstream resolver, "127.0.0.1:port" (UDP)
	AllowedIP netip.Addr   // the allowed server (allowed.test, api.svc.test)
	EvilIP    netip.Addr   // the evil server (evil.test)
	Evil6     netip.Addr   // the evil server's IPv6 address
	Servers   netip.Prefix // range of both servers: declare it internal
	Pool      netip.Prefix // a job address pool no other world uses
	HostPort  int          // a TCP port the host listens on (jobs must not reach it)

	mu      sync.Mutex
	queries []string
}

// New builds a World and removes it at t's cleanup. It needs root.
func New(t testing.TB, o Options) *World {
	t.Helper()
	if o.Octet == 0 {
		o.Octet = 214
	}
	if o.Octet%2 != 0 || !Backstop.Contains(netip.AddrFrom4([4]byte{10, o.Octet + 1, 0, 0})) {
		t.Fatalf("nettest: Octet %d: want an even number from 208 to 222", o.Octet)
	}
	if o.JobIfPrefix == "" {
		t.Fatal("nettest: Options.JobIfPrefix is required")
	}
	w := &World{
		Tag:       RandTag(),
		AllowedIP: netip.AddrFrom4([4]byte{10, o.Octet, 1, 2}),
		EvilIP:    netip.AddrFrom4([4]byte{10, o.Octet, 2, 2}),
		Evil6:     netip.MustParseAddr(fmt.Sprintf("fd99:%d::2", o.Octet)),
		Servers:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, o.Octet, 0, 0}), 16),
		Pool:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, o.Octet + 1, 0, 0}), 24),
	}
	// A world left behind by a killed test would answer for these
	// addresses (with nobody listening): refuse to stack on it.
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	must(t, err)
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && (w.Servers.Contains(ip) || w.Pool.Contains(ip)) {
			t.Fatalf("nettest: host address %s on %s is inside this world's ranges (%s, %s): a world of a killed test run? remove it (ip link del %s)", ip, a.Label, w.Servers, w.Pool, a.Label)
		}
	}
	w.addServer(t, "a", w.AllowedIP, netip.Addr{}, "allowed")
	w.addServer(t, "e", w.EvilIP, w.Evil6, "evil")
	records := map[string]string{
		"allowed.test.": w.AllowedIP.String(), "api.svc.test.": w.AllowedIP.String(),
		"evil.test.": w.EvilIP.String(), "rebind.test.": "127.0.0.1", "meta.test.": "169.254.169.254",
	}
	for k, v := range o.Records {
		records[dns.Fqdn(strings.ToLower(k))] = v
	}
	w.startResolver(t, records)
	w.backstop(t, o.JobIfPrefix)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go Serve(ln, "host")
	w.HostPort = ln.Addr().(*net.TCPAddr).Port
	return w
}

// Seen reports whether the test resolver was asked name (no trailing dot,
// any case).
func (w *World) Seen(name string) bool {
	return slices.Contains(w.Queries(), strings.ToLower(strings.TrimSuffix(name, ".")))
}

// Queries are the names the test resolver was asked, in order.
func (w *World) Queries() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.queries)
}

// ServerNetns is the namespace path of the "allowed" or "evil" server.
func (w *World) ServerNetns(server string) string {
	return filepath.Join("/var/run/netns", "stt-"+w.Tag+"-"+server[:1])
}

func (w *World) addServer(t testing.TB, role string, ip, ip6 netip.Addr, greeting string) {
	t.Helper()
	ns, hostIf := "stt-"+w.Tag+"-"+role, "stt"+role+w.Tag
	if err := hostnet.NewNamedNetns(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hostnet.DeleteLink(hostIf); err != nil {
			t.Error(err)
		}
		if err := hostnet.DeleteNetns(ns); err != nil {
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
	host, err := netlink.LinkByName(hostIf)
	must(t, err)
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
	lo, err := nh.LinkByName("lo")
	must(t, err)
	must(t, nh.LinkSetUp(lo))
	eth, err := nh.LinkByName("eth0")
	must(t, err)
	must(t, nh.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(ip, 30))}))
	if ip6.IsValid() {
		must(t, nh.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(ip6, 64)), Flags: unix.IFA_F_NODAD}))
	}
	must(t, nh.LinkSetUp(eth))
	must(t, nh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(ip.Prev().AsSlice())}))
	var lns []net.Listener
	must(t, InNetns("/var/run/netns/"+ns, func() error {
		for _, p := range Ports {
			ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	}))
	for _, ln := range lns {
		t.Cleanup(func() { ln.Close() })
		go Serve(ln, greeting)
	}
}

// Serve answers every connection on ln with greeting, then reads it to EOF
// (at most 1 MiB), until ln is closed.
func Serve(ln net.Listener, greeting string) {
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

func (w *World) startResolver(t testing.TB, records map[string]string) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(rw dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if len(req.Question) == 0 {
			m.Rcode = dns.RcodeFormatError
			rw.WriteMsg(m)
			return
		}
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
	w.Resolver = pc.LocalAddr().String()
}

// backstop sits behind the confinement under test: in the forward hook,
// after netguard's own chains, it drops any job packet (from a veth named
// prefix*) routed anywhere but Backstop, and any IPv6 global unicast one.
func (w *World) backstop(t testing.TB, prefix string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	name := "stt-harness-" + w.Tag
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "backstop", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(100), Policy: &accept})
	fromJob := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)}, // a prefix: compares len(prefix) bytes
	}
	net4 := Backstop.Addr().As4()
	mask := net.CIDRMask(Backstop.Bits(), 32)
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(slices.Clone(fromJob),
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: net4[:]},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	// IPv6 global unicast (2000::/3): drop.
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(slices.Clone(fromJob),
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0xe0}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x20}},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})})
	must(t, c.Flush())
	t.Cleanup(func() {
		if err := hostnet.DeleteTable(name); err != nil {
			t.Error(err)
		}
	})
}

// InNetns runs f on a thread switched into the namespace at path; sockets f
// creates stay in that namespace.
func InNetns(path string, f func() error) error {
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

// RandTag is 6 random hex digits.
func RandTag() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package netguard

// The job's boundary from the other side: nobody on the host (any user,
// root included, any route) reaches into a job or makes its DNS proxy judge
// a query, and a full egress accounting set fails closed.

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/securetrain/securetrain/violation"
)

// jobListen listens on TCP and UDP port inside g's namespace until the test
// ends and returns the bytes each has received so far.
func jobListen(t *testing.T, g *Guard, port int) (received func() int) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	must(t, inNetns(g.NetnsPath(), func() (err error) {
		if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}))
	t.Cleanup(func() { ln.Close(); pc.Close() })
	got := make(chan int, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("secret"))
			b := make([]byte, 256)
			n, _ := c.Read(b)
			got <- n + 1 // the connection itself counts
			c.Close()
		}
	}()
	go func() {
		b := make([]byte, 256)
		for {
			n, _, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			got <- n
		}
	}()
	total := 0
	return func() int {
		for {
			select {
			case n := <-got:
				total += n
			default:
				return total
			}
		}
	}
}

// poke connects (TCP) or sends (UDP) to addr from the calling namespace
// (ns "" for the host) and returns the bytes read back.
func poke(ns, network, addr string) (int, error) {
	do := func() (int, error) {
		c, err := net.DialTimeout(network, addr, 700*time.Millisecond)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(700 * time.Millisecond))
		if _, err := c.Write([]byte("hello job")); err != nil {
			return 0, err
		}
		b := make([]byte, 64)
		return c.Read(b)
	}
	if ns == "" {
		return do()
	}
	var n int
	err := inNetns(ns, func() (err error) { n, err = do(); return err })
	return n, err
}

// askProxy sends one query for name to the job's proxy from namespace ns
// ("" for the host) and reports whether any answer came back.
func askProxy(ns string, g *Guard, network, name string) bool {
	var answered bool
	ask := func() error {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		r, _, err := (&dns.Client{Net: network, Timeout: 700 * time.Millisecond}).Exchange(m, netip.AddrPortFrom(g.ProxyAddr(), 53).String())
		answered = err == nil && r != nil
		return nil
	}
	if ns == "" {
		ask()
	} else {
		inNetns(ns, ask)
	}
	return answered
}

// TestInboundRefused: the job listens on TCP and UDP 7777. The host (root,
// this test), another namespace routed through the host, and another job
// get nothing in, each counted in Refused().Inbound and none a violation of
// the job; the job's own connections and DNS answers still come back.
func TestInboundRefused(t *testing.T) {
	w := newWorld(t)
	cfg := w.config(t, Enforce, "allowed.test:8080")
	g := setup(t, cfg)
	other := w.config(t, Enforce)
	other.StateDir = cfg.StateDir
	o := setup(t, other)
	received := jobListen(t, g, 7777)
	to := netip.AddrPortFrom(g.JobAddr(), 7777).String()

	for _, c := range []struct{ who, ns, network string }{
		{"host process, TCP", "", "tcp4"},
		{"host process, UDP", "", "udp4"},
		{"routed namespace, TCP", w.ServerNetns("evil"), "tcp4"},
		{"routed namespace, UDP", w.ServerNetns("evil"), "udp4"},
	} {
		if n, err := poke(c.ns, c.network, to); n > 0 {
			t.Errorf("%s: read %d bytes from the job (%v)", c.who, n, err)
		}
	}
	// Another job: dropped on its own way out (and would be on the way in).
	if _, err := jobDial(o, "tcp4", to); err == nil {
		t.Error("another job connected to the job")
	}
	expectViolation(t, o, violation.Network, "tcp", g.JobAddr().String(), 7777, violation.Killed)
	time.Sleep(200 * time.Millisecond) // the UDP reader drains
	if n := received(); n != 0 {
		t.Errorf("the job received %d bytes from outside", n)
	}
	if ref := g.Refused(); ref.Inbound < 4 {
		t.Errorf("Refused().Inbound = %d, want at least the 4 attempts counted", ref.Inbound)
	} else {
		t.Logf("inbound packets refused: %d", ref.Inbound)
	}
	// The job's own traffic still flows both ways: DNS answers from the
	// proxy (sent by the host) and replies of the allowed server.
	if r, err := jobLookup(g, "allowed.test"); err != nil || len(r.Answer) != 1 {
		t.Fatalf("the job's lookup = %v, %v", r, err)
	}
	if got, err := jobDial(g, "tcp4", "10.214.1.2:8080"); got != "allowed" {
		t.Fatalf("the job's own connection = %q, %v", got, err)
	}
	noPendingViolation(t, g, 40002)
}

// TestProxyServesItsJobOnly: queries for a refused name sent to the job's
// proxy by the host (root, over loopback), by a namespace routed through
// the host, and from that namespace with the job's address as source get
// no answer and are not the job's violation; the job's own query is.
func TestProxyServesItsJobOnly(t *testing.T) {
	w := newWorld(t)
	g := setup(t, w.config(t, Enforce, "allowed.test:8080"))
	evilNs := w.ServerNetns("evil")
	for _, network := range []string{"udp", "tcp"} {
		if askProxy("", g, network, "kill-me.invalid") {
			t.Errorf("the proxy answered the host over %s", network)
		}
		if askProxy(evilNs, g, network, "kill-me.invalid") {
			t.Errorf("the proxy answered another namespace over %s", network)
		}
	}
	// Spoofed: the job's address on the attacker's side.
	must(t, inNetns(evilNs, func() error {
		c, err := net.ListenPacket("udp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		defer c.Close()
		m := new(dns.Msg)
		m.SetQuestion("kill-me-spoofed.invalid.", dns.TypeA)
		b, _ := m.Pack()
		_, err = c.WriteTo(b, net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.ProxyAddr(), 53)))
		return err
	}))
	if w.seen("kill-me.invalid") {
		t.Error("a foreign query reached the upstream resolver")
	}
	noPendingViolation(t, g, 40003)
	ref := g.Refused()
	if ref.ProxyPackets == 0 {
		t.Errorf("Refused() = %+v: the foreign queries were not counted", ref)
	}
	t.Logf("refused at the proxy: %+v", ref)
	// The job itself is still served and judged.
	if r, err := jobLookup(g, "evil.test"); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("the job's own lookup of evil.test = %v, %v; want REFUSED", r, err)
	}
	expectViolation(t, g, violation.DNS, "dns", "evil.test", 0, violation.Killed)
}

// TestEgressSetFullFailsClosed: with the per-destination accounting set
// full (65535 addresses), a packet to an allowed destination not in it
// yet is dropped and reported, never accepted uncounted; even in enforce
// it is not a kill (the insert also fails for a moment while the kernel
// grows the set's hash table).
func TestEgressSetFullFailsClosed(t *testing.T) {
	w := newWorld(t)
	g := setup(t, w.config(t, Enforce, "tcp:10.214.1.2:8080"))
	c, err := nftables.New()
	must(t, err)
	s := g.sets[setEgress]
	base := netip.MustParseAddr("10.100.0.0")
	a := base
	for n := 0; n < egressSetSize; {
		var els []nftables.SetElement
		for ; n < egressSetSize && len(els) < 2048; n++ {
			els = append(els, nftables.SetElement{Key: a.AsSlice()})
			a = a.Next()
		}
		must(t, c.SetAddElements(s, els))
		must(t, c.Flush())
	}
	// One more does not fit: the kernel enforces the size.
	must(t, c.SetAddElements(s, []nftables.SetElement{{Key: a.AsSlice()}}))
	if err := c.Flush(); err == nil {
		t.Fatalf("set %s took element %d", setEgress, egressSetSize+1)
	}
	got, err := jobDial(g, "tcp4", "10.214.1.2:8080")
	if got != "" || err == nil {
		t.Fatalf("allowed destination reached past a full accounting set: %q, %v", got, err)
	}
	v := nextViolation(t, g)
	if v.Kind != violation.Network || v.Dest != allowedIP.String() || v.Port != 8080 || v.Action != violation.Blocked {
		t.Fatalf("violation = %+v, want the dropped packet to %s:8080 reported", v, allowedIP)
	}
	if g.EgressBytes()[allowedIP.String()] != 0 {
		t.Errorf("EgressBytes = %d for %s", g.EgressBytes()[allowedIP.String()], allowedIP)
	}
}

package netguard

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeUpstream answers from a table and remembers every name it was asked.
type fakeUpstream struct {
	mu    sync.Mutex
	asked []string
	addr  string
}

func startUpstream(t *testing.T, records map[string][]string) *fakeUpstream {
	u := &fakeUpstream{}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		u.mu.Lock()
		u.asked = append(u.asked, strings.TrimSuffix(q.Name, "."))
		u.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		addrs, ok := records[q.Name]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, a := range addrs {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(a)})
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	u.addr = pc.LocalAddr().String()
	return u
}

func (u *fakeUpstream) wasAsked(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Contains(u.asked, name)
}

type added struct {
	rules []int
	addrs []netip.Addr
	ttl   time.Duration
}

// calls records what the proxy reported, under a lock (the proxy's
// goroutines write, the test reads).
type calls struct {
	mu      sync.Mutex
	adds    []added
	refused []string
}

func (c *calls) Adds() []added {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.adds)
}

func (c *calls) Refused() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.refused)
}

func startProxy(t *testing.T, mode Mode, up string, addErr error, allow ...string) (*dnsProxy, string, *calls) {
	cs := &calls{}
	p := &dnsProxy{rules: mustRules(t, allow...), mode: mode, upstreams: []string{up}, minTTL: 30 * time.Second,
		internal: prefixes("10.214.0.0/16"), denied: prefixes("169.254.0.0/16", "192.0.2.1/32"),
		log: slog.New(slog.DiscardHandler), timeout: 2 * time.Second,
		add: func(r []int, a []netip.Addr, ttl time.Duration) error {
			cs.mu.Lock()
			defer cs.mu.Unlock()
			cs.adds = append(cs.adds, added{r, a, ttl})
			return addErr
		},
		refused:  func(n string) { cs.mu.Lock(); cs.refused = append(cs.refused, n); cs.mu.Unlock() },
		resolved: func(string, []netip.Addr) {},
		client:   netip.MustParseAddr("127.0.0.1"),
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.serve(&dns.Server{PacketConn: pc, Handler: p})
	t.Cleanup(func() { p.close() })
	return p, pc.LocalAddr().String(), cs
}

func ask(t *testing.T, server, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("ask %s: %v", name, err)
	}
	return r
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func TestDNSProxy(t *testing.T) {
	up := startUpstream(t, map[string][]string{
		"pypi.org.":          {"203.0.113.10"},
		"x.svc.example.":     {"203.0.113.11", "203.0.113.12"},
		"evil.example.":      {"198.51.100.66"},
		"rebind.example.":    {"127.0.0.1", "169.254.169.254", "192.168.1.1", "10.214.0.9", "192.0.2.1", "203.0.113.13"},
		"secret.tunnel.com.": {"198.51.100.1"},
	})
	_, srv, cs := startProxy(t, Enforce, up.addr, nil, "pypi.org:443", "*.svc.example", "rebind.example", "udp:pypi.org:123")

	if r := ask(t, srv, "PyPI.org", dns.TypeA); r.Rcode != dns.RcodeSuccess || strings.Join(answers(r), ",") != "203.0.113.10" {
		t.Fatalf("pypi.org: %v", r)
	}
	if a := cs.Adds()[0]; !slices.Equal(a.rules, []int{0, 3}) || a.ttl != 30*time.Second {
		t.Errorf("add = %+v, want rules [0 3] with the 30s floor", a)
	}
	if r := ask(t, srv, "x.svc.example", dns.TypeA); len(answers(r)) != 2 {
		t.Fatalf("x.svc.example: %v", r)
	}
	if r := ask(t, srv, "secret.tunnel.com", dns.TypeTXT); r.Rcode != dns.RcodeRefused {
		t.Fatalf("unlisted TXT: %v", r)
	}
	if r := ask(t, srv, "svc.example", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Fatalf("*.svc.example must not cover svc.example: %v", r)
	}
	if up.wasAsked("secret.tunnel.com") || up.wasAsked("svc.example") {
		t.Fatal("an unlisted name reached the upstream")
	}
	if !slices.Equal(cs.Refused(), []string{"secret.tunnel.com", "svc.example"}) {
		t.Errorf("refused = %v", cs.Refused())
	}
	if r := ask(t, srv, "rebind.example", dns.TypeA); strings.Join(answers(r), ",") != "10.214.0.9,203.0.113.13" {
		t.Fatalf("rebinding guard kept %v, want the internal and the public address only", answers(r))
	}
	if r := ask(t, srv, "nx.svc.example", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("NXDOMAIN not passed on: %v", r)
	}
	if r := ask(t, srv, "pypi.org", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA: %v", r)
	}
}

func TestDNSProxyFailsClosed(t *testing.T) {
	up := startUpstream(t, map[string][]string{"pypi.org.": {"203.0.113.10"}})
	_, srv, _ := startProxy(t, Enforce, up.addr, errors.New("netlink down"), "pypi.org")
	if r := ask(t, srv, "pypi.org", dns.TypeA); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("answer handed out although its addresses could not be allowed: %v", r)
	}
}

func TestDNSProxyAudit(t *testing.T) {
	up := startUpstream(t, map[string][]string{"evil.example.": {"198.51.100.66"}})
	_, srv, cs := startProxy(t, Audit, up.addr, nil)
	if r := ask(t, srv, "evil.example", dns.TypeA); strings.Join(answers(r), ",") != "198.51.100.66" {
		t.Fatalf("audit: %v", r)
	}
	if len(cs.Adds()) != 0 || len(cs.Refused()) != 0 {
		t.Errorf("audit added %v refused %v", cs.Adds(), cs.Refused())
	}
}

// TestDNSProxyLocalNames: the job's own names are answered by the proxy
// (A from the table, other types empty), reverse lookups are answered
// locally (a known address by its name, any other NXDOMAIN); none of it is
// forwarded or reported as refused.
func TestDNSProxyLocalNames(t *testing.T) {
	up := startUpstream(t, map[string][]string{"pypi.org.": {"203.0.113.10"}})
	p, srv, cs := startProxy(t, Enforce, up.addr, nil, "pypi.org")
	p.setLocal(map[string]netip.Addr{"Node-A": netip.MustParseAddr("10.214.0.30"), "st-job": netip.MustParseAddr("10.214.0.2")})
	if r := ask(t, srv, "node-a", dns.TypeA); r.Rcode != dns.RcodeSuccess || strings.Join(answers(r), ",") != "10.214.0.30" {
		t.Errorf("node-a A: %v", r)
	}
	if r := ask(t, srv, "st-job", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("st-job AAAA: want NOERROR and no data, got %v", r)
	}
	r := ask(t, srv, "30.0.214.10.in-addr.arpa", dns.TypePTR)
	if ptr, ok := firstPTR(r); r.Rcode != dns.RcodeSuccess || !ok || ptr != "node-a." {
		t.Errorf("PTR of node-a's address: %v", r)
	}
	for _, name := range []string{"77.2.0.192.in-addr.arpa", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"} {
		if r := ask(t, srv, name, dns.TypePTR); r.Rcode != dns.RcodeNameError {
			t.Errorf("PTR %s: want NXDOMAIN, got %v", name, r)
		}
	}
	up.mu.Lock()
	asked := slices.Clone(up.asked)
	up.mu.Unlock()
	if len(asked) != 0 || len(cs.Refused()) != 0 {
		t.Errorf("upstream asked %v, refused %v; want neither", asked, cs.Refused())
	}
	// Other names are still the allowlist's business.
	if r := ask(t, srv, "node-b", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("node-b: %v", r)
	}
}

func firstPTR(r *dns.Msg) (string, bool) {
	for _, rr := range r.Answer {
		if p, ok := rr.(*dns.PTR); ok {
			return p.Ptr, true
		}
	}
	return "", false
}

// TestDNSProxyIgnoresOtherSources: a query from an address other than the
// job's gets no answer and is neither judged nor forwarded, only counted.
func TestDNSProxyIgnoresOtherSources(t *testing.T) {
	up := startUpstream(t, map[string][]string{"pypi.org.": {"203.0.113.10"}})
	p, srv, cs := startProxy(t, Enforce, up.addr, nil, "pypi.org")
	p.client = netip.MustParseAddr("127.0.0.2") // the job; the test asks from 127.0.0.1
	for _, name := range []string{"kill-me.invalid", "pypi.org"} {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		if r, _, err := (&dns.Client{Timeout: 300 * time.Millisecond}).Exchange(m, srv); err == nil {
			t.Errorf("foreign query for %s answered: %v", name, r)
		}
	}
	if len(cs.Refused()) != 0 || len(cs.Adds()) != 0 || up.wasAsked("pypi.org") {
		t.Errorf("foreign queries had effects: refused %v, adds %v, upstream asked %v", cs.Refused(), cs.Adds(), up.wasAsked("pypi.org"))
	}
	if n := p.foreign.Load(); n != 2 {
		t.Errorf("foreign = %d, want 2", n)
	}
}

package netguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// privateRanges are answers a public name should not point at unless the
// host declares them internal (Config.InternalRanges): DNS rebinding.
var privateRanges = prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15")

var errNXDomain = errors.New("no such name")

// dnsProxy answers the job's lookups: allowlisted names are resolved
// upstream and their addresses added to the job's sets before the answer
// goes out; any other name is refused without being forwarded.
type dnsProxy struct {
	rules     []Rule // the whole allowlist; only host entries match names
	mode      Mode
	upstreams []string
	minTTL    time.Duration
	internal  []netip.Prefix
	denied    []netip.Prefix // always-denied destinations (host, pool, metadata...)
	// add puts addresses into the sets of the given allow entries.
	add func(rules []int, addrs []netip.Addr, ttl time.Duration) error
	// refused reports a lookup of a name outside the allowlist.
	refused func(name string)
	// resolved reports every answered name (audit/--learn).
	resolved func(name string, addrs []netip.Addr)
	log      *slog.Logger
	timeout  time.Duration
	// client is the only address served: the job's. A query from any other
	// source (another user, a host process, another namespace) gets no
	// answer and has no effect on the job; foreign counts them.
	client  netip.Addr
	foreign atomic.Uint64

	mu      sync.Mutex
	servers []*dns.Server
	// local are the job's own /etc/hosts names (its host name, its
	// allocation's nodes). glibc asks DNS for what the file lacks (their
	// IPv6 addresses, an AF_INET6 lookup as torch makes), so the proxy
	// answers them itself: never forwarded, never a violation.
	local map[string]netip.Addr
}

// setLocal sets the names answered locally (lower case).
func (p *dnsProxy) setLocal(names map[string]netip.Addr) {
	m := make(map[string]netip.Addr, len(names))
	for n, a := range names {
		m[strings.ToLower(n)] = a
	}
	p.mu.Lock()
	p.local = m
	p.mu.Unlock()
}

// localAnswer answers a lookup of one of the job's own names, or a reverse
// lookup (PTR) of an IPv4 or IPv6 address: those are answered from the
// local names (NXDOMAIN for any other address) and never forwarded, so a
// logger's getnameinfo neither kills the job nor carries data out.
func (p *dnsProxy) localAnswer(q dns.Question, name string, resp *dns.Msg) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.local[name]; ok {
		if q.Qtype == dns.TypeA {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   a.AsSlice()})
		}
		return true // other types: NOERROR, no data
	}
	if !strings.HasSuffix(name, ".in-addr.arpa") && !strings.HasSuffix(name, ".ip6.arpa") {
		return false
	}
	if q.Qtype == dns.TypePTR {
		for _, n := range slices.Sorted(maps.Keys(p.local)) {
			if rev, err := dns.ReverseAddr(p.local[n].String()); err == nil && strings.TrimSuffix(rev, ".") == name {
				resp.Answer = append(resp.Answer, &dns.PTR{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 0},
					Ptr: dns.Fqdn(n)})
				return true
			}
		}
	}
	resp.Rcode = dns.RcodeNameError
	return true
}

// matchRules returns the indexes of the host entries covering name.
func matchRules(rules []Rule, name string) []int {
	var idx []int
	for i, r := range rules {
		if r.MatchName(name) {
			idx = append(idx, i)
		}
	}
	return idx
}

// answerAllowed reports whether an answer address may be handed to the job.
func (p *dnsProxy) answerAllowed(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() || inAny(p.denied, a) {
		return false
	}
	if inAny(privateRanges, a) {
		return inAny(p.internal, a)
	}
	return true
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fromClient reports whether a query came from the job's address.
func (p *dnsProxy) fromClient(a net.Addr) bool {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		return false
	}
	return p.client.IsValid() && ap.Addr().Unmap() == p.client
}

// ServeDNS implements dns.Handler.
func (p *dnsProxy) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if !p.fromClient(w.RemoteAddr()) {
		if p.foreign.Add(1) == 1 {
			p.log.Warn("dns query from outside the job ignored (further ones are only counted)", "from", w.RemoteAddr().String())
		}
		_ = w.Close() // UDP: nothing to close, no answer; TCP: hang up
		return
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	defer func() { _ = w.WriteMsg(resp) }()
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 || req.Question[0].Qclass != dns.ClassINET {
		resp.Rcode = dns.RcodeFormatError
		return
	}
	q := req.Question[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	if p.localAnswer(q, name, resp) {
		return
	}
	idx := matchRules(p.rules, name)
	if len(idx) == 0 && p.mode != Audit {
		p.log.Warn("dns lookup refused", "name", name)
		p.refused(name)
		resp.Rcode = dns.RcodeRefused
		return
	}
	if q.Qtype != dns.TypeA {
		return // NOERROR, no data: jobs get IPv4 only, other types are not forwarded
	}
	addrs, ttl, err := p.resolve(name)
	if errors.Is(err, errNXDomain) {
		resp.Rcode = dns.RcodeNameError
		return
	}
	if err != nil {
		p.log.Warn("dns upstream failed", "name", name, "err", err)
		resp.Rcode = dns.RcodeServerFailure
		return
	}
	if len(idx) > 0 && len(addrs) > 0 {
		if err := p.add(idx, addrs, max(time.Duration(ttl)*time.Second, p.minTTL)); err != nil {
			p.log.Error("dns: cannot allow answer", "name", name, "err", err)
			resp.Rcode = dns.RcodeServerFailure // fail closed
			return
		}
	}
	p.resolved(name, addrs)
	for _, a := range addrs {
		resp.Answer = append(resp.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   a.AsSlice()})
	}
}

// resolve asks the upstreams in order for name's A records and returns the
// acceptable ones with the smallest TTL among them.
func (p *dnsProxy) resolve(name string) ([]netip.Addr, uint32, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var errs []error
	for _, up := range p.upstreams {
		r, err := p.exchange(q, up)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r.Rcode != dns.RcodeSuccess {
			if r.Rcode == dns.RcodeNameError {
				return nil, 0, errNXDomain
			}
			errs = append(errs, fmt.Errorf("%s: %s", up, dns.RcodeToString[r.Rcode]))
			continue
		}
		var addrs []netip.Addr
		ttl := uint32(0)
		for _, rr := range r.Answer {
			a, ok := rr.(*dns.A)
			if !ok {
				continue
			}
			ad, ok := netip.AddrFromSlice(a.A)
			if !ok || !p.answerAllowed(ad) {
				p.log.Warn("dns answer dropped (rebinding guard)", "name", name, "addr", a.A.String())
				continue
			}
			if len(addrs) == 0 || a.Hdr.Ttl < ttl {
				ttl = a.Hdr.Ttl
			}
			addrs = append(addrs, ad.Unmap())
		}
		return addrs, ttl, nil
	}
	return nil, 0, errors.Join(errs...)
}

func (p *dnsProxy) exchange(q *dns.Msg, up string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: p.timeout}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, q, up)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, up)
	}
	return r, err
}

func (p *dnsProxy) serve(srvs ...*dns.Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range srvs {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		p.servers = append(p.servers, s)
		go func() { _ = s.ActivateAndServe() }()
		<-started
	}
}

// close stops the servers and closes their sockets.
func (p *dnsProxy) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, s := range p.servers {
		if err := s.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	p.servers = nil
	return errors.Join(errs...)
}

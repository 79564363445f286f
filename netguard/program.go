package netguard

import (
	"fmt"
	"net/netip"
	"strings"
)

// The rule program is built as plain data (this file, no kernel), rendered
// to nft syntax for golden tests and compiled to netlink expressions in
// nft_linux.go. One table per job:
//
//	prerouting (filter, mangle priority): packets from the job's veth go to
//	  chain egress, where the allowlist is decided before any routing, so
//	  packets to the host itself (INPUT) are covered as well as forwarded ones.
//	forward (filter): packets to the job's veth go to chain ingress: replies
//	  and peers only.
//	output (filter): packets the host itself sends into the job's veth go
//	  to chain ingress_host: replies only (the DNS proxy's answers). No host
//	  process, of any user, opens a connection into a job.
//	input (filter): DNS to the proxy's address that did not come in on the
//	  job's veth is dropped: the proxy serves (and judges) its job only.
//	postrouting (nat): the job's address is masqueraded, except to peers.
//
// Whatever reaches neither the job nor its proxy is counted in the named
// counters in_refused and proxy_refused (Guard.Refused).

// match is one condition of a rule; the zero value of each field means "any".
type match struct {
	IIf, OIf   string // exact interface name
	NotIIf     string
	NotOIf     string
	CTState    []string     // "established", "related", "new", "invalid"
	Family     int          // 4 or 6
	Saddr      netip.Prefix // ipv4
	NotSaddr   netip.Prefix // ipv4: saddr not in
	Daddr      netip.Prefix
	SaddrSet   string // named set of ipv4 addresses (@name)
	DaddrSet   string
	L4         string // "tcp", "udp", "icmpv6"; buildProgram expands "any-ports" into tcp and udp
	PortLo     uint16
	PortHi     uint16
	Accounting bool   // update @egress4 { ip daddr counter }
	Log        string // log group G prefix "Log"
	Counter    string // a named counter (counter name X) instead of the rule's own
	Verdict    string // accept, drop, return, masquerade, jump X, goto X
	Comment    string
}

type chainSpec struct {
	Name     string
	Hook     string // "", prerouting, input, forward, output, postrouting
	Type     string // filter, nat
	Priority int
	Rules    []match
}

type setSpec struct {
	Name     string
	Family   int // 4 or 6
	Interval bool
	Timeout  bool
	Dynamic  bool // with per-element counters
	Elems    []netip.Prefix
}

type program struct {
	Table    string
	LogGroup uint16
	Counters []string // named counters
	Sets     []setSpec
	Chains   []chainSpec
}

// Log prefixes: the NFLOG reader maps them to the violation's detail.
const (
	logDeny    = "deny"    // not in the allowlist
	logAlways  = "always"  // always-denied destination
	logDNS     = "dns"     // DNS to something other than the proxy
	logAudit   = "audit"   // audit mode: new destination, accepted
	logFull    = "full"    // the egress accounting set is full: dropped
	setEgress  = "egress4" // per-destination byte counters
	setDeny4   = "deny4"
	setDeny6   = "deny6"
	setPeers   = "peers4" // static peers (--peers, network.peers, other nodes)
	setMates   = "mates4" // the allocation's other jobs on this node, kept current by syncAllocations
	chainAcct  = "accept_out"
	hostSetFmt = "host%d"
	// Named counters: packets refused on their way into the job (from
	// anyone but its peers, and from host processes but as replies), and
	// DNS packets to its proxy that did not come from its veth.
	counterInRefused    = "in_refused"
	counterProxyRefused = "proxy_refused"
	// egressSetSize bounds the per-destination accounting set; a job past
	// it gets nothing more through (accept_out fails closed).
	egressSetSize = 65535
)

// plan is what the kernel side learns at Setup: names and addresses.
type plan struct {
	Table     string
	HostIf    string
	JobAddr   netip.Addr
	ProxyAddr netip.Addr
	LogGroup  uint16
	Deny4     []netip.Prefix // always-denied IPv4 (metadata, host, pool, multicast, ...)
	Deny6     []netip.Prefix
}

// alwaysDenied4/6 are denied whatever the allowlist says; the host's own
// addresses and the job pool are added at Setup.
var (
	alwaysDenied4 = prefixes("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
	alwaysDenied6 = prefixes("::1/128", "fe80::/10", "ff00::/8", "fd00:ec2::254/128", "::ffff:0:0/96")
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// buildProgram turns a validated Config and a plan into the rule program.
func buildProgram(c Config, p plan) program {
	pr := program{Table: p.Table, LogGroup: p.LogGroup, Counters: []string{counterInRefused, counterProxyRefused}}
	pr.Sets = append(pr.Sets,
		setSpec{Name: setDeny4, Family: 4, Interval: true, Elems: p.Deny4},
		setSpec{Name: setDeny6, Family: 6, Interval: true, Elems: p.Deny6},
		setSpec{Name: setEgress, Family: 4, Dynamic: true},
	)
	for i, r := range c.Allow {
		if r.IsHost() && r.Host != "*" {
			pr.Sets = append(pr.Sets, setSpec{Name: fmt.Sprintf(hostSetFmt, i), Family: 4, Timeout: true})
		}
	}
	proxy := netip.PrefixFrom(p.ProxyAddr, 32)
	job := netip.PrefixFrom(p.JobAddr, 32)
	acct := "goto " + chainAcct

	eg := []match{
		{Family: 4, NotSaddr: job, Verdict: "drop", Comment: "spoofed source"},
		{CTState: []string{"established", "related"}, Verdict: acct},
		{CTState: []string{"invalid"}, Verdict: "drop"},
		{Family: 6, DaddrSet: setDeny6, L4: "icmpv6", Verdict: "drop", Comment: "neighbour discovery, quietly"},
		{Family: 6, Log: logAlways, Verdict: "drop", Comment: "jobs have no IPv6"},
		{Family: 4, Daddr: proxy, L4: "udp", PortLo: 53, PortHi: 53, Verdict: "accept", Comment: "DNS proxy"},
		{Family: 4, Daddr: proxy, L4: "tcp", PortLo: 53, PortHi: 53, Verdict: "accept"},
		{L4: "any-ports", PortLo: 53, PortHi: 53, Log: logDNS, Verdict: "drop", Comment: "DNS only through the proxy"},
		{Family: 4, Daddr: netip.MustParsePrefix("224.0.0.0/24"), Verdict: "drop", Comment: "link-local multicast, quietly"},
	}
	// Peers: static ones, and the allocation's jobs on this node (a set
	// that changes as they come and go), on the peer ports only, both ways,
	// never NATed (every rank advertises its own address).
	var peerSets []string
	if len(c.PeerPorts) > 0 {
		pr.Sets = append(pr.Sets, setSpec{Name: setPeers, Family: 4, Interval: true, Elems: c.Peers})
		peerSets = append(peerSets, setPeers)
		if c.Allocation != "" {
			pr.Sets = append(pr.Sets, setSpec{Name: setMates, Family: 4})
			peerSets = append(peerSets, setMates)
		}
	}
	for _, set := range peerSets {
		for _, pp := range c.PeerPorts {
			eg = append(eg, match{Family: 4, DaddrSet: set, L4: "any-ports", PortLo: pp.Lo, PortHi: pp.Hi, Verdict: acct, Comment: "peer"})
		}
	}
	eg = append(eg, match{Family: 4, DaddrSet: setDeny4, Log: logAlways, Verdict: "drop", Comment: "always denied"})
	for i, r := range c.Allow {
		m := match{Family: 4, Verdict: acct, Comment: "allow " + r.String()}
		switch {
		case r.IsHost() && r.Host != "*":
			m.DaddrSet = fmt.Sprintf(hostSetFmt, i)
		case r.IsHost(): // "*", Unrestricted
		default:
			m.Daddr = r.Prefix
			if r.Prefix.Bits() == 0 {
				m.Daddr = netip.Prefix{}
			}
		}
		m.L4, m.PortLo, m.PortHi = r.Proto, r.PortLo, r.PortHi
		if m.L4 == "" && r.PortLo != 0 {
			m.L4 = "any-ports"
		}
		eg = append(eg, m)
	}
	if c.Mode == Audit {
		eg = append(eg,
			match{CTState: []string{"new"}, Log: logAudit, Verdict: acct, Comment: "audit: record, accept"},
			match{Verdict: acct})
	} else {
		eg = append(eg, match{Log: logDeny, Verdict: "drop", Comment: "not in allowlist"})
	}

	in := []match{{CTState: []string{"established", "related"}, Verdict: "accept"}}
	for _, set := range peerSets {
		for _, pp := range c.PeerPorts {
			in = append(in, match{Family: 4, SaddrSet: set, L4: "any-ports", PortLo: pp.Lo, PortHi: pp.Hi, Verdict: "accept", Comment: "peer"})
		}
	}
	in = append(in, match{Counter: counterInRefused, Verdict: "drop", Comment: "nobody else reaches the job"})
	// From the host itself (OUTPUT, not forward): replies only.
	inHost := []match{
		{CTState: []string{"established", "related"}, Verdict: "accept", Comment: "replies: the DNS proxy's answers"},
		{Counter: counterInRefused, Verdict: "drop", Comment: "no host process connects into the job"},
	}
	// The proxy's address is a host address: any host process, and any
	// namespace routed through the host, could send it a query.
	proxyIn := expandPorts([]match{{Family: 4, Daddr: proxy, NotIIf: p.HostIf, L4: "any-ports", PortLo: 53, PortHi: 53,
		Counter: counterProxyRefused, Verdict: "drop", Comment: "the proxy serves its own job only"}})

	var post []match
	for _, set := range peerSets {
		post = append(post, match{Family: 4, Saddr: job, DaddrSet: set, Verdict: "return", Comment: "peers see the job's own address"})
	}
	post = append(post, match{Family: 4, Saddr: job, NotOIf: p.HostIf, Verdict: "masquerade"})

	eg, in = expandPorts(eg), expandPorts(in)
	pr.Chains = []chainSpec{
		{Name: "pre", Hook: "prerouting", Type: "filter", Priority: -150,
			Rules: []match{{IIf: p.HostIf, Verdict: "jump egress"}}},
		{Name: "fwd", Hook: "forward", Type: "filter", Priority: 0,
			Rules: []match{{OIf: p.HostIf, Verdict: "jump ingress"}}},
		{Name: "out", Hook: "output", Type: "filter", Priority: 0,
			Rules: []match{{OIf: p.HostIf, Verdict: "jump ingress_host"}}},
		{Name: "in", Hook: "input", Type: "filter", Priority: -150, Rules: proxyIn},
		{Name: "post", Hook: "postrouting", Type: "nat", Priority: 100, Rules: post},
		{Name: "egress", Rules: eg},
		{Name: "ingress", Rules: in},
		{Name: "ingress_host", Rules: inHost},
		// A full accounting set fails the update, and the rule with it: the
		// next one drops, so a full set never turns into an uncounted accept.
		{Name: chainAcct, Rules: []match{{Family: 4, Accounting: true, Verdict: "accept"},
			{Log: logFull, Verdict: "drop", Comment: "egress accounting set full"}}},
	}
	return pr
}

// expandPorts turns a port match without a protocol into one rule for tcp
// and one for udp: "th dport" alone would read ICMP bytes as a port.
func expandPorts(ms []match) []match {
	var out []match
	for _, m := range ms {
		if m.L4 != "any-ports" {
			out = append(out, m)
			continue
		}
		t, u := m, m
		t.L4, u.L4 = "tcp", "udp"
		out = append(out, t, u)
	}
	return out
}

// String renders the program in nft syntax (for golden tests and debugging;
// the kernel receives the same program through netlink, never this text).
func (pr program) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", pr.Table)
	for _, n := range pr.Counters {
		fmt.Fprintf(&b, "\tcounter %s { }\n", n)
	}
	for _, s := range pr.Sets {
		typ := "ipv4_addr"
		if s.Family == 6 {
			typ = "ipv6_addr"
		}
		var flags []string
		if s.Interval {
			flags = append(flags, "interval")
		}
		if s.Timeout {
			flags = append(flags, "timeout")
		}
		if s.Dynamic {
			flags = append(flags, "dynamic")
		}
		fmt.Fprintf(&b, "\tset %s { type %s;", s.Name, typ)
		if len(flags) > 0 {
			fmt.Fprintf(&b, " flags %s;", strings.Join(flags, ","))
		}
		if s.Dynamic {
			b.WriteString(" counter;")
		}
		if len(s.Elems) > 0 {
			el := make([]string, len(s.Elems))
			for i, e := range s.Elems {
				el[i] = e.String()
			}
			fmt.Fprintf(&b, " elements = { %s };", strings.Join(el, ", "))
		}
		b.WriteString(" }\n")
	}
	for _, c := range pr.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != "" {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", c.Type, c.Hook, c.Priority)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.render(pr.LogGroup))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func (m match) render(group uint16) string {
	var f []string
	add := func(format string, args ...any) { f = append(f, fmt.Sprintf(format, args...)) }
	ipv := func(fam int) string {
		if fam == 6 {
			return "ip6"
		}
		return "ip"
	}
	if m.IIf != "" {
		add("iifname %q", m.IIf)
	}
	if m.OIf != "" {
		add("oifname %q", m.OIf)
	}
	if m.NotIIf != "" {
		add("iifname != %q", m.NotIIf)
	}
	if m.NotOIf != "" {
		add("oifname != %q", m.NotOIf)
	}
	if m.Family == 6 && !m.Daddr.IsValid() && m.DaddrSet == "" && m.SaddrSet == "" {
		add("meta nfproto ipv6")
	}
	if m.NotSaddr.IsValid() {
		add("ip saddr != %s", prefixText(m.NotSaddr))
	}
	if m.Saddr.IsValid() {
		add("%s saddr %s", ipv(m.Family), prefixText(m.Saddr))
	}
	if m.Daddr.IsValid() {
		add("%s daddr %s", ipv(m.Family), prefixText(m.Daddr))
	}
	if m.SaddrSet != "" {
		add("%s saddr @%s", ipv(m.Family), m.SaddrSet)
	}
	if m.DaddrSet != "" {
		add("%s daddr @%s", ipv(m.Family), m.DaddrSet)
	}
	if len(m.CTState) > 0 {
		add("ct state %s", strings.Join(m.CTState, ","))
	}
	if m.L4 != "" && m.PortLo == 0 {
		add("meta l4proto %s", m.L4)
	}
	if m.PortLo != 0 {
		proto := "th"
		if m.L4 == "tcp" || m.L4 == "udp" {
			proto = m.L4
		}
		if m.PortLo == m.PortHi {
			add("%s dport %d", proto, m.PortLo)
		} else {
			add("%s dport %d-%d", proto, m.PortLo, m.PortHi)
		}
	}
	if m.Accounting {
		add("update @%s { ip daddr counter }", setEgress)
	}
	if m.Counter != "" {
		add("counter name %q", m.Counter)
	} else {
		add("counter")
	}
	if m.Log != "" {
		add("log group %d prefix %q", group, m.Log)
	}
	add("%s", m.Verdict)
	if m.Comment != "" {
		add("comment %q", m.Comment)
	}
	return strings.Join(f, " ")
}

func prefixText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

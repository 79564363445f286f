package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Mode is the policy applied to traffic outside the allowlist.
type Mode string

const (
	// Enforce drops and reports; the launcher kills the job on the first
	// violation. The default.
	Enforce Mode = "enforce"
	// Block drops and reports; the job goes on.
	Block Mode = "block"
	// Audit accepts everything (except the always-denied destinations) and
	// reports every new destination, for --learn.
	Audit Mode = "audit"
)

// ParseMode parses a profile's or flag's mode; "" means Enforce.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return Enforce, nil
	case Enforce, Block, Audit:
		return m, nil
	}
	return "", fmt.Errorf("network mode %q: allowed enforce, block, audit", s)
}

// Errors callers branch on.
var (
	ErrBadRule   = errors.New("invalid allowlist entry")
	ErrAllowsAll = errors.New("allowlist entry allows every destination")
)

const ruleForms = "allowed: HOST, HOST:PORT, *.SUFFIX, CIDR, CIDR:PORT-PORT, IPv6 in brackets, optional tcp: or udp: prefix"

// Rule is one allowlist entry: a destination (an address prefix or a host
// name, exact or "*.suffix"), an optional protocol and a port range.
type Rule struct {
	Proto  string       // "tcp", "udp" or "" (any protocol; with ports: tcp and udp)
	Prefix netip.Prefix // valid for address entries
	Host   string       // for name entries: "a.example.com", "*.example.com" or "*"
	PortLo uint16       // 0: any port
	PortHi uint16
}

// ParseRule parses one allowlist entry (see ruleForms). Entries that allow
// every destination parse; Config.Validate refuses them unless Unrestricted.
func ParseRule(s string) (Rule, error) {
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("%w %q: %s (%s)", ErrBadRule, s, why, ruleForms)
	}
	rest := strings.TrimSpace(s)
	var r Rule
	if p, tail, ok := strings.Cut(rest, ":"); ok {
		switch strings.ToLower(p) {
		case "tcp", "udp":
			r.Proto, rest = strings.ToLower(p), tail
		}
	}
	if rest == "" {
		return bad("empty destination")
	}
	host, port := rest, ""
	switch {
	case strings.HasPrefix(rest, "["):
		end := strings.Index(rest, "]")
		if end < 0 {
			return bad("missing ]")
		}
		host, port = rest[1:end], rest[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return bad("unexpected text after ]")
			}
			port = port[1:]
		}
	case strings.Count(rest, ":") > 1:
		// Bare IPv6 address or prefix, no port.
	default:
		host, port, _ = strings.Cut(rest, ":")
	}
	if port != "" || strings.HasSuffix(rest, ":") {
		lo, hi, err := parsePorts(port)
		if err != nil {
			return bad(err.Error())
		}
		r.PortLo, r.PortHi = lo, hi
	}
	if pfx, err := parsePrefix(host); err == nil {
		r.Prefix = pfx
		return r, nil
	} else if strings.ContainsAny(host, "/:") || looksNumeric(host) {
		return bad("bad address or CIDR: " + err.Error())
	}
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h != "*" {
		if err := checkHostname(strings.TrimPrefix(h, "*.")); err != nil {
			return bad(err.Error())
		}
	}
	r.Host = h
	return r, nil
}

func looksNumeric(s string) bool {
	return strings.Trim(s, "0123456789.") == ""
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, errors.New("zones are not allowed")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zones are not allowed")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parsePorts(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err = parsePort(a)
	if err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = parsePort(b); err != nil {
			return 0, 0, err
		}
		if hi < lo {
			return 0, 0, fmt.Errorf("port range %s is reversed", s)
		}
	}
	return lo, hi, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q must be 1-65535", s)
	}
	return uint16(n), nil
}

func checkHostname(h string) error {
	if h == "" || len(h) > 253 {
		return errors.New("host name must be 1-253 characters")
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("host name label %q must be 1-63 characters", l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host name %q has character %q (a wildcard is only allowed as a leading \"*.\")", h, c)
			}
		}
	}
	return nil
}

// AllowsAll reports whether the entry allows every destination: "*",
// 0.0.0.0/0 or ::/0.
func (r Rule) AllowsAll() bool {
	return r.Host == "*" || (r.Prefix.IsValid() && r.Prefix.Bits() == 0)
}

// IsHost reports whether the entry names a host rather than addresses.
func (r Rule) IsHost() bool { return r.Host != "" }

// MatchName reports whether a DNS name (as the proxy reads it off the
// wire: presentation format, any case, an optional trailing dot) is
// covered by this host entry. "*.example.com" covers names below
// example.com, not example.com itself. A name that is not a plain host
// name is covered by no entry: an escaped dot ("evil\.example.com" is the
// label "evil.example" under com), any other escape, an empty label or a
// byte outside letters, digits, '-' and '_' would otherwise pass a suffix
// check while naming something else upstream.
func (r Rule) MatchName(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if r.Host == "" || checkHostname(name) != nil {
		return false
	}
	switch {
	case r.Host == "*":
		return true
	case strings.HasPrefix(r.Host, "*."):
		return strings.HasSuffix(name, r.Host[1:])
	}
	return name == r.Host
}

// String returns the canonical entry text (ParseRule(r.String()) == r).
func (r Rule) String() string {
	var b strings.Builder
	if r.Proto != "" {
		b.WriteString(r.Proto + ":")
	}
	dst := r.Host
	if !r.IsHost() {
		dst = r.Prefix.String()
		if r.Prefix.IsSingleIP() {
			dst = r.Prefix.Addr().String()
		}
		if r.Prefix.Addr().Is6() && r.PortLo != 0 {
			dst = "[" + dst + "]"
		}
	}
	b.WriteString(dst)
	if r.PortLo != 0 {
		fmt.Fprintf(&b, ":%d", r.PortLo)
		if r.PortHi != r.PortLo {
			fmt.Fprintf(&b, "-%d", r.PortHi)
		}
	}
	return b.String()
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// ParsePortRange parses "N" or "N-M".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, err := parsePorts(strings.TrimSpace(s))
	if err != nil {
		return PortRange{}, fmt.Errorf("peer port range %q: %w (allowed: N or N-M, 1-65535)", s, err)
	}
	return PortRange{lo, hi}, nil
}

func (p PortRange) String() string {
	if p.Lo == p.Hi {
		return strconv.Itoa(int(p.Lo))
	}
	return fmt.Sprintf("%d-%d", p.Lo, p.Hi)
}

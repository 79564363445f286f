package netguard

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
		str  string
	}{
		{"pypi.org", Rule{Host: "pypi.org"}, "pypi.org"},
		{"PyPI.org.", Rule{Host: "pypi.org"}, "pypi.org"},
		{"pypi.org:443", Rule{Host: "pypi.org", PortLo: 443, PortHi: 443}, "pypi.org:443"},
		{"tcp:pypi.org:443", Rule{Proto: "tcp", Host: "pypi.org", PortLo: 443, PortHi: 443}, "tcp:pypi.org:443"},
		{"*.s3.amazonaws.com:443", Rule{Host: "*.s3.amazonaws.com", PortLo: 443, PortHi: 443}, "*.s3.amazonaws.com:443"},
		{"10.0.0.0/8", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, "10.0.0.0/8"},
		{"10.1.2.3/8", Rule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, "10.0.0.0/8"},
		{"10.0.0.1", Rule{Prefix: netip.MustParsePrefix("10.0.0.1/32")}, "10.0.0.1"},
		{"udp:10.0.0.0/24:5000-5010", Rule{Proto: "udp", Prefix: netip.MustParsePrefix("10.0.0.0/24"), PortLo: 5000, PortHi: 5010}, "udp:10.0.0.0/24:5000-5010"},
		{"[2001:db8::1]:443", Rule{Prefix: netip.MustParsePrefix("2001:db8::1/128"), PortLo: 443, PortHi: 443}, "[2001:db8::1]:443"},
		{"[2001:db8::/32]", Rule{Prefix: netip.MustParsePrefix("2001:db8::/32")}, "2001:db8::/32"},
		{"2001:db8::/32", Rule{Prefix: netip.MustParsePrefix("2001:db8::/32")}, "2001:db8::/32"},
		{"tcp:*", Rule{Proto: "tcp", Host: "*"}, "tcp:*"},
		{"0.0.0.0/0", Rule{Prefix: netip.MustParsePrefix("0.0.0.0/0")}, "0.0.0.0/0"},
	} {
		got, err := ParseRule(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if got.String() != tc.str {
			t.Errorf("ParseRule(%q).String() = %q, want %q", tc.in, got.String(), tc.str)
		}
		if again, err := ParseRule(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q: %+v, %v", got, again, err)
		}
	}
	for _, in := range []string{"", "tcp:", "pypi.org:0", "pypi.org:70000", "pypi.org:443-80", "pypi.org:http",
		"a.*.org", "ex ample.org", "10.0.0.0/33", "300.1.1.1", "[2001:db8::1", "[::1]x", "fe80::1%eth0", "host:1:2"} {
		_, err := ParseRule(in)
		if !errors.Is(err, ErrBadRule) {
			t.Errorf("ParseRule(%q) = %v, want ErrBadRule", in, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "allowed:") || strings.Contains(msg, "\n") {
			t.Errorf("error for %q is not one line naming what is allowed: %q", in, msg)
		}
	}
}

func TestMatchName(t *testing.T) {
	wild, _ := ParseRule("*.example.com")
	exact, _ := ParseRule("example.com")
	for _, tc := range []struct {
		r    Rule
		name string
		want bool
	}{
		{wild, "a.example.com", true}, {wild, "a.b.example.com", true}, {wild, "example.com", false},
		{wild, "badexample.com", false}, {exact, "example.com", true}, {exact, "a.example.com", false},
		// Look-alikes and presentation-format tricks: none is covered.
		{exact, "xexample.com", false}, {exact, "example.com.evil", false}, {exact, "example.comx", false},
		{wild, "a.xexample.com", false}, {wild, "aexample.com", false},
		{wild, `evil\.example.com`, false}, {exact, `example\.com`, false}, // label "evil.example" under com
		{wild, `evil\046example.com`, false}, {wild, `a\000.example.com`, false},
		{wild, "a..example.com", false}, {wild, ".example.com", false}, {exact, "example.com..", false},
		{wild, "a b.example.com", false}, {wild, "a/b.example.com", false}, {wild, "a*.example.com", false},
		// Case and one trailing dot are the same name.
		{exact, "EXAMPLE.Com", true}, {exact, "example.com.", true}, {wild, "A.Example.COM.", true},
	} {
		if got := tc.r.MatchName(tc.name); got != tc.want {
			t.Errorf("%s matches %s = %v", tc.r, tc.name, got)
		}
	}
}

func TestValidate(t *testing.T) {
	all, _ := ParseRule("*")
	v6, _ := ParseRule("[2001:db8::1]:443")
	base := Config{JobID: "j1", Mode: Enforce, Pool: DefaultPool, NFLogGroup: DefaultNFLogGroup, Upstreams: []string{"127.0.0.1:53"}}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"allow all":           {func(c *Config) { c.Allow = []Rule{all} }, "unrestricted: true"},
		"ipv6":                {func(c *Config) { c.Allow = []Rule{v6} }, "IPv6 egress"},
		"job id":              {func(c *Config) { c.JobID = "a/b" }, "job id"},
		"mode":                {func(c *Config) { c.Mode = "yolo" }, "allowed enforce, block, audit"},
		"peers no ports":      {func(c *Config) { c.Peers = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")} }, "peer_ports"},
		"upstream":            {func(c *Config) { c.Upstreams = []string{"8.8.8.8"} }, "ip:port"},
		"pool":                {func(c *Config) { c.Pool = netip.MustParsePrefix("10.0.0.0/31") }, "pool"},
		"allocation no ports": {func(c *Config) { c.Allocation = "1234" }, "peer_ports: required for an allocation"},
		"allocation block": {func(c *Config) {
			c.Allocation, c.PeerPorts, c.AllocationBlock = "1", []PortRange{{29500, 29500}}, 6
		}, "allocation block 6: allowed a power of two from 1 to 64"},
		"allocation chars": {func(c *Config) {
			c.Allocation, c.PeerPorts = "12 34", []PortRange{{29500, 29500}}
		}, `allocation "12 34": allowed 1-64 characters`},
		"host name":    {func(c *Config) { c.HostNames = map[string]netip.Addr{"-a": netip.MustParseAddr("10.0.0.2")} }, `host name "-a"`},
		"host name v6": {func(c *Config) { c.HostNames = map[string]netip.Addr{"a": netip.MustParseAddr("fd00::2")} }, "allowed an IPv4 address"},
	} {
		c := base
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", name, err, tc.want)
		}
	}
	c := base
	c.Allow, c.Unrestricted = []Rule{all}, true
	if err := c.Validate(); err != nil {
		t.Errorf("unrestricted *: %v", err)
	}
}

func TestParseResolvConf(t *testing.T) {
	got := parseResolvConf(strings.NewReader("# x\nsearch a\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\n"))
	if strings.Join(got, ",") != "10.0.0.2:53,[::1]:53" {
		t.Errorf("parseResolvConf = %v", got)
	}
}

func TestSuggestAllowlist(t *testing.T) {
	a := netip.MustParseAddr("203.0.113.5")
	got := SuggestAllowlist([]Contact{
		{Proto: "tcp", Addr: a, Port: 443, Name: "pypi.org"},
		{Proto: "tcp", Addr: a, Port: 443, Name: "pypi.org"},
		{Proto: "udp", Addr: a, Port: 123},
		{Proto: "icmp", Addr: a},
		{Proto: "tcp", Addr: netip.MustParseAddr("169.254.169.254"), Port: 80, AlwaysDenied: true},
	})
	want := "203.0.113.5 tcp:pypi.org:443 udp:203.0.113.5:123"
	if strings.Join(got, " ") != want {
		t.Errorf("SuggestAllowlist = %q, want %q", got, want)
	}
}

func TestMergePrefixes(t *testing.T) {
	got := mergePrefixes(prefixes("10.0.0.0/24", "10.0.1.0/24", "10.0.0.5/32", "192.168.0.0/16", "240.0.0.0/4"))
	var s []string
	for _, r := range got {
		s = append(s, r.From.String()+"-"+r.To.String())
	}
	want := "10.0.0.0-10.0.1.255 192.168.0.0-192.168.255.255 240.0.0.0-255.255.255.255"
	if strings.Join(s, " ") != want {
		t.Errorf("mergePrefixes = %q, want %q", s, want)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": Enforce, "Block": Block, "audit": Audit, "enforce": Enforce} {
		if got, err := ParseMode(in); got != want || err != nil {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("learn"); err == nil || !strings.Contains(err.Error(), "allowed enforce, block, audit") {
		t.Errorf("ParseMode(learn) = %v", err)
	}
}

func TestAllocationAddr(t *testing.T) {
	pool := netip.MustParsePrefix("10.40.0.0/24") // 64 slots
	for _, tc := range []struct {
		alloc string
		want  string
	}{
		{"0", "10.40.0.2"},
		{"5", "10.40.0.22"},
		{"69", "10.40.0.22"}, // 69 mod 64 = 5: the same slot
		{"63", "10.40.0.254"},
	} {
		if got, err := AllocationAddr(pool, tc.alloc, 1); err != nil || got.String() != tc.want {
			t.Errorf("AllocationAddr(%s, %s) = %v, %v; want %s", pool, tc.alloc, got, err, tc.want)
		}
	}
	// A non-numeric id is hashed, the same way on every node.
	a, _ := AllocationAddr(pool, "exp-42", 1)
	b, _ := AllocationAddr(pool, "exp-42", 1)
	if a != b || !pool.Contains(a) {
		t.Errorf("AllocationAddr(exp-42) = %s then %s, want one address in %s", a, b, pool)
	}
	if _, err := AllocationAddr(netip.MustParsePrefix("10.40.0.0/31"), "1", 1); err == nil {
		t.Error("AllocationAddr accepted a /31")
	}
	// Blocks of 8: 8 of them in 64 slots; 13 mod 8 = block 5, slots 40-47.
	as, err := AllocationAddrs(pool, "13", 8)
	if err != nil || len(as) != 8 || as[0].String() != "10.40.0.162" || as[7].String() != "10.40.0.190" {
		t.Errorf("AllocationAddrs(%s, 13, 8) = %v, %v; want 10.40.0.162 ... 10.40.0.190", pool, as, err)
	}
	for _, b := range []int{3, 128} {
		if _, err := AllocationAddrs(netip.MustParsePrefix("10.40.0.0/16"), "1", b); err == nil {
			t.Errorf("AllocationAddrs accepted block %d", b)
		}
	}
	if _, err := AllocationAddrs(netip.MustParsePrefix("10.40.0.0/28"), "1", 8); err == nil {
		t.Error("AllocationAddrs accepted a block larger than the subnet")
	}
}

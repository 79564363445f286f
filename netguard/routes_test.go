package netguard

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidateNodeRoutes(t *testing.T) {
	pool := netip.MustParsePrefix("10.213.1.0/24")
	nr := func(sub, via string) NodeRoute {
		return NodeRoute{Subnet: netip.MustParsePrefix(sub), Via: netip.MustParseAddr(via)}
	}
	ok := []NodeRoute{nr("10.213.2.0/24", "192.0.2.2"), nr("10.213.3.0/24", "192.0.2.3")}
	if errs := validateNodeRoutes(ok, pool); len(errs) > 0 {
		t.Fatalf("valid routes refused: %v", errs)
	}
	for _, tt := range []struct {
		r    []NodeRoute
		want string
	}{
		{[]NodeRoute{nr("10.213.1.0/25", "192.0.2.2")}, "overlaps this node's pool"},
		{[]NodeRoute{nr("10.213.2.0/24", "10.213.1.9")}, "overlaps this node's pool"},
		{[]NodeRoute{nr("10.213.2.0/24", "10.213.2.1")}, "lies inside the subnet"},
		{[]NodeRoute{nr("0.0.0.0/0", "192.0.2.2")}, "narrower than /0"},
		{[]NodeRoute{nr("fd00::/64", "192.0.2.2")}, "IPv4 subnet"},
		{[]NodeRoute{nr("10.213.2.0/24", "fd00::2")}, "IPv4 host address"},
		{[]NodeRoute{{Subnet: netip.MustParsePrefix("10.213.2.7/24"), Via: netip.MustParseAddr("192.0.2.2")}}, "IPv4 subnet"},
		{[]NodeRoute{nr("10.213.2.0/24", "192.0.2.2"), nr("10.213.2.128/25", "192.0.2.3")}, "overlaps 10.213.2.0/24"},
	} {
		errs := validateNodeRoutes(tt.r, pool)
		if len(errs) == 0 || !strings.Contains(errs[0].Error(), tt.want) {
			t.Errorf("validateNodeRoutes(%v) = %v; want %q", tt.r, errs, tt.want)
		}
	}
	// Through Config.Validate: the default pool counts when none is given.
	c := Config{JobID: "j", Mode: Enforce, NodeRoutes: []NodeRoute{nr("10.213.9.0/24", "192.0.2.2")}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "overlaps this node's pool 10.213.0.0/16") {
		t.Errorf("Validate = %v; want the default pool overlap", err)
	}
}

package netguard

import (
	"fmt"
	"net/netip"
)

// NodeRoute is a route to another node's job subnet via that node's host
// address (host-gateway style multi-node training: peers on other nodes
// are reached by their own addresses, without NAT).
type NodeRoute struct {
	Subnet netip.Prefix // the other node's job subnet
	Via    netip.Addr   // the other node's host address
}

func (r NodeRoute) String() string { return r.Subnet.String() + " via " + r.Via.String() }

// validateNodeRoutes checks Config.NodeRoutes against the pool: IPv4 only,
// and no other node's subnet or address inside this node's pool.
func validateNodeRoutes(routes []NodeRoute, pool netip.Prefix) []error {
	var errs []error
	for i, r := range routes {
		switch {
		case !r.Subnet.IsValid() || !r.Subnet.Addr().Is4() || r.Subnet.Bits() == 0 || r.Subnet != r.Subnet.Masked():
			errs = append(errs, fmt.Errorf("%w: node route %d: subnet %s: allowed an IPv4 subnet narrower than /0", ErrConfig, i, r.Subnet))
		case !r.Via.Is4():
			errs = append(errs, fmt.Errorf("%w: node route %s: via %s: allowed an IPv4 host address", ErrConfig, r.Subnet, r.Via))
		case r.Subnet.Contains(r.Via):
			errs = append(errs, fmt.Errorf("%w: node route %s: via %s lies inside the subnet it leads to", ErrConfig, r.Subnet, r.Via))
		case pool.IsValid() && (r.Subnet.Overlaps(pool) || pool.Contains(r.Via)):
			errs = append(errs, fmt.Errorf("%w: node route %s: overlaps this node's pool %s", ErrConfig, r, pool))
		}
		for _, o := range routes[:i] {
			if o.Subnet.Overlaps(r.Subnet) {
				errs = append(errs, fmt.Errorf("%w: node route %s overlaps %s", ErrConfig, r, o))
			}
		}
	}
	return errs
}

package configs

import (
	"fmt"
	"net/netip"
	"strings"
)

// validateNodes checks network.node_subnet and network.nodes: IPv4 subnets
// that do not overlap, host addresses that are IPs outside every job
// subnet, unique names, and this node's subnet listed exactly once.
func (n HostNetwork) validateNodes(file string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{File: file, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	var own netip.Prefix
	if n.NodeSubnet != "" {
		p, err := netip.ParsePrefix(n.NodeSubnet)
		switch {
		case err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() > 30 || p.Bits() == 0:
			add("network.node_subnet", "must be an IPv4 subnet of /30 or wider such as 10.213.1.0/24, got %q", n.NodeSubnet)
		default:
			own = p
			if pool, err := netip.ParsePrefix(n.Pool); err == nil && (!pool.Contains(p.Addr()) || pool.Bits() > p.Bits()) {
				add("network.node_subnet", "%s must lie inside network.pool %s (or leave pool unset)", p, pool)
			}
		}
	}
	if b := n.AllocationBlock; b != 0 {
		slots := 0
		for _, s := range []string{n.NodeSubnet, n.Pool, "10.213.0.0/16"} {
			if p, err := netip.ParsePrefix(s); err == nil && slots == 0 && p.Addr().Is4() && p.Bits() <= 30 {
				slots = 1 << (30 - p.Bits())
			}
		}
		if b < 1 || b > 64 || b&(b-1) != 0 || (slots > 0 && b > slots) {
			add("network.allocation_block", "must be a power of two from 1 to 64, and at most the job subnet's %d /30 slots, got %d", slots, b)
		}
	}
	if len(n.Nodes) > 0 && n.NodeSubnet == "" {
		add("network.nodes", "need network.node_subnet (this node's job subnet, listed once in nodes)")
	}
	type seen struct {
		field string
		p     netip.Prefix
	}
	var subnets []seen
	names := map[string]bool{}
	ownCount := 0
	for i, nd := range n.Nodes {
		f := fmt.Sprintf("network.nodes[%d]", i)
		if nd.Name == "" || strings.ContainsAny(nd.Name, " \t\n/,=:") || strings.HasPrefix(nd.Name, "-") {
			add(f+".name", "must be one Slurm node name (no spaces, '/', ',', '=', ':' or leading '-'), got %q", nd.Name)
		} else if names[nd.Name] {
			add(f+".name", "node %q is listed twice", nd.Name)
		}
		names[nd.Name] = true
		a, err := netip.ParseAddr(nd.Address)
		if err != nil || !a.Is4() || a.Zone() != "" {
			add(f+".address", "must be the node's IPv4 host address such as 192.0.2.7, got %q", nd.Address)
		}
		p, err := netip.ParsePrefix(nd.Subnet)
		if err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() == 0 {
			add(f+".subnet", "must be an IPv4 subnet such as 10.213.2.0/24, got %q", nd.Subnet)
			continue
		}
		if p == own {
			ownCount++
		}
		for _, o := range subnets {
			if o.p.Overlaps(p) {
				add(f+".subnet", "%s overlaps %s of %s", p, o.p, o.field)
			}
		}
		subnets = append(subnets, seen{f, p})
	}
	for i, nd := range n.Nodes {
		a, err := netip.ParseAddr(nd.Address)
		if err != nil {
			continue
		}
		for _, o := range subnets {
			if o.p.Contains(a) {
				add(fmt.Sprintf("network.nodes[%d].address", i), "%s lies inside the job subnet %s of %s", a, o.p, o.field)
			}
		}
	}
	if len(n.Nodes) > 0 && own.IsValid() && ownCount != 1 {
		add("network.nodes", "this node's subnet %s (network.node_subnet) must be listed exactly once, found %d times", own, ownCount)
	}
	return errs
}

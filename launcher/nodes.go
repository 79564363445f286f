package launcher

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/netguard"
)

// Multi-node training (host-gateway style): each node's jobs get addresses
// from its network.node_subnet; netguard routes every other node's subnet
// via that node's address; a peer named by node name stands for its whole
// job subnet, so the ranks there are reached by their own addresses (no
// NAT) on the profile's peer_ports.

// parsePeer accepts a node name of the host's network.nodes, an address
// or a CIDR. A node stands for its whole job subnet, or, for a job of an
// allocation, for the allocation's addresses there only (its block): jobs
// of other allocations on that node are not peers.
func parsePeer(s string, nodes []configs.HostNode, allocation string, block int) ([]netip.Prefix, error) {
	s = strings.TrimSpace(s)
	for _, n := range nodes {
		if n.Name == s {
			sub, err := netip.ParsePrefix(n.Subnet)
			if err != nil || allocation == "" {
				return []netip.Prefix{sub}, err
			}
			as, err := netguard.AllocationAddrs(sub, allocation, block)
			var out []netip.Prefix
			for _, a := range as {
				out = append(out, netip.PrefixFrom(a, 32))
			}
			return out, err
		}
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return []netip.Prefix{p}, err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if len(nodes) == 0 {
			return nil, fmt.Errorf("want an IP address or CIDR")
		}
		return nil, fmt.Errorf("want a node of the host's network.nodes, an IP address or a CIDR")
	}
	return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}, nil
}

// allocationHosts are the names a job of an allocation resolves locally:
// every node of network.nodes to the allocation's task-0 address on that
// node, and this node (its network.nodes name and its own host name) to
// the allocation's task-0 address here, so MASTER_ADDR=<first node of the
// allocation> (or $(hostname) on one node) reaches rank 0's rendezvous.
func allocationHosts(h configs.HostNetwork, pool netip.Prefix, allocation, self string) (map[string]netip.Addr, error) {
	out := map[string]netip.Addr{}
	for i, n := range h.Nodes {
		sub, err := netip.ParsePrefix(n.Subnet)
		if err != nil {
			return nil, fmt.Errorf("host network.nodes[%d] (%s): subnet: %w", i, n.Name, err)
		}
		if out[n.Name], err = netguard.AllocationAddr(sub, allocation, h.AllocationBlock); err != nil {
			return nil, fmt.Errorf("host network.nodes[%d] (%s): %w", i, n.Name, err)
		}
	}
	if self != "" {
		if _, ok := out[self]; !ok {
			a, err := netguard.AllocationAddr(pool, allocation, h.AllocationBlock)
			if err != nil {
				return nil, err
			}
			out[self] = a
		}
	}
	return out, nil
}

// nodeRoutes are the routes to the other nodes' job subnets (every node of
// network.nodes but this one, which is the one holding network.node_subnet).
func nodeRoutes(h configs.HostNetwork) ([]netguard.NodeRoute, error) {
	var out []netguard.NodeRoute
	for i, n := range h.Nodes {
		if n.Subnet == h.NodeSubnet {
			continue
		}
		sub, err1 := netip.ParsePrefix(n.Subnet)
		via, err2 := netip.ParseAddr(n.Address)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("host network.nodes[%d] (%s): want subnet CIDR and address IP, got %q, %q", i, n.Name, n.Subnet, n.Address)
		}
		out = append(out, netguard.NodeRoute{Subnet: sub, Via: via})
	}
	return out, nil
}

// SlurmPeers are the peers a Slurm allocation brings: the names of its
// other nodes that the host's network.nodes lists (the launcher resolves
// them to their job subnets). None when the profile has no sandbox network
// or no peer_ports, so a job without distributed training is unchanged.
func SlurmPeers(h configs.HostNetwork, p *configs.Profile, thisNode string, allocNodes []string) []string {
	if p.Network.Mode != "sandbox" || len(p.Network.PeerPorts) == 0 {
		return nil
	}
	var out []string
	for _, name := range allocNodes {
		for _, n := range h.Nodes {
			if n.Name == name && name != thisNode && n.Subnet != h.NodeSubnet {
				out = append(out, name)
			}
		}
	}
	return out
}

// nodeName is this node's name as its jobs' peers know it: the entry of
// network.nodes that holds network.node_subnet, else the Slurm node name of
// the host config, else the short host name ("" when it is not a usable
// host name).
func (l *Launcher) nodeName() string {
	h := l.Host.Network
	n := ""
	for _, nd := range h.Nodes {
		if h.NodeSubnet != "" && nd.Subnet == h.NodeSubnet {
			n = nd.Name
		}
	}
	if n == "" {
		n = l.Host.Slurm.NodeName
	}
	if n == "" {
		host, _ := os.Hostname()
		n, _, _ = strings.Cut(host, ".")
	}
	if !netguard.ValidHostName(n) {
		return ""
	}
	return n
}

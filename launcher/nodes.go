package launcher

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/netguard"
)

// Multi-node training (host-gateway style): each node's jobs get addresses
// from its network.node_subnet; netguard routes every other node's subnet
// via that node's address; a peer named by node name stands for its whole
// job subnet, so the ranks there are reached by their own addresses (no
// NAT) on the profile's peer_ports.

// parsePeer accepts a node name of the host's network.nodes (its job
// subnet), an address or a CIDR.
func parsePeer(s string, nodes []configs.HostNode) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	for _, n := range nodes {
		if n.Name == s {
			return netip.ParsePrefix(n.Subnet)
		}
	}
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if len(nodes) == 0 {
			return netip.Prefix{}, fmt.Errorf("want an IP address or CIDR")
		}
		return netip.Prefix{}, fmt.Errorf("want a node of the host's network.nodes, an IP address or a CIDR")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
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

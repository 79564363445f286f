package launcher

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/netguard"
)

// netConfig turns the profile's network section, the command line's --allow,
// --peers and --learn, and the host's network settings into netguard's
// config, and validates it completely. nil means no network at all.
func (l *Launcher) netConfig(p *configs.Profile, req Request) (*netguard.Config, error) {
	if p.Network.Mode != "sandbox" && len(req.Allow) == 0 && len(req.Peers) == 0 && !req.Learn && req.Allocation == "" {
		return nil, nil
	}
	mode, err := netguard.ParseMode(p.Network.Policy)
	if err != nil {
		return nil, fmt.Errorf("network.policy: %w", err)
	}
	if req.Learn {
		mode = netguard.Audit
	}
	cfg := &netguard.Config{
		Mode:         mode,
		Unrestricted: p.Network.Unrestricted,
		EgressBudget: int64(p.Network.EgressBudget),
		MinTTL:       p.Network.DNSMinTTL.D(),
		StateDir:     filepath.Join(l.Host.StateDir, "netguard"),
		Logger:       l.Log,
	}
	if cfg.MinTTL == 0 {
		cfg.MinTTL = 30 * time.Second
	}
	for _, add := range []func(*netguard.Config, *configs.Profile, Request) error{
		addAllowRules, l.addPool, addPeerPorts, l.addAllocation, l.addPeers, l.addHostNetwork,
	} {
		if err := add(cfg, p, req); err != nil {
			return nil, err
		}
	}
	// JobID is filled at setup; validate with a placeholder now, before any
	// side effect.
	check := *cfg
	check.JobID = "000000000000"
	if err := check.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// addAllowRules adds the profile's allowlist, then --allow's.
func addAllowRules(cfg *netguard.Config, p *configs.Profile, req Request) error {
	for i, a := range p.Network.Allow {
		r, err := netguard.ParseRule(a)
		if err != nil {
			return fmt.Errorf("network.allow[%d]: %w", i, err)
		}
		cfg.Allow = append(cfg.Allow, r)
	}
	for _, a := range req.Allow {
		r, err := netguard.ParseRule(a)
		if err != nil {
			return fmt.Errorf("--allow: %w", err)
		}
		cfg.Allow = append(cfg.Allow, r)
	}
	return nil
}

// addPool sets where job addresses come from: the host's network.pool, or
// this node's job subnet (what other nodes route here).
func (l *Launcher) addPool(cfg *netguard.Config, _ *configs.Profile, _ Request) error {
	h := l.Host.Network
	cfg.Pool = netguard.DefaultPool
	if pool := h.Pool; pool != "" || h.NodeSubnet != "" {
		if h.NodeSubnet != "" {
			pool = h.NodeSubnet
		}
		pfx, err := netip.ParsePrefix(pool)
		if err != nil {
			return fmt.Errorf("host network.pool/node_subnet: %w", err)
		}
		cfg.Pool = pfx
	}
	return nil
}

func addPeerPorts(cfg *netguard.Config, p *configs.Profile, _ Request) error {
	for i, s := range p.Network.PeerPorts {
		pr, err := netguard.ParsePortRange(s)
		if err != nil {
			return fmt.Errorf("network.peer_ports[%d]: %w", i, err)
		}
		cfg.PeerPorts = append(cfg.PeerPorts, pr)
	}
	return nil
}

// addAllocation makes the job a peer of its allocation's jobs (--allocation):
// its address index and the allocation's node names.
func (l *Launcher) addAllocation(cfg *netguard.Config, _ *configs.Profile, req Request) error {
	if req.Allocation == "" {
		return nil
	}
	if len(cfg.PeerPorts) == 0 {
		return fmt.Errorf("--allocation %s: the profile's network.peer_ports is empty: list the rendezvous and Gloo/NCCL ports, e.g. [29500, 1024-65535]", req.Allocation)
	}
	h := l.Host.Network
	cfg.Allocation, cfg.AllocationBlock, cfg.AllocationIndex = req.Allocation, h.AllocationBlock, req.AllocationIndex
	if cfg.AllocationIndex == 0 {
		// The caller's local task (srun sets it; whatever a caller claims
		// picks only among its own allocation's addresses).
		if n, err := strconv.Atoi(envMap(req.CallerEnv)["SLURM_LOCALID"]); err == nil && n >= 0 {
			cfg.AllocationIndex = n
		}
	}
	names, err := allocationHosts(h, cfg.Pool, req.Allocation, l.nodeName())
	if err != nil {
		return err
	}
	cfg.HostNames = names
	return nil
}

// addPeers adds the profile's and --peers' peers (node names, addresses,
// prefixes), which need peer ports.
func (l *Launcher) addPeers(cfg *netguard.Config, p *configs.Profile, req Request) error {
	h := l.Host.Network
	for i, s := range append(append([]string(nil), p.Network.Peers...), req.Peers...) {
		pfx, err := parsePeer(s, h.Nodes, req.Allocation, h.AllocationBlock)
		if err != nil {
			return fmt.Errorf("peer %d %q: %w", i, s, err)
		}
		cfg.Peers = append(cfg.Peers, pfx...)
	}
	if len(cfg.Peers) > 0 && len(cfg.PeerPorts) == 0 {
		return fmt.Errorf("peers are set but network.peer_ports is empty: list the rendezvous and Gloo/NCCL ports, e.g. [29500, 1024-65535]")
	}
	return nil
}

// addHostNetwork adds the host's routes to other nodes' jobs, its DNS
// upstreams and its internal ranges.
func (l *Launcher) addHostNetwork(cfg *netguard.Config, _ *configs.Profile, _ Request) error {
	h := l.Host.Network
	var err error
	if cfg.NodeRoutes, err = nodeRoutes(h); err != nil {
		return err
	}
	for _, u := range h.Upstreams {
		// The host config accepts a bare address (port 53), netguard wants ip:port.
		if a, err := netip.ParseAddr(u); err == nil {
			u = netip.AddrPortFrom(a, 53).String()
		}
		cfg.Upstreams = append(cfg.Upstreams, u)
	}
	for _, s := range h.InternalRanges {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("host network.internal_ranges: %w", err)
		}
		cfg.InternalRanges = append(cfg.InternalRanges, pfx)
	}
	return nil
}

// netguardKinds are the resource kinds netguard records; its GC removes them.
var netguardKinds = []string{netguard.KindLease, netguard.KindForwarding, netguard.KindRoute, netguard.KindNetns, netguard.KindVeth, netguard.KindTable}

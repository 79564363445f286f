package launcher

import (
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/netguard"
)

var twoNodes = configs.HostNetwork{Pool: "10.213.0.0/16", NodeSubnet: "10.213.1.0/24", Upstreams: []string{"127.0.0.53"},
	Nodes: []configs.HostNode{{Name: "gpu1", Address: "192.0.2.1", Subnet: "10.213.1.0/24"}, {Name: "gpu2", Address: "192.0.2.2", Subnet: "10.213.2.0/24"}}}

// TestNetConfigNodes: node_subnet is the pool, other nodes become routes,
// --peers accepts node names (their job subnets).
func TestNetConfigNodes(t *testing.T) {
	l := &Launcher{Host: &configs.Host{StateDir: t.TempDir(), Network: twoNodes}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p := &configs.Profile{}
	p.Network.Mode = "sandbox"
	p.Network.PeerPorts = []string{"29500-29510"}
	cfg, err := l.netConfig(p, Request{Peers: []string{"gpu2", "10.9.0.7"}})
	if err != nil {
		t.Fatalf("netConfig: %v", err)
	}
	if cfg.Pool != netip.MustParsePrefix("10.213.1.0/24") {
		t.Errorf("Pool = %s; want node_subnet", cfg.Pool)
	}
	wantRoutes := []netguard.NodeRoute{{Subnet: netip.MustParsePrefix("10.213.2.0/24"), Via: netip.MustParseAddr("192.0.2.2")}}
	if !slices.Equal(cfg.NodeRoutes, wantRoutes) {
		t.Errorf("NodeRoutes = %v; want %v", cfg.NodeRoutes, wantRoutes)
	}
	wantPeers := []netip.Prefix{netip.MustParsePrefix("10.213.2.0/24"), netip.MustParsePrefix("10.9.0.7/32")}
	if !slices.Equal(cfg.Peers, wantPeers) {
		t.Errorf("Peers = %v; want %v", cfg.Peers, wantPeers)
	}
	if _, err := l.netConfig(p, Request{Peers: []string{"gpu3"}}); err == nil || !strings.Contains(err.Error(), "network.nodes") {
		t.Errorf("unknown node name: %v", err)
	}
}

// TestNetConfigAllocation: with an allocation, a node peer is the
// allocation's address there only, every node name (and this node's) is
// an /etc/hosts entry for that address, and no peer_ports is refused.
func TestNetConfigAllocation(t *testing.T) {
	h := &configs.Host{StateDir: t.TempDir(), Network: twoNodes}
	h.Slurm.NodeName = "gpu1"
	l := &Launcher{Host: h, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p := &configs.Profile{}
	p.Network.Mode = "sandbox"
	p.Network.PeerPorts = []string{"29500-29510"}
	cfg, err := l.netConfig(p, Request{Peers: []string{"gpu2"}, Allocation: "70"})
	if err != nil {
		t.Fatalf("netConfig: %v", err)
	}
	// 70 mod 64 slots of a /24 = slot 6: .24/30, job address .26.
	if want := []netip.Prefix{netip.MustParsePrefix("10.213.2.26/32")}; !slices.Equal(cfg.Peers, want) {
		t.Errorf("Peers = %v; want %v (the allocation's address on gpu2, not its subnet)", cfg.Peers, want)
	}
	want := map[string]netip.Addr{"gpu1": netip.MustParseAddr("10.213.1.26"), "gpu2": netip.MustParseAddr("10.213.2.26")}
	if len(cfg.HostNames) != len(want) || cfg.HostNames["gpu1"] != want["gpu1"] || cfg.HostNames["gpu2"] != want["gpu2"] {
		t.Errorf("HostNames = %v; want %v", cfg.HostNames, want)
	}
	if cfg.Allocation != "70" {
		t.Errorf("Allocation = %q", cfg.Allocation)
	}
	// Blocks of 4 (16 per /24): a node peer is the allocation's 4 addresses
	// there (70 mod 16 = block 6: slots 24-27), the task is SLURM_LOCALID.
	l.Host.Network.AllocationBlock = 4
	cfg, err = l.netConfig(p, Request{Peers: []string{"gpu2"}, Allocation: "70", CallerEnv: []string{"SLURM_LOCALID=3"}})
	if err != nil {
		t.Fatalf("netConfig block 4: %v", err)
	}
	wantPeers := []netip.Prefix{netip.MustParsePrefix("10.213.2.98/32"), netip.MustParsePrefix("10.213.2.102/32"),
		netip.MustParsePrefix("10.213.2.106/32"), netip.MustParsePrefix("10.213.2.110/32")}
	if !slices.Equal(cfg.Peers, wantPeers) || cfg.AllocationBlock != 4 || cfg.AllocationIndex != 3 || cfg.HostNames["gpu2"] != netip.MustParseAddr("10.213.2.98") {
		t.Errorf("block 4: Peers %v block %d index %d HostNames %v; want %v, 4, 3, gpu2 -> 10.213.2.98", cfg.Peers, cfg.AllocationBlock, cfg.AllocationIndex, cfg.HostNames, wantPeers)
	}
	l.Host.Network.AllocationBlock = 0
	p.Network.PeerPorts = nil
	if _, err := l.netConfig(p, Request{Allocation: "70"}); err == nil || !strings.Contains(err.Error(), "--allocation 70: the profile's network.peer_ports is empty") {
		t.Errorf("allocation without peer_ports: %v", err)
	}
	p.Network.PeerPorts = []string{"29500"}
	if _, err := l.netConfig(p, Request{Allocation: "a b"}); err == nil || !strings.Contains(err.Error(), `allocation "a b"`) {
		t.Errorf("bad allocation id: %v", err)
	}
	// One node, no network.nodes: this host's name maps to the allocation's
	// address in the pool.
	l.Host.Network = configs.HostNetwork{Upstreams: []string{"127.0.0.53"}}
	cfg, err = l.netConfig(p, Request{Allocation: "3"})
	if err != nil {
		t.Fatalf("netConfig one node: %v", err)
	}
	if a, _ := netguard.AllocationAddr(netguard.DefaultPool, "3", 1); cfg.HostNames["gpu1"] != a || len(cfg.HostNames) != 1 {
		t.Errorf("one node: HostNames = %v; want gpu1 -> %s", cfg.HostNames, a)
	}
}

func TestSlurmPeers(t *testing.T) {
	p := &configs.Profile{}
	p.Network.Mode = "sandbox"
	alloc := []string{"gpu1", "gpu2", "cpu7"}
	if got := SlurmPeers(twoNodes, p, "gpu1", alloc); got != nil {
		t.Errorf("no peer_ports: SlurmPeers = %v; want none", got)
	}
	p.Network.PeerPorts = []string{"29500"}
	if got := SlurmPeers(twoNodes, p, "gpu1", alloc); !slices.Equal(got, []string{"gpu2"}) {
		t.Errorf("SlurmPeers = %v; want [gpu2] (not this node, not unlisted nodes)", got)
	}
	p.Network.Mode = "none"
	if got := SlurmPeers(twoNodes, p, "gpu1", alloc); got != nil {
		t.Errorf("network none: SlurmPeers = %v; want none", got)
	}
}

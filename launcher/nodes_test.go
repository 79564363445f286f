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

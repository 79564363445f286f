package configs

import (
	"strings"
	"testing"
)

const nodesOK = `version: 1
network:
  node_subnet: 10.213.1.0/24
  nodes:
  - {name: gpu1, address: 192.0.2.1, subnet: 10.213.1.0/24}
  - {name: gpu2, address: 192.0.2.2, subnet: 10.213.2.0/24}
`

func TestHostNodes(t *testing.T) {
	f := writeFile(t, t.TempDir(), "h.yaml", nodesOK)
	h, err := LoadHost(f, true)
	if err != nil {
		t.Fatal(err)
	}
	if h.Network.Pool != "10.213.1.0/24" {
		t.Errorf("pool = %q; want node_subnet to replace an unset pool", h.Network.Pool)
	}
	if len(h.Network.Nodes) != 2 || h.Network.Nodes[1] != (HostNode{Name: "gpu2", Address: "192.0.2.2", Subnet: "10.213.2.0/24"}) {
		t.Errorf("nodes = %+v", h.Network.Nodes)
	}
	f = writeFile(t, t.TempDir(), "h.yaml", strings.Replace(nodesOK, "network:\n", "network:\n  pool: 10.213.0.0/16\n", 1))
	if h, err = LoadHost(f, true); err != nil || h.Network.Pool != "10.213.0.0/16" {
		t.Errorf("node_subnet inside pool: %v, pool %q", err, h.Network.Pool)
	}
}

func TestHostNodesErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"subnet outside pool", "version: 1\nnetwork: {pool: 10.213.0.0/16, node_subnet: 10.9.1.0/24}\n",
			"network.node_subnet: 10.9.1.0/24 must lie inside network.pool 10.213.0.0/16 (or leave pool unset)"},
		{"subnet not a subnet", "version: 1\nnetwork: {node_subnet: 10.213.1.7/24}\n",
			`network.node_subnet: must be an IPv4 subnet of /30 or wider such as 10.213.1.0/24, got "10.213.1.7/24"`},
		{"nodes without node_subnet", "version: 1\nnetwork:\n  nodes: [{name: a, address: 192.0.2.1, subnet: 10.213.1.0/24}]\n",
			"network.nodes: need network.node_subnet"},
		{"overlap", strings.Replace(nodesOK, "10.213.2.0/24", "10.213.0.0/16", 1), "network.nodes[1].subnet: 10.213.0.0/16 overlaps 10.213.1.0/24 of network.nodes[0]"},
		{"own subnet missing", strings.Replace(nodesOK, "192.0.2.1, subnet: 10.213.1.0/24", "192.0.2.1, subnet: 10.213.3.0/24", 1),
			"network.nodes: this node's subnet 10.213.1.0/24 (network.node_subnet) must be listed exactly once, found 0 times"},
		{"address not an IP", strings.Replace(nodesOK, "192.0.2.2", "gpu2.example", 1), `network.nodes[1].address: must be the node's IPv4 host address such as 192.0.2.7, got "gpu2.example"`},
		{"address inside a job subnet", strings.Replace(nodesOK, "192.0.2.2", "10.213.1.9", 1), "network.nodes[1].address: 10.213.1.9 lies inside the job subnet 10.213.1.0/24 of network.nodes[0]"},
		{"duplicate name", strings.Replace(nodesOK, "gpu2", "gpu1", 1), `network.nodes[1].name: node "gpu1" is listed twice`},
		{"unknown field", "version: 1\nnetwork:\n  node_subnet: 10.213.1.0/24\n  nodes: [{name: a, addr: 192.0.2.1, subnet: 10.213.1.0/24}]\n", "network.nodes[0].addr: unknown field; allowed: address, name, subnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, t.TempDir(), "h.yaml", tt.yaml)
			h, err := LoadHost(f, true)
			if err == nil {
				t.Fatalf("accepted: %+v", h.Network)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

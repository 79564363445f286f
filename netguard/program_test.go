package netguard

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("program differs from %s (go test -update to accept):\n%s", path, got)
	}
}

func testPlan() plan {
	return plan{Table: "securetrain-job1", HostIf: "stg3", JobAddr: netip.MustParseAddr("10.213.0.14"),
		ProxyAddr: netip.MustParseAddr("10.213.0.13"), LogGroup: 21251,
		Deny4: append(append([]netip.Prefix{}, alwaysDenied4...), DefaultPool, netip.MustParsePrefix("192.0.2.10/32")),
		Deny6: alwaysDenied6}
}

func mustRules(t *testing.T, ss ...string) []Rule {
	var rs []Rule
	for _, s := range ss {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

func TestProgramEnforce(t *testing.T) {
	cfg := Config{JobID: "job1", Mode: Enforce,
		Allow:      mustRules(t, "pypi.org:443", "*.s3.amazonaws.com", "tcp:10.20.0.0/16:5000-5010", "udp:203.0.113.7:123"),
		Peers:      []netip.Prefix{netip.MustParsePrefix("10.213.8.0/24")},
		PeerPorts:  []PortRange{{29500, 29510}},
		Allocation: "4242"}
	golden(t, "enforce", buildProgram(cfg, testPlan()).String())
}

func TestProgramAudit(t *testing.T) {
	golden(t, "audit", buildProgram(Config{JobID: "job1", Mode: Audit}, testPlan()).String())
}

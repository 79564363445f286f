package netguard

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/securetrain/securetrain/jobstate"
)

// BenchmarkSetupClose measures the launch time netguard adds: Setup (lease,
// netns, veth, table, NFLOG, DNS proxy) plus Close.
func BenchmarkSetupClose(b *testing.B) {
	w := newWorld(b)
	cfg := w.config(b, Enforce, "allowed.test:8080", "tcp:10.214.1.0/24:9000-9100")
	for b.Loop() {
		g, err := Setup(b.Context(), cfg, &jobstate.MemRecorder{})
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViolationLatency measures the time from the job's first
// forbidden packet (a UDP datagram to a new port of the evil host) to the
// violation event on Violations(); p50 and p99 are reported.
func BenchmarkViolationLatency(b *testing.B) {
	w := newWorld(b)
	g := setup(b, w.config(b, Enforce, "allowed.test:8080"))
	var conn net.PacketConn
	must(b, inNetns(g.NetnsPath(), func() error {
		var err error
		conn, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	}))
	defer conn.Close()
	var lat []time.Duration
	port := 20000
	for b.Loop() {
		port++
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(evilIP, uint16(port)))
		start := time.Now()
		if _, err := conn.WriteTo([]byte("x"), dst); err != nil {
			b.Fatal(err)
		}
		v := nextViolation(b, g)
		lat = append(lat, time.Since(start))
		if v.Port != port {
			b.Fatalf("violation for port %d, want %d", v.Port, port)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func TestCheck(t *testing.T) {
	newWorld(t) // root, and a clean state to compare with
	res := Check(t.TempDir())
	byName := map[string]CheckResult{}
	for _, r := range res {
		byName[r.Name] = r
	}
	for _, n := range []string{"nf_tables", "netns", "veth", "host firewall"} {
		if r, ok := byName[n]; !ok || !r.OK {
			t.Errorf("check %s = %+v", n, r)
		}
	}
	out, _ := listNetns()
	for _, n := range out {
		if strings.HasPrefix(n, "securetrain-check-") {
			t.Errorf("check left netns %s", n)
		}
	}

	// A host firewall whose forward chain drops by default is named, with
	// what to accept there.
	c, err := nftables.New()
	must(t, err)
	drop := nftables.ChainPolicyDrop
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "sttest-fw"})
	c.AddChain(&nftables.Chain{Name: "fwd", Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Policy: &drop})
	must(t, c.Flush())
	res = Check(t.TempDir())
	must(t, hostnet.DeleteTable("sttest-fw"))
	found := false
	for _, r := range res {
		if r.Name == "host firewall" {
			found = true
			if r.OK || !strings.Contains(r.Detail, "policy drop in inet sttest-fw/fwd") || !strings.Contains(r.Detail, `"stg*"`) {
				t.Errorf("check with a forward drop policy = %+v", r)
			}
		}
	}
	if !found {
		t.Errorf("no host firewall line in %+v", res)
	}
}

package netguard

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/securetrain/securetrain/violation"
)

func TestEnforce(t *testing.T) {
	w := newWorld(t)
	g := setup(t, w.config(t, Enforce, "allowed.test:8080", "tcp:10.214.1.2:9090", "rebind.test", "*.svc.test:8080"))
	const K = violation.Killed
	evil := evilIP.String()

	t.Run("allowed by name", func(t *testing.T) {
		r, err := jobLookup(g, "allowed.test")
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != allowedIP.String() {
			t.Fatalf("lookup allowed.test = %v, %v", r, err)
		}
		if got, err := jobDial(g, "tcp4", "10.214.1.2:8080"); got != "allowed" {
			t.Fatalf("dial allowed.test:8080 = %q, %v", got, err)
		}
		if _, err := jobLookup(g, "api.svc.test"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("allowed by IP", func(t *testing.T) {
		if got, err := jobDial(g, "tcp4", "10.214.1.2:9090"); got != "allowed" {
			t.Fatalf("dial 10.214.1.2:9090 = %q, %v", got, err)
		}
		noPendingViolation(t, g, 40001)
	})
	t.Run("unlisted name refused, not forwarded", func(t *testing.T) {
		r, err := jobLookup(g, "evil.test")
		if err != nil || r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Fatalf("lookup evil.test = %v, %v; want REFUSED", r, err)
		}
		expectViolation(t, g, violation.DNS, "dns", "evil.test", 0, K)
		if w.seen("evil.test") {
			t.Fatal("the upstream resolver saw evil.test")
		}
		if !w.seen("allowed.test") {
			t.Fatal("the upstream resolver never saw allowed.test: test resolver not in use")
		}
	})
	t.Run("evil by IP", func(t *testing.T) {
		if got, err := jobDial(g, "tcp4", evil+":8080"); err == nil || got != "" {
			t.Fatalf("dial evil = %q, %v; want failure", got, err)
		}
		v := expectViolation(t, g, violation.Network, "tcp", evil, 8080, K)
		if !strings.Contains(v.String(), "10.214.2.2 port 8080") {
			t.Errorf("violation text %q does not name address and port", v)
		}
	})
	t.Run("allowed IP on other port", func(t *testing.T) {
		if got, err := jobDial(g, "tcp4", "10.214.1.2:53"); err == nil || got != "" {
			t.Fatalf("dial 10.214.1.2:53 = %q, %v; want failure", got, err)
		}
		expectViolation(t, g, violation.Network, "tcp", "10.214.1.2", 53, K)
	})
	t.Run("metadata", func(t *testing.T) {
		if _, err := jobDial(g, "tcp4", "169.254.169.254:80"); err == nil {
			t.Fatal("metadata reachable")
		}
		v := expectViolation(t, g, violation.Network, "tcp", "169.254.169.254", 80, K)
		if !strings.Contains(v.Detail, "always-denied") {
			t.Errorf("detail %q", v.Detail)
		}
	})
	t.Run("host service", func(t *testing.T) {
		addr := netip.AddrPortFrom(g.ProxyAddr(), uint16(w.hostSvc)).String()
		if got, err := jobDial(g, "tcp4", addr); err == nil || got != "" {
			t.Fatalf("host service reachable: %q, %v", got, err)
		}
		expectViolation(t, g, violation.Network, "tcp", g.ProxyAddr().String(), w.hostSvc, K)
	})
	t.Run("DNS around the proxy", func(t *testing.T) {
		must(t, jobUDP(g, evil+":53"))
		v := expectViolation(t, g, violation.Network, "udp", evil, 53, K)
		if !strings.Contains(v.Detail, "DNS") {
			t.Errorf("detail %q", v.Detail)
		}
	})
	t.Run("ICMP echo", func(t *testing.T) {
		if err := jobPing(g, evilIP); err == nil {
			t.Fatal("ping to evil answered")
		}
		expectViolation(t, g, violation.Network, "icmp", evil, 0, K)
	})
	t.Run("raw socket", func(t *testing.T) {
		must(t, jobRaw(g, evilIP))
		expectViolation(t, g, violation.Network, "ip-proto-253", evil, 0, K)
	})
	t.Run("IPv6", func(t *testing.T) {
		if got, err := jobDial(g, "tcp6", "[fd99::2]:8080"); err == nil || got != "" {
			t.Fatalf("IPv6 egress worked: %q, %v", got, err)
		}
	})
	t.Run("rebinding answer dropped", func(t *testing.T) {
		r, err := jobLookup(g, "rebind.test")
		if err != nil || len(r.Answer) != 0 {
			t.Fatalf("lookup rebind.test = %v, %v; want no answer", r, err)
		}
	})
	t.Run("egress bytes", func(t *testing.T) {
		eb := g.EgressBytes()
		if eb[allowedIP.String()] == 0 {
			t.Fatalf("EgressBytes = %v, want bytes for %s", eb, allowedIP)
		}
		if eb[evil] != 0 {
			t.Fatalf("EgressBytes counts denied traffic: %v", eb)
		}
	})
}

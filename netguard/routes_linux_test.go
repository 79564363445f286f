package netguard

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ourRoute reports whether the main table routes p with RouteProtocol.
func ourRoute(t testing.TB, p netip.Prefix) bool {
	t.Helper()
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(p), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Protocol == RouteProtocol {
			return true
		}
	}
	return false
}

// nodeLink is a veth pair on the host, one end holding 10.214.200.1/30, so
// that 10.214.200.2 (the other "node") is a connected next hop; removed at
// cleanup.
func nodeLink(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	tag := randTag()
	name := "stnr" + tag
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "stnq" + tag}))
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			must(t, netlink.LinkDel(l))
		}
	})
	l, err := netlink.LinkByName(name)
	must(t, err)
	must(t, netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix("10.214.200.1/30"))}))
	must(t, netlink.LinkSetUp(l))
	q, err := netlink.LinkByName("stnq" + tag)
	must(t, err)
	must(t, netlink.LinkSetUp(q))
}

// TestNodeRoutesLifecycle: every lease adds the missing node routes, the
// last lease removes the ones netguard added (gc included), an admin's
// route is used and kept, a conflicting one fails the lease cleanly.
func TestNodeRoutesLifecycle(t *testing.T) {
	nodeLink(t)
	sub := netip.MustParsePrefix("10.214.201.0/24")
	via := netip.MustParseAddr("10.214.200.2")
	cfg := Config{JobID: "routes", Pool: testPool, StateDir: t.TempDir(), NodeRoutes: []NodeRoute{{Subnet: sub, Via: via}}}
	rec := &jobstate.MemRecorder{}
	a, err := acquireLease(cfg, rec)
	must(t, err)
	t.Cleanup(func() { removeNodeRoutes(cfg.StateDir) })
	if !ourRoute(t, sub) {
		t.Fatalf("no route to %s after the first lease", sub)
	}
	b, err := acquireLease(cfg, rec)
	must(t, err)
	must(t, releaseLease(cfg.StateDir, a))
	if !ourRoute(t, sub) {
		t.Fatalf("route to %s gone while a lease is left", sub)
	}
	var routeRecs int
	for _, r := range rec.Snapshot() {
		if r.Kind == KindRoute {
			routeRecs++
			if r.Name != sub.String() || r.Attrs["via"] != via.String() {
				t.Errorf("route record %s", r)
			}
		}
	}
	if routeRecs != 1 {
		t.Errorf("%d route records; want 1 (added once)", routeRecs)
	}
	// gc of the last lease (as after a crash) removes the route.
	for _, r := range rec.Snapshot() {
		if r.Kind == KindLease && r.Attrs["slot"] == strconv.Itoa(b) {
			must(t, GC(context.Background(), r))
		}
	}
	if ourRoute(t, sub) {
		t.Fatalf("route to %s left after the last lease", sub)
	}
	if ents, _ := os.ReadDir(routesDir(cfg.StateDir)); len(ents) != 0 {
		t.Errorf("route files left: %v", ents)
	}

	// The admin's route (another protocol, same next hop) is kept.
	admin := &netlink.Route{Dst: prefixNet(sub), Gw: net.IP(via.AsSlice()), Protocol: unix.RTPROT_STATIC}
	must(t, netlink.RouteAdd(admin))
	t.Cleanup(func() { netlink.RouteDel(admin) })
	a, err = acquireLease(cfg, rec)
	must(t, err)
	must(t, releaseLease(cfg.StateDir, a))
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixNet(sub), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	must(t, err)
	if len(rs) != 1 || rs[0].Protocol != unix.RTPROT_STATIC {
		t.Fatalf("admin route after a job: %v", rs)
	}
	must(t, netlink.RouteDel(admin))

	// A route with another next hop: the lease fails, nothing is left.
	other := &netlink.Route{Dst: prefixNet(sub), Gw: net.IP(via.AsSlice()), Protocol: unix.RTPROT_STATIC}
	conflict := Config{JobID: "routes", Pool: testPool, StateDir: cfg.StateDir, NodeRoutes: []NodeRoute{{Subnet: sub, Via: netip.MustParseAddr("10.214.200.3")}}}
	must(t, netlink.RouteAdd(other))
	t.Cleanup(func() { netlink.RouteDel(other) })
	if _, err := acquireLease(conflict, rec); err == nil {
		t.Fatal("lease granted while the host routes the subnet via another next hop")
	}
	if ents, _ := os.ReadDir(cfg.StateDir + "/leases"); len(ents) != 0 {
		t.Errorf("lease left after a failed route: %v", ents)
	}
	if _, err := os.Stat(cfg.StateDir + "/forwarding-owned"); err == nil {
		t.Error("forwarding left on after a failed route")
	}
}

package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Node routes (multi-node training, host-gateway style). Lifecycle: like
// IPv4 forwarding, they are host state that exists only while jobs do.
// Every job's lease adds the routes of Config.NodeRoutes that are missing
// (under the state lock; idempotent), marked with protocol RouteProtocol
// and listed in StateDir/routes/; the last lease of StateDir to go (the
// job's Close, or gc after a crash) deletes the listed ones. A route the
// admin made (same subnet, same next hop) is used and never deleted; one
// with another next hop fails the job's setup (fail closed).
//
// The routes carry no permission: forwarding confinement
// (table inet securetrain-fwd) passes only packets to or from job veths,
// and each job's own table passes only its Peers on PeerPorts, in both
// directions, without NAT.

// RouteProtocol marks the routes netguard adds (rtm_protocol).
const RouteProtocol netlink.RouteProtocol = 0x53

// KindRoute is the record of a node route netguard added. gc removes it
// with the last lease of its state directory.
const KindRoute = "netguard.route"

func routesDir(dir string) string { return filepath.Join(dir, "routes") }

// routeFile names a subnet's file: "10.213.2.0_24".
func routeFile(dir string, p netip.Prefix) string {
	return filepath.Join(routesDir(dir), strings.Replace(p.String(), "/", "_", 1))
}

func ensureNodeRoutes(dir string, routes []NodeRoute, rec jobstate.Recorder) error {
	if len(routes) == 0 {
		return nil
	}
	if err := os.MkdirAll(routesDir(dir), 0o700); err != nil {
		return fmt.Errorf("netguard state dir: %w", err)
	}
	for _, r := range routes {
		have, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{Dst: prefixNet(r.Subnet), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("node route %s: list host routes: %w", r, err)
		}
		if len(have) > 0 {
			if gw, ok := netip.AddrFromSlice(have[0].Gw); ok && gw.Unmap() == r.Via {
				continue // ours from another job, or the admin's
			}
			return fmt.Errorf("node route %s: the host routes %s otherwise (%s); fix network.nodes or the host route", r, r.Subnet, have[0])
		}
		if err := rec.Record(jobstate.Resource{Kind: KindRoute, Name: r.Subnet.String(),
			Attrs: map[string]string{"via": r.Via.String(), "state_dir": dir}}); err != nil {
			return fmt.Errorf("record node route %s: %w", r, err)
		}
		f := routeFile(dir, r.Subnet)
		if err := os.WriteFile(f, []byte(r.Via.String()+"\n"), 0o600); err != nil {
			return fmt.Errorf("netguard node route: %w", err)
		}
		if err := netlink.RouteAdd(nodeRoute(r)); err != nil {
			os.Remove(f)
			return fmt.Errorf("node route %s: add: %w (is %s on a connected network?)", r, err, r.Via)
		}
	}
	return nil
}

func nodeRoute(r NodeRoute) *netlink.Route {
	return &netlink.Route{Dst: prefixNet(r.Subnet), Gw: net.IP(r.Via.AsSlice()), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// removeNodeRoutes deletes the routes netguard added for dir. A route that
// is gone, or that someone replaced (other protocol), is left alone.
func removeNodeRoutes(dir string) error {
	ents, err := os.ReadDir(routesDir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netguard node routes: %w", err)
	}
	var errs []error
	for _, e := range ents {
		f := filepath.Join(routesDir(dir), e.Name())
		p, err1 := netip.ParsePrefix(strings.Replace(e.Name(), "_", "/", 1))
		b, err2 := os.ReadFile(f)
		via, err3 := netip.ParseAddr(strings.TrimSpace(string(b)))
		if err := errors.Join(err1, err2, err3); err != nil {
			errs = append(errs, fmt.Errorf("netguard node route file %s: %w", f, err))
			continue
		}
		if err := netlink.RouteDel(nodeRoute(NodeRoute{Subnet: p, Via: via})); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("node route %s via %s: delete: %w", p, via, err))
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

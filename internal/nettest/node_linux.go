package nettest

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Node is a simulated other cluster node for multi-node tests: a namespace
// reached from the host through a veth (the node's "host address"), with
// a job address of its own on its loopback (inside the node's job subnet)
// and a route back to this host's job subnet via the host's end of the
// veth (host-gateway style, no NAT).
type Node struct {
	Netns    string     // namespace path
	HostSide netip.Addr // the host's end of the veth (this node's address as B sees it)
	Address  netip.Addr // node B's host address (next hop to its job subnet)
	JobAddr  netip.Addr // node B's job address
}

// AddNode builds a Node: link is a /30 (host end .1, node end .2), jobAddr
// the node's job address (none: a securetrain of the node's own makes its
// jobs), back the subnet the node routes to the host. It
// is removed at t's cleanup (the kernel drops routes through its veth with
// it).
func AddNode(t testing.TB, tag string, link netip.Prefix, jobAddr netip.Addr, back netip.Prefix) *Node {
	t.Helper()
	ns, hostIf := "stt-"+tag+"-n", "sttn"+tag
	must(t, hostnet.NewNamedNetns(ns))
	t.Cleanup(func() {
		if err := hostnet.DeleteLink(hostIf); err != nil {
			t.Error(err)
		}
		if err := hostnet.DeleteNetns(ns); err != nil {
			t.Error(err)
		}
	})
	n := &Node{Netns: filepath.Join("/var/run/netns", ns), HostSide: link.Masked().Addr().Next(), JobAddr: jobAddr}
	n.Address = n.HostSide.Next()
	h, err := netns.GetFromName(ns)
	must(t, err)
	defer h.Close()
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h))}))
	host, err := netlink.LinkByName(hostIf)
	must(t, err)
	must(t, netlink.AddrAdd(host, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(n.HostSide, 30))}))
	must(t, netlink.LinkSetUp(host))
	nh, err := netlink.NewHandleAt(h)
	must(t, err)
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	must(t, err)
	must(t, nh.LinkSetUp(lo))
	if jobAddr.IsValid() {
		must(t, nh.AddrAdd(lo, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(jobAddr, 32))}))
	}
	eth, err := nh.LinkByName("eth0")
	must(t, err)
	must(t, nh.AddrAdd(eth, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(n.Address, 30))}))
	must(t, nh.LinkSetUp(eth))
	must(t, nh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipnet(back), Gw: net.IP(n.HostSide.AsSlice())}))
	return n
}

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/nettest"
	"github.com/securetrain/securetrain/netguard"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// peerScript: listen on a peer port (rank-0 style), connect to node B's
// job on a peer port and print the address it connected from, accept node
// B's connection back, then try node B on a non-peer port.
const peerScript = `import socket, sys
def out(*a): print(*a, flush=True)
nb, pout, pin, bad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ln = socket.socket()
ln.bind(("0.0.0.0", pin)); ln.listen(1)
s = socket.create_connection((nb, pout), timeout=5)
out("me:%s" % s.getsockname()[0])
out("said:%s" % s.recv(64).decode()); s.close()
# torch (torchrun's agent, Gloo without an interface name) resolves the
# host name: it must be the job's own address, answered locally.
out("hostname:%s" % socket.gethostbyname(socket.gethostname()))
ln.settimeout(20)
c, a = ln.accept()
out("accepted:%s:%s" % (a[0], c.recv(64).decode())); c.sendall(b"ok"); c.close()
try:
    socket.create_connection((nb, bad), timeout=2); out("reached:%d" % bad)
except OSError as e:
    out("failed:%s" % e)
out("done")
`

// TestNetworkPeerOnOtherNode: node B (a namespace behind its own veth, its
// job subnet routed behind its host address) is a peer by name. The job
// reaches node B's job on a peer port from its own address (no NAT), node
// B's job connects back to the job's listener on a peer port, a non-peer
// port of node B kills the job; the node route is gone after the job.
func TestNetworkPeerOnOtherNode(t *testing.T) {
	e := setup(t)
	w := nettest.New(t, nettest.Options{Octet: worldOctet, JobIfPrefix: netguard.VethPrefix})
	// Node B's job subnet: the /24 after this node's (w.Pool, 10.217.0.0/24).
	b4 := w.Pool.Addr().As4()
	b4[2]++
	subB := netip.PrefixFrom(netip.AddrFrom4(b4), 24)
	jobB := subB.Addr().Next().Next()
	link := netip.MustParsePrefix(fmt.Sprintf("10.%d.77.0/30", worldOctet))
	nb := nettest.AddNode(t, w.Tag, link, jobB, w.Pool)
	nameB := "nodeb-" + w.Tag

	// Node B's job: a peer-port listener that greets, notes the caller and
	// connects back to it (as another rank would), and a non-peer one.
	const peerOut, peerIn, nonPeer = 29501, 29502, 8080
	var mu sync.Mutex
	var seen []string
	backc := make(chan string, 1)
	var lnPeer, lnOther net.Listener
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(nettest.InNetns(nb.Netns, func() (err error) {
		if lnPeer, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", jobB, peerOut)); err != nil {
			return err
		}
		lnOther, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", jobB, nonPeer))
		return err
	}))
	t.Cleanup(func() { lnPeer.Close(); lnOther.Close() })
	go nettest.Serve(lnOther, "evil")
	go func() {
		c, err := lnPeer.Accept()
		if err != nil {
			return
		}
		from := c.RemoteAddr().(*net.TCPAddr).IP.String()
		mu.Lock()
		seen = append(seen, from)
		mu.Unlock()
		c.Write([]byte("nodeb"))
		c.Close()
		var got string
		err = nettest.InNetns(nb.Netns, func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IP(jobB.AsSlice())}, Timeout: 5 * time.Second}
			bc, err := d.Dial("tcp4", net.JoinHostPort(from, fmt.Sprint(peerIn)))
			if err != nil {
				return err
			}
			defer bc.Close()
			bc.Write([]byte("hello"))
			bc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 8)
			n, _ := bc.Read(buf)
			got = string(buf[:n])
			return nil
		})
		if err != nil {
			got = "error: " + err.Error()
		}
		backc <- got
	}()

	base, err := os.ReadFile(e.config)
	must(err)
	body := string(base) + fmt.Sprintf("network:\n  node_subnet: %s\n  upstreams: [%q]\n  internal_ranges: [%q]\n  nodes:\n"+
		"  - {name: this-%s, address: %s, subnet: %s}\n  - {name: %s, address: %s, subnet: %s}\n",
		w.Pool, w.Resolver, w.Servers, w.Tag, nb.HostSide, w.Pool, nameB, nb.Address, subB)
	cfg := filepath.Join(t.TempDir(), "securetrain.yaml")
	must(os.WriteFile(cfg, []byte(body), 0o644))
	ne := *e
	ne.config = cfg
	dir := ne.project(t, map[string]string{"peer.py": peerScript,
		"p.yaml": "version: 1\nname: peers\nnetwork:\n  mode: sandbox\n  peer_ports: [\"29500-29510\"]\n"})
	rp := filepath.Join(dir, "report.json")
	r := ne.job(t, dir, []string{"--profile", "p.yaml", "--peers", nameB, "--report", rp},
		"/usr/bin/python3", "-I", "peer.py", jobB.String(), fmt.Sprint(peerOut), fmt.Sprint(peerIn), fmt.Sprint(nonPeer))

	var me string
	for _, l := range strings.Split(r.stdout, "\n") {
		if v, ok := strings.CutPrefix(l, "me:"); ok {
			me = v
		}
	}
	if !strings.Contains(r.stdout, "said:nodeb") || me == "" {
		t.Fatalf("the job did not reach node B's job on peer port %d:\n%s", peerOut, r)
	}
	if a, err := netip.ParseAddr(me); err != nil || !w.Pool.Contains(a) {
		t.Errorf("the job's own address %q is not in this node's subnet %s", me, w.Pool)
	}
	if !strings.Contains(r.stdout, "hostname:"+me+"\n") {
		t.Errorf("the job's host name does not resolve to its own address %s:\n%s", me, r)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != me {
		t.Errorf("node B saw the job from %v; want its own address %s (no NAT)", seen, me)
	}
	mu.Unlock()
	select {
	case got := <-backc:
		if got != "ok" {
			t.Errorf("node B's connection to the job's listener on peer port %d: %q", peerIn, got)
		}
	default:
		t.Errorf("node B never connected back to the job")
	}
	if !strings.Contains(r.stdout, "accepted:"+jobB.String()+":hello") {
		t.Errorf("the job did not accept node B's connection from %s:\n%s", jobB, r)
	}
	wantKilled(t, r, readReport(t, rp, r), "tcp", jobB.String(), nonPeer)

	// The node route was the job's: gone with it (before node B's veth goes).
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: net.IP(subB.Addr().AsSlice()), Mask: net.CIDRMask(24, 32)}, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	must(err)
	if len(rs) != 0 {
		t.Errorf("route to node B's subnet left after the job: %v", rs)
	}
}

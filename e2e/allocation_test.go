package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/nettest"
	"github.com/securetrain/securetrain/netguard"
)

// allocScript is one rank of a torch.distributed (gloo, world size 2) job
// that finds rank 0 by MASTER_ADDR, a node name: the rank whose own address
// that name resolves to is rank 0, so both start at once in any order.
const allocScript = `import datetime, os, socket
import torch, torch.distributed as dist
me = socket.gethostbyname(socket.gethostname())
master = socket.gethostbyname(os.environ["MASTER_ADDR"])
rank = 0 if me == master else 1
# What libraries do with names: an IPv6 lookup of the node name (not in
# /etc/hosts: glibc asks DNS) and reverse lookups, known and unknown. None
# may cost the job its life.
for f in (lambda: socket.getaddrinfo(os.environ["MASTER_ADDR"], 29500, socket.AF_INET6),
          lambda: socket.gethostbyaddr(master), lambda: socket.gethostbyaddr("192.0.2.77")):
    try:
        f()
    except OSError:
        pass
print("rank:%d me:%s master:%s" % (rank, me, master), flush=True)
dist.init_process_group("gloo", init_method="tcp://%s:29500" % os.environ["MASTER_ADDR"],
    rank=rank, world_size=2, timeout=datetime.timedelta(seconds=90))
t = torch.ones(4) * (rank + 1)
dist.all_reduce(t)
print("allreduce", t.tolist(), flush=True)
dist.destroy_process_group()
`

// distProfile: a sandbox network with torchrun's rendezvous port and the
// ephemeral ports Gloo's pairs use as peer ports, and nothing else.
const distProfile = "version: 1\nname: dist\nnetwork:\n  mode: sandbox\n  peer_ports: [\"29500\", \"1024-65535\"]\n"

// async runs a prepared securetrain command; the result arrives on the
// channel when it has exited (or the context ended it).
func async(t *testing.T, c *exec.Cmd) <-chan result {
	t.Helper()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan result, 1)
	go func() {
		code, err := exitCode(c.Wait())
		if err != nil {
			code = -1
			errb.WriteString("\n(test) " + err.Error())
		}
		ch <- result{out.String(), errb.String(), code}
	}()
	return ch
}

func jobArgs(flags []string, command ...string) []string {
	args := append([]string{"run", "--user", jobUser}, flags...)
	return append(append(args, "--"), command...)
}

// wantAllReduce checks that both ranks finished the all_reduce, rank 0 at
// rdzv, and returns their outputs' rank lines.
func wantAllReduce(t *testing.T, rdzv netip.Addr, ranks ...result) {
	t.Helper()
	var seen []string
	for i, r := range ranks {
		if r.code != 0 || !strings.Contains(r.stdout, "allreduce [3.0, 3.0, 3.0, 3.0]") {
			t.Fatalf("rank job %d did not train with its peer:\n%s", i, r)
		}
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.HasPrefix(l, "rank:") {
				seen = append(seen, l)
			}
		}
	}
	want0 := fmt.Sprintf("rank:0 me:%s master:%s", rdzv, rdzv)
	if len(seen) != 2 || (seen[0] != want0 && seen[1] != want0) {
		t.Errorf("rank lines %q; want one %q (rank 0 at the allocation's address)", seen, want0)
	}
}

// TestNetworkAllocationOnOneNode: two jobs of one allocation, started at
// the same time on this node, find rank 0 by the host's name and train
// together (gloo, world size 2); a job of another allocation with the same
// peer ports is killed for reaching rank 0's rendezvous.
func TestNetworkAllocationOnOneNode(t *testing.T) {
	n := setupNet(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	rdzv, ranks := startRanks(ctx, t, n, "41")
	// Another allocation: it waits for rank 0's store to listen, then dials it.
	dir := n.project(t, map[string]string{"dist.py": allocScript, "p.yaml": distProfile})
	rp := filepath.Join(dir, "report.json")
	other := async(t, n.cmd(ctx, dir, nil, jobArgs(
		[]string{"--profile", "p.yaml", "--allocation", "42", "--report", rp},
		"/usr/bin/python3", "-I", "net.py", "sleep", "8", "try", rdzv.String(), "29500")...))
	// ps shows where each job is and its allocation while they run.
	var ps string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		// Both rows carry an address only once each job's network is up.
		if ps = n.run(t, dir, nil, "ps").stdout; strings.Contains(ps, rdzv.String()+"@41") && strings.Contains(ps, "@42") {
			break
		}
	}
	if !strings.Contains(ps, rdzv.String()+"@41") || !strings.Contains(ps, "@42") {
		t.Errorf("ps does not show rank 0 at %s@41 and the other allocation's job:\n%s", rdzv, ps)
	}
	r0, r1, ro := <-ranks[0], <-ranks[1], <-other
	wantAllReduce(t, rdzv, r0, r1)
	wantKilled(t, ro, readReport(t, rp, ro), "tcp", rdzv.String(), 29500)
}

// startRanks starts the two ranks of dist.py (world size 2, gloo) as jobs
// of allocation alloc on this node, rank 0 found by the host's name; rdzv is
// the allocation's address, which rank 0 holds.
func startRanks(ctx context.Context, t *testing.T, n *netEnv, alloc string) (rdzv netip.Addr, ranks []<-chan result) {
	t.Helper()
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	if !netguard.ValidHostName(host) {
		t.Fatalf("host name %q is not a DNS name", host)
	}
	rdzv, err := netguard.AllocationAddr(n.w.Pool, alloc, 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		dir := n.project(t, map[string]string{"dist.py": allocScript, "p.yaml": distProfile})
		ranks = append(ranks, async(t, n.cmd(ctx, dir, nil, jobArgs(
			[]string{"--profile", "p.yaml", "--allocation", alloc, "--env", "MASTER_ADDR=" + host},
			"/usr/bin/python3", "-I", "dist.py")...)))
	}
	return rdzv, ranks
}

// twoNodes is node A (this host, w.Pool) and node B: a network namespace
// with a securetrain of its own (its own host config, state, data and
// audit log, job subnet subB), behind its own link, each node's job subnet
// routed via the other's address, both listed in both host configs.
type twoNodes struct {
	a            *netEnv // runs securetrain on node A
	nameA, nameB string
	subB         netip.Prefix
	cfgB         string
	netnsB       string
}

// extra is more of the network section, the same on both nodes.
func newTwoNodes(t *testing.T, extra string) *twoNodes {
	t.Helper()
	e := setup(t)
	w := nettest.New(t, nettest.Options{Octet: worldOctet, JobIfPrefix: netguard.VethPrefix})
	b4 := w.Pool.Addr().As4()
	b4[2]++
	tn := &twoNodes{nameA: "nodea-" + w.Tag, nameB: "nodeb-" + w.Tag, subB: netip.PrefixFrom(netip.AddrFrom4(b4), 24)}
	nb := nettest.AddNode(t, w.Tag, netip.MustParsePrefix(fmt.Sprintf("10.%d.78.0/30", worldOctet)), netip.Addr{}, w.Pool)
	tn.netnsB = nb.Netns
	nodes := fmt.Sprintf("  nodes:\n  - {name: %s, address: %s, subnet: %s}\n  - {name: %s, address: %s, subnet: %s}\n",
		tn.nameA, nb.HostSide, w.Pool, tn.nameB, nb.Address, tn.subB)
	netSection := func(subnet netip.Prefix) string {
		return fmt.Sprintf("network:\n  node_subnet: %s\n  upstreams: [%q]\n  internal_ranges: [%q]\n", subnet, w.Resolver, w.Servers) + nodes + extra
	}
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	cfgA := filepath.Join(cfgDir, "node-a.yaml")
	if err := os.WriteFile(cfgA, []byte(string(base)+netSection(w.Pool)), 0o644); err != nil {
		t.Fatal(err)
	}
	stateB, dataB := stateDir+"-nodeb-"+w.Tag, dataDir+"-nodeb-"+w.Tag
	bodyB := strings.NewReplacer("state_dir: "+stateDir+"\n", "state_dir: "+stateB+"\n",
		"data_dir: "+dataDir+"\n", "data_dir: "+dataB+"\n",
		e.auditLog, filepath.Join(cfgDir, "audit-nodeb.jsonl")).Replace(string(base))
	if bodyB == string(base) {
		t.Fatal("node B's host config is node A's")
	}
	tn.cfgB = filepath.Join(cfgDir, "node-b.yaml")
	if err := os.WriteFile(tn.cfgB, []byte(bodyB+netSection(tn.subB)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Registered after AddNode: runs before node B's namespace goes.
		if out, err := tn.onB(context.Background(), "/", "gc").CombinedOutput(); err != nil {
			t.Errorf("node B gc: %v: %s", err, out)
		}
		if left := leftovers(e.runsc, stateB, dataB, false); len(left) > 0 {
			t.Errorf("left on node B:\n  %s", strings.Join(left, "\n  "))
		}
		os.RemoveAll(stateB)
		os.RemoveAll(dataB)
	})
	ne := *e
	ne.config = cfgA
	tn.a = &netEnv{env: &ne, w: w}
	return tn
}

// onB prepares securetrain on node B (in its network namespace, with its
// host config), run from dir.
func (tn *twoNodes) onB(ctx context.Context, dir string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + tn.netnsB, "--", tn.a.bin, "--config", tn.cfgB}, args...)...)
	c.Dir = dir
	c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	return c
}

// TestNetworkAllocationAcrossNodes: one job per node, of one allocation,
// started at the same time: both resolve MASTER_ADDR (node A's name) to the
// allocation's address on node A and train together over the routed
// subnets (gloo, world size 2), each seeing the other's own address. A job
// of another allocation on node A, with node B as a peer, is killed for
// reaching the allocation's rank on node B; nothing is left on either node.
func TestNetworkAllocationAcrossNodes(t *testing.T) {
	tn := newTwoNodes(t, "")
	n := tn.a
	rdzv, _ := netguard.AllocationAddr(n.w.Pool, "43", 1)
	rankB, _ := netguard.AllocationAddr(tn.subB, "43", 1)
	files := map[string]string{"dist.py": allocScript, "p.yaml": distProfile}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	rank := func(peer string) []string {
		return jobArgs([]string{"--profile", "p.yaml", "--allocation", "43", "--peers", peer, "--env", "MASTER_ADDR=" + tn.nameA},
			"/usr/bin/python3", "-I", "dist.py")
	}
	onA := async(t, n.cmd(ctx, n.project(t, files), nil, rank(tn.nameB)...))
	onNodeB := async(t, tn.onB(ctx, n.project(t, files), rank(tn.nameA)...))
	dir := n.project(t, files)
	rp := filepath.Join(dir, "report.json")
	other := async(t, n.cmd(ctx, dir, nil, jobArgs(
		[]string{"--profile", "p.yaml", "--allocation", "44", "--peers", tn.nameB, "--report", rp},
		"/usr/bin/python3", "-I", "net.py", "sleep", "8", "try", rankB.String(), "29500")...))
	ra, rb, ro := <-onA, <-onNodeB, <-other
	wantAllReduce(t, rdzv, ra, rb)
	if !strings.Contains(rb.stdout, "rank:1 me:"+rankB.String()+" ") {
		t.Errorf("node B's rank is not at the allocation's address %s there:\n%s", rankB, rb)
	}
	wantKilled(t, ro, readReport(t, rp, ro), "tcp", rankB.String(), 29500)
}

// torchrunWorker is a worker torchrun starts: rank, world size and
// MASTER_ADDR come from torchrun's agents.
const torchrunWorker = `import datetime, os, socket
import torch, torch.distributed as dist
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=90))
t = torch.ones(4) * (dist.get_rank() + 1)
dist.all_reduce(t)
print("rank:%d world:%d host:%s master:%s allreduce %s" % (dist.get_rank(), dist.get_world_size(),
    socket.gethostname(), os.environ["MASTER_ADDR"], t.tolist()), flush=True)
dist.destroy_process_group()
`

// TestNetworkTorchrunAcrossNodes: torchrun with the c10d rendezvous on node
// A's name, one agent per node, started at the same time: node A's agent
// recognises itself as the rendezvous host (its sandbox's host name is the
// node's name), rank 0's agent advertises its host name as MASTER_ADDR, the
// other node resolves it to the allocation's address there, and the
// workers train together.
func TestNetworkTorchrunAcrossNodes(t *testing.T) {
	tn := newTwoNodes(t, "")
	n := tn.a
	files := map[string]string{"worker.py": torchrunWorker, "p.yaml": distProfile}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	agent := func(peer string) []string {
		return jobArgs([]string{"--profile", "p.yaml", "--allocation", "45", "--peers", peer},
			"/usr/bin/python3", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
			"--rdzv_backend", "c10d", "--rdzv_endpoint", tn.nameA+":29400", "--rdzv_id", "45", "--max_restarts", "0",
			// Debian's torch 1.13 on Python 3.11 cannot parse the default
			// "0" (IntFlag no longer iterates NONE): stdout via its log.
			"--redirects", "1", "--tee", "1", "worker.py")
	}
	onA := async(t, n.cmd(ctx, n.project(t, files), nil, agent(tn.nameB)...))
	onNodeB := async(t, tn.onB(ctx, n.project(t, files), agent(tn.nameA)...))
	ra, rb := <-onA, <-onNodeB
	for i, r := range []result{ra, rb} {
		host := []string{tn.nameA, tn.nameB}[i]
		if r.code != 0 || !strings.Contains(r.stdout, "world:2 host:"+host+" ") || !strings.Contains(r.stdout, "allreduce [3.0, 3.0, 3.0, 3.0]") {
			t.Errorf("torchrun on %s did not train with the other node:\n%s", host, r)
		}
	}
}

// rankScript is one rank of a world of 4 (gloo) with RANK from the caller.
const rankScript = `import datetime, os, socket
import torch, torch.distributed as dist
r = int(os.environ["RANK"])
dist.init_process_group("gloo", init_method="tcp://%s:29500" % os.environ["MASTER_ADDR"],
    rank=r, world_size=4, timeout=datetime.timedelta(seconds=90))
t = torch.ones(4) * (r + 1)
dist.all_reduce(t)
print("rank:%d me:%s allreduce %s" % (r, socket.gethostbyname(socket.gethostname()), t.tolist()), flush=True)
dist.destroy_process_group()
`

// TestNetworkAllocationTasksAcrossNodes: one Slurm task per rank (srun
// style, no torchrun): two nodes, two tasks each, one sandbox each, with
// network.allocation_block 2. Task i (SLURM_LOCALID) takes the block's i-th
// address on its node, every task reaches every other on either node, and
// the four train together (gloo, world size 4).
func TestNetworkAllocationTasksAcrossNodes(t *testing.T) {
	tn := newTwoNodes(t, "  allocation_block: 2\n")
	n := tn.a
	blockA, err := netguard.AllocationAddrs(n.w.Pool, "46", 2)
	if err != nil {
		t.Fatal(err)
	}
	blockB, _ := netguard.AllocationAddrs(tn.subB, "46", 2)
	files := map[string]string{"rank.py": rankScript, "p.yaml": distProfile}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	args := func(rank int, peer string) []string {
		return jobArgs([]string{"--profile", "p.yaml", "--allocation", "46", "--peers", peer,
			"--env", "MASTER_ADDR=" + tn.nameA, "--env", fmt.Sprintf("RANK=%d", rank)},
			"/usr/bin/python3", "-I", "rank.py")
	}
	var jobs []<-chan result
	for local := range 2 {
		localID := []string{fmt.Sprintf("SLURM_LOCALID=%d", local)}
		jobs = append(jobs, async(t, n.cmd(ctx, n.project(t, files), localID, args(local, tn.nameB)...)))
		c := tn.onB(ctx, n.project(t, files), args(2+local, tn.nameA)...)
		c.Env = append(c.Env, localID...)
		jobs = append(jobs, async(t, c))
	}
	want := map[int]netip.Addr{0: blockA[0], 1: blockA[1], 2: blockB[0], 3: blockB[1]}
	for _, ch := range jobs {
		r := <-ch
		var rank int
		var me string
		for _, l := range strings.Split(r.stdout, "\n") {
			if _, err := fmt.Sscanf(l, "rank:%d me:%s", &rank, &me); err == nil {
				break
			}
		}
		if r.code != 0 || !strings.Contains(r.stdout, "allreduce [10.0, 10.0, 10.0, 10.0]") {
			t.Errorf("a rank did not train with the other three:\n%s", r)
			continue
		}
		if me != want[rank].String() {
			t.Errorf("rank %d at %s, want its task's address %s", rank, me, want[rank])
		}
	}
}

package netguard

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/violation"
	"golang.org/x/sys/unix"
)

// jobScript runs inside gVisor: by name to the allowed host, then to evil.
const jobScript = `
import os, socket, struct
# Resolve allowed.test through the guard's proxy by hand (see the comment at
# the bind mounts) and connect to the answer.
proxy = os.environ["PROXY"]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07allowed\x04test\x00" + struct.pack(">HH", 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(q, (proxy, 53))
r = u.recv(512)
assert struct.unpack(">H", r[6:8])[0] == 1, "no answer"
addr = socket.inet_ntoa(r[-4:])
s = socket.create_connection((addr, 8080), timeout=5)
print("allowed-said:" + s.recv(64).decode(), flush=True)
s.close()
try:
    socket.create_connection(("10.214.2.2", 8080), timeout=2)
    print("evil-reached", flush=True)
except OSError as e:
    print("evil-blocked", flush=True)
`

// TestGVisorSandboxTrafficCrossesHostVeth runs a real runsc sandbox with
// --network=sandbox in the guard's namespace and checks that its traffic is
// decided by the rules on the host end of the veth.
func TestGVisorSandboxTrafficCrossesHostVeth(t *testing.T) {
	runsc := testenv.Runsc(t)
	w := newWorld(t)
	g := setup(t, w.config(t, Enforce, "allowed.test:8080"))

	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), g.ResolvConf(), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "hosts"), g.Hosts(), 0o644))
	bind := func(dst, src string) map[string]any {
		return map[string]any{"destination": dst, "type": "bind", "source": src, "options": []string{"rbind", "ro"}}
	}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{"user": map[string]int{"uid": 0, "gid": 0}, "cwd": "/",
			"args": []string{"/usr/bin/python3", "-I", "-c", jobScript},
			"env":  []string{"PATH=/usr/bin:/bin", "PROXY=" + g.ProxyAddr().String()}},
		"root":     map[string]any{"path": "/", "readonly": true},
		"hostname": "job",
		// With root.path "/" the pinned runsc shows the root's own file
		// under a bind mount (the /etc/resolv.conf mount below is listed in
		// the sandbox's mountinfo but reads the host's file), so the job
		// script asks the proxy directly instead of through glibc.
		"mounts": []any{
			map[string]any{"destination": "/proc", "type": "proc", "source": "proc"},
			map[string]any{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
			bind("/etc/resolv.conf", filepath.Join(dir, "resolv.conf")),
			bind("/etc/hosts", filepath.Join(dir, "hosts")),
		},
		"linux": map[string]any{"namespaces": []any{
			map[string]string{"type": "pid"}, map[string]string{"type": "ipc"},
			map[string]string{"type": "uts"}, map[string]string{"type": "mount"},
			map[string]string{"type": "network", "path": g.NetnsPath()},
		}},
	}
	b, _ := json.Marshal(spec)
	must(t, os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644))
	root, id := filepath.Join(dir, "runsc-state"), "ngtest-"+w.tag
	t.Cleanup(func() {
		exec.Command(runsc, "--root", root, "delete", "--force", id).Run()
		// runsc leaves its null-netns bind mount in its root directory.
		if err := unix.Unmount(filepath.Join(root, "null-netns"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount runsc null-netns: %v", err)
		}
		if out, _ := exec.Command(runsc, "--root", root, "list", "-q").Output(); strings.TrimSpace(string(out)) != "" {
			t.Errorf("runsc containers left: %s", out)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, runsc, "--root", root, "--network=sandbox", "run", "--bundle", dir, id)
	out, err := cmd.CombinedOutput()
	t.Logf("sandbox output:\n%s", out)
	if err != nil {
		t.Fatalf("runsc run: %v", err)
	}
	if !strings.Contains(string(out), "allowed-said:allowed") || !strings.Contains(string(out), "evil-blocked") {
		t.Fatalf("sandbox did not reach allowed.test and get blocked from evil")
	}
	expectViolation(t, g, violation.Network, "tcp", evilIP.String(), 8080, violation.Killed)
	if eb := g.EgressBytes(); eb[allowedIP.String()] == 0 {
		t.Fatalf("egress counter for %s did not move: %v", allowedIP, eb)
	}
	if n := vethPackets(t, g); n == 0 {
		t.Fatal("no packet counted on the host end of the veth")
	}
}

// vethPackets reads the counter of the rule that sends packets from the
// job's veth into the egress chain.
func vethPackets(t *testing.T, g *Guard) uint64 {
	c, err := nftables.New()
	must(t, err)
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: g.Table()}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: "pre", Table: tbl})
	must(t, err)
	var n uint64
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				n += ctr.Packets
			}
		}
	}
	return n
}

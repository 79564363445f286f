package launcher

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/sandbox"
)

func TestWarmEligible(t *testing.T) {
	for name, want := range map[string]string{
		"default":     "",
		"distributed": "limits.gpus is all; warm sandboxes have no GPUs",
		"gpu":         "warm sandboxes have no GPUs",
	} {
		p, err := configs.LoadProfile(name, "")
		if err != nil {
			t.Fatal(err)
		}
		err = WarmEligible(p)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
}

// TestWarmTakeFor: a pooled sandbox goes only to a job it fits (no GPUs,
// the host-minimal root, no terminal, the limits and network it was booted
// with), each sandbox to one job only, none once the pool is closed.
func TestWarmTakeFor(t *testing.T) {
	def, err := configs.LoadProfile("default", "")
	if err != nil {
		t.Fatal(err)
	}
	key := warmKey(def.Limits, nil)
	p := &warmPool{ready: map[string][]*warmSandbox{key: {{id: "warm-a", key: key}, {id: "warm-b", key: key}}}, kick: make(chan struct{}, 1)}
	mk := func(mod func(*plan)) *plan {
		prof := *def
		pl := &plan{prof: &prof}
		if mod != nil {
			mod(pl)
		}
		return pl
	}
	more := *def
	more.Limits.CPUs = 1
	for _, tc := range []struct {
		name string
		pl   *plan
	}{
		{"network", mk(func(pl *plan) { pl.net = &netguard.Config{} })},
		{"GPUs", mk(func(pl *plan) { pl.devices = []sandbox.Device{{Path: "/dev/nvidia0"}} })},
		{"own root", mk(func(pl *plan) { pl.rootfs = "/srv/image" })},
		{"terminal", mk(func(pl *plan) { pl.req.TTY = true })},
		{"other limits (--cpus 1)", mk(func(pl *plan) { pl.prof = &more })},
	} {
		if w := p.takeFor(tc.pl); w != nil {
			t.Errorf("%s: took %s", tc.name, w.id)
		}
	}
	if (*warmPool)(nil).takeFor(mk(nil)) != nil {
		t.Error("no pool, yet a sandbox")
	}
	a, b := p.takeFor(mk(nil)), p.takeFor(mk(nil))
	if a == nil || b == nil || a.id == b.id {
		t.Fatalf("two jobs took %v and %v; want the two sandboxes, one each", a, b)
	}
	if c := p.takeFor(mk(nil)); c != nil {
		t.Errorf("an empty pool handed out %s again", c.id)
	}

	// A pooled network: the same configuration (but the job id and logger)
	// fits; one more allowlist entry (--allow) does not.
	rule, err := netguard.ParseRule("tcp:192.0.2.10/32:443")
	if err != nil {
		t.Fatal(err)
	}
	pooled := &netguard.Config{JobID: "warm-n", Mode: netguard.Enforce, Allow: []netguard.Rule{rule}}
	nkey := warmKey(def.Limits, pooled)
	p.ready[nkey] = []*warmSandbox{{id: "warm-n", key: nkey}}
	more2, _ := netguard.ParseRule("tcp:192.0.2.11/32:443")
	if w := p.takeFor(mk(func(pl *plan) {
		pl.net = &netguard.Config{Mode: netguard.Enforce, Allow: []netguard.Rule{rule, more2}}
	})); w != nil {
		t.Errorf("a job with another allowlist took %s", w.id)
	}
	if w := p.takeFor(mk(func(pl *plan) {
		pl.net = &netguard.Config{JobID: "", Mode: netguard.Enforce, Allow: []netguard.Rule{rule}}
	})); w == nil || w.id != "warm-n" {
		t.Errorf("a job with the pooled network took %v, want warm-n", w)
	}

	p.ready[key] = []*warmSandbox{{id: "warm-c", key: key}}
	p.closed = true
	if c := p.takeFor(mk(nil)); c != nil {
		t.Errorf("a closed pool handed out %s", c.id)
	}
}

// TestWarmResetCounters: the CPU time, peak memory and limit hits a
// sandbox's boot left in its cgroups are zero when a job takes it (cgroup
// v1, real hierarchies). Without the reset the job would be charged the
// boot (and, were a sandbox ever reused, another job's use).
func TestWarmResetCounters(t *testing.T) {
	testenv.RequireRoot(t)
	if cgroupV2() {
		t.Skip("warm sandboxes are for cgroup v1 hosts")
	}
	for _, c := range []string{"cpuacct", "memory"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, c)); err != nil {
			testenv.Missing(t, "cgroup v1 %s hierarchy: %v", c, err)
		}
	}
	rel := jobCgroup("warm-resettest" + strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { removeCgroup(rel) })
	if err := makeCgroup(rel); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpuacct", "memory"} {
		if err := os.MkdirAll(filepath.Join(cgroupRoot, c, rel, "sandbox"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A boot's worth of work in the sandbox's cgroup: CPU and memory.
	cmd := exec.Command("/bin/sh", "-c", `read _; x=0; while [ $x -lt 200000 ]; do x=$((x+1)); done; y=$(head -c 8000000 /dev/zero | tr "\0" a); echo ${#y} >/dev/null`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpuacct", "memory"} {
		if err := os.WriteFile(filepath.Join(cgroupRoot, c, rel, "sandbox", "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	read := func(c, dir, f string) uint64 {
		b, err := os.ReadFile(filepath.Join(cgroupRoot, c, dir, f))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
	const cpuFloor, memFloor = uint64(10 * time.Millisecond), uint64(4 << 20)
	for _, dir := range []string{rel, rel + "/sandbox"} {
		if n := read("cpuacct", dir, "cpuacct.usage"); n < cpuFloor {
			t.Fatalf("%s: the work used %d ns of CPU; the test needs more", dir, n)
		}
		if n := read("memory", dir, "memory.max_usage_in_bytes"); n < memFloor {
			t.Fatalf("%s: peak memory %d; the test needs more", dir, n)
		}
	}
	if err := resetCounters(rel); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{rel, rel + "/sandbox"} {
		if n := read("cpuacct", dir, "cpuacct.usage"); n >= cpuFloor {
			t.Errorf("%s: cpuacct.usage %d ns after the reset", dir, n)
		}
		if n := read("memory", dir, "memory.max_usage_in_bytes"); n >= memFloor {
			t.Errorf("%s: memory.max_usage_in_bytes %d after the reset", dir, n)
		}
	}
}

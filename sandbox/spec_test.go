package sandbox

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./sandbox -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (go test -update rewrites it after review):\n got:\n%s\nwant:\n%s", t.Name(), p, got, want)
	}
}

// cpuJob is a representative CPU job: code dir with a masked .ssh, outputs,
// a dataset, per-job /etc, HOME and /tmp, no network.
func cpuJob() Spec {
	return Spec{
		ID:             "0123456789ab",
		Args:           []string{"/home/alice/venv/bin/python", "train.py", "--epochs", "2"},
		Env:            []string{"HOME=/home/alice", "OMP_NUM_THREADS=2", "PATH=/home/alice/venv/bin:/usr/bin:/bin"},
		Cwd:            "/home/alice/proj",
		UID:            1000,
		GID:            1000,
		AdditionalGIDs: []uint32{27, 44},
		Hostname:       "st-0123456789ab",
		Root:           "/run/securetrain/jobs/0123456789ab/bundle/rootfs",
		Mounts: []Mount{
			{Kind: Bind, Source: "/usr", Target: "/usr", ReadOnly: true},
			{Kind: Bind, Source: "/etc/ssl", Target: "/etc/ssl", ReadOnly: true},
			{Kind: Bind, Source: "/run/securetrain/jobs/0123456789ab/bundle/etc/passwd", Target: "/etc/passwd", ReadOnly: true},
			{Kind: Bind, Source: "/var/lib/securetrain/jobs/0123456789ab/home", Target: "/home/alice"},
			{Kind: Bind, Source: "/home/alice/proj", Target: "/home/alice/proj", ReadOnly: true},
			{Kind: Tmpfs, Target: "/tmp", Size: 4 << 30, Mode: 0o1777},
			{Kind: Tmpfs, Target: "/home/alice/proj/.ssh", ReadOnly: true, Size: 4096, Mode: 0o500},
			{Kind: Tmpfs, Target: "/home/alice/.cache", Size: 1 << 20, Mode: 0o700, UID: 1000, GID: 1000},
			{Kind: Bind, Source: "/home/alice/proj/outputs", Target: "/home/alice/proj/outputs"},
			{Kind: Bind, Source: "/datasets/cifar", Target: "/data/cifar", ReadOnly: true},
		},
		Shm:         1 << 30,
		Resources:   Resources{CPUs: 2.5, Memory: 8 << 30, Pids: 4096},
		CgroupsPath: "/securetrain/0123456789ab",
	}
}

func gpuJob() Spec {
	s := cpuJob()
	s.NetnsPath = "/run/netns/st-0123456789ab"
	s.Resources = Resources{CPUs: 8, Memory: 64 << 30, Pids: 8192}
	s.Devices = []Device{
		{Path: "/dev/nvidiactl", Major: 195, Minor: 255},
		{Path: "/dev/nvidia-uvm", Major: 510, Minor: 0, Mode: 0o666},
		{Path: "/dev/nvidia0", Major: 195, Minor: 0},
	}
	s.Terminal = true
	return s
}

func renderSpec(t *testing.T, s Spec) (*specs.Spec, []byte) {
	t.Helper()
	sp, err := BuildSpec(s)
	if err != nil {
		t.Fatalf("BuildSpec: %v", err)
	}
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return sp, append(b, '\n')
}

func TestBuildSpecGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"spec_cpu", cpuJob()},
		{"spec_gpu_netns", gpuJob()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, b := renderSpec(t, tc.spec)
			golden(t, tc.name, b)
		})
	}
}

func TestBuildSpecRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Spec)
		want string
	}{
		{"root user", func(s *Spec) { s.UID = 0 }, "sandbox: refusing to run a job as root (uid 0)"},
		{"no command", func(s *Spec) { s.Args = nil }, "sandbox: no command to run"},
		{"relative cwd", func(s *Spec) { s.Cwd = "proj" }, `sandbox: working directory "proj" is not absolute`},
		{"relative target", func(s *Spec) { s.Mounts = []Mount{{Kind: Bind, Source: "/x", Target: "x"}} }, `sandbox: mount target "x" must be a clean absolute path`},
		{"unclean target", func(s *Spec) { s.Mounts = []Mount{{Kind: Bind, Source: "/x", Target: "/a/../etc"}} }, `sandbox: mount target "/a/../etc" must be a clean absolute path`},
		{"relative source", func(s *Spec) { s.Mounts = []Mount{{Kind: Bind, Source: "x", Target: "/x"}} }, `sandbox: mount source "x" must be absolute`},
		{"unknown kind", func(s *Spec) { s.Mounts = []Mount{{Kind: "overlay", Target: "/x"}} }, `sandbox: unknown mount kind "overlay" for /x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cpuJob()
			tc.mod(&s)
			sp, err := BuildSpec(s)
			if err == nil {
				t.Fatalf("BuildSpec accepted it: %+v", sp)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
		})
	}
}

// TestBuildSpecInvariants checks the security properties directly, so that a
// careless -update of the golden files cannot hide their loss.
func TestBuildSpecInvariants(t *testing.T) {
	for _, s := range []Spec{cpuJob(), gpuJob()} {
		sp, _ := renderSpec(t, s)
		p := sp.Process
		if p.User.UID == 0 || p.User.UID != s.UID || p.User.GID != s.GID {
			t.Errorf("user %+v, want uid %d gid %d", p.User, s.UID, s.GID)
		}
		if !slices.Equal(p.User.AdditionalGids, s.AdditionalGIDs) {
			t.Errorf("additional gids %v, want %v", p.User.AdditionalGids, s.AdditionalGIDs)
		}
		if !p.NoNewPrivileges {
			t.Error("noNewPrivileges is off")
		}
		c := p.Capabilities
		if c == nil {
			t.Fatal("capabilities nil: runsc would apply its defaults")
		}
		if n := len(c.Bounding) + len(c.Effective) + len(c.Inheritable) + len(c.Permitted) + len(c.Ambient); n != 0 {
			t.Errorf("job has %d capabilities, want none: %+v", n, c)
		}
		var netns *specs.LinuxNamespace
		types := map[specs.LinuxNamespaceType]bool{}
		for i, ns := range sp.Linux.Namespaces {
			types[ns.Type] = true
			if ns.Type == specs.NetworkNamespace {
				netns = &sp.Linux.Namespaces[i]
			}
		}
		for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace} {
			if !types[want] {
				t.Errorf("no %s namespace", want)
			}
		}
		if netns == nil || netns.Path != s.NetnsPath {
			t.Errorf("network namespace %+v, want path %q", netns, s.NetnsPath)
		}
		r := sp.Linux.Resources
		if r == nil || r.Memory == nil || r.CPU == nil || r.Pids == nil {
			t.Fatalf("resources incomplete: %+v", r)
		}
		if *r.Memory.Limit != s.Resources.Memory || *r.Memory.Swap != *r.Memory.Limit {
			t.Errorf("memory limit %d swap %d, want both %d (no swap)", *r.Memory.Limit, *r.Memory.Swap, s.Resources.Memory)
		}
		if want := int64(s.Resources.CPUs * CPUPeriod); *r.CPU.Quota != want || *r.CPU.Period != CPUPeriod {
			t.Errorf("cpu quota/period %d/%d, want %d/%d", *r.CPU.Quota, *r.CPU.Period, want, CPUPeriod)
		}
		if r.Pids.Limit != s.Resources.Pids {
			t.Errorf("pids %d, want %d", r.Pids.Limit, s.Resources.Pids)
		}
		for _, m := range sp.Mounts {
			if m.Type == "bind" && !slices.Contains(m.Options, "nosuid") {
				t.Errorf("bind %s without nosuid: %v", m.Destination, m.Options)
			}
		}
	}
}

func TestBuildSpecMounts(t *testing.T) {
	sp, _ := renderSpec(t, cpuJob())
	byDest := map[string]specs.Mount{}
	var order []string
	for _, m := range sp.Mounts {
		byDest[m.Destination] = m
		order = append(order, m.Destination)
	}
	// System mounts first, then the job's in the given order.
	wantOrder := []string{"/proc", "/dev", "/dev/pts", "/sys", "/dev/shm",
		"/usr", "/etc/ssl", "/etc/passwd", "/home/alice", "/home/alice/proj", "/tmp",
		"/home/alice/proj/.ssh", "/home/alice/.cache", "/home/alice/proj/outputs", "/data/cifar"}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("mount order\n got %v\nwant %v", order, wantOrder)
	}
	for _, tc := range []struct {
		dest string
		typ  string
		opts []string
	}{
		{"/usr", "bind", []string{"rbind", "nosuid", "nodev", "ro"}},
		{"/home/alice", "bind", []string{"rbind", "nosuid", "nodev", "rw"}},
		{"/home/alice/proj", "bind", []string{"rbind", "nosuid", "nodev", "ro"}},
		{"/home/alice/proj/outputs", "bind", []string{"rbind", "nosuid", "nodev", "rw"}},
		{"/tmp", "tmpfs", []string{"nosuid", "nodev", "mode=1777", "size=4294967296"}},
		{"/home/alice/proj/.ssh", "tmpfs", []string{"nosuid", "nodev", "mode=500", "size=4096", "ro"}},
		{"/home/alice/.cache", "tmpfs", []string{"nosuid", "nodev", "mode=700", "size=1048576", "uid=1000", "gid=1000"}},
		{"/dev/shm", "tmpfs", []string{"nosuid", "nodev", "mode=1777", "size=1073741824"}},
		{"/sys", "sysfs", []string{"nosuid", "noexec", "nodev", "ro"}},
	} {
		m, ok := byDest[tc.dest]
		if !ok {
			t.Errorf("no mount at %s", tc.dest)
			continue
		}
		if m.Type != tc.typ || !slices.Equal(m.Options, tc.opts) {
			t.Errorf("%s: type %s options %v, want %s %v", tc.dest, m.Type, m.Options, tc.typ, tc.opts)
		}
	}

	s := cpuJob()
	s.Shm = 0
	sp, _ = renderSpec(t, s)
	for _, m := range sp.Mounts {
		if m.Destination == "/dev/shm" {
			t.Errorf("Shm 0 still mounts /dev/shm: %+v", m)
		}
	}
}

func TestBuildSpecResourcesUnset(t *testing.T) {
	s := cpuJob()
	s.Resources = Resources{}
	sp, _ := renderSpec(t, s)
	if sp.Linux.Resources != nil {
		t.Errorf("no limits asked, got resources %+v", sp.Linux.Resources)
	}
	s.Resources = Resources{CPUs: 0.5}
	sp, _ = renderSpec(t, s)
	if r := sp.Linux.Resources; r == nil || r.CPU == nil || *r.CPU.Quota != 50000 || r.Memory != nil || r.Pids != nil {
		t.Errorf("cpus 0.5 only: resources %+v", r)
	}
}

func TestBuildSpecDevices(t *testing.T) {
	s := gpuJob()
	sp, _ := renderSpec(t, s)
	if len(sp.Linux.Devices) != len(s.Devices) {
		t.Fatalf("%d devices, want %d", len(sp.Linux.Devices), len(s.Devices))
	}
	for i, d := range sp.Linux.Devices {
		w := s.Devices[i]
		if d.Path != w.Path || d.Type != "c" || d.Major != w.Major || d.Minor != w.Minor {
			t.Errorf("device %d: %+v, want %+v", i, d, w)
		}
		if d.FileMode == nil || d.FileMode.Perm() != 0o666 {
			t.Errorf("device %s mode %v, want 0666", d.Path, d.FileMode)
		}
	}
	rules := sp.Linux.Resources.Devices
	if len(rules) != 1+len(s.Devices) {
		t.Fatalf("device cgroup rules %+v", rules)
	}
	if rules[0].Allow || rules[0].Access != "rwm" || rules[0].Type != "" && rules[0].Type != "a" {
		t.Errorf("first rule %+v, want deny all", rules[0])
	}
	for i, r := range rules[1:] {
		w := s.Devices[i]
		if !r.Allow || r.Type != "c" || *r.Major != w.Major || *r.Minor != w.Minor || r.Access != "rwm" {
			t.Errorf("rule %d: %+v, want allow c %d:%d rwm", i+1, r, w.Major, w.Minor)
		}
	}
}

func TestSortMounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"children after parents", []string{"/code/.ssh", "/code/outputs", "/code", "/tmp"}, []string{"/code", "/tmp", "/code/.ssh", "/code/outputs"}},
		{"stable otherwise", []string{"/b", "/a", "/c/x", "/c"}, []string{"/b", "/a", "/c", "/c/x"}},
		{"same target keeps order", []string{"/data/x", "/data", "/data/x"}, []string{"/data", "/data/x", "/data/x"}},
		{"deep code dir", []string{"/home/a/p/.config/gcloud", "/home/a", "/home/a/p", "/home/a/p/.aws"}, []string{"/home/a", "/home/a/p", "/home/a/p/.aws", "/home/a/p/.config/gcloud"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := make([]Mount, len(tc.in))
			for i, p := range tc.in {
				ms[i] = Mount{Kind: Bind, Source: "/src" + strings.Repeat("x", i), Target: p}
			}
			SortMounts(ms)
			var got []string
			for _, m := range ms {
				got = append(got, m.Target)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			// Whatever the order, no mount may come after one inside it.
			for i := range ms {
				for j := i + 1; j < len(ms); j++ {
					if strings.HasPrefix(ms[i].Target, ms[j].Target+"/") {
						t.Errorf("%s comes before its parent %s", ms[i].Target, ms[j].Target)
					}
				}
			}
		})
	}
}

func TestDeviceFileModeIsPermissionsOnly(t *testing.T) {
	sp, b := renderSpec(t, gpuJob())
	for _, d := range sp.Linux.Devices {
		if *d.FileMode != 0o666 {
			t.Errorf("%s: fileMode %#o, want 0666 (permission bits only)", d.Path, uint32(*d.FileMode))
		}
	}
	if !bytes.Contains(b, []byte(`"fileMode": 438`)) {
		t.Errorf("fileMode not serialised as 438 (0666)")
	}
}

// TestBuildSpecPod: the holder of a sandbox and a container that joins it
// carry the annotations runsc reads (runsc/specutils/cri.go); a plain job has
// none, and a container cannot be both.
func TestBuildSpecPod(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  Pod
		want map[string]string
	}{
		{"plain", Pod{}, nil},
		{"holder", Pod{Holder: true}, map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "job1"}},
		{"joins", Pod{Join: "warm-1"}, map[string]string{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "warm-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cpuJob()
			s.ID, s.Pod = "job1", tc.pod
			sp, err := BuildSpec(s)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sp.Annotations, tc.want) {
				t.Errorf("annotations %v, want %v", sp.Annotations, tc.want)
			}
		})
	}
	s := cpuJob()
	s.Pod = Pod{Holder: true, Join: "warm-1"}
	if _, err := BuildSpec(s); err == nil || !strings.Contains(err.Error(), "cannot both hold a sandbox and join warm-1") {
		t.Errorf("holder that joins: %v", err)
	}
}

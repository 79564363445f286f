package sandbox

import (
	"fmt"
	"path"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MountKind is how a Mount reaches the sandbox.
type MountKind string

const (
	Bind  MountKind = "bind"
	Tmpfs MountKind = "tmpfs"
)

// Mount is one file system the job sees.
type Mount struct {
	Kind     MountKind
	Source   string // host path for Bind
	Target   string // absolute path inside the sandbox
	ReadOnly bool
	Size     uint64 // bytes, Tmpfs only
	Mode     uint32 // Tmpfs root mode, 0 = 0755
	UID, GID int    // Tmpfs root owner (0,0 = root)
}

// Device is a host character device node given to the job (GPUs).
type Device struct {
	Path         string
	Major, Minor int64
	UID, GID     uint32
	Mode         uint32
}

// Resources are the hard limits runsc applies to the sandbox's cgroup.
type Resources struct {
	CPUs   float64 // 0 = unlimited
	Memory int64   // bytes, 0 = unlimited
	Pids   int64   // 0 = unlimited
}

// Spec holds everything BuildSpec needs. It is pure data so that the spec a
// job gets can be unit-tested without runsc or root.
type Spec struct {
	ID             string
	Args           []string
	Env            []string // KEY=VALUE; never secret values (runsc stores the spec on disk)
	Cwd            string
	UID, GID       uint32
	AdditionalGIDs []uint32
	Hostname       string
	Terminal       bool
	// Root is the bundle's root directory (host-minimal skeleton or an image).
	Root string
	// Mounts are applied in order after the system mounts; later mounts may
	// cover earlier ones (masks over the code directory, outputs inside it).
	Mounts      []Mount
	Shm         uint64 // /dev/shm size in bytes
	Resources   Resources
	CgroupsPath string
	// NetnsPath is the network namespace to join; empty means no network.
	NetnsPath string
	Devices   []Device
	NoFile    uint64 // RLIMIT_NOFILE, 0 = 1048576
	// Pod makes the container one of a sandbox of several (gVisor's
	// multi-container sandboxes, named by the CRI annotations runsc reads).
	Pod Pod
}

// Pod is a container's place in a sandbox of several containers: the
// holder is the sandbox's first container, which boots it; a container
// that joins an existing sandbox (Join: the holder's id) runs in its
// kernel with its own mounts, root, process tree and hostname, served by a
// gofer of its own.
type Pod struct {
	Holder bool
	Join   string
}

// The annotations runsc reads to place a container in a sandbox
// (runsc/specutils/cri.go).
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// CPUPeriod is the CFS period used to express limits.cpus as a quota.
const CPUPeriod = 100000

// BuildSpec returns the OCI runtime spec for s. It refuses what must never be
// in a job's spec (root user, relative paths) instead of quietly fixing it.
func BuildSpec(s Spec) (*specs.Spec, error) {
	if s.UID == 0 {
		return nil, fmt.Errorf("sandbox: refusing to run a job as root (uid 0)")
	}
	if len(s.Args) == 0 {
		return nil, fmt.Errorf("sandbox: no command to run")
	}
	if !path.IsAbs(s.Cwd) {
		return nil, fmt.Errorf("sandbox: working directory %q is not absolute", s.Cwd)
	}
	noFile := s.NoFile
	if noFile == 0 {
		noFile = 1 << 20
	}
	hostname := s.Hostname
	if hostname == "" {
		hostname = "securetrain-" + s.ID
	}
	sp := &specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Root:     &specs.Root{Path: s.Root, Readonly: false},
		Process: &specs.Process{
			Terminal: s.Terminal,
			User: specs.User{
				UID:            s.UID,
				GID:            s.GID,
				AdditionalGids: append([]uint32(nil), s.AdditionalGIDs...),
			},
			Args:            append([]string(nil), s.Args...),
			Env:             append([]string(nil), s.Env...),
			Cwd:             s.Cwd,
			NoNewPrivileges: true,
			// No capabilities at all: the job is an unprivileged user.
			Capabilities: &specs.LinuxCapabilities{},
			Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: noFile, Soft: noFile}},
		},
		Linux: &specs.Linux{
			CgroupsPath: s.CgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: s.NetnsPath},
			},
			// Masked/read-only paths as runc's defaults; gVisor's own procfs
			// exposes little, but keep the job from host-facing knobs.
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"},
		},
	}
	switch {
	case s.Pod.Holder && s.Pod.Join != "":
		return nil, fmt.Errorf("sandbox: a container cannot both hold a sandbox and join %s", s.Pod.Join)
	case s.Pod.Holder:
		sp.Annotations = map[string]string{annotationContainerType: "sandbox", annotationSandboxID: s.ID}
	case s.Pod.Join != "":
		sp.Annotations = map[string]string{annotationContainerType: "container", annotationSandboxID: s.Pod.Join}
	}
	sp.Mounts = systemMounts(s.Shm)
	for _, m := range s.Mounts {
		om, err := ociMount(m)
		if err != nil {
			return nil, err
		}
		sp.Mounts = append(sp.Mounts, om)
	}
	if r := resources(s.Resources, s.Devices); r != nil {
		sp.Linux.Resources = r
	}
	for _, d := range s.Devices {
		mode := d.Mode
		if mode == 0 {
			mode = 0o666
		}
		fm := fileMode(mode)
		uid, gid := d.UID, d.GID
		sp.Linux.Devices = append(sp.Linux.Devices, specs.LinuxDevice{
			Path: d.Path, Type: "c", Major: d.Major, Minor: d.Minor, FileMode: &fm, UID: &uid, GID: &gid,
		})
	}
	return sp, nil
}

func systemMounts(shm uint64) []specs.Mount {
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	if shm > 0 {
		ms = append(ms, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "nodev", "mode=1777", fmt.Sprintf("size=%d", shm)}})
	}
	return ms
}

func ociMount(m Mount) (specs.Mount, error) {
	if !path.IsAbs(m.Target) || path.Clean(m.Target) != m.Target {
		return specs.Mount{}, fmt.Errorf("sandbox: mount target %q must be a clean absolute path", m.Target)
	}
	switch m.Kind {
	case Bind:
		if !path.IsAbs(m.Source) {
			return specs.Mount{}, fmt.Errorf("sandbox: mount source %q must be absolute", m.Source)
		}
		opts := []string{"rbind", "nosuid", "nodev"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		return specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opts}, nil
	case Tmpfs:
		mode := m.Mode
		if mode == 0 {
			mode = 0o755
		}
		opts := []string{"nosuid", "nodev", fmt.Sprintf("mode=%o", mode)}
		if m.Size > 0 {
			opts = append(opts, fmt.Sprintf("size=%d", m.Size))
		}
		if m.UID != 0 || m.GID != 0 {
			opts = append(opts, fmt.Sprintf("uid=%d", m.UID), fmt.Sprintf("gid=%d", m.GID))
		}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		return specs.Mount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs", Options: opts}, nil
	}
	return specs.Mount{}, fmt.Errorf("sandbox: unknown mount kind %q for %s", m.Kind, m.Target)
}

func resources(r Resources, devs []Device) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	set := false
	if r.Memory > 0 {
		lim := r.Memory
		// No swap beyond the memory limit: memory+swap == memory.
		out.Memory = &specs.LinuxMemory{Limit: &lim, Swap: &lim}
		set = true
	}
	if r.CPUs > 0 {
		quota := int64(r.CPUs * CPUPeriod)
		period := uint64(CPUPeriod)
		out.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
		set = true
	}
	if r.Pids > 0 {
		out.Pids = &specs.LinuxPids{Limit: r.Pids}
		set = true
	}
	if len(devs) > 0 {
		out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"})
		for _, d := range devs {
			maj, mi := d.Major, d.Minor
			out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &maj, Minor: &mi, Access: "rwm"})
		}
		set = true
	}
	if !set {
		return nil
	}
	return out
}

// SortMounts orders mounts so that a parent comes before what is mounted
// inside it (a mask over .ssh after the code directory), keeping the given
// order otherwise.
func SortMounts(ms []Mount) {
	sort.SliceStable(ms, func(i, j int) bool {
		return depth(ms[i].Target) < depth(ms[j].Target)
	})
}

func depth(p string) int { return strings.Count(path.Clean(p), "/") }

// EmptySpec is an OCI spec with every part BuildSpec fills present and
// empty: encoding it once builds encoding/json's encoders for the spec's
// types ahead of the bundle (launcher).
func EmptySpec() *specs.Spec {
	return &specs.Spec{Process: &specs.Process{User: specs.User{}, Capabilities: &specs.LinuxCapabilities{},
		Rlimits: []specs.POSIXRlimit{{}}}, Root: &specs.Root{}, Mounts: []specs.Mount{{}},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{}, CPU: &specs.LinuxCPU{},
			Pids: &specs.LinuxPids{}, Devices: []specs.LinuxDeviceCgroup{{}}}, Namespaces: []specs.LinuxNamespace{{}},
			Devices: []specs.LinuxDevice{{}}, Seccomp: &specs.LinuxSeccomp{}}}
}

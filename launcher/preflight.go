package launcher

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/sandbox"
)

// Check is one host preflight result.
type Check struct {
	Name     string
	OK       bool
	Required bool
	Detail   string
}

// Preflight checks that this host can run sandboxed jobs. A required check
// that fails means no job can start here.
func (l *Launcher) Preflight(ctx context.Context) []Check {
	var cs []Check
	add := func(name string, req, ok bool, format string, a ...any) {
		cs = append(cs, Check{Name: name, OK: ok, Required: req, Detail: fmt.Sprintf(format, a...)})
	}
	add("root", true, os.Geteuid() == 0, "euid %d", os.Geteuid())
	if _, err := os.Stat(l.Runsc); err != nil {
		add("runsc", true, false, "%s: not found (make runsc)", l.Runsc)
	} else {
		add("runsc", true, true, "%s", l.Runsc)
		static, why := isStatic(l.Runsc)
		add("runsc static", true, static, "%s", why)
		v := runscModuleVersion(l.Runsc)
		add("runsc version", true, v == PinnedGVisor, "gvisor.dev/gvisor %s (pinned %s)", v, PinnedGVisor)
	}
	for _, f := range []struct{ name, path, detail string }{
		{"network namespaces", "/proc/self/ns/net", "netns"},
		{"pid namespaces", "/proc/self/ns/pid", "pidns"},
	} {
		_, err := os.Stat(f.path)
		add(f.name, true, err == nil, "%s", f.detail)
	}
	cg := cgroupVersion()
	add("cgroups", true, cg != "", "%s", cg)
	// Networking (network: sandbox): tried for real, not guessed from
	// module lists; the host firewall and forwarding as netguard finds them.
	ngState := "" // netguard's default
	if l.Host != nil && l.Host.StateDir != "" {
		ngState = filepath.Join(l.Host.StateDir, "netguard")
	}
	for _, r := range netguard.Check(ngState) {
		add(r.Name, false, r.OK, "%s", r.Detail)
	}
	if l.Host != nil && l.Host.Network.NodeSubnet != "" {
		n := l.Host.Network
		self := l.nodeName()
		blocks := 0
		if p, err := netip.ParsePrefix(n.NodeSubnet); err == nil && p.Bits() <= 30 {
			blocks = (1 << (30 - p.Bits())) / max(n.AllocationBlock, 1)
		}
		add("network node", false, self != "", "this node is %q in network.nodes, job subnet %s: %d allocation blocks of %d address(es) (allocations whose ids are equal modulo %d cannot share this node)",
			self, n.NodeSubnet, blocks, max(n.AllocationBlock, 1), blocks)
	}
	// GPUs: optional; when present the driver must be one runsc supports.
	h := sandbox.GPUHost{}
	if idx, _ := h.Indices(); len(idx) > 0 {
		drv, err := h.DriverVersion()
		if err != nil {
			add("GPU driver", false, false, "%d GPU(s), driver version unreadable: %v", len(idx), err)
		} else {
			sup, err := (&sandbox.Runsc{Path: l.Runsc}).SupportedDrivers(ctx)
			ok := err == nil && sandbox.CheckDriver(drv, sup) == nil
			add("GPU driver", false, ok, "%d GPU(s), driver %s, nvproxy support: %v", len(idx), drv, ok)
		}
	} else {
		add("GPU", false, true, "none (CPU jobs only)")
	}
	return cs
}

// isStatic reports whether an ELF binary has no dynamic loader: a cgo runsc
// fails at sandbox start once it has pivoted away from the loader.
func isStatic(p string) (bool, string) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err.Error()
	}
	defer f.Close()
	for _, pr := range f.Progs {
		if pr.Type == elf.PT_INTERP {
			return false, "dynamically linked: rebuild with CGO_ENABLED=0 (make runsc)"
		}
	}
	return true, "statically linked"
}

// runscModuleVersion reads the gVisor module version recorded in the binary.
func runscModuleVersion(p string) string {
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		return "unknown"
	}
	if bi.Main.Path == "gvisor.dev/gvisor" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == "gvisor.dev/gvisor" {
			return d.Version
		}
	}
	return "unknown (" + bi.Main.Path + ")"
}

func cgroupVersion() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "v2"
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		return "v1"
	}
	return ""
}

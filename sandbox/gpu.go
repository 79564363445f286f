package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoGPU is returned when GPUs are asked for on a host without NVIDIA devices.
var ErrNoGPU = errors.New("no NVIDIA GPU on this host")

// GPURequest selects GPUs: all of them, the first Count, or Indices.
type GPURequest struct {
	All     bool
	Count   int
	Indices []int
}

// GPUHost describes where the NVIDIA driver lives; the zero value means the
// real host. Tests point it at a fake tree.
type GPUHost struct {
	Root string // "/" by default
}

func (h GPUHost) path(p string) string {
	if h.Root == "" {
		return p
	}
	return filepath.Join(h.Root, p)
}

var nvidiaN = regexp.MustCompile(`^nvidia(\d+)$`)

// Indices lists the host's GPU device indices (/dev/nvidiaN).
func (h GPUHost) Indices() ([]int, error) {
	ents, err := os.ReadDir(h.path("/dev"))
	if err != nil {
		return nil, err
	}
	var idx []int
	for _, e := range ents {
		if m := nvidiaN.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			idx = append(idx, n)
		}
	}
	sort.Ints(idx)
	return idx, nil
}

// Select resolves a request against the available indices.
func Select(req GPURequest, avail []int) ([]int, error) {
	if len(avail) == 0 {
		return nil, ErrNoGPU
	}
	switch {
	case req.All:
		return avail, nil
	case len(req.Indices) > 0:
		for _, i := range req.Indices {
			if !slices.Contains(avail, i) {
				return nil, fmt.Errorf("GPU %d does not exist on this host (have %s)", i, joinInts(avail))
			}
		}
		return req.Indices, nil
	case req.Count > 0:
		if req.Count > len(avail) {
			return nil, fmt.Errorf("asked for %d GPUs, this host has %d", req.Count, len(avail))
		}
		return avail[:req.Count], nil
	}
	return nil, nil
}

// DriverVersion reads the loaded kernel driver's version.
func (h GPUHost) DriverVersion() (string, error) {
	if b, err := os.ReadFile(h.path("/sys/module/nvidia/version")); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	b, err := os.ReadFile(h.path("/proc/driver/nvidia/version"))
	if err != nil {
		return "", fmt.Errorf("NVIDIA driver version: %w", ErrNoGPU)
	}
	return ParseDriverVersion(b)
}

var nvrm = regexp.MustCompile(`Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)`)

// ParseDriverVersion extracts the version from /proc/driver/nvidia/version.
func ParseDriverVersion(b []byte) (string, error) {
	m := nvrm.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("NVIDIA driver version: cannot parse %q", firstLine(b))
	}
	return string(m[1]), nil
}

// CheckDriver refuses a driver this runsc's nvproxy does not support: the
// most common nvproxy failure, caught before the job starts.
func CheckDriver(driver string, supported []string) error {
	if slices.Contains(supported, driver) {
		return nil
	}
	near := ""
	for _, s := range supported {
		if strings.SplitN(s, ".", 2)[0] == strings.SplitN(driver, ".", 2)[0] {
			near += " " + s
		}
	}
	if near != "" {
		near = "; supported in this branch:" + near
	}
	return fmt.Errorf("NVIDIA driver %s is not supported by this runsc's nvproxy (runsc nvproxy list-supported-drivers)%s", driver, near)
}

// Devices returns the device nodes a job with the given GPU indices needs:
// the control device, UVM, and one node per GPU.
func (h GPUHost) Devices(indices []int) ([]Device, error) {
	names := []string{"/dev/nvidiactl", "/dev/nvidia-uvm"}
	for _, i := range indices {
		names = append(names, fmt.Sprintf("/dev/nvidia%d", i))
	}
	var out []Device
	for _, n := range names {
		var st syscall.Stat_t
		if err := syscall.Stat(h.path(n), &st); err != nil {
			return nil, fmt.Errorf("GPU device %s: %w", n, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
			return nil, fmt.Errorf("GPU device %s is not a character device", n)
		}
		out = append(out, Device{Path: n, Major: int64(major(st.Rdev)), Minor: int64(minor(st.Rdev)), Mode: 0o666})
	}
	return out, nil
}

func major(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func minor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }

// DriverLibNames are the user-space driver libraries CUDA programs load.
var DriverLibNames = []string{
	"libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so",
	"libnvidia-gpucomp.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-cfg.so",
}

// VendorLibDirs are searched after the loader cache (GKE/cloud images put the
// driver here).
var VendorLibDirs = []string{"/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu"}

// FindDriverLibs finds the driver's user-space libraries on the host, from
// `ldconfig -p` output (may be nil) and the vendor directories. A library
// that is (or links to) another driver version's file is left out: a host
// upgraded in place often keeps libcuda.so.535.x next to libcuda.so.580.x,
// and the job must load the one matching the kernel driver. Of two paths
// with the same name (loader cache and a vendor directory), the one that
// resolves to the driver's version wins. ldconfig entries for another ABI
// (32-bit libraries on a 64-bit host) are skipped.
func (h GPUHost) FindDriverLibs(ldconfig []byte, driver string) []string {
	type cand struct {
		path  string
		match bool // resolves to the kernel driver's version
	}
	found := map[string]cand{} // base name -> best path
	consider := func(p string) {
		base := filepath.Base(p)
		name := driverLibName(base)
		if name == "" {
			return
		}
		real, err := filepath.EvalSymlinks(h.path(p))
		if err != nil {
			return
		}
		if fi, err := os.Stat(real); err != nil || !fi.Mode().IsRegular() {
			return
		}
		v := strings.TrimPrefix(filepath.Base(real), name+".")
		match := driver != "" && v == driver
		if driver != "" && driverVersion.MatchString(v) && !match {
			return // another driver version's library
		}
		if old, ok := found[base]; !ok || (match && !old.match) {
			found[base] = cand{p, match}
		}
	}
	abi := ldconfigABI[runtime.GOARCH]
	sc := bufio.NewScanner(bytes.NewReader(ldconfig))
	for sc.Scan() {
		desc, p, ok := strings.Cut(sc.Text(), "=> ")
		if !ok || (abi != "" && !strings.Contains(desc, abi)) {
			continue
		}
		consider(strings.TrimSpace(p))
	}
	for _, d := range VendorLibDirs {
		ents, _ := os.ReadDir(h.path(d))
		for _, e := range ents {
			consider(filepath.Join(d, e.Name()))
		}
	}
	out := make([]string, 0, len(found))
	for _, c := range found {
		out = append(out, c.path)
	}
	sort.Strings(out)
	return out
}

// ldconfigABI is the tag `ldconfig -p` gives this architecture's libraries,
// e.g. "libcuda.so.1 (libc6,x86-64) => ...".
var ldconfigABI = map[string]string{"amd64": "x86-64", "arm64": "AArch64"}

// driverVersion matches an NVIDIA driver version such as 580.159.04.
var driverVersion = regexp.MustCompile(`^\d{3}\.\d+(\.\d+)?$`)

// driverLibName returns the DriverLibNames entry base is a version of
// (libcuda.so, libcuda.so.1, libcuda.so.580.159.04), or "".
func driverLibName(base string) string {
	for _, n := range DriverLibNames {
		if base == n || strings.HasPrefix(base, n+".") {
			return n
		}
	}
	return ""
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\n"))
	return string(l)
}

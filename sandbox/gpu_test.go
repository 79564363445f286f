package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSelect(t *testing.T) {
	avail := []int{0, 1, 2, 3}
	for _, tc := range []struct {
		name    string
		req     GPURequest
		avail   []int
		want    []int
		wantErr string
	}{
		{"all", GPURequest{All: true}, avail, []int{0, 1, 2, 3}, ""},
		{"count", GPURequest{Count: 2}, avail, []int{0, 1}, ""},
		{"count all", GPURequest{Count: 4}, avail, []int{0, 1, 2, 3}, ""},
		{"count too many", GPURequest{Count: 5}, avail, nil, "asked for 5 GPUs, this host has 4"},
		{"list", GPURequest{Indices: []int{3, 1}}, avail, []int{3, 1}, ""},
		{"list missing", GPURequest{Indices: []int{1, 7}}, avail, nil, "GPU 7 does not exist on this host (have 0,1,2,3)"},
		{"sparse host", GPURequest{Indices: []int{2}}, []int{0, 2}, []int{2}, ""},
		{"nothing asked", GPURequest{}, avail, nil, ""},
		{"no GPU", GPURequest{All: true}, nil, nil, ErrNoGPU.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(tc.req, tc.avail)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := Select(GPURequest{Count: 1}, nil); !errors.Is(err, ErrNoGPU) {
		t.Errorf("no GPUs: %v, want ErrNoGPU", err)
	}
}

func TestParseDriverVersion(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{"open x86_64", "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U16-I3-B08-4-1)  Thu Oct 23 22:04:09 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "580.159.04"},
		{"open aarch64", "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.172.08  Release Build  (dvs-builder@U16-I2-C03-12-3)  Tue Jul  8 18:16:48 UTC 2025\nGCC version:  gcc version 11.4.0\n", "570.172.08"},
		{"proprietary", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)\n", "535.104.05"},
		{"proprietary two-part", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82  Thu Oct 14 23:13:03 UTC 2021\n", "470.82"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDriverVersion([]byte(tc.text))
			if err != nil || got != tc.want {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	_, err := ParseDriverVersion([]byte("garbage\nmore"))
	if err == nil || err.Error() != `NVIDIA driver version: cannot parse "garbage"` {
		t.Errorf("garbage: %v", err)
	}
}

func TestDriverVersionFromFakeHost(t *testing.T) {
	r := t.TempDir()
	h := GPUHost{Root: r}
	if _, err := h.DriverVersion(); !errors.Is(err, ErrNoGPU) {
		t.Errorf("no driver: %v, want ErrNoGPU", err)
	}
	mkfile(t, filepath.Join(r, "proc/driver/nvidia/version"), "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U16)  Thu Oct 23 2025\n")
	if v, err := h.DriverVersion(); v != "580.159.04" || err != nil {
		t.Errorf("from /proc: %q, %v", v, err)
	}
	mkfile(t, filepath.Join(r, "sys/module/nvidia/version"), "580.159.05\n")
	if v, err := h.DriverVersion(); v != "580.159.05" || err != nil {
		t.Errorf("from /sys/module: %q, %v", v, err)
	}
}

func TestCheckDriver(t *testing.T) {
	sup := []string{"535.104.05", "535.183.01", "570.172.08", "580.159.04"}
	if err := CheckDriver("580.159.04", sup); err != nil {
		t.Errorf("supported driver refused: %v", err)
	}
	for _, tc := range []struct{ driver, want string }{
		{"535.104.12", "NVIDIA driver 535.104.12 is not supported by this runsc's nvproxy (runsc nvproxy list-supported-drivers); supported in this branch: 535.104.05 535.183.01"},
		{"550.54.15", "NVIDIA driver 550.54.15 is not supported by this runsc's nvproxy (runsc nvproxy list-supported-drivers)"},
	} {
		err := CheckDriver(tc.driver, sup)
		if err == nil || err.Error() != tc.want {
			t.Errorf("CheckDriver(%s) = %v\nwant %s", tc.driver, err, tc.want)
		}
	}
	if err := CheckDriver("580.159.04", nil); err == nil {
		t.Error("empty supported list accepted a driver")
	}
}

func TestIndices(t *testing.T) {
	r := t.TempDir()
	for _, f := range []string{"nvidia0", "nvidia10", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-caps", "null"} {
		mkfile(t, filepath.Join(r, "dev", f), "")
	}
	got, err := GPUHost{Root: r}.Indices()
	if err != nil || !slices.Equal(got, []int{0, 2, 10}) {
		t.Errorf("Indices = %v, %v; want [0 2 10]", got, err)
	}
	if _, err := (GPUHost{Root: filepath.Join(r, "none")}).Indices(); err == nil {
		t.Error("no /dev: no error")
	}
}

func TestDevices(t *testing.T) {
	r := t.TempDir()
	h := GPUHost{Root: r}
	if _, err := h.Devices([]int{0}); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "GPU device /dev/nvidiactl") {
		t.Errorf("missing nodes: %v", err)
	}
	mkfile(t, filepath.Join(r, "dev/nvidiactl"), "")
	if _, err := h.Devices([]int{0}); err == nil || err.Error() != "GPU device /dev/nvidiactl is not a character device" {
		t.Errorf("regular file: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: character device nodes not created, only the error paths tested")
		return
	}
	os.Remove(filepath.Join(r, "dev/nvidiactl"))
	nodes := map[string][2]uint32{"nvidiactl": {195, 255}, "nvidia-uvm": {510, 0}, "nvidia0": {195, 0}, "nvidia1": {195, 1}}
	for n, mm := range nodes {
		if err := unix.Mknod(filepath.Join(r, "dev", n), unix.S_IFCHR|0o666, int(unix.Mkdev(mm[0], mm[1]))); err != nil {
			t.Skipf("mknod: %v", err)
		}
	}
	devs, err := h.Devices([]int{1})
	if err != nil {
		t.Fatal(err)
	}
	want := []Device{
		{Path: "/dev/nvidiactl", Major: 195, Minor: 255, Mode: 0o666},
		{Path: "/dev/nvidia-uvm", Major: 510, Minor: 0, Mode: 0o666},
		{Path: "/dev/nvidia1", Major: 195, Minor: 1, Mode: 0o666},
	}
	if !slices.Equal(devs, want) {
		t.Errorf("Devices = %+v\nwant %+v", devs, want)
	}
	if _, err := h.Devices([]int{5}); err == nil {
		t.Error("missing /dev/nvidia5 accepted")
	}
}

func TestMajorMinor(t *testing.T) {
	for _, mm := range [][2]uint32{{195, 0}, {195, 255}, {510, 0}, {4095, 1048575}, {259, 65536}} {
		dev := unix.Mkdev(mm[0], mm[1])
		if major(dev) != uint64(mm[0]) || minor(dev) != uint64(mm[1]) {
			t.Errorf("%d:%d -> %d:%d", mm[0], mm[1], major(dev), minor(dev))
		}
	}
}

// fakeDriver installs driver libraries as the NVIDIA installer does: the
// versioned file and relative SONAME/dev links.
func fakeDriver(t *testing.T, r, dir, version string, names ...string) {
	t.Helper()
	for _, n := range names {
		mkfile(t, filepath.Join(r, dir, n+"."+version), "ELF")
		os.Symlink(n+"."+version, filepath.Join(r, dir, n+".1"))
	}
}

func TestFindDriverLibs(t *testing.T) {
	const drv = "580.159.04"
	r := t.TempDir()
	const sys = "/usr/lib/x86_64-linux-gnu"
	fakeDriver(t, r, sys, drv, "libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so")
	// A stale library of the previous driver, left by an in-place upgrade.
	mkfile(t, filepath.Join(r, sys, "libcuda.so.535.104.05"), "ELF")
	mkfile(t, filepath.Join(r, sys, "libnvidia-ml.so.535.104.05"), "ELF")
	// The vendor directory holds the old driver's links only.
	fakeDriver(t, r, "/usr/local/nvidia/lib64", "535.104.05", "libcuda.so")
	// Not driver libraries.
	mkfile(t, filepath.Join(r, sys, "libcudart.so.12"), "ELF")
	mkfile(t, filepath.Join(r, sys, "libc.so.6"), "ELF")
	// 32-bit copy, listed by ldconfig before the 64-bit one.
	fakeDriver(t, r, "/usr/lib/i386-linux-gnu", drv, "libcuda.so")

	ldconfig := "1234 libs found in cache `/etc/ld.so.cache'\n" +
		"\tlibnvidia-ml.so.1 (libc6,x86-64) => " + sys + "/libnvidia-ml.so.1\n" +
		"\tlibcudart.so.12 (libc6,x86-64) => " + sys + "/libcudart.so.12\n" +
		"\tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1\n" +
		"\tlibcuda.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libcuda.so.1\n" +
		"\tlibcuda.so.1 (libc6,x86-64) => " + sys + "/libcuda.so.1\n" +
		"\tlibcuda.so (libc6,x86-64) => " + sys + "/libcuda.so-missing\n"
	abi := ldconfigABI[runtime.GOARCH]
	if abi == "" {
		t.Skipf("no ldconfig ABI tag known for %s", runtime.GOARCH)
	}
	ldconfig = strings.ReplaceAll(ldconfig, "x86-64", abi)
	got := GPUHost{Root: r}.FindDriverLibs([]byte(ldconfig), drv)
	want := []string{
		sys + "/libcuda.so.1",
		sys + "/libcuda.so." + drv,
		sys + "/libnvidia-ml.so.1",
		sys + "/libnvidia-ml.so." + drv,
		sys + "/libnvidia-ptxjitcompiler.so.1",
		sys + "/libnvidia-ptxjitcompiler.so." + drv,
	}
	if !slices.Equal(got, want) {
		t.Errorf("FindDriverLibs\n got %q\nwant %q", got, want)
	}

	// Without a known driver version, whatever exists is found (first path
	// of each name wins).
	got = GPUHost{Root: r}.FindDriverLibs(nil, "")
	if !slices.Contains(got, sys+"/libcuda.so."+drv) || !slices.Contains(got, sys+"/libnvidia-ml.so.535.104.05") {
		t.Errorf("no driver version: %q", got)
	}
	// No driver at all.
	if got := (GPUHost{Root: t.TempDir()}).FindDriverLibs(nil, drv); len(got) != 0 {
		t.Errorf("empty host: %q", got)
	}
}

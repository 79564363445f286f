package sandbox

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// TestGPUHostReal checks GPU discovery on a real NVIDIA host. GPUs are not a
// CI component, so it skips (even in CI) where there is none.
func TestGPUHostReal(t *testing.T) {
	var h GPUHost
	idx, err := h.Indices()
	if err != nil || len(idx) == 0 {
		t.Skip("no /dev/nvidiaN on this host")
	}
	drv, err := h.DriverVersion()
	if err != nil {
		t.Fatalf("GPUs %v but no driver version: %v", idx, err)
	}
	if !driverVersion.MatchString(drv) {
		t.Errorf("driver version %q", drv)
	}
	devs, err := h.Devices(idx)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2+len(idx) {
		t.Errorf("devices %+v", devs)
	}
	ldc, _ := exec.Command("ldconfig", "-p").Output()
	libs := h.FindDriverLibs(ldc, drv)
	var cuda bool
	for _, l := range libs {
		if strings.HasPrefix(filepath.Base(l), "libcuda.so") {
			cuda = true
		}
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			t.Errorf("%s: %v", l, err)
			continue
		}
		if v := driverVersionSuffix(real); v != "" && v != drv {
			t.Errorf("%s resolves to %s, another driver than %s", l, real, drv)
		}
	}
	if !cuda {
		t.Errorf("libcuda.so not found for driver %s: %q", drv, libs)
	}
	r := &Runsc{Path: testenv.Runsc(t)}
	sup, err := r.SupportedDrivers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckDriver(drv, sup); err != nil {
		t.Logf("this host's driver is not supported by the pinned runsc (jobs with --gpus will be refused): %v", err)
	}
}

func driverVersionSuffix(p string) string {
	b := filepath.Base(p)
	n := driverLibName(b)
	if n == "" {
		return ""
	}
	v := strings.TrimPrefix(b, n+".")
	if driverVersion.MatchString(v) {
		return v
	}
	return ""
}

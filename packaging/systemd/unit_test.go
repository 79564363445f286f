package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

const unitFile = "securetrain.service"

// directives returns the active (uncommented) key=value lines per key.
func directives(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q is not key=value", line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

func TestUnitShape(t *testing.T) {
	d := directives(t)
	want := map[string]string{
		"Type":                     "notify",
		"NotifyAccess":             "main",
		"ExecStart":                "/usr/local/bin/securetrain daemon",
		"Restart":                  "on-failure",
		"KillMode":                 "mixed", // SIGTERM to the daemon, SIGKILL to every job process once it exits
		"Delegate":                 "yes",
		"TasksMax":                 "infinity",
		"RuntimeDirectory":         "securetrain",
		"RuntimeDirectoryPreserve": "yes",
		"LogsDirectory":            "securetrain",
		"NoNewPrivileges":          "yes",
		"WatchdogSec":              "60s",
	}
	for k, v := range want {
		if got := d[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s=%v, want %s", k, got, v)
		}
	}
	// Each of these breaks namespaces, nftables, cgroups, GPUs, runsc or gc
	// from outside the unit; the unit says why in its comments.
	for _, k := range []string{
		"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateMounts", "ReadOnlyPaths", "InaccessiblePaths",
		"TemporaryFileSystem", "ProtectProc", "ProcSubset", "PrivateDevices", "DevicePolicy", "DeviceAllow",
		"ProtectClock", "ProtectKernelTunables", "ProtectControlGroups", "ProtectKernelModules",
		"ProtectKernelLogs", "RestrictNamespaces", "PrivateNetwork", "PrivateUsers", "DynamicUser", "User",
		"CapabilityBoundingSet", "SystemCallFilter", "MemoryDenyWriteExecute", "OOMScoreAdjust",
	} {
		if v, ok := d[k]; ok {
			t.Errorf("%s=%v is set: it breaks the daemon (see the unit's comments)", k, v)
		}
		b, _ := os.ReadFile(unitFile)
		if !strings.Contains(string(b), "# - "+k+"=") && !strings.Contains(string(b), " "+k+"=,") && !strings.Contains(string(b), " "+k+"=:") {
			t.Errorf("the unit does not say why %s= is left out", k)
		}
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker. The ExecStart binary
// must exist for it, so a copy of the unit points at a stub.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Missing(t, "systemd-analyze not on PATH (apt-get install systemd)")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "securetrain")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/securetrain", stub)
	path := filepath.Join(dir, unitFile)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", "--generators=no", path).CombinedOutput()
	// Warnings (unknown keys, bad values) exit 0 but print: both fail.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check can fail: a misspelt directive is reported.
	bad := filepath.Join(dir, "bad", unitFile)
	os.MkdirAll(filepath.Dir(bad), 0o755)
	os.WriteFile(bad, []byte(strings.Replace(unit, "KillMode=mixed", "KillMod=mixed", 1)), 0o644)
	out, _ = exec.Command(sa, "verify", "--man=no", "--generators=no", bad).CombinedOutput()
	if !strings.Contains(string(out), "KillMod") {
		t.Fatalf("systemd-analyze did not flag a misspelt key: %s", out)
	}
}

// Package testenv lets tests find the real components securetrain runs
// against (root, runsc, Vault, PostgreSQL, Slurm, PyTorch) and decides what a
// missing one means: a skip on a developer machine, a failure in CI.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/securetrain/securetrain/internal/versions"
)

// Pinned versions (internal/versions/versions.env).
var (
	GVisorVersion = versions.GVisor
	VaultVersion  = versions.Vault
)

// InCI reports whether the tests run in CI, where every component listed as
// present must be there.
func InCI() bool { return os.Getenv("CI") != "" }

// Missing ends the test for a missing component: t.Skip outside CI, t.Fatal in CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI: required component missing: "+format, args...)
	}
	t.Skipf("component missing (fatal in CI): "+format, args...)
}

// RequireRoot ends the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "test needs root")
	}
}

// ToolsDir is where scripts/build-*.sh cache the pinned binaries.
func ToolsDir() string {
	if d := os.Getenv("SECURETRAIN_TOOLS"); d != "" {
		return d
	}
	return "/var/cache/securetrain/tools"
}

// Runsc returns the path of the pinned static runsc ($SECURETRAIN_RUNSC wins).
func Runsc(t testing.TB) string {
	t.Helper()
	return tool(t, "SECURETRAIN_RUNSC", versions.RunscTool, "make runsc")
}

// VaultBin returns the path of the pinned Vault binary ($SECURETRAIN_VAULT wins).
func VaultBin(t testing.TB) string {
	t.Helper()
	return tool(t, "SECURETRAIN_VAULT", "vault-"+VaultVersion, "make vault")
}

func tool(t testing.TB, env, name, hint string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(ToolsDir(), name)
	}
	if _, err := os.Stat(p); err != nil {
		Missing(t, "%s not found at %s (run %s)", name, p, hint)
	}
	return p
}

// Python returns the Debian interpreter that has PyTorch (/usr/bin/python3),
// ending the test if torch is not importable.
func Python(t testing.TB) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		Missing(t, "%s cannot import torch (apt-get install python3-torch): %v", py, err)
	}
	return py
}

// LookPath returns the path of a host program, ending the test if absent.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not on PATH", name)
	}
	return p
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunscFiltersPrecompiled: the pinned runsc (scripts/build-runsc.sh)
// starts its sentry and its gofer with precompiled seccomp filters for the
// options securetrain runs it with (gVisor's netstack, with or without the
// job's network: the same filter options); a runsc built by plain `go
// install` builds them at every start (~40 ms).
func TestRunscFiltersPrecompiled(t *testing.T) {
	e := setup(t)
	logs, root := t.TempDir(), t.TempDir()
	out, err := exec.Command(e.runsc, "--root", root, "--network=none", "--platform=systrap", "--net-raw=false",
		"--overlay2=root:memory", "--debug", "--debug-log="+logs+"/", "do", "/bin/true").CombinedOutput()
	exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run()
	if err != nil {
		t.Fatalf("runsc do: %v: %s", err, out)
	}
	for _, part := range []string{"boot", "gofer"} {
		m, _ := filepath.Glob(filepath.Join(logs, "*."+part+".txt"))
		if len(m) != 1 {
			t.Fatalf("no %s log in %s", part, logs)
		}
		b, err := os.ReadFile(m[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "Loaded precompiled seccomp instructions") || strings.Contains(string(b), "No precompiled program found") {
			t.Errorf("runsc's %s built its seccomp filters at start (no precompiled program; make runsc builds them in)", part)
		}
	}
}

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
	for _, network := range []string{"none"} {
		logs := t.TempDir()
		root := t.TempDir()
		out, err := exec.Command(e.runsc, "--root", root, "--network="+network, "--platform=systrap", "--net-raw=false",
			"--overlay2=root:memory", "--debug", "--debug-log="+logs+"/", "do", "/bin/true").CombinedOutput()
		exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run()
		if err != nil {
			t.Fatalf("runsc do (--network=%s): %v: %s", network, err, out)
		}
		for _, part := range []string{"boot", "gofer"} {
			m, _ := filepath.Glob(filepath.Join(logs, "*."+part+".txt"))
			if len(m) != 1 {
				t.Fatalf("--network=%s: no %s log in %s", network, part, logs)
			}
			b, err := os.ReadFile(m[0])
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "Loaded precompiled seccomp instructions") || strings.Contains(string(b), "No precompiled program found") {
				t.Errorf("--network=%s: runsc's %s built its seccomp filters at start (no precompiled program; make runsc builds them in)", network, part)
			}
		}
	}
}

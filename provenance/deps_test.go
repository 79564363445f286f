package provenance

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// TestLayering: the integrity packages import only each other and the leaf
// packages, never the launcher or another subsystem.
func TestLayering(t *testing.T) {
	gobin := testenv.LookPath(t, "go")
	const mod = "github.com/securetrain/securetrain/"
	allowed := map[string]bool{"pin": true, "scan": true, "signing": true, "provenance": true, "violation": true, "jobstate": true}
	for _, pkg := range []string{"pin", "scan", "signing", "provenance"} {
		out, err := exec.Command(gobin, "list", "-deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if rest, ok := strings.CutPrefix(dep, mod); ok && !allowed[rest] {
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
	// signing is a leaf for the audit log: nothing of the project.
	out, _ := exec.Command(gobin, "list", "-deps", mod+"signing").Output()
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, mod) && dep != mod+"signing" {
			t.Errorf("signing imports %s", dep)
		}
	}
	// scan imports nothing of the project either.
	out, _ = exec.Command(gobin, "list", "-deps", mod+"scan").Output()
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, mod) && dep != mod+"scan" {
			t.Errorf("scan imports %s", dep)
		}
	}
}

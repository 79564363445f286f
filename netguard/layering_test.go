package netguard

import (
	"go/build"
	"strings"
	"testing"
)

// TestLayering keeps netguard a subsystem: of the project it may import
// only the leaf packages and internal/hostnet (its host primitives, shared
// with the test world), and the test support internal/testenv and
// internal/nettest in tests.
func TestLayering(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	const mod = "github.com/securetrain/securetrain/"
	allowed := map[string]bool{mod + "jobstate": true, mod + "violation": true, mod + "internal/hostnet": true,
		mod + "internal/testenv": true, mod + "internal/nettest": true}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, mod+"internal/") && imp != mod+"internal/hostnet" {
			t.Errorf("netguard's code imports test support %s", imp)
		}
	}
	for _, imps := range [][]string{pkg.Imports, pkg.TestImports} {
		for _, imp := range imps {
			if strings.HasPrefix(imp, mod) && !allowed[imp] {
				t.Errorf("netguard imports %s; only jobstate and violation are allowed", imp)
			}
		}
	}
}

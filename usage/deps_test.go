package usage

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// usage is a subsystem: of the project it may import only the leaf
// packages; the launcher drives it.
func TestImportsOnlyLeafPackages(t *testing.T) {
	allowed := map[string]bool{
		"github.com/securetrain/securetrain/violation": true,
		"github.com/securetrain/securetrain/jobstate":  true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range pf.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if strings.HasPrefix(p, "github.com/securetrain/securetrain/") && !allowed[p] {
				t.Errorf("%s imports %s; usage may import only violation and jobstate", f, p)
			}
		}
	}
}

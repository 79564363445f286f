// Package internal_test checks the module's layering and documentation
// (after Tailscale's tstest/deptest and pkgdoc_test): the rules below, one
// a row, say which packages may import which, and every package has a doc
// comment.
package internal_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/securetrain/securetrain"

// layer is a package's place in the architecture.
type layer string

const (
	// leaf packages import no other package of the module: the profile
	// schema and the small shared types every subsystem records with.
	leaf layer = "leaf"
	// subsystem packages each know one thing (runsc, netlink, Vault, ...)
	// and import only leaf packages other than configs: the launcher
	// translates the profile into their own Config types.
	subsystem layer = "subsystem"
	// library packages are small, self-contained tools that subsystems build
	// on (file digests and manifests, signatures): they import only leaf
	// packages other than configs.
	library layer = "library"
	// driver packages wire the subsystems into a job's life.
	driver layer = "driver"
	// service packages reach the launcher for others (the daemon's socket
	// for users who are not root): the one code path to the same launcher,
	// so they may import the driver.
	service layer = "service"
	// binary packages are the command line.
	binary layer = "binary"
	// tests are test-only packages (end-to-end against the built binary).
	tests layer = "tests"
	// unlisted is every package the table does not name yet.
	unlisted layer = "unlisted"
)

// layers places each top-level package (and everything below it). Add a new
// package here; packages that do not exist yet are fine.
var layers = map[string]layer{
	"configs":   leaf,
	"jobstate":  leaf,
	"violation": leaf,
	"internal":  leaf, // test support, internal/hostnet and small helpers: import nothing of the module outside internal

	"sandbox":    subsystem,
	"netguard":   subsystem,
	"secrets":    subsystem,
	"usage":      subsystem,
	"pin":        library,
	"scan":       subsystem,
	"provenance": subsystem,
	"oms":        subsystem,
	"signing":    library,
	"slurm":      subsystem,
	"audit":      subsystem,
	"metrics":    subsystem,
	"sdnotify":   subsystem,

	"launcher":  driver,
	"daemon":    service,
	"cmd":       binary,
	"e2e":       tests,
	"packaging": tests, // unit files and their tests
}

// files says which of a package's files a rule holds for.
type files int

const (
	code      files = 1 << iota // non-test files
	testFiles                   // _test.go files
	allFiles  = code | testFiles
)

// rule is one row of the layering. It holds for the files of every package
// that from names: a layer ("layer:subsystem"), "*" (every package), or a
// package path relative to the module, with everything below it. If only is
// not nil, they may import of the module nothing but what it names (none:
// nothing); they must never import what not names. Names in only and not
// are layers or package paths in the same way. Imports within one's own
// top-level package are never checked (internal/slurmtest uses
// internal/testenv). A package must satisfy every row that holds for it.
type rule struct {
	from  string
	files files
	only  []string
	not   []string
	why   string
}

var none = []string{}

// rules is the layering, one rule a row: first each layer's, then the
// packages held tighter than their layer.
var rules = []rule{
	{from: "layer:leaf", files: code, only: none,
		why: "leaf packages (the profile schema, shared types) import nothing of the module"},
	{from: "layer:leaf", files: testFiles, only: []string{"internal"},
		why: "a leaf package's tests may use only the test support in internal"},
	{from: "layer:library", files: allFiles, only: []string{"jobstate", "violation", "internal"},
		why: "library packages build on the shared types only: configs is the launcher's to translate"},
	{from: "layer:subsystem", files: allFiles, only: []string{"jobstate", "violation", "internal", "layer:library"},
		why: "a subsystem knows one thing and imports only the shared types and the libraries: it meets the other subsystems only in the launcher, which translates configs for it"},
	{from: "layer:driver", files: allFiles, only: []string{"layer:leaf", "layer:library", "layer:subsystem", "internal"},
		why: "the launcher wires the subsystems; nothing it imports may import it back"},
	{from: "layer:service", files: allFiles, only: []string{"layer:leaf", "layer:library", "layer:subsystem", "layer:driver", "internal"},
		why: "the daemon reaches the same launcher for others; the command line is above it"},
	{from: "layer:binary", files: allFiles, only: []string{"layer:leaf", "layer:library", "layer:subsystem", "layer:driver", "layer:service", "internal"},
		why: "the command line is the top"},
	{from: "layer:tests", files: allFiles, only: []string{"layer:leaf", "layer:library", "layer:subsystem", "layer:driver", "layer:service", "internal"},
		why: "end-to-end tests drive the built binary and may use every package but the command line's"},
	{from: "layer:unlisted", files: allFiles, only: []string{"jobstate", "violation", "internal"},
		why: "a package not yet placed in the layers table (add it) gets the least"},
	{from: "*", files: code, not: []string{"internal/nettest", "internal/testenv"},
		why: "test support (namespaces, servers, nftables tables, Vault): only _test.go files may import it"},

	{from: "netguard", files: code, only: []string{"jobstate", "violation", "internal/hostnet", "internal/charset"},
		why: "netguard knows netlink, nftables and DNS; its host primitives are internal/hostnet, shared with the test world"},
	{from: "netguard", files: testFiles, only: []string{"jobstate", "violation", "internal/hostnet", "internal/testenv", "internal/nettest"},
		why: "netguard's tests build their world with internal/nettest"},
	{from: "usage", files: code, only: []string{"jobstate", "violation"},
		why: "usage measures and limits; the launcher drives it"},
	{from: "pin", files: code, only: []string{"jobstate", "violation"},
		why: "the integrity packages import only each other and the shared types"},
	{from: "provenance", files: code, only: []string{"pin", "scan", "signing", "jobstate", "violation"},
		why: "the integrity packages import only each other and the shared types, never the launcher or another subsystem"},
	{from: "signing", files: code, only: none,
		why: "signing is a leaf for the audit log"},
	{from: "scan", files: code, only: none,
		why: "scan judges model files by their bytes alone"},
	{from: "daemon", files: code, not: []string{"sandbox", "netguard", "secrets", "usage"},
		why: "the daemon serves callers through the launcher and reaches no subsystem itself: what it shares with the command line (GPUs, logs, ps, Slurm) is the launcher's"},
	{from: "cmd", files: code, not: []string{"sandbox", "netguard"},
		why: "the command line runs jobs through the launcher; it never sets up a sandbox or a network itself (it reads the delivered secrets inside the sandbox as the exec-env entry point)"},
}

// matches reports whether name (a layer, "*", or a package path with
// everything below it) names the module package at path rel.
func matches(name, rel string) bool {
	if l, ok := strings.CutPrefix(name, "layer:"); ok {
		return layerOf(top(rel)) == layer(l)
	}
	return name == "*" || rel == name || strings.HasPrefix(rel, name+"/")
}

// broken returns the rules that the package at from breaks by importing the
// module package at to (both relative to the module), in a test file or not.
func broken(from, to string, test bool) []rule {
	if top(from) == top(to) {
		return nil
	}
	kind := code
	if test {
		kind = testFiles
	}
	var out []rule
	for _, r := range rules {
		if r.files&kind == 0 || !matches(r.from, from) {
			continue
		}
		ok := r.only == nil || slices.ContainsFunc(r.only, func(n string) bool { return matches(n, to) })
		if slices.ContainsFunc(r.not, func(n string) bool { return matches(n, to) }) {
			ok = false
		}
		if !ok {
			out = append(out, r)
		}
	}
	return out
}

func layerOf(top string) layer {
	if l, ok := layers[top]; ok {
		return l
	}
	return unlisted
}

// goPackage is one directory's Go files.
type goPackage struct {
	dir     string // relative to the module root, "." for the root
	files   []*ast.File
	names   []string
	isTest  []bool
	hasCode bool // has a non-test file
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module "+module+"\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of %s above the test", module)
		}
		dir = parent
	}
}

// loadPackages parses every Go file of the module (imports and package
// comments only), skipping testdata, hidden directories and nested modules.
func loadPackages(t *testing.T) map[string]*goPackage {
	t.Helper()
	root := moduleRoot(t)
	pkgs := map[string]*goPackage{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if p != root {
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir // another module (tools/vault)
				}
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		rel = filepath.ToSlash(rel)
		pkg := pkgs[rel]
		if pkg == nil {
			pkg = &goPackage{dir: rel}
			pkgs[rel] = pkg
		}
		isTest := strings.HasSuffix(name, "_test.go")
		pkg.files = append(pkg.files, f)
		pkg.names = append(pkg.names, name)
		pkg.isTest = append(pkg.isTest, isTest)
		pkg.hasCode = pkg.hasCode || !isTest
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 5 {
		t.Fatalf("found only %d packages under %s", len(pkgs), root)
	}
	return pkgs
}

func top(rel string) string {
	first, _, _ := strings.Cut(rel, "/")
	return first
}

func TestLayering(t *testing.T) {
	for _, pkg := range loadPackages(t) {
		for i, f := range pkg.files {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if path != module && !strings.HasPrefix(path, module+"/") {
					continue
				}
				to := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
				if to == "" {
					t.Errorf("%s/%s imports the module root %s", pkg.dir, pkg.names[i], path)
					continue
				}
				for _, r := range broken(pkg.dir, to, pkg.isTest[i]) {
					hint := ""
					if layerOf(top(pkg.dir)) == unlisted {
						hint = " (" + top(pkg.dir) + " is not in the layers table in internal/layering_test.go: add it)"
					}
					t.Errorf("%s/%s imports %s, which the rule for %s forbids: %s%s", pkg.dir, pkg.names[i], to, r.from, r.why, hint)
				}
			}
		}
	}
}

// TestLayeringTable checks the rules themselves, so a loosened row fails too.
func TestLayeringTable(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		test     bool
		want     bool
	}{
		{"configs", "jobstate", false, false},
		{"jobstate", "violation", false, false},
		{"violation", "configs", false, false},
		{"configs", "internal/testenv", true, true},
		{"sandbox", "jobstate", false, true},
		{"sandbox", "violation", false, true},
		{"sandbox", "configs", false, false},
		{"sandbox", "launcher", false, false},
		{"sandbox", "secrets", false, false},
		{"sandbox", "pin", false, true},
		{"netguard", "sandbox", false, false},
		{"secrets", "netguard", false, false},
		{"metrics", "audit", false, false},
		{"usage", "configs", true, false},
		{"launcher", "sandbox", false, true},
		{"launcher", "configs", false, true},
		{"launcher", "netguard", false, true},
		{"launcher", "internal/versions", false, true},
		{"launcher", "internal/testenv", false, false}, // test support
		{"launcher", "internal/testenv", true, true},
		{"launcher", "cmd", false, false},
		{"launcher", "daemon", false, false},
		{"daemon", "launcher", false, true},
		{"cmd", "launcher", false, true},
		{"cmd", "configs", false, true},
		{"e2e", "launcher", true, true},
		{"e2e", "internal/nettest", true, true},
		{"e2e", "cmd/securetrain/app", true, false},
		{"internal/nettest", "netguard", true, false}, // nettest must not depend on what it tests
		{"internal/slurmtest", "internal/testenv", false, true},
		{"slurmhook", "sandbox", false, false}, // unlisted
		{"slurmhook", "jobstate", false, true},
		// Packages held tighter than their layer.
		{"netguard", "internal/hostnet", false, true},
		{"netguard", "internal/nettest", true, true},
		{"netguard", "internal/versions", false, false},
		{"netguard", "pin", false, false},
		{"usage", "internal/hostnet", false, false},
		{"usage", "pin", false, false},
		{"usage", "jobstate", false, true},
		{"pin", "internal/hostnet", false, false},
		{"provenance", "pin", false, true},
		{"provenance", "scan", false, false}, // a subsystem: its layer forbids it
		{"provenance", "internal/hostnet", false, false},
		{"signing", "jobstate", false, false},
		{"scan", "violation", false, false},
		{"scan", "internal/modeltest", true, true},
	} {
		if got := len(broken(tc.from, tc.to, tc.test)) == 0; got != tc.want {
			t.Errorf("%s -> %s (test %v) allowed = %v, want %v", tc.from, tc.to, tc.test, got, tc.want)
		}
	}
}

// TestPackageDocs fails for a package with no doc comment on its package
// clause in any non-test file.
func TestPackageDocs(t *testing.T) {
	pkgs := loadPackages(t)
	var dirs []string
	for d := range pkgs {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		pkg := pkgs[d]
		if !pkg.hasCode {
			continue // test-only package (e2e, this one)
		}
		documented := false
		for i, f := range pkg.files {
			if pkg.isTest[i] || f.Doc == nil {
				continue
			}
			text := f.Doc.Text()
			want := "Package " + f.Name.Name + " "
			if f.Name.Name == "main" {
				want = "Command "
			}
			if !strings.HasPrefix(text, want) {
				t.Errorf("%s/%s: package comment starts %q, want %q", d, pkg.names[i], firstLine(text), want+"...")
			}
			documented = true
		}
		if !documented {
			t.Errorf("package %s has no doc comment: add a doc.go with // Package %s ...", d, filepath.Base(d))
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

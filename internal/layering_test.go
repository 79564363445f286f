// Package internal_test checks the module's layering and documentation
// (after Tailscale's tstest/deptest and pkgdoc_test): the table below says
// which packages may import which, and every package has a doc comment.
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

// layer is a package's place in the architecture (docs/architecture.md).
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
	"internal":  leaf, // test helpers (internal/testenv, internal/nettest) and internal/hostnet: import nothing of the module

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

// mayImport lists, per layer, which top-level packages or layers it may
// import besides itself ("internal" is open to everyone but leaves).
var mayImport = map[layer][]string{
	leaf:      {},
	library:   {"jobstate", "violation", "internal"},
	subsystem: {"jobstate", "violation", "internal", string(library)},
	driver:    {string(leaf), string(library), string(subsystem), "internal"},
	service:   {string(leaf), string(library), string(subsystem), string(driver), "internal"},
	binary:    {string(leaf), string(library), string(subsystem), string(driver), string(service), "internal"},
	tests:     {string(leaf), string(library), string(subsystem), string(driver), string(service), "internal"},
	unlisted:  {"jobstate", "violation", "internal"},
}

// testOnly are test-support packages: only _test.go files may import them
// (internal/nettest builds namespaces, servers and nftables tables).
var testOnly = []string{"internal/nettest", "internal/testenv"}

// allowed reports whether a package in top-level dir from may import the
// module package in top-level dir to.
func allowed(from, to string, test bool) bool {
	if from == to {
		return true
	}
	if test && to == "internal" {
		return true // every package's tests may use internal/testenv
	}
	l := layerOf(from)
	for _, a := range mayImport[l] {
		if a == to || a == string(layerOf(to)) {
			return true
		}
	}
	return false
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
		from := top(pkg.dir)
		for i, f := range pkg.files {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if path != module && !strings.HasPrefix(path, module+"/") {
					continue
				}
				to := top(strings.TrimPrefix(strings.TrimPrefix(path, module), "/"))
				if to == "" {
					t.Errorf("%s/%s imports the module root %s", pkg.dir, pkg.names[i], path)
					continue
				}
				if sub := strings.TrimPrefix(path, module+"/"); slices.Contains(testOnly, sub) && !pkg.isTest[i] && top(pkg.dir) != "internal" {
					t.Errorf("%s/%s imports %s, which is test support: only _test.go files may", pkg.dir, pkg.names[i], path)
				}
				if !allowed(from, to, pkg.isTest[i]) {
					hint := ""
					if layerOf(from) == unlisted {
						hint = " (" + from + " is not in the layering table in internal/layering_test.go: add it)"
					}
					t.Errorf("%s/%s imports %s: a %s package may import only %v%s",
						pkg.dir, pkg.names[i], path, layerOf(from), mayImport[layerOf(from)], hint)
				}
			}
		}
	}
}

// TestLayeringTable checks the rule itself, so a loosened table fails too.
func TestLayeringTable(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		test     bool
		want     bool
	}{
		{"configs", "jobstate", false, false},
		{"jobstate", "violation", false, false},
		{"violation", "configs", false, false},
		{"configs", "internal", true, true},
		{"sandbox", "jobstate", false, true},
		{"sandbox", "violation", false, true},
		{"sandbox", "configs", false, false},
		{"sandbox", "launcher", false, false},
		{"sandbox", "secrets", false, false},
		{"netguard", "sandbox", false, false},
		{"secrets", "netguard", false, false},
		{"metrics", "audit", false, false},
		{"usage", "configs", true, false},
		{"launcher", "sandbox", false, true},
		{"launcher", "configs", false, true},
		{"launcher", "netguard", false, true},
		{"launcher", "cmd", false, false},
		{"cmd", "launcher", false, true},
		{"cmd", "configs", false, true},
		{"e2e", "launcher", true, true},
		{"e2e", "internal", true, true},      // internal/nettest's world
		{"netguard", "internal", true, true}, // internal/nettest's world
		{"netguard", "internal", false, true},
		{"internal", "netguard", true, false},  // nettest must not depend on what it tests
		{"slurmhook", "sandbox", false, false}, // unlisted
		{"slurmhook", "jobstate", false, true},
	} {
		if got := allowed(tc.from, tc.to, tc.test); got != tc.want {
			t.Errorf("allowed(%s -> %s, test %v) = %v, want %v", tc.from, tc.to, tc.test, got, tc.want)
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

package scan

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// TestDifferentialCPython checks the scanner against CPython itself: for
// pickles and thousands of mutations of them, whatever either of CPython's
// unpicklers would import (find_class, recorded by testdata/imports.py
// without importing) must be on the allowlist, or the scanner must say
// Dangerous. A scanner that loses track of the stack, the memo or a string
// would let a mutated STACK_GLOBAL through here.
func TestDifferentialCPython(t *testing.T) {
	py := testenv.LookPath(t, "python3")
	dir := t.TempDir()
	var seeds [][]byte
	ents, _ := os.ReadDir(filepath.Join("testdata", "fixtures"))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".pkl") || e.Name() == "safe_legacy.pt" {
			b, _ := os.ReadFile(filepath.Join("testdata", "fixtures", e.Name()))
			seeds = append(seeds, b)
		}
	}
	seed := int64(7)
	if s := os.Getenv("SECURETRAIN_DIFF_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	rng := rand.New(rand.NewSource(seed))
	var files []string
	add := func(b []byte) {
		p := filepath.Join(dir, fmt.Sprintf("%05d", len(files)))
		os.WriteFile(p, b, 0o644)
		files = append(files, p)
	}
	interesting := []byte("\x93\x94hjgqpr(0 12\x8c\x8d\x58cVSUiTR\x85\x86\x87.")
	for _, s := range seeds {
		add(s)
		for i := 0; i < 120; i++ {
			b := bytes.Clone(s)
			for k := 0; k < 1+rng.Intn(3); k++ {
				j := rng.Intn(len(b))
				switch rng.Intn(4) {
				case 0:
					b[j] = byte(rng.Intn(256))
				case 1:
					b[j] = interesting[rng.Intn(len(interesting))]
				case 2: // duplicate a slice (repeats memo/PUT/GET patterns)
					k2 := j + rng.Intn(len(b)-j)
					b = append(b[:k2:k2], append(bytes.Clone(b[j:k2]), b[k2:]...)...)
				case 3:
					b = append(b[:j:j], b[min(len(b), j+1+rng.Intn(4)):]...)
				}
				if len(b) == 0 {
					b = []byte{'.'}
				}
			}
			add(b)
		}
	}
	cmd := exec.Command(py, filepath.Join("testdata", "imports.py"))
	cmd.Stdin = strings.NewReader(strings.Join(files, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imports.py: %v\n%s", err, stderr.Bytes())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	n, dangerous := 0, 0
	for sc.Scan() {
		var rec struct {
			Path    string
			Imports [][2]string
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		n++
		r, err := Scan(rec.Path)
		if err != nil {
			t.Fatal(err)
		}
		if r.Verdict == Dangerous {
			dangerous++
			continue
		}
		for _, imp := range rec.Imports {
			mod, name := imp[0], imp[1]
			if isAllowed(mod, name) || mod == "" { // __import__("") fails before any import
				continue
			}
			// Never safe when CPython would import something else. A
			// malformed verdict also refuses the file; it is accepted only
			// when the module is one of the allowlist's (a name cut by the
			// end of the data: the import runs nothing, and nothing can
			// call what it found).
			if r.Verdict == Safe || !allowedModules[canonicalModule(mod)] {
				b, _ := os.ReadFile(rec.Path)
				t.Errorf("CPython imports %q but the scanner says %v (%v) for %q", imp, r.Verdict, r.Findings, b)
			}
		}
	}
	if n != len(files) {
		t.Fatalf("oracle answered %d of %d files", n, len(files))
	}
	t.Logf("%d files, %d dangerous", n, dangerous)
}

package scan

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// fixtures are written by testdata/gen_fixtures.py with Debian's
// python3-torch; TestFreshTorchCheckpoints regenerates them to check that
// what the installed torch writes today is judged the same way.
var fixtureWant = map[string]struct {
	verdict Verdict
	format  string
	imports []string // each must be named in a dangerous finding
}{
	"safe_state_dict.pt":         {Safe, "pytorch-zip", nil},
	"safe_adam_state.pt":         {Safe, "pytorch-zip", nil},
	"safe_sgd_state.pt":          {Safe, "pytorch-zip", nil},
	"safe_checkpoint.pt":         {Safe, "pytorch-zip", nil},
	"safe_legacy.pt":             {Safe, "pytorch-legacy", nil},
	"safe_legacy_p4.pt":          {Safe, "pytorch-legacy", nil},
	"safe_array.npy":             {Safe, "npy", nil},
	"safe_object_array.npy":      {Safe, "npy", nil},
	"safe_arrays.npz":            {Safe, "npz", nil},
	"safe_numpy_proto0.pkl":      {Safe, "pickle", nil},
	"safe_numpy_proto1.pkl":      {Safe, "pickle", nil},
	"safe_numpy_proto2.pkl":      {Safe, "pickle", nil},
	"safe_numpy_proto3.pkl":      {Safe, "pickle", nil},
	"safe_numpy_proto4.pkl":      {Safe, "pickle", nil},
	"safe_numpy_proto5.pkl":      {Safe, "pickle", nil},
	"safe.safetensors":           {Safe, "safetensors", nil},
	"evil_os_system_p2.pkl":      {Dangerous, "pickle", []string{"posix.system"}},
	"evil_os_system_p5.pkl":      {Dangerous, "pickle", []string{"posix.system"}},
	"evil_eval_p4.pkl":           {Dangerous, "pickle", []string{"builtins.eval"}},
	"evil_popen_p3.pkl":          {Dangerous, "pickle", []string{"subprocess.Popen"}},
	"evil_proto0.pkl":            {Dangerous, "pickle", []string{"posix.system"}},
	"evil_proto1.pkl":            {Dangerous, "pickle", []string{"__builtin__.eval"}},
	"evil_inst_proto0.pkl":       {Dangerous, "pickle", []string{"os.system"}},
	"evil_memo_stack_global.pkl": {Dangerous, "pickle", []string{"builtins.eval"}},
	"evil_nested.pt":             {Dangerous, "pytorch-zip", []string{"posix.system"}},
	"evil_nested_legacy.pt":      {Dangerous, "pytorch-legacy", []string{"commands.Popen"}}, // protocol 2 writes the Python 2 name
	"evil_object_array.npy":      {Dangerous, "npy", []string{"posix.system"}},
	"evil_arrays.npz":            {Dangerous, "npz", []string{"builtins.eval"}},
	"unsupported_gzip.pkl.gz":    {Unsupported, "gzip", nil},
	"unsupported_keras.keras":    {Unsupported, "keras", nil},
	"malformed_truncated.pt":     {Malformed, "zip", nil},
	"malformed_truncated.pkl":    {Malformed, "pickle", nil},
	"malformed_random.bin":       {Malformed, "", nil},
	"bad_offsets.safetensors":    {Malformed, "safetensors", nil},
}

func checkReport(t *testing.T, name string, r *Report) {
	t.Helper()
	want, ok := fixtureWant[name]
	if !ok {
		t.Errorf("%s: fixture without expectation", name)
		return
	}
	if r.Verdict != want.verdict {
		t.Errorf("%s: verdict %v, want %v; findings %v", name, r.Verdict, want.verdict, r.Findings)
	}
	if want.format != "" && r.Format != want.format {
		t.Errorf("%s: format %q, want %q", name, r.Format, want.format)
	}
	for _, imp := range want.imports {
		found := false
		for _, f := range r.Findings {
			if f.Verdict == Dangerous && f.Import == imp && f.Opcode != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no dangerous finding naming %s: %v", name, imp, r.Findings)
		}
	}
	if r.Verdict == Safe && len(r.Findings) != 0 {
		t.Errorf("%s: safe with findings %v", name, r.Findings)
	}
}

func TestFixtures(t *testing.T) {
	dir := filepath.Join("testdata", "fixtures")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(fixtureWant) {
		t.Errorf("%d fixtures, %d expectations", len(ents), len(fixtureWant))
	}
	for _, e := range ents {
		r, err := Scan(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, e.Name(), r)
	}
}

// TestFreshTorchCheckpoints regenerates every fixture with the installed
// python3-torch and scans the result.
func TestFreshTorchCheckpoints(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	cmd := exec.Command(py, filepath.Join("testdata", "gen_fixtures.py"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen_fixtures.py: %v\n%s", err, out)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(fixtureWant) {
		t.Errorf("generated %d files, want %d", len(ents), len(fixtureWant))
	}
	for _, e := range ents {
		r, err := Scan(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, e.Name(), r)
	}
}

func TestTextIsData(t *testing.T) {
	for _, s := range []string{`{"architectures": ["Bert"]}`, "# README\n\nweights for x\n", "from x import y\n"} {
		if r := ScanBytes("t", []byte(s)); r.Verdict != Safe || r.Format != "text" {
			t.Errorf("%q: %v %s", s, r.Verdict, r.Format)
		}
	}
	// Python source starting with "import" begins with the INST opcode: it
	// is read as a pickle, and its "import" is not allowed.
	if r := ScanBytes("t", []byte("import os\nos.system('x')\n")); r.Verdict == Safe {
		t.Errorf("import line judged safe: %v", r.Findings)
	}
}

func TestMagicNotName(t *testing.T) {
	// A pickle named like safetensors is still read as a pickle.
	b, _ := os.ReadFile(filepath.Join("testdata", "fixtures", "evil_eval_p4.pkl"))
	r := ScanBytes("model.safetensors", b)
	if r.Verdict != Dangerous || r.Format != "pickle" {
		t.Fatalf("renamed pickle: %v %s", r.Verdict, r.Format)
	}
}

func TestTruncationsNeverSafeOrPanic(t *testing.T) {
	for _, name := range []string{"safe_state_dict.pt", "safe_legacy.pt", "safe_numpy_proto4.pkl", "safe_numpy_proto0.pkl", "safe_object_array.npy", "safe.safetensors"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fixtures", name))
		if err != nil {
			t.Fatal(err)
		}
		safeFrom := -1
		for n := 1; n < len(b); n += 1 + len(b)/200 {
			r := ScanBytes(name, b[:n])
			switch {
			case r.Verdict == Malformed && safeFrom < 0:
			case r.Verdict == Dangerous && safeFrom < 0 && strings.Contains(r.Summary(), "truncated import"):
				// A cut module name may name another module, and CPython
				// imports it before failing: dangerous is right.
			case r.Format == "text" && n < 4:
				// "P", "PK": too short to be anything but text.
			case r.Verdict == Safe && strings.HasSuffix(name, "legacy.pt"):
				// The legacy format ends with raw storage bytes whose
				// length only the tensors' metadata gives: a cut there
				// is not seen (and holds no code). Once safe, stay safe.
				if safeFrom < 0 {
					safeFrom = n
				}
			default:
				t.Errorf("%s cut at %d/%d: %v %v", name, n, len(b), r.Verdict, r.Findings)
			}
		}
		if safeFrom >= 0 && safeFrom < len(b)/8 {
			t.Errorf("%s: cut at %d judged safe", name, safeFrom)
		}
	}
}

func TestRandomMalformed(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		b := make([]byte, 1+rng.Intn(4096))
		rng.Read(b)
		if i%3 == 0 {
			b[0] = 0x80 // make the pickle path run
			b[1] = byte(rng.Intn(6))
		}
		r := ScanBytes("random", b)
		if r.Verdict == Safe {
			t.Fatalf("random input %d judged safe: %x", i, b[:min(len(b), 64)])
		}
	}
}

func TestStackGlobalUnknownOperands(t *testing.T) {
	// Module name built by a call, not a constant: cannot be checked.
	p := []byte("\x80\x04\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x93)R\x8c\x04eval\x93.")
	r := ScanBytes("x", p)
	if r.Verdict != Dangerous {
		t.Fatalf("got %v %v", r.Verdict, r.Findings)
	}
	// A long (untracked) string used as a module name.
	long := strings.Repeat("a", maxKeptString+1)
	p = append([]byte("\x80\x04\x8d"), le(uint64(len(long)))...)
	p = append(p, long...)
	p = append(p, "\x8c\x04eval\x93."...)
	if r := ScanBytes("x", p); r.Verdict != Dangerous {
		t.Fatalf("long operand: %v %v", r.Verdict, r.Findings)
	}
	// Attribute walking through an allowed name.
	p = []byte("\x80\x04\x8c\x0bcollections\x8c\x16OrderedDict.__reduce__\x93.")
	if r := ScanBytes("x", p); r.Verdict != Dangerous {
		t.Fatalf("dotted name: %v %v", r.Verdict, r.Findings)
	}
	// EXT opcodes cannot be resolved.
	if r := ScanBytes("x", []byte("\x80\x02\x82\x01.")); r.Verdict != Dangerous {
		t.Fatalf("EXT1: %v", r.Verdict)
	}
}

func TestTruncatedImport(t *testing.T) {
	// CPython imports "antigravity" (running its code) before it fails on
	// the missing name line.
	if r := ScanBytes("x", []byte("cantigravity\nx")); r.Verdict != Dangerous {
		t.Fatalf("truncated import: %v %v", r.Verdict, r.Findings)
	}
	if r := ScanBytes("x", []byte("ctorch\nFloatStor")); r.Verdict != Malformed {
		t.Fatalf("truncated allowed import: %v %v", r.Verdict, r.Findings)
	}
}

func le(n uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
	return b
}

func TestTrailingGarbage(t *testing.T) {
	b, _ := os.ReadFile(filepath.Join("testdata", "fixtures", "safe_numpy_proto4.pkl"))
	if r := ScanBytes("x", append(bytes.Clone(b), "garbage"...)); r.Verdict != Malformed {
		t.Fatalf("trailing garbage: %v", r.Verdict)
	}
	evil, _ := os.ReadFile(filepath.Join("testdata", "fixtures", "evil_eval_p4.pkl"))
	if r := ScanBytes("x", append(bytes.Clone(b), evil...)); r.Verdict != Dangerous {
		t.Fatalf("second pickle not scanned: %v", r.Verdict)
	}
}

func FuzzScanPickle(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzScanPickle (written by gen_fixtures.py).
	f.Add([]byte("\x80\x05."))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := ScanBytes("fuzz", b)
		if r.Verdict < Safe || r.Verdict > Dangerous {
			t.Fatalf("verdict %v", r.Verdict)
		}
		for _, fd := range r.Findings {
			if fd.Verdict == Malformed && strings.Contains(fd.Detail, "scanner error") {
				t.Fatalf("scanner panicked: %s", fd.Detail)
			}
		}
		// Same input, same answer.
		if r2 := ScanBytes("fuzz", b); r2.Verdict != r.Verdict || len(r2.Findings) != len(r.Findings) {
			t.Fatalf("nondeterministic: %v vs %v", r.Verdict, r2.Verdict)
		}
	})
}

func TestCheck(t *testing.T) {
	b, _ := os.ReadFile(filepath.Join("testdata", "fixtures", "evil_eval_p4.pkl"))
	r := ScanBytes("m.pkl", b)
	d := strings.Repeat("ab", 32)
	if err := Check(r, d, nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), d) {
		t.Fatalf("dangerous not refused: %v", err)
	}
	if err := Check(r, d, func(s string) bool { return s == d }); err != nil {
		t.Fatalf("accepted digest refused: %v", err)
	}
	if err := Check(r, d, func(s string) bool { return s == "other" }); err == nil {
		t.Fatal("other digest accepted")
	}
	if err := Check(&Report{Verdict: Safe}, "", nil); err != nil {
		t.Fatal(err)
	}
}

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

	mt "github.com/securetrain/securetrain/internal/modeltest"
	"github.com/securetrain/securetrain/internal/testenv"
)

// TestNpyObjectSpellings is the confirmed bypass and its relatives: every
// way numpy lets a header say "this dtype holds objects" must lead to the
// pickle that follows being scanned (the old reader only knew "O" as the
// first letter of a string descr).
func TestNpyObjectSpellings(t *testing.T) {
	evil := mt.EvilPickle("touch /tmp/pwned")
	for _, descr := range []string{
		`'O'`, `'|O'`, `'<O'`, `'O8'`, `'O4'`, `'object'`, `'object_'`, `'object0'`, `'O 8'`, `'O+8'`,
		`[('a', '<i4'), ('b', 'object')]`, // the confirmed np.save bypass: the field spelled 'object'
		`[('a', '<i4'), ('b', '|O')]`,
		`[('a', [('b', '<f8'), ('c', [('d', 'object')])])]`,
		`[(('title', 'a'), 'O')]`,
		`[('a', 'O', (2,))]`, `('O', (2,))`, `('object', 3)`, `'(2,)O'`, `'2O'`, `'i4, O'`, `'<i4,object'`,
		`['aO']`, `[['a', 'O']]`, `{'aO': 1}`, `[('a', ('O', (2, 2)))]`,
		`'obj' 'ect'`, `'\x4f'`, `u'O'`, `r'O'`, `('O')`, `"""O"""`,
	} {
		hdr := "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }"
		r := ScanBytes("x.npy", mt.NpyFile(hdr, evil))
		if r.Verdict != Dangerous {
			t.Errorf("descr %s: %v %v, want dangerous", descr, r.Verdict, r.Findings)
		}
	}
}

func TestNpyHeadersNumpyRefuses(t *testing.T) {
	for _, hdr := range []string{
		"{'descr': '|object', 'fortran_order': False, 'shape': (1,), }",
		"{'descr': 'O16', 'fortran_order': False, 'shape': (1,), }",
		"{'descr': [('a', 'O'), ('a', 'i4')], 'fortran_order': False, 'shape': (1,), }",
		"{'descr': 'O', 'fortran_order': 0, 'shape': (1,), }",
		"{'descr': 'O', 'fortran_order': False, 'shape': [1], }",
		"{'descr': 'O', 'fortran_order': False, 'shape': (1,), 'x': 1}",
		"{'descr': b'O', 'fortran_order': False, 'shape': (1,), }",
		"{'descr': 'O', 'fortran_order': False, 'shape': ('1',), }",
	} {
		r := ScanBytes("x.npy", mt.NpyFile(hdr, mt.EvilPickle("x")))
		if r.Verdict != Malformed {
			t.Errorf("%s: %v %v, want malformed", hdr, r.Verdict, r.Findings)
		}
	}
}

// descrGen writes random header dicts from the pieces numpy's grammar is
// made of, in every Python spelling literal_eval reads.
type descrGen struct{ rng *rand.Rand }

var dtypePieces = []string{"<", ">", "|", "=", "O", "object", "object_", "object0", "Object", "i4", "f8", "V4", "V",
	"S3", "U2", "M8[ns]", "m8", "b1", "?", "(2,)", "2", "()", ",", " ", ", ", "O4", "O8", "O16", "O0", " 8", "+8",
	"i", "u", "float64", "int", "x", "[", "]", "datetime64", "(2,3)", "a", "c", "P", "0", "4294967304", "void", "V0"}

func (g descrGen) dtypeString() string {
	var b strings.Builder
	for i := 0; i < 1+g.rng.Intn(4); i++ {
		b.WriteString(dtypePieces[g.rng.Intn(len(dtypePieces))])
	}
	return b.String()
}

// str renders s as a Python string literal in a random spelling.
func (g descrGen) str(s string) string {
	switch g.rng.Intn(8) {
	case 0:
		return `"` + s + `"`
	case 1:
		if len(s) > 1 {
			k := 1 + g.rng.Intn(len(s)-1)
			return "'" + s[:k] + "' '" + s[k:] + "'"
		}
	case 2:
		return "u'" + s + "'"
	case 3:
		return strings.ReplaceAll("'"+s+"'", "O", `\x4f`)
	case 4:
		return "b'" + s + "'"
	}
	return "'" + s + "'"
}

func (g descrGen) shape() string {
	return []string{"2", "(2,)", "()", "0", "(1, 2)", "-1", "'x'", "(2)", "1"}[g.rng.Intn(9)]
}

func (g descrGen) descr(depth int) string {
	switch k := g.rng.Intn(10); {
	case k < 5 || depth > 2:
		return g.str(g.dtypeString())
	case k == 5:
		return "(" + g.descr(depth+1) + ", " + g.shape() + ")"
	case k == 9:
		return "{" + g.str("a"+dtypePieces[g.rng.Intn(len(dtypePieces))]) + ": 1}"
	default:
		var fields []string
		for i := 0; i < g.rng.Intn(4); i++ {
			name := g.str([]string{"a", "b", "", "a"}[g.rng.Intn(4)])
			if g.rng.Intn(6) == 0 {
				name = "(" + g.str("t") + ", " + name + ")"
			}
			f := "(" + name + ", " + g.descr(depth+1)
			if g.rng.Intn(3) == 0 {
				f += ", " + g.shape()
			}
			fields = append(fields, f+")")
		}
		if g.rng.Intn(8) == 0 {
			fields = append(fields, g.str("a"+[]string{"O", "i", "f", "x"}[g.rng.Intn(4)]))
		}
		return "[" + strings.Join(fields, ", ") + "]"
	}
}

func (g descrGen) header() string {
	fo := []string{"False", "True", "0"}[g.rng.Intn(3)]
	shape := []string{"(3,)", "()", "(2, 2)", "(True,)", "[3]", "(3L,)"}[g.rng.Intn(6)]
	return "{'descr': " + g.descr(0) + ", 'fortran_order': " + fo + ", 'shape': " + shape + ", }"
}

// TestNpyHeaderDifferential asks numpy itself: for thousands of generated
// headers, the scanner's reading (object dtype, plain dtype, refused) must
// be numpy's. A header numpy reads as holding objects and the scanner
// does not would let a pickle through unscanned.
func TestNpyHeaderDifferential(t *testing.T) {
	py := testenv.Python(t)
	seed := int64(12)
	if s := os.Getenv("SECURETRAIN_DIFF_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	g := descrGen{rand.New(rand.NewSource(seed))}
	var headers []string
	for i := 0; i < 6000; i++ {
		headers = append(headers, g.header())
	}
	var in bytes.Buffer
	for _, h := range headers {
		b, _ := json.Marshal(h)
		in.Write(append(b, '\n'))
	}
	cmd := exec.Command(py, filepath.Join("testdata", "npy_header.py"))
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("npy_header.py: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	counts := map[string]int{}
	i := 0
	for ; sc.Scan(); i++ {
		want := strings.Fields(sc.Text())[0]
		got := "ok"
		h, err := parseNpyHeader([]byte(headers[i]), 1)
		switch {
		case err != nil:
			got = "err"
		case h.obj:
			got = "obj"
		}
		counts[want]++
		if got != want {
			t.Errorf("header %s: numpy %q, scanner %s (%v)", headers[i], sc.Text(), got, err)
		}
	}
	if i != len(headers) {
		t.Fatalf("numpy answered %d of %d headers", i, len(headers))
	}
	t.Logf("numpy verdicts over %d headers: %v", i, counts)
}

func FuzzNpyHeader(f *testing.F) {
	for _, h := range []string{
		"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
		"{'descr': '|O', 'fortran_order': False, 'shape': (3,), }",
		"{'descr': [('a', '<i4'), ('b', 'O', (2,))], 'fortran_order': False, 'shape': (1,), }",
		"{'descr': 'i4, (2,)object', 'fortran_order': True, 'shape': (), }",
	} {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseNpyHeader(b, 1)
		r := ScanBytes("f.npy", mt.NpyFile(string(b), mt.EvilPickle("x")))
		switch {
		case err != nil && r.Verdict != Malformed:
			t.Fatalf("refused header judged %v", r.Verdict)
		case err == nil && h.obj && r.Verdict != Dangerous:
			t.Fatalf("object header with a payload judged %v", r.Verdict)
		}
		_ = fmt.Sprint(h)
	})
}

package scan

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// TestBypassesRunUnderRealLoaders proves the bypass files play real
// attacks: Debian's torch.load and np.load(allow_pickle=True) run their
// payloads (which only create a marker file), while the scanner refuses
// every one. It also checks that the Go-built legacy tar checkpoint is
// one torch.load reads.
func TestBypassesRunUnderRealLoaders(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	cases := []struct {
		name, load string
		build      func(cmd string) []byte
	}{
		{"pickle-tar.pt", "import torch, sys; torch.load(sys.argv[1])", func(cmd string) []byte {
			return pickleTarPolyglot(append(evilPickle(cmd), "\x80\x02]."...))
		}},
		{"object-field.npy", "import numpy, sys; numpy.load(sys.argv[1], allow_pickle=True)", func(cmd string) []byte {
			return npyFile("{'descr': [('a', '<i4'), ('b', 'object')], 'fortran_order': False, 'shape': (1,), }", evilPickle(cmd))
		}},
		{"zip-upper-case.pt", "import torch, sys; torch.load(sys.argv[1])", func(cmd string) []byte {
			return torchZipCaseBypass(t, cmd)
		}},
		{"legacy-tar-pickle.pt", "import torch, sys; torch.load(sys.argv[1])", func(cmd string) []byte {
			return legacyTar(map[string][]byte{"pickle": evilPickle(cmd)})
		}},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		marker := p + ".ran"
		if err := os.WriteFile(p, c.build("touch "+marker), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Scan(p)
		if err != nil || r.Verdict == Safe {
			t.Errorf("%s: scanner says %v %v", c.name, r.Verdict, err)
		}
		out, _ := exec.Command(py, "-c", c.load, p).CombinedOutput()
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("%s: the loader did not run the payload, so the test plays no real attack: %s", c.name, out)
		}
	}

	// The Go-built legacy tar checkpoint is real: torch.load reads it.
	p := filepath.Join(dir, "legacy-tar.pt")
	os.WriteFile(p, legacyTar(nil), 0o644)
	out, err := exec.Command(py, "-c", "import torch, sys; print(torch.load(sys.argv[1])['w'].tolist())", p).CombinedOutput()
	if err != nil || string(out) != "[1.0, 1.0, 1.0, 1.0]\n" {
		t.Fatalf("torch.load of the Go-built legacy tar checkpoint: %v %s", err, out)
	}
	if r, _ := Scan(p); r.Verdict != Safe {
		t.Fatalf("legacy tar checkpoint: %v %v", r.Verdict, r.Findings)
	}
}

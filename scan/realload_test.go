package scan

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	mt "github.com/securetrain/securetrain/internal/modeltest"
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
			return mt.PickleTarPolyglot(append(mt.EvilPickle(cmd), "\x80\x02]."...))
		}},
		{"object-field.npy", "import numpy, sys; numpy.load(sys.argv[1], allow_pickle=True)", func(cmd string) []byte {
			return mt.NpyObjectFieldBypass(cmd)
		}},
		{"zip-upper-case.pt", "import torch, sys; torch.load(sys.argv[1])", func(cmd string) []byte {
			return mt.TorchZipCaseBypass(cmd)
		}},
		{"legacy-tar-pickle.pt", "import torch, sys; torch.load(sys.argv[1])", func(cmd string) []byte {
			return mt.LegacyTar(map[string][]byte{"pickle": mt.EvilPickle(cmd)})
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
	os.WriteFile(p, mt.LegacyTar(nil), 0o644)
	out, err := exec.Command(py, "-c", "import torch, sys; print(torch.load(sys.argv[1])['w'].tolist())", p).CombinedOutput()
	if err != nil || string(out) != "[1.0, 1.0, 1.0, 1.0]\n" {
		t.Fatalf("torch.load of the Go-built legacy tar checkpoint: %v %s", err, out)
	}
	if r, _ := Scan(p); r.Verdict != Safe {
		t.Fatalf("legacy tar checkpoint: %v %v", r.Verdict, r.Findings)
	}
}

// TestRealSavesAreSafe writes checkpoints with the installed torch and
// numpy (zip and legacy torch.save, np.save of plain, structured and
// object arrays of plain numbers, np.savez and np.savez_compressed) and a
// hand-written safetensors file: every one must scan as safe.
func TestRealSavesAreSafe(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	script := `
import sys, torch, numpy as np
d = sys.argv[1]
m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
torch.save(m.state_dict(), d + "/zip.pt")
torch.save({"model": m.state_dict(), "step": 3, "lr": 0.1}, d + "/legacy.pt", _use_new_zipfile_serialization=False)
torch.save({"t": torch.arange(6, dtype=torch.int16).reshape(2, 3), "b": torch.tensor([True])}, d + "/p5.pt", pickle_protocol=5)
np.save(d + "/plain.npy", np.arange(12, dtype="<f8").reshape(3, 4))
np.save(d + "/objnum.npy", np.array([1, 2.5, 3 + 4j, None], dtype=object))
np.save(d + "/structobj.npy", np.array([(1, 2.5)], dtype=[("a", "<i4"), ("b", "O")]))
np.save(d + "/nested.npy", np.zeros(2, dtype=[("a", [("b", "<f4", (2,))]), ("c", "M8[s]")]))
np.savez(d + "/arrays.npz", a=np.zeros(3), o=np.array([7, 8], dtype=object))
np.savez_compressed(d + "/compressed.npz", a=np.ones((4, 4)))
`
	if out, err := exec.Command(py, "-c", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("writing checkpoints: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "model.safetensors"), mt.Safetensors(map[string][]float32{"w": {1, 2, 3}, "b": {0}}), 0o644)
	ents, _ := os.ReadDir(dir)
	if len(ents) != 10 {
		t.Fatalf("%d files written, want 10", len(ents))
	}
	for _, e := range ents {
		r, err := Scan(filepath.Join(dir, e.Name()))
		if err != nil || r.Verdict != Safe {
			t.Errorf("%s: %v %v (%v)", e.Name(), r.Verdict, r.Findings, err)
		}
	}
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	mt "github.com/securetrain/securetrain/internal/modeltest"
)

// A poisoned model: each case hands `securetrain scan` a file built to
// look harmless to a scanner that trusts the file's first format, while a
// real loader runs its payload (a `touch` of a marker file). The case
// records whether the payload ran through securetrain (never), the scan's
// exit code and verdict, and whether Debian's loader runs the same file
// (it must, or the case plays no real attack).

type modelAttack struct {
	name   string              // file name
	build  func(string) []byte // the file, whose payload runs the shell command
	loader string              // Python that loads sys.argv[1] as a victim would
	want   string              // what the scan's one line must say
}

func (a modelAttack) play(t *testing.T) {
	e := setup(t)
	dir := inputsDir(t, nil)
	p := filepath.Join(dir, a.name)
	marker := p + ".ran"
	if err := os.WriteFile(p, a.build("touch "+marker), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run(t, dir, nil, "scan", p)
	_, err := os.Stat(marker)
	ran := err == nil
	if r.code != 1 || ran || !strings.Contains(r.stdout, a.want) {
		t.Errorf("scan must refuse %s (exit 1, %q) without running it: payload ran %v, %s", a.name, a.want, ran, r)
	}
	verdict := strings.Fields(strings.SplitN(r.stdout, "\n", 3)[1])[0]

	// The same bytes through the real loader: proof that the file is an
	// attack, not just odd.
	py := pythonWithTorch(t)
	victim := filepath.Join(dir, "victim-"+a.name)
	os.WriteFile(victim, a.build("touch "+victim+".ran"), 0o644)
	exec.Command(py, "-c", a.loader, victim).Run()
	_, err = os.Stat(victim + ".ran")
	loaderRuns := err == nil
	if !loaderRuns {
		t.Errorf("%s: the loader did not run the payload; the case plays no real attack", a.name)
	}
	attackFigure(t, "payload_ran=%v scan_exit=%d verdict=%s loader_runs_payload=%v", ran, r.code, verdict, loaderRuns)
}

const (
	torchLoad = "import torch, sys; torch.load(sys.argv[1])"
	// zipLoad is a hand-written loader that trusts the zip reading.
	zipLoad = "import pickle, sys, zipfile; pickle.load(zipfile.ZipFile(sys.argv[1]).open('archive/data.pkl'))"
)

func TestAttackModelNpyObjectFieldSpelledOut(t *testing.T) {
	modelAttack{"weights.npy", mt.NpyObjectFieldBypass, "import numpy, sys; numpy.load(sys.argv[1], allow_pickle=True)", "posix.system"}.play(t)
}

func TestAttackModelPickleTarPolyglot(t *testing.T) {
	modelAttack{"model.pt", func(cmd string) []byte {
		return mt.PickleTarPolyglot(append(mt.EvilPickle(cmd), "\x80\x02]."...))
	}, torchLoad, "ambiguous file: it parses as tar and pickle"}.play(t)
}

func TestAttackModelTorchZipUpperCasePickle(t *testing.T) {
	modelAttack{"model.pt", mt.TorchZipCaseBypass, torchLoad, "archive/DATA.PKL"}.play(t)
}

func TestAttackModelLegacyTarPicklePayload(t *testing.T) {
	modelAttack{"model.pt", func(cmd string) []byte {
		return mt.LegacyTar(map[string][]byte{"pickle": mt.EvilPickle(cmd)})
	}, torchLoad, "dangerous in pickle"}.play(t)
}

func TestAttackModelPickleZipPolyglot(t *testing.T) {
	modelAttack{"model.pkl", mt.PickleZipPolyglot, zipLoad, "ambiguous file: it parses as zip and pickle"}.play(t)
}

func TestAttackModelSafetensorsZipPolyglot(t *testing.T) {
	modelAttack{"model.safetensors", mt.SafetensorsZipPolyglot, zipLoad, "ambiguous file: it parses as zip and safetensors"}.play(t)
}

// TestAttackModelPolyglotAsJobInput hands the tar/pickle polyglot to a job
// as a pinned model input: the launcher's scan refuses the job before it
// starts, so the job's torch.load never runs.
func TestAttackModelPolyglotAsJobInput(t *testing.T) {
	e := setup(t)
	models := inputsDir(t, nil)
	p := filepath.Join(models, "model.pt")
	if err := os.WriteFile(p, mt.PickleTarPolyglot(append(mt.EvilPickle("echo PWNED"), "\x80\x02]."...)), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256File(t, p)
	dir := e.project(t, map[string]string{"p.yaml": baseProfile + "inputs:\n  - {name: base, kind: model, path: " + p + ", target: /models/m.pt, sha256: " + sum + "}\n"})
	r := e.job(t, dir, []string{"--profile", "p.yaml"}, "/bin/sh", "-c", "echo RAN; python3 -c 'import torch; torch.load(\"/models/m.pt\")'")
	ran := strings.Contains(r.stdout, "RAN") || strings.Contains(r.stdout, "PWNED")
	if r.code != 125 || ran || !strings.Contains(r.stderr, "ambiguous") || !strings.Contains(r.stderr, sum) {
		t.Fatalf("a polyglot model input must refuse the job (exit 125, naming the ambiguity and the digest): %s", r)
	}
	attackFigure(t, "payload_ran=%v exit=%d", ran, r.code)
}

// TestAttackControlRealCheckpointsScanSafe: what torch.save, np.save and
// a safetensors writer produce is still accepted.
func TestAttackControlRealCheckpointsScanSafe(t *testing.T) {
	e := setup(t)
	py := pythonWithTorch(t)
	dir := inputsDir(t, nil)
	script := `
import sys, torch, numpy as np
d = sys.argv[1]
m = torch.nn.Linear(4, 2)
torch.save(m.state_dict(), d + "/zip.pt")
torch.save(m.state_dict(), d + "/legacy.pt", _use_new_zipfile_serialization=False)
np.save(d + "/objnum.npy", np.array([1, 2.5, None], dtype=object))
np.savez(d + "/arrays.npz", a=np.zeros(3), o=np.array([7, 8], dtype=object))
`
	if out, err := exec.Command(py, "-c", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("writing checkpoints: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "model.safetensors"), mt.Safetensors(map[string][]float32{"w": {1, 2}}), 0o644)
	r := e.run(t, dir, nil, "scan", dir)
	if r.code != 0 || strings.Count(r.stdout, "\nsafe ") != 5 {
		t.Fatalf("real checkpoints must scan safe: %s", r)
	}
	attackFigure(t, "safe=%d of 5", strings.Count(r.stdout, "\nsafe "))
}

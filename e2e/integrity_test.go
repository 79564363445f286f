package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/signing"
)

// baseProfile is the shipped default profile; tests append inputs to it.
const baseProfile = `version: 1
name: integrity-e2e
limits: {cpus: 2, memory: 4GiB, pids: 4096, wall_time: 10m, scratch: 1GiB, shm: 256MiB, stop_grace: 5s}
network: {mode: none}
sandbox: {rootfs: host, output: outputs, log_limit: 16MiB}
`

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// inputsDir makes a directory readable by the job's user (outside the
// code directory), removed at the end of the test.
func inputsDir(t *testing.T, files map[string]string) string {
	t.Helper()
	return tempTree(t, "st-e2e-inputs-", files)
}

func jobDirs(t *testing.T) int {
	ents, _ := os.ReadDir(filepath.Join(dataDir, "jobs"))
	return len(ents)
}

var verifiedLine = regexp.MustCompile(`msg="inputs verified" files=(\d+) hashed=(\d+) cached=(\d+)`)

func TestPinnedInputsVerifiedMountedAndCached(t *testing.T) {
	e := setup(t)
	t.Cleanup(func() { os.RemoveAll(filepath.Join(dataDir, "pin-cache")) })
	ds := inputsDir(t, map[string]string{"train/a.txt": "alpha\n", "train/b.txt": "beta\n", "weights.bin": "w0w1w2"})
	data := filepath.Join(ds, "train")
	manifest := filepath.Join(ds, "train.sha256")
	if r := e.run(t, ds, nil, "pin", "-o", manifest, data); r.code != 0 {
		t.Fatalf("securetrain pin: %s", r)
	}
	weights := filepath.Join(ds, "weights.bin")
	wsum := sha256File(t, weights)
	prof := baseProfile + "inputs:\n" +
		"  - {name: train, kind: dataset, path: " + data + ", manifest: " + manifest + "}\n" +
		"  - {kind: dataset, path: " + weights + ", target: /weights/w.bin, sha256: " + wsum + "}\n"
	dir := e.project(t, map[string]string{"p.yaml": prof})
	script := "cat /inputs/train/a.txt /inputs/train/b.txt /weights/w.bin; echo; touch /inputs/train/new 2>/dev/null && echo LEAK-writable; echo end"

	r := e.run(t, dir, nil, "--debug", "run", "--user", jobUser, "--profile", "p.yaml", "--", "/bin/sh", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, "alpha\nbeta\nw0w1w2\nend") || strings.Contains(r.stdout, "LEAK") {
		t.Fatalf("inputs must be visible read-only at their targets: %s", r)
	}
	m := verifiedLine.FindStringSubmatch(r.stderr)
	if m == nil || m[1] != "3" {
		t.Fatalf("want an \"inputs verified\" debug line for 3 files: %s", r.stderr)
	}

	// Unchanged inputs: answered from the root-owned cache, nothing read.
	r = e.run(t, dir, nil, "--debug", "run", "--user", jobUser, "--profile", "p.yaml", "--", "/bin/sh", "-c", "cat /inputs/train/a.txt")
	m = verifiedLine.FindStringSubmatch(r.stderr)
	if r.code != 0 || m == nil || m[2] != "0" || m[3] != "3" {
		t.Fatalf("an unchanged re-run must be verified from the cache (hashed=0 cached=3): %s", r)
	}
	fi, err := os.Stat(filepath.Join(dataDir, "pin-cache"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("verification cache must be a 0700 directory under data_dir: %v %v", fi, err)
	}

	// A modified file is refused before anything is created, in one line
	// naming the file and both digests.
	a := filepath.Join(data, "a.txt")
	want := sha256File(t, a)
	if err := os.WriteFile(a, []byte("poisoned\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := sha256File(t, a)
	before := jobDirs(t)
	r = e.job(t, dir, []string{"--profile", "p.yaml"}, "/bin/sh", "-c", "echo RAN")
	if r.code != 125 || strings.Contains(r.stdout, "RAN") || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, a) || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, got) {
		t.Fatalf("a modified input must be refused (exit 125, one line naming %s, pinned %s and actual %s): %s", a, want, got, r)
	}
	if jobDirs(t) != before {
		t.Fatalf("a refused job must leave no job data")
	}
}

func TestModelInputsAreScanned(t *testing.T) {
	e := setup(t)
	py := testenvLook(t, "python3")
	models := inputsDir(t, nil)
	evil := filepath.Join(models, "evil.pkl")
	out, err := exec.Command(py, "-c", `import os, pickle, sys
class P:
    def __reduce__(self):
        return (os.system, ("echo pwned",))
open(sys.argv[1], "wb").write(pickle.dumps({"w": P()}))`, evil).CombinedOutput()
	if err != nil {
		t.Fatalf("writing the pickle: %v %s", err, out)
	}
	os.Chmod(evil, 0o644)
	sum := sha256File(t, evil)
	input := "  - {name: evil, kind: model, path: " + evil + ", sha256: " + sum
	dir := e.project(t, map[string]string{
		"refuse.yaml": baseProfile + "inputs:\n" + input + "}\n",
		"accept.yaml": baseProfile + "inputs:\n" + input + ", accept: [" + sum + "]}\n",
	})
	r := e.job(t, dir, []string{"--profile", "refuse.yaml"}, "/bin/sh", "-c", "echo RAN")
	if r.code != 125 || strings.Contains(r.stdout, "RAN") || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, "dangerous") || !strings.Contains(r.stderr, "system") || !strings.Contains(r.stderr, sum) {
		t.Fatalf("a pickle that imports os.system must be refused naming the import and its digest: %s", r)
	}
	r = e.job(t, dir, []string{"--profile", "accept.yaml"}, "/bin/sh", "-c", "test -s /inputs/evil && echo mounted")
	if r.code != 0 || !strings.Contains(r.stdout, "mounted") {
		t.Fatalf("a model accepted by digest must run: %s", r)
	}

	// A real checkpoint written by torch.save is safe.
	torchPy := pythonWithTorch(t)
	ckpt := filepath.Join(models, "model.pt")
	out, err = exec.Command(torchPy, "-c", `import sys, torch
m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
torch.save(m.state_dict(), sys.argv[1])`, ckpt).CombinedOutput()
	if err != nil {
		t.Fatalf("torch.save: %v %s", err, out)
	}
	os.Chmod(ckpt, 0o644)
	dir = e.project(t, map[string]string{"p.yaml": baseProfile + "inputs:\n  - {name: base, kind: model, path: " + ckpt + ", target: /models/base.pt, sha256: " + sha256File(t, ckpt) + "}\n"})
	r = e.job(t, dir, []string{"--profile", "p.yaml"}, "/bin/sh", "-c", "test -s /models/base.pt && echo mounted")
	if r.code != 0 || !strings.Contains(r.stdout, "mounted") {
		t.Fatalf("a torch checkpoint model input must be accepted: %s", r)
	}
}

// signingEnv returns a copy of the environment whose host config signs
// every job's provenance with a fresh ed25519 key, and the public key file.
func signingEnv(t *testing.T, e *env) (*env, string) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	priv, pub := filepath.Join(dir, "provenance.key"), filepath.Join(dir, "provenance.pub")
	if _, err := signing.GenerateKeyFiles(priv, pub); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "securetrain.yaml")
	if err := os.WriteFile(cfg, append(base, []byte("integrity:\n  signing_key: "+priv+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	c := *e
	c.config = cfg
	return &c, pub
}

// resultOf reads the result record a --report run left.
type resultRecord struct {
	ID          string `json:"id"`
	ExitCode    int    `json:"exit_code"`
	Outcome     string `json:"outcome"`
	Attestation string `json:"attestation"`
	Violations  []struct {
		Kind string `json:"kind"`
	} `json:"violations"`
}

func readResult(t *testing.T, p string) resultRecord {
	t.Helper()
	var r resultRecord
	b, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(b, &r) != nil {
		t.Fatalf("result record %s: %v %s", p, err, b)
	}
	return r
}

// statementOf decodes the attestation's payload (the signature is checked
// by `securetrain verify`, not here).
func statementOf(t *testing.T, p string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Payload string `json:"payload"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestAttestationVerifiesOutputs(t *testing.T) {
	e, pub := signingEnv(t, setup(t))
	marker := filepath.Join("/tmp", "st-e2e-pth-ran-"+testenv.RandomID(8))
	t.Cleanup(func() { os.Remove(marker) })
	// A venv whose .pth file would run code if any Python started with it.
	dir := e.project(t, map[string]string{
		"venv/pyvenv.cfg": "home = /usr/bin\n",
		"venv/lib/python3.11/site-packages/zz_hostile.pth":                        "import os; open(" + strconvQuote(marker) + ", 'w').write(str(os.getuid()))\n",
		"venv/lib/python3.11/site-packages/hostile_dist-6.6.6.dist-info/METADATA": "Metadata-Version: 2.1\nName: hostile-dist\nVersion: 6.6.6\n",
	})
	os.MkdirAll(filepath.Join(dir, "venv", "bin"), 0o755)
	if err := os.Symlink("/usr/bin/python3", filepath.Join(dir, "venv", "bin", "python")); err != nil {
		t.Fatal(err)
	}
	r := e.job(t, dir, []string{"--python", "venv/bin/python", "--report", "outputs/result.json"}, "/bin/sh", "-c", "echo trained > outputs/model.txt")
	if r.code != 0 {
		t.Fatalf("job: %s", r)
	}
	if _, err := os.Stat(marker); err == nil {
		b, _ := os.ReadFile(marker)
		t.Fatalf("the venv's .pth file ran during the job or its provenance (uid %s)", b)
	}
	res := readResult(t, filepath.Join(dir, "outputs", "result.json"))
	if res.Attestation != filepath.Join(dataDir, "jobs", res.ID, "attestation.dsse.json") {
		t.Fatalf("the result must name the attestation: %+v", res)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(dataDir, "jobs", res.ID)) })
	st := statementOf(t, res.Attestation)
	if b, _ := json.Marshal(st); !strings.Contains(string(b), "python:hostile-dist") || !strings.Contains(string(b), "model.txt") {
		t.Fatalf("the provenance must list the venv's distributions and the outputs: %s", b)
	}
	// result.json itself is written after the attestation, so verify the
	// model file alone.
	outs := filepath.Join(dir, "outputs")
	os.Remove(filepath.Join(outs, "result.json"))
	v := e.run(t, dir, nil, "verify", res.Attestation, "--key", pub, "--outputs", outs)
	if v.code != 0 || !strings.Contains(v.stdout, "OK") {
		t.Fatalf("verify of an untouched run: %s", v)
	}
	if err := os.WriteFile(filepath.Join(outs, "model.txt"), []byte("tampered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v = e.run(t, dir, nil, "verify", res.Attestation, "--key", pub, "--outputs", outs)
	if v.code == 0 || !strings.Contains(v.stderr, "model.txt") {
		t.Fatalf("verify must fail, naming model.txt, after an output changed: %s", v)
	}
}

func TestInputSwappedMidRunFailsTheRun(t *testing.T) {
	e, pub := signingEnv(t, setup(t))
	ds := inputsDir(t, map[string]string{"data.csv": "1,2,3\n"})
	f := filepath.Join(ds, "data.csv")
	dir := e.project(t, map[string]string{"p.yaml": baseProfile + "inputs:\n  - {name: data, path: " + f + ", sha256: " + sha256File(t, f) + "}\n"})
	c := e.cmd(context.Background(), dir, nil, "run", "--user", jobUser, "--profile", "p.yaml", "--report", "outputs/result.json", "--",
		"/bin/sh", "-c", "echo ready; sleep 5; echo done > outputs/out.txt")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	// The file's owner changes it while the job runs (the read-only mount
	// stops only the job).
	if err := os.WriteFile(f, []byte("9,9,9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.Wait()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 123 || !strings.Contains(out.String(), f) {
		t.Fatalf("an input changed during the run must fail it (exit 123, naming %s): %v\n%s", f, err, out)
	}
	res := readResult(t, filepath.Join(dir, "outputs", "result.json"))
	t.Cleanup(func() { os.RemoveAll(filepath.Join(dataDir, "jobs", res.ID)) })
	if res.Outcome != "violation" || len(res.Violations) == 0 || res.Violations[len(res.Violations)-1].Kind != "input" || res.Attestation == "" {
		t.Fatalf("the result must record an input violation and an attestation: %+v", res)
	}
	v := e.run(t, dir, nil, "verify", res.Attestation, "--key", pub)
	if v.code != 0 {
		t.Fatalf("the failed run's attestation must still verify: %s", v)
	}
	b, _ := json.Marshal(statementOf(t, res.Attestation))
	if !strings.Contains(string(b), `"inputsRecheck":"1 input file(s) changed during the run: `+f+` (modified)"`) || !strings.Contains(string(b), `"kind":"input"`) {
		t.Fatalf("the provenance must say the input changed: %s", b)
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

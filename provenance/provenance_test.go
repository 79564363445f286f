//go:build linux

package provenance

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/signing"
	"github.com/securetrain/securetrain/violation"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testenv.LookPath(t, "git"), append([]string{"-C", dir}, args...)...)
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// fixture is a finished job: outputs (with a FIFO and a symlink out), a git
// code dir whose config runs a marker-writing fsmonitor, and a
// site-packages with a marker-writing .pth.
type fixture struct {
	outputs, code, site, marker string
	run                         Run
}

func newFixture(t *testing.T) *fixture {
	base := t.TempDir()
	f := &fixture{
		outputs: filepath.Join(base, "outputs"), code: filepath.Join(base, "code"),
		site: filepath.Join(base, "venv/lib/python3.11/site-packages"), marker: filepath.Join(base, "PWNED"),
	}
	write(t, filepath.Join(f.outputs, "model.pt"), "weights v1")
	write(t, filepath.Join(f.outputs, "logs/metrics.json"), `{"loss": 0.1}`)
	if err := syscall.Mkfifo(filepath.Join(f.outputs, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/etc/passwd", filepath.Join(f.outputs, "passwd"))

	write(t, filepath.Join(f.code, "train.py"), "print('train')\n")
	write(t, filepath.Join(f.code, "lib/util.py"), "X = 1\n")
	git(t, f.code, "init", "-q", "-b", "main")
	git(t, f.code, "add", ".")
	git(t, f.code, "commit", "-q", "-m", "init")
	hook := filepath.Join(base, "fsmonitor.sh")
	os.WriteFile(hook, []byte("#!/bin/sh\ntouch "+f.marker+"\n"), 0o755)
	git(t, f.code, "config", "core.fsmonitor", hook)
	os.WriteFile(filepath.Join(f.code, ".git/hooks/post-index-change"), []byte("#!/bin/sh\ntouch "+f.marker+"\n"), 0o755)

	write(t, filepath.Join(f.site, "numpy-1.26.4.dist-info/METADATA"), "Metadata-Version: 2.1\nName: numpy\nVersion: 1.26.4\n\nlong description\nName: fake\n")
	write(t, filepath.Join(f.site, "Torch_Thing-2.0.egg-info/PKG-INFO"), "Metadata-Version: 1.1\nName: Torch-Thing\nVersion: 2.0\n")
	write(t, filepath.Join(f.site, "evil.pth"), "import os; os.system('touch "+f.marker+"')\n")
	write(t, filepath.Join(f.site, "sitecustomize.py"), "import os; os.system('touch "+f.marker+"')\n")

	f.run = Run{
		JobID: "job-1", BuilderID: "https://securetrain.dev/launcher@test", Command: []string{"python", "train.py"},
		Profile: ProfileRef{Name: "gpu-small", SHA256: strings.Repeat("ab", 32)}, CodeDir: f.code,
		Inputs:       []Input{{Name: "data", Path: "/data/x", Dir: true, SHA256: strings.Repeat("cd", 32)}},
		SitePackages: []string{f.site}, RunscVersion: "runsc test", GPUDriver: "none",
		Destinations: []string{"pypi.org:443"}, Usage: json.RawMessage(`{"cpu_seconds":1.5}`),
		Violations: []violation.Violation{{Kind: violation.DNS, Dest: "evil.example", Time: time.Unix(1, 0)}},
		OutputsDir: f.outputs, StartedOn: time.Unix(100, 0), FinishedOn: time.Unix(200, 0),
	}
	return f
}

func TestBuildReadsWithoutRunning(t *testing.T) {
	f := newFixture(t)
	// A modified tracked file and an untracked one.
	write(t, filepath.Join(f.code, "lib/util.py"), "X = 2\n")
	write(t, filepath.Join(f.code, "new.py"), "pass\n")
	st, err := Build(context.Background(), f.run)
	if err != nil {
		t.Fatal(err)
	}
	if exists(f.marker) {
		t.Fatal("collecting provenance ran the job's code (marker file created)")
	}
	var names []string
	for _, s := range st.Subject {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "logs/metrics.json,model.pt" {
		t.Fatalf("subjects %v", names)
	}
	sk := st.Predicate.BuildDefinition.InternalParameters.OutputsSkipped
	if len(sk) != 2 || sk[0].Path != "passwd" || sk[1].Path != "pipe" {
		t.Fatalf("skipped %+v", sk)
	}
	deps := map[string]ResourceDescriptor{}
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		deps[d.Name] = d
	}
	code := deps["code"]
	if code.Digest["gitCommit"] != git(t, f.code, "rev-parse", "HEAD") {
		t.Fatalf("code %+v", code)
	}
	if code.Annotations["dirty"] != true || code.Annotations["gitRef"] != "refs/heads/main" {
		t.Fatalf("code annotations %+v", code.Annotations)
	}
	ch := strings.Join(code.Annotations["changed"].([]string), ",")
	if ch != "? new.py,M lib/util.py" {
		t.Fatalf("changed %q", ch)
	}
	if deps["python:numpy"].URI != "pkg:pypi/numpy@1.26.4" || deps["python:Torch-Thing"].URI != "pkg:pypi/torch-thing@2.0" {
		t.Fatalf("python deps %+v", deps)
	}
	if len(deps) != 4 {
		t.Fatalf("deps %v", deps)
	}
	// The fixtures are potent: git and Python do run them.
	git(t, f.code, "status", "--short")
	if !exists(f.marker) {
		t.Fatal("fixture check: git status did not run the fsmonitor hook")
	}
	os.Remove(f.marker)
	if py, err := exec.LookPath("python3"); err == nil {
		exec.Command(py, "-c", "import site; site.addsitedir('"+f.site+"')").Run()
		if !exists(f.marker) {
			t.Fatal("fixture check: Python did not run the .pth file")
		}
	}
}

func TestCodeStateClean(t *testing.T) {
	f := newFixture(t)
	cs, err := CodeStateOf(context.Background(), f.code)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Dirty || cs.GitCommit == "" || cs.Files != 2 {
		t.Fatalf("clean repo: %+v", cs)
	}
	// Packed objects (git gc) read the same.
	git(t, f.code, "gc", "-q")
	if cs2, err := CodeStateOf(context.Background(), f.code); err != nil || cs2.Dirty || cs2.Staged != "" {
		t.Fatalf("after gc: %+v %v", cs2, err)
	}
	// A staged change: the work tree matches the index, the index differs
	// from HEAD.
	write(t, filepath.Join(f.code, "lib/util.py"), "X = 3\n")
	git(t, f.code, "add", "lib/util.py")
	css, err := CodeStateOf(context.Background(), f.code)
	if err != nil || !css.Dirty || css.Staged != "staged" || css.UncommittedSHA256 == "" {
		t.Fatalf("staged change: %+v %v", css, err)
	}
	git(t, f.code, "commit", "-q", "-m", "two")
	cs, err = CodeStateOf(context.Background(), f.code)
	if err != nil || cs.Dirty || cs.GitCommit != git(t, f.code, "rev-parse", "HEAD") {
		t.Fatalf("after commit: %+v %v", cs, err)
	}
	// Index version 4 (prefix-compressed paths) and a linked worktree
	// (.git is a file) read the same.
	git(t, f.code, "update-index", "--index-version", "4")
	cs4, err := CodeStateOf(context.Background(), f.code)
	if err != nil || cs4.Dirty || cs4.TreeSHA256 != cs.TreeSHA256 {
		t.Fatalf("index v4: %+v %v", cs4, err)
	}
	wt := filepath.Join(filepath.Dir(f.code), "wt")
	git(t, f.code, "worktree", "add", "-q", "-b", "other", wt)
	os.Remove(f.marker) // git itself ran the hook here; what follows must not
	csw, err := CodeStateOf(context.Background(), wt)
	if err != nil || csw.Dirty || csw.GitCommit != cs.GitCommit || csw.GitRef != "refs/heads/other" {
		t.Fatalf("worktree: %+v %v", csw, err)
	}
	// Not a git work tree: a tree digest only.
	os.RemoveAll(filepath.Join(f.code, ".git"))
	csn, err := CodeStateOf(context.Background(), f.code)
	if err != nil || csn.GitCommit != "" || csn.TreeSHA256 != cs.TreeSHA256 {
		t.Fatalf("plain dir: %+v %v", csn, err)
	}
	if exists(f.marker) {
		t.Fatal("marker created")
	}
}

func signVerifyCases(t *testing.T, f *fixture, s signing.Signer, trusted ed25519.PublicKey) {
	t.Helper()
	ctx := context.Background()
	st, err := Build(ctx, f.run)
	if err != nil {
		t.Fatal(err)
	}
	att, err := Sign(ctx, st, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, att, trusted, f.outputs); err != nil {
		t.Fatalf("good attestation: %v", err)
	}
	// Wrong key.
	other, _, _ := ed25519.GenerateKey(nil)
	if _, err := Verify(ctx, att, other, ""); !errors.Is(err, signing.ErrBadSignature) {
		t.Fatalf("wrong key: %v", err)
	}
	// A changed byte in the attestation, at every 7th position of the
	// payload: never accepted.
	env, _ := signing.ParseEnvelope(att)
	for i := 0; i < len(env.Payload); i += 7 {
		bad := bytes.Clone(att)
		j := bytes.Index(bad, []byte(env.Payload)) + i
		bad[j] ^= 0x01
		if _, err := Verify(ctx, bad, trusted, ""); err == nil {
			t.Fatalf("attestation with byte %d changed verified", j)
		}
	}
	// An attacker rewrites the statement to match a swapped model and
	// re-signs it with their own key (and even names our key id).
	write(t, filepath.Join(f.outputs, "model.pt"), "trojaned weights")
	if _, err := Verify(ctx, att, trusted, f.outputs); !errors.Is(err, ErrOutputsMismatch) || !strings.Contains(err.Error(), "model.pt") {
		t.Fatalf("changed output: %v", err)
	}
	st2, _ := Build(ctx, f.run)
	_, attackerKey, _ := ed25519.GenerateKey(nil)
	forged, _ := Sign(ctx, st2, signing.NewFileSigner(attackerKey))
	fenv, _ := signing.ParseEnvelope(forged)
	fenv.Signatures[0].KeyID = s.KeyID()
	forged, _ = json.Marshal(fenv)
	if _, err := Verify(ctx, forged, trusted, f.outputs); !errors.Is(err, signing.ErrBadSignature) {
		t.Fatalf("attacker re-signed statement: %v", err)
	}
	// Missing and extra outputs are named.
	os.Remove(filepath.Join(f.outputs, "logs/metrics.json"))
	write(t, filepath.Join(f.outputs, "extra.bin"), "x")
	var oe *OutputsError
	if _, err := Verify(ctx, att, trusted, f.outputs); !errors.As(err, &oe) {
		t.Fatalf("got %v", err)
	}
	if strings.Join(oe.Changed, ",") != "model.pt" || strings.Join(oe.Missing, ",") != "logs/metrics.json" || strings.Join(oe.Extra, ",") != "extra.bin" {
		t.Fatalf("outputs error %+v", oe)
	}
	// The payload really is an in-toto statement.
	p, _ := base64.StdEncoding.DecodeString(env.Payload)
	if !bytes.Contains(p, []byte(`"_type":"https://in-toto.io/Statement/v1"`)) || env.PayloadType != "application/vnd.in-toto+json" {
		t.Fatalf("payload %s", p)
	}
}

func TestSignVerifyKeyFile(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	if _, err := signing.GenerateKeyFiles(filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	s, err := signing.LoadPrivateKeyFile(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signing.LoadPublicKeyFile(filepath.Join(dir, "k.pub"))
	if err != nil {
		t.Fatal(err)
	}
	signVerifyCases(t, f, s, pub)
}

func TestSignVerifyVaultTransit(t *testing.T) {
	c := startVault(t)
	ctx := context.Background()
	if _, err := c.Logical().Write("transit/keys/provenance", map[string]any{"type": "ed25519"}); err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewTransitSigner(ctx, c, "transit", "provenance", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The verifier's trusted key: exported from transit by key and version.
	pub, _, err := signing.TransitPublicKey(ctx, c, "transit", "provenance", s.Version())
	if err != nil {
		t.Fatal(err)
	}
	signVerifyCases(t, newFixture(t), s, pub)
}

func TestHashOutputsMatchesPin(t *testing.T) {
	f := newFixture(t)
	os.Remove(filepath.Join(f.outputs, "pipe"))
	os.Remove(filepath.Join(f.outputs, "passwd"))
	got, skipped, err := HashOutputs(context.Background(), f.outputs)
	if err != nil || len(skipped) != 0 {
		t.Fatal(err, skipped)
	}
	want, err := pin.Manifest(context.Background(), f.outputs)
	if err != nil {
		t.Fatal(err)
	}
	if pin.ManifestDigest(got) != pin.ManifestDigest(want) {
		t.Fatalf("outputs %v, pin %v", got, want)
	}
}

// startVault runs the pinned Vault dev server (internal/testenv) with
// transit enabled and returns a root client.
func startVault(t *testing.T) *vault.Client {
	t.Helper()
	c := testenv.StartVault(t).Root
	if err := c.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("enable transit: %v", err)
	}
	return c
}

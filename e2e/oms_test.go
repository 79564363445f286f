package e2e

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/oms"
	"github.com/securetrain/securetrain/pin"
)

// The model a publisher signs in these tests: text files (the scanner
// passes them), signed with its signature inside the directory and a .git
// directory beside the weights, as a model cloned from a hub looks.
var omsModelFiles = map[string]string{
	"config.json":          `{"hidden_size": 4}` + "\n",
	"weights.json":         `{"w": [0.1, 0.2, 0.3, 0.4]}` + "\n",
	"tokenizer/vocab.json": `{"hello": 0, "world": 1}` + "\n",
}

// writePEM writes a PEM file (mode 0644: the job's user reads trust files).
func writePEM(t *testing.T, dir, name, typ string, der ...[]byte) string {
	t.Helper()
	var b []byte
	for _, d := range der {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func publicPEM(t *testing.T, dir, name string, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name, "PUBLIC KEY", der)
}

// signModel signs dir as its publisher does: its files (less .git and the
// signature), model.sig inside it.
func signModel(t *testing.T, dir string, s oms.Signer) string {
	t.Helper()
	es, err := pin.Manifest(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var keep []pin.Entry
	for _, e := range es {
		if !pin.Ignored(append(oms.DefaultIgnore, "model.sig"), e.Path) {
			keep = append(keep, e)
		}
	}
	st, err := oms.NewStatement(filepath.Base(dir), keep, append([]string{"model.sig"}, oms.DefaultIgnore...))
	if err != nil {
		t.Fatal(err)
	}
	b, err := oms.Sign(t.Context(), st, s)
	if err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(dir, "model.sig")
	if err := os.WriteFile(sig, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return sig
}

// signedModel is a fresh model signed with a fresh P-256 key: the model
// directory, its signature and the publisher's public key file.
func signedModel(t *testing.T) (model, sig, pub string) {
	t.Helper()
	files := map[string]string{"model/.git/HEAD": "ref: refs/heads/main\n"}
	for k, v := range omsModelFiles {
		files["model/"+k] = v
	}
	root := inputsDir(t, files)
	k := testenv.P256(t)
	s, err := oms.NewKeySigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	model = filepath.Join(root, "model")
	return model, signModel(t, model, s), publicPEM(t, root, "publisher.pub", k.Public())
}

// TestOMSSignedModelRunsAndOutputsAreSigned: a model input pinned by its
// OMS signature is verified, mounted read-only with its ignored paths
// hidden, named with its signer and root digest in the audit log and the
// provenance; the job's outputs are signed (certificate method) and verify
// with `securetrain verify` and against the OMS schemas.
func TestOMSSignedModelRunsAndOutputsAreSigned(t *testing.T) {
	e0, _ := signingEnv(t, setup(t))
	model, sig, pub := signedModel(t)

	// The host signs outputs with a certificate from its CA.
	ca := testenv.NewPKI(t, "ci@securetrain.example", nil)
	keyDir := t.TempDir()
	der, _ := x509.MarshalPKCS8PrivateKey(ca.LeafKey)
	omsKey := writePEM(t, keyDir, "oms.key", "PRIVATE KEY", der)
	os.Chmod(omsKey, 0o600)
	omsCert := writePEM(t, keyDir, "oms.pem", "CERTIFICATE", ca.Leaf.Raw, ca.Inter.Raw)
	rootPEM := writePEM(t, keyDir, "root.pem", "CERTIFICATE", ca.Root.Raw)
	cfg, _ := os.ReadFile(e0.config)
	e := *e0
	e.config = filepath.Join(t.TempDir(), "securetrain.yaml")
	os.WriteFile(e.config, append(cfg, []byte("  oms_key: "+omsKey+"\n  oms_certificate: "+omsCert+"\n")...), 0o644)

	prof := baseProfile + "integrity: {sign_outputs: true}\ninputs:\n" +
		"  - {name: base, kind: model, path: " + model + ", signature: {bundle: " + sig + ", key: " + pub + "}}\n"
	dir := e.project(t, map[string]string{"p.yaml": prof})
	script := "cat /inputs/base/config.json; echo sig=$(cat /inputs/base/model.sig 2>/dev/null | wc -c) git=$(ls -A /inputs/base/.git 2>/dev/null | wc -l); " +
		"touch /inputs/base/new 2>/dev/null && echo LEAK-writable; echo trained > outputs/model.txt; echo end"
	rep := filepath.Join(dir, "report.json")
	r := e.job(t, dir, []string{"--profile", "p.yaml", "--report", rep}, "/bin/sh", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, `{"hidden_size": 4}`) || !strings.Contains(r.stdout, "sig=0 git=0") || strings.Contains(r.stdout, "LEAK") {
		t.Fatalf("a signed model must be mounted read-only, its signature and .git hidden: %s", r)
	}
	v, err := oms.Verify(mustRead(t, sig), oms.Trust{Key: mustPub(t, pub)})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := os.ReadFile(e.auditLog); !strings.Contains(string(a), `"root_digest":"`+v.RootDigest+`"`) || !strings.Contains(string(a), v.Signer) {
		t.Fatalf("the audit log must name the model's signer and root digest %s", v.RootDigest)
	}

	// The outputs' OMS bundle: next to the attestation, which names it.
	var res struct {
		ID               string `json:"id"`
		Attestation      string `json:"attestation"`
		OutputsSignature string `json:"outputs_signature"`
	}
	json.Unmarshal(mustRead(t, rep), &res)
	t.Cleanup(func() { os.RemoveAll(filepath.Join(dataDir, "jobs", res.ID)) })
	if res.OutputsSignature == "" {
		t.Fatalf("no outputs signature in the result: %s", mustRead(t, rep))
	}
	ob := mustRead(t, res.OutputsSignature)
	if viol := oms.SchemaViolations(ob); len(viol) > 0 {
		t.Fatalf("the outputs' bundle breaks the OMS schemas: %v", viol)
	}
	st, _ := json.Marshal(statementOf(t, res.Attestation))
	if !strings.Contains(string(st), "oms-signature") || !strings.Contains(string(st), sha256File(t, res.OutputsSignature)) ||
		!strings.Contains(string(st), `"omsSignature"`) || !strings.Contains(string(st), v.RootDigest) {
		t.Fatalf("the provenance must name the outputs' OMS bundle and the model's signature: %s", st)
	}
	outs := filepath.Join(dir, "outputs")
	vr := e.run(t, dir, nil, "verify", res.OutputsSignature, "--ca", rootPEM, "--identity", "ci@securetrain.example", "--model", outs)
	if vr.code != 0 || !strings.Contains(vr.stdout, "OK: OMS certificate signature") {
		t.Fatalf("securetrain verify of the outputs' bundle: %s", vr)
	}
	os.WriteFile(filepath.Join(outs, "model.txt"), []byte("poisoned\n"), 0o644)
	vr = e.run(t, dir, nil, "verify", res.OutputsSignature, "--ca", rootPEM, "--identity", "ci@securetrain.example", "--model", outs)
	if vr.code != 1 || !strings.Contains(vr.stderr, "model.txt: sha256") {
		t.Fatalf("verify must name the changed output: %s", vr)
	}
}

// TestOMSSignedModelRefused: a missing file, a wrong CA identity (flags)
// and an unreadable trust are refused before anything starts, in one line
// naming what did not match (tampered files, extra files and forged keys
// are attack cases in attack_oms_test.go).
func TestOMSSignedModelRefused(t *testing.T) {
	e := setup(t)
	model, sig, pub := signedModel(t)
	dir := e.project(t, nil)
	os.Remove(filepath.Join(model, "tokenizer", "vocab.json"))
	r := e.job(t, dir, []string{"--model", model, "--model-signature", sig, "--model-key", pub}, "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, filepath.Join(model, "tokenizer", "vocab.json")) || !strings.Contains(r.stderr, "missing") {
		t.Fatalf("missing file: %s", r)
	}

	// Certificate method with flags: the CA is right, the identity is not.
	ca := testenv.NewPKI(t, "models@publisher.example", nil)
	s, err := oms.NewKeySigner(ca.LeafKey, []*x509.Certificate{ca.Leaf, ca.Inter})
	if err != nil {
		t.Fatal(err)
	}
	model2, _, _ := signedModel(t)
	sig2 := signModel(t, model2, s)
	rootPEM := writePEM(t, filepath.Dir(model2), "root.pem", "CERTIFICATE", ca.Root.Raw)
	r = e.job(t, dir, []string{"--model", model2, "--model-signature", sig2, "--model-ca", rootPEM, "--model-identity", "models@publisher.example"}, "/bin/cat", "/inputs/model/config.json")
	if r.code != 0 || !strings.Contains(r.stdout, "hidden_size") {
		t.Fatalf("certificate method with the right identity: %s", r)
	}
	r = e.job(t, dir, []string{"--model", model2, "--model-signature", sig2, "--model-ca", rootPEM, "--model-identity", "someone@else.example"}, "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "wrong identity") || !strings.Contains(r.stderr, "models@publisher.example") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("wrong identity must be refused in one line naming the certificate's identity: %s", r)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustPub(t *testing.T, p string) crypto.PublicKey {
	t.Helper()
	k, err := oms.ParsePublicKey(mustRead(t, p))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestOMSModelThroughDaemon: an unprivileged user's --model through the
// daemon is verified like a profile's; a signature the user cannot read
// (root's) is refused without its content or verdict reaching them.
func TestOMSModelThroughDaemon(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	model, sig, pub := signedModel(t)
	r := d.userRun(t, daemonUser, dir, "run", "--model", model, "--model-signature", sig, "--model-key", pub, "--", "/bin/cat", "/inputs/model/config.json")
	if r.code != 0 || !strings.Contains(r.stdout, "hidden_size") {
		t.Fatalf("a signed model through the daemon: %s", r)
	}
	os.WriteFile(filepath.Join(model, "weights.json"), []byte("{}\n"), 0o644)
	r = d.userRun(t, daemonUser, dir, "run", "--model", model, "--model-signature", sig, "--model-key", pub, "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "weights.json: sha256") {
		t.Fatalf("a tampered model through the daemon: %s", r)
	}
	secret, err := os.MkdirTemp("/root", "st-e2e-oms-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secret) })
	os.Chmod(secret, 0o700)
	hidden := filepath.Join(secret, "model.sig")
	os.WriteFile(hidden, mustRead(t, sig), 0o644)
	r = d.userRun(t, daemonUser, dir, "run", "--model", model, "--model-signature", hidden, "--model-key", pub, "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "permission denied") || strings.Contains(r.stderr, "sha256") {
		t.Fatalf("a signature the caller cannot read must be refused as such: %s", r)
	}
	d.assertClean(t)
}

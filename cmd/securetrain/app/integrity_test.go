package app

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/signing"
)

// runApp runs the verbs in-process and returns stdout and the exit code.
func runApp(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:           "securetrain",
		Commands:       []*cli.Command{ScanCommand, PinCommand, VerifyCommand, KeygenCommand},
		Writer:         &out,
		ErrWriter:      &errOut,
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err := app.Run(append([]string{"securetrain"}, args...))
	code := 0
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ec):
		code = ec.ExitCode()
		out.WriteString(err.Error())
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), code
}

func TestScanVerb(t *testing.T) {
	fx := filepath.Join("..", "..", "..", "scan", "testdata", "fixtures")
	out, code := runApp(t, "scan", filepath.Join(fx, "safe_state_dict.pt"), filepath.Join(fx, "safe.safetensors"))
	if code != 0 || !strings.Contains(out, "safe") {
		t.Fatalf("safe files: %d\n%s", code, out)
	}
	out, code = runApp(t, "scan", filepath.Join(fx, "safe_state_dict.pt"), filepath.Join(fx, "evil_nested.pt"))
	if code != 1 || !strings.Contains(out, "posix.system") || !strings.Contains(out, "1 of 2 files not safe") {
		t.Fatalf("dangerous file: %d\n%s", code, out)
	}
	if _, code := runApp(t, "scan", fx); code != 1 {
		t.Fatalf("fixture dir: %d", code)
	}
	if _, code := runApp(t, "scan"); code != 2 {
		t.Fatalf("no args: %d", code)
	}
}

func TestPinVerb(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.csv"), []byte("1,2\n"), 0o644)
	m := filepath.Join(t.TempDir(), "MANIFEST")
	if _, code := runApp(t, "pin", "-o", m, dir); code != 0 {
		t.Fatal(code)
	}
	b, _ := os.ReadFile(m)
	if !strings.HasSuffix(string(b), "  a.csv\n") {
		t.Fatalf("manifest %q", b)
	}
	if out, code := runApp(t, "pin", "--check", m, dir); code != 0 {
		t.Fatalf("check: %d %s", code, out)
	}
	// A flag's alias after the positional argument (pin DIR -o FILE).
	m2 := filepath.Join(t.TempDir(), "MANIFEST2")
	if _, code := runApp(t, "pin", dir, "-o", m2); code != 0 {
		t.Fatal(code)
	}
	if b2, _ := os.ReadFile(m2); string(b2) != string(b) {
		t.Fatalf("pin DIR -o FILE wrote %q, want %q", b2, b)
	}
	os.WriteFile(filepath.Join(dir, "a.csv"), []byte("1,3\n"), 0o644)
	if out, code := runApp(t, "pin", "--check", m, dir); code != 1 || !strings.Contains(out, "a.csv") {
		t.Fatalf("modified: %d %s", code, out)
	}
}

func TestKeygenAndVerifyVerbs(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "prov.key")
	if _, code := runApp(t, "keygen", "--out", key); code != 0 {
		t.Fatal(code)
	}
	outputs := filepath.Join(dir, "out")
	os.Mkdir(outputs, 0o755)
	os.WriteFile(filepath.Join(outputs, "model.pt"), []byte("w"), 0o644)
	s, err := signing.LoadPrivateKeyFile(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := provenance.Build(context.Background(), provenance.Run{JobID: "j", OutputsDir: outputs, Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	att, _ := provenance.Sign(context.Background(), st, s)
	ap := filepath.Join(dir, "att.json")
	os.WriteFile(ap, att, 0o644)
	if out, code := runApp(t, "verify", ap, "--key", key+".pub", "--outputs", outputs); code != 0 || !strings.HasPrefix(out, "OK") {
		t.Fatalf("verify: %d %s", code, out)
	}
	os.WriteFile(filepath.Join(outputs, "model.pt"), []byte("x"), 0o644)
	if out, code := runApp(t, "verify", ap, "--key", key+".pub", "--outputs", outputs); code != 1 || !strings.Contains(out, "model.pt") {
		t.Fatalf("changed output: %d %s", code, out)
	}
	if _, code := runApp(t, "verify", ap); code != 2 {
		t.Fatalf("no key: %d", code)
	}
}

// TestVerifyReportsCodeChangedDuringRun: a run whose host code directory
// changed while it ran its snapshot verifies (the signature is good) and
// says so as a finding, with the start-time code state.
func TestVerifyReportsCodeChangedDuringRun(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "prov.key")
	if _, code := runApp(t, "keygen", "--out", key); code != 0 {
		t.Fatal(code)
	}
	s, err := signing.LoadPrivateKeyFile(key)
	if err != nil {
		t.Fatal(err)
	}
	cs := &provenance.CodeState{Dir: "/home/u/proj", TreeSHA256: strings.Repeat("ab", 32), Files: 2}
	st, err := provenance.Build(context.Background(), provenance.Run{JobID: "j", Command: []string{"true"}, Code: cs, CodeChanges: []string{"M train.py"}})
	if err != nil {
		t.Fatal(err)
	}
	att, _ := provenance.Sign(context.Background(), st, s)
	ap := filepath.Join(dir, "att.json")
	os.WriteFile(ap, att, 0o644)
	out, code := runApp(t, "verify", ap, "--key", key+".pub")
	if code != 0 || !strings.Contains(out, "tree sha256 "+cs.TreeSHA256+" at the start") ||
		!strings.Contains(out, "FINDING: 1 change(s) to the code directory on the host during the run (the job ran the start-time snapshot): M train.py") {
		t.Fatalf("verify must report the start-time code and the finding: %d\n%s", code, out)
	}
}

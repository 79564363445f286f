package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/oms"
	"github.com/securetrain/securetrain/pin"
)

// TestVerifyOMSVerb: `securetrain verify` checks an OMS bundle (signed with
// a `keygen --ecdsa` key, kept inside the model directory) and the model.
func TestVerifyOMSVerb(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "oms.key")
	if out, code := runApp(t, "keygen", "--ecdsa", "-o", key); code != 0 {
		t.Fatalf("keygen: %d %s", code, out)
	}
	model := filepath.Join(dir, "model")
	os.MkdirAll(filepath.Join(model, "sub"), 0o755)
	os.WriteFile(filepath.Join(model, "weights.bin"), []byte("weights"), 0o644)
	os.WriteFile(filepath.Join(model, "sub", "config.json"), []byte("{}"), 0o644)
	es, err := pin.Manifest(t.Context(), model)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := oms.NewStatement("model", es, []string{"model.sig"})
	s, err := oms.LoadSigner(key, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := oms.Sign(t.Context(), st, s)
	if err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(model, "model.sig")
	os.WriteFile(sig, b, 0o644)
	if out, code := runApp(t, "verify", sig, "--key", key+".pub", "--model", model); code != 0 || !strings.HasPrefix(out, "OK: OMS key signature") {
		t.Fatalf("verify: %d %s", code, out)
	}
	os.WriteFile(filepath.Join(model, "sub", "config.json"), []byte(`{"x":1}`), 0o644)
	if out, code := runApp(t, "verify", sig, "--key", key+".pub", "--model", model); code != 1 || !strings.Contains(out, "sub/config.json: sha256") {
		t.Fatalf("tampered: %d %s", code, out)
	}
	other := filepath.Join(dir, "other.key")
	runApp(t, "keygen", "--ecdsa", "-o", other)
	if out, code := runApp(t, "verify", sig, "--key", other+".pub"); code != 1 || !strings.Contains(out, "wrong key") {
		t.Fatalf("wrong key: %d %s", code, out)
	}
	if out, code := runApp(t, "verify", sig, "--ca", other+".pub"); code != 2 || !strings.Contains(out, "--identity") {
		t.Fatalf("--ca without --identity: %d %s", code, out)
	}
}

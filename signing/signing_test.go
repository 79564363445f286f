package signing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/securetrain/securetrain/internal/testenv"
)

func TestFileKeysAndEnvelope(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	if _, err := GenerateKeyFiles(priv, pub); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKeyFiles(priv, pub); err == nil {
		t.Fatal("existing key overwritten")
	}
	s, err := LoadPrivateKeyFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := LoadPublicKeyFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	env, err := SignEnvelope(context.Background(), s, "application/x-test", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := VerifyEnvelope(env, trusted, "application/x-test"); err != nil || string(p) != "hello" {
		t.Fatalf("verify: %q %v", p, err)
	}
	if _, err := VerifyEnvelope(env, trusted, "application/other"); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("payload type not checked: %v", err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	if _, err := VerifyEnvelope(env, other, "application/x-test"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong key accepted: %v", err)
	}
	bad := *env
	bad.Payload = base64.StdEncoding.EncodeToString([]byte("hellO"))
	if _, err := VerifyEnvelope(&bad, trusted, "application/x-test"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed payload accepted: %v", err)
	}
	// A private key others can read is refused.
	os.Chmod(priv, 0o644)
	if _, err := LoadPrivateKeyFile(priv); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("world-readable private key accepted: %v", err)
	}
	// Symlinks are not followed.
	os.Symlink(pub, filepath.Join(dir, "link"))
	if _, err := LoadPublicKeyFile(filepath.Join(dir, "link")); !errors.Is(err, ErrKeyFile) {
		t.Fatalf("symlinked key accepted: %v", err)
	}
}

func TestPAE(t *testing.T) {
	// The example from the DSSE specification's test vectors.
	got := PAE("http://example.com/HelloWorld", []byte("hello world"))
	want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
	if string(got) != want {
		t.Fatalf("PAE %q, want %q", got, want)
	}
}

func TestParseEnvelopeStrict(t *testing.T) {
	for _, in := range []string{`{"payloadType":"a","payload":"","signatures":[],"x":1}`, `{"payloadType":"a"} {}`, `[`} {
		if _, err := ParseEnvelope([]byte(in)); !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: %v", in, err)
		}
	}
}

func TestTransitSigner(t *testing.T) {
	c := startVault(t)
	ctx := context.Background()
	if _, err := c.Logical().Write("transit/keys/prov", map[string]any{"type": "ed25519"}); err != nil {
		t.Fatal(err)
	}
	s, err := NewTransitSigner(ctx, c, "transit", "prov", 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version() != 1 {
		t.Fatalf("version %d", s.Version())
	}
	env, err := SignEnvelope(ctx, s, "application/x-test", []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	// The verifier exports the public key from transit itself.
	pub, _, err := TransitPublicKey(ctx, c, "transit", "prov", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyEnvelope(env, pub, "application/x-test"); err != nil {
		t.Fatal(err)
	}
	// After rotation, signing with the pinned version 1 still verifies with
	// v1 and not with v2.
	if _, err := c.Logical().Write("transit/keys/prov/rotate", nil); err != nil {
		t.Fatal(err)
	}
	pub2, v, err := TransitPublicKey(ctx, c, "transit", "prov", 0)
	if err != nil || v != 2 || bytes.Equal(pub, pub2) {
		t.Fatalf("rotated key: v%d %v", v, err)
	}
	if _, err := VerifyEnvelope(env, pub2, "application/x-test"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("v2 key verified a v1 signature: %v", err)
	}
	// A non-ed25519 key is refused.
	c.Logical().Write("transit/keys/rsa", map[string]any{"type": "rsa-2048"})
	if _, err := NewTransitSigner(ctx, c, "transit", "rsa", 0); !errors.Is(err, ErrTransit) {
		t.Fatalf("rsa key accepted: %v", err)
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

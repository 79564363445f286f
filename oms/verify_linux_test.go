package oms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/pin"
)

var modelFiles = map[string]string{
	"config.json":         `{"hidden": 4}`,
	"weights.safetensors": "tensor bytes",
	"tokenizer/vocab.txt": "a\nb\n",
}

// verifyDir verifies bundle b against trust and then the model directory,
// as the launcher does (bundle file at sig, inside or outside dir).
func verifyDir(t *testing.T, dir, sig string, b []byte, tr Trust, allowed []string) (*Verified, error) {
	t.Helper()
	v, err := Verify(b, tr)
	if err != nil {
		return nil, err
	}
	p, err := v.Pin(dir, true, sig, allowed)
	if err != nil {
		return nil, err
	}
	_, err = pin.New(pin.Options{}).Verify(context.Background(), p)
	return v, err
}

// TestInteropShapes: bundles laid out as other OMS signers write them verify.
func TestInteropShapes(t *testing.T) {
	pk := p256(t)
	ek := ed(t)
	p384k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ca := testenv.NewPKI(t, "models@publisher.example", nil)
	for _, tc := range []struct {
		name string
		b    func(files map[string]string) []byte
		tr   Trust
	}{
		{"p256 hint, keyid empty, tlog [], ignore_paths with the signature", func(f map[string]string) []byte {
			return foreignBundle(t, pk, f, shape{keyid: "empty", tlogEmpty: true, ignore: []string{"model.sig", ".git", ".gitattributes", ".github", ".gitignore"}})
		}, Trust{Key: pk.Public()}},
		{"p256 rawBytes+keyDetails, keyid null, no ignore_paths (pre-v1.1)", func(f map[string]string) []byte {
			return foreignBundle(t, pk, f, shape{rawBytes: true, keyid: "null", noIgnoreKey: true})
		}, Trust{Key: pk.Public()}},
		{"p384 hint (SHA-384 over the PAE)", func(f map[string]string) []byte {
			return foreignBundle(t, p384k, f, shape{keyid: "empty", tlogEmpty: true})
		}, Trust{Key: p384k.Public()}},
		{"ed25519 hint, keyid absent", func(f map[string]string) []byte {
			return foreignBundle(t, ek, f, shape{keyid: "absent", name: "model"})
		}, Trust{Key: ek.Public()}},
		{"certificate: leaf + intermediate", func(f map[string]string) []byte {
			return foreignBundle(t, ca.LeafKey, f, shape{chain: []*x509.Certificate{ca.Leaf, ca.Inter}, keyid: "empty"})
		}, Trust{Roots: ca.Roots, Identities: []string{"models@publisher.example"}}},
		{"certificate: leaf + intermediate + root, URI identity", func(f map[string]string) []byte {
			return foreignBundle(t, ca.LeafKey, f, shape{chain: []*x509.Certificate{ca.Leaf, ca.Inter, ca.Root}})
		}, Trust{Roots: ca.Roots, Identities: []string{"https://publisher.example/models"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{}
			for k, v := range modelFiles {
				files[k] = v
			}
			dir := writeModel(t, files)
			b := tc.b(files)
			// The signature inside the model directory, plus a .git
			// directory: both left out (defaults and the bundle itself).
			sig := filepath.Join(dir, "model.sig")
			if err := os.WriteFile(sig, b, 0o644); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Join(dir, ".git"), 0o755)
			os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("ref"), 0o644)
			v, err := verifyDir(t, dir, sig, b, tc.tr, nil)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if v.RootDigest == "" || len(v.Entries) != 3 || v.Signer == "" {
				t.Fatalf("verified = %+v", v)
			}
		})
	}
}

// TestIgnoredPaths: a path the signer ignored is left out only when the
// profile allows it; otherwise a file there is an unsigned extra file.
func TestIgnoredPaths(t *testing.T) {
	k := p256(t)
	dir := writeModel(t, modelFiles)
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("unsigned notes"), 0o644)
	b := foreignBundle(t, k, modelFiles, shape{ignore: []string{"README.md"}})
	sig := filepath.Join(t.TempDir(), "model.sig")
	if _, err := verifyDir(t, dir, sig, b, Trust{Key: k.Public()}, []string{"README.md"}); err != nil {
		t.Fatalf("allowed ignore path: %v", err)
	}
	_, err := verifyDir(t, dir, sig, b, Trust{Key: k.Public()}, nil)
	if !errors.Is(err, pin.ErrUnpinned) || !strings.Contains(err.Error(), "README.md") {
		t.Fatalf("ignore path the profile does not allow: %v", err)
	}
	// A nested path of the same name is not ignored (exact relative path).
	os.Remove(filepath.Join(dir, "README.md"))
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "README.md"), []byte("x"), 0o644)
	if _, err := verifyDir(t, dir, sig, b, Trust{Key: k.Public()}, []string{"README.md"}); !errors.Is(err, pin.ErrUnpinned) {
		t.Fatalf("sub/README.md: %v", err)
	}
}

// TestRefusals: every way a model or bundle can fail is refused, and the
// message names what did not match.
func TestRefusals(t *testing.T) {
	k, other := p256(t), p256(t)
	ca := testenv.NewPKI(t, "models@publisher.example", nil)
	good := foreignBundle(t, k, modelFiles, shape{})
	certB := foreignBundle(t, ca.LeafKey, modelFiles, shape{chain: []*x509.Certificate{ca.Leaf, ca.Inter}})
	keyT := Trust{Key: k.Public()}
	caT := Trust{Roots: ca.Roots, Identities: []string{"models@publisher.example"}}
	sigOut := "/nonexistent/model.sig"
	type refusal struct {
		name  string
		mod   func(dir string)
		b     []byte
		tr    Trust
		is    error
		wants []string
	}
	cases := []refusal{
		{"tampered file", func(d string) { os.WriteFile(filepath.Join(d, "config.json"), []byte(`{"hidden": 5}`), 0o644) }, good, keyT, pin.ErrMismatch, []string{"config.json", "sha256"}},
		{"extra file", func(d string) { os.WriteFile(filepath.Join(d, "evil.pkl"), []byte("x"), 0o644) }, good, keyT, pin.ErrUnpinned, []string{"evil.pkl"}},
		{"missing file", func(d string) { os.Remove(filepath.Join(d, "tokenizer", "vocab.txt")) }, good, keyT, pin.ErrMissing, []string{"tokenizer/vocab.txt"}},
		{"symlink with allow_symlinks false", func(d string) { os.Symlink("config.json", filepath.Join(d, "link.json")) }, good, keyT, pin.ErrSymlink, []string{"link.json"}},
		{"wrong key (hint)", nil, good, Trust{Key: other.Public()}, ErrTrust, []string{"wrong key"}},
		{"wrong key (rawBytes)", nil, foreignBundle(t, k, modelFiles, shape{rawBytes: true}), Trust{Key: other.Public()}, ErrTrust, []string{"wrong key", "rawBytes"}},
		{"wrong identity", nil, certB, Trust{Roots: ca.Roots, Identities: []string{"someone@else.example"}}, ErrTrust, []string{"wrong identity", "models@publisher.example"}},
		{"untrusted CA", nil, certB, Trust{Roots: testenv.NewPKI(t, "x@y", nil).Roots, Identities: []string{"models@publisher.example"}}, ErrTrust, []string{"chain"}},
		{"key bundle, CA trust", nil, good, caT, ErrTrust, []string{"bare key"}},
		{"certificate bundle, key trust", nil, certB, keyT, ErrTrust, []string{"certificate"}},
	}
	// A bundle whose hint names the trusted key but whose signature is
	// another key's.
	forged := foreignBundle(t, other, modelFiles, shape{})
	var fb map[string]any
	json.Unmarshal(forged, &fb)
	h, _ := KeyHint(k.Public())
	fb["verificationMaterial"] = map[string]any{"publicKey": map[string]string{"hint": h}}
	forged, _ = json.Marshal(fb)
	cases = append(cases, refusal{"signature by another key under the trusted hint", nil, forged, keyT, ErrSignature, []string{"does not verify"}})
	expired := testenv.NewPKI(t, "models@publisher.example", func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })
	cases = append(cases, refusal{"expired leaf", nil, foreignBundle(t, expired.LeafKey, modelFiles, shape{chain: []*x509.Certificate{expired.Leaf, expired.Inter}}),
		Trust{Roots: expired.Roots, Identities: []string{"models@publisher.example"}}, ErrTrust, []string{"expired"}})
	noSign := testenv.NewPKI(t, "models@publisher.example", func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageKeyEncipherment
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	cases = append(cases, refusal{"leaf not for signing", nil, foreignBundle(t, noSign.LeafKey, modelFiles, shape{chain: []*x509.Certificate{noSign.Leaf, noSign.Inter}}),
		Trust{Roots: noSign.Roots, Identities: []string{"models@publisher.example"}}, ErrTrust, []string{"may not sign"}})

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeModel(t, modelFiles)
			if tc.mod != nil {
				tc.mod(dir)
			}
			_, err := verifyDir(t, dir, sigOut, tc.b, tc.tr, nil)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestRefusedForms: bundle and statement forms this verifier refuses.
func TestRefusedForms(t *testing.T) {
	k := p256(t)
	tr := Trust{Key: k.Public()}
	stmt := func(mut func(m map[string]any)) []byte {
		good := foreignBundle(t, k, modelFiles, shape{})
		var b map[string]any
		json.Unmarshal(good, &b)
		p, _ := base64.StdEncoding.DecodeString(b["dsseEnvelope"].(map[string]any)["payload"].(string))
		var st map[string]any
		json.Unmarshal(p, &st)
		mut(st)
		p, _ = json.Marshal(st)
		return signForeign(t, k, p, shape{})
	}
	bundle := func(mut func(m map[string]any)) []byte {
		var b map[string]any
		json.Unmarshal(foreignBundle(t, k, modelFiles, shape{}), &b)
		mut(b)
		out, _ := json.Marshal(b)
		return out
	}
	for _, tc := range []struct {
		name, want string
		b          []byte
		is         error
	}{
		{"sigstore method", "sigstore", bundle(func(m map[string]any) {
			m["verificationMaterial"] = map[string]any{"certificate": map[string]string{"rawBytes": "AAAA"}, "tlogEntries": []any{map[string]any{"logIndex": "1"}}}
		}), ErrSigstore},
		{"media type", "mediaType", bundle(func(m map[string]any) { m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1" }), ErrBundle},
		{"extra bundle field", "unknown field", bundle(func(m map[string]any) { m["extra"] = 1 }), ErrBundle},
		{"payload type", "payloadType", bundle(func(m map[string]any) { m["dsseEnvelope"].(map[string]any)["payloadType"] = "text/plain" }), ErrBundle},
		{"deprecated v0.1 predicate", "deprecated", stmt(func(m map[string]any) { m["predicateType"] = predicateTypeV01 }), ErrBundle},
		{"shards", "shards", stmt(func(m map[string]any) {
			s := m["predicate"].(map[string]any)["serialization"].(map[string]any)
			s["method"], s["shard_size"] = "shards", 1000
		}), ErrBundle},
		{"blake2b", "hash_type", stmt(func(m map[string]any) {
			m["predicate"].(map[string]any)["serialization"].(map[string]any)["hash_type"] = "blake2b"
		}), ErrBundle},
		{"root digest", "root digest", stmt(func(m map[string]any) {
			m["subject"].([]any)[0].(map[string]any)["digest"] = map[string]string{"sha256": strings.Repeat("0", 64)}
		}), ErrBundle},
		{"path leaving the model", "leaves", stmt(func(m map[string]any) {
			m["predicate"].(map[string]any)["resources"].([]any)[0].(map[string]any)["name"] = "../etc/passwd"
		}), ErrBundle},
		{"two subjects", "subjects", stmt(func(m map[string]any) { m["subject"] = append(m["subject"].([]any), m["subject"].([]any)[0]) }), ErrBundle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.b, tr)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v naming %q", err, tc.is, tc.want)
			}
		})
	}
}

// TestSignRoundTrip: what Sign writes verifies (key, ed25519 and certificate
// with an intermediate), and a single-file model works.
func TestSignRoundTrip(t *testing.T) {
	ca := testenv.NewPKI(t, "ci@securetrain.example", nil)
	dir := writeModel(t, modelFiles)
	es, err := pin.Manifest(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewStatement("model", es, nil)
	if err != nil {
		t.Fatal(err)
	}
	pk := p256(t)
	edk := ed(t)
	certS, err := NewKeySigner(ca.LeafKey, []*x509.Certificate{ca.Leaf, ca.Inter})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		s  Signer
		tr Trust
	}{
		"p256":        {mustSigner(t, pk), Trust{Key: pk.Public()}},
		"ed25519":     {mustSigner(t, edk), Trust{Key: edk.Public()}},
		"certificate": {certS, Trust{Roots: ca.Roots, Identities: []string{"ci@securetrain.example"}}},
	} {
		b, err := Sign(t.Context(), st, c.s)
		if err != nil {
			t.Fatal(err)
		}
		checkSchemas(t, b)
		if _, err := verifyDir(t, dir, "/nonexistent", b, c.tr, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := NewKeySigner(pk, []*x509.Certificate{ca.Leaf}); err == nil {
		t.Fatal("a certificate for another key was accepted")
	}
	// Single file.
	f := filepath.Join(dir, "config.json")
	d, _ := pin.ParseDigest(sha256Hex([]byte(modelFiles["config.json"])))
	st1, _ := NewStatement("config.json", []pin.Entry{{Path: "config.json", Digest: d}}, nil)
	b, _ := Sign(t.Context(), st1, mustSigner(t, pk))
	v, err := Verify(b, Trust{Key: pk.Public()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Pin(f, false, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pin.New(pin.Options{}).Verify(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Pin(filepath.Join(dir, "weights.safetensors"), false, "", nil); err == nil {
		t.Fatal("a single-file signature matched another file name")
	}
}

func mustSigner(t *testing.T, k crypto.Signer) Signer {
	t.Helper()
	s, err := NewKeySigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

package oms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/signing"
)

// Test fixtures, all made here: models, keys, a CA chain and bundles in the
// shapes other OMS signers write (the reference model_signing's key and
// certificate methods across its versions), never copied from them.

func writeModel(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// shape says how a foreign signer lays out its bundle.
type shape struct {
	rawBytes    bool   // publicKey.rawBytes + keyDetails (pre-v1.1) instead of hint
	keyid       string // "absent", "empty", "null"
	tlogEmpty   bool   // "tlogEntries": []
	ignore      []string
	noIgnoreKey bool // serialization without ignore_paths (pre-v1.1)
	chain       []*x509.Certificate
	name        string // subject name ("model" in some versions)
}

// foreignBundle signs files (name -> content) the way a foreign signer
// does: its own JSON layout (alphabetical keys, 2-space indent, fields in
// another order), ECDSA with the curve's hash or ed25519, and the
// verification material of sh.
func foreignBundle(t *testing.T, key crypto.Signer, files map[string]string, sh shape) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var res []map[string]any
	var cat []byte
	for _, n := range names {
		d := sha256.Sum256([]byte(files[n]))
		cat = append(cat, d[:]...)
		res = append(res, map[string]any{"algorithm": "sha256", "digest": hex.EncodeToString(d[:]), "name": n})
	}
	ser := map[string]any{"method": "files", "hash_type": "sha256", "allow_symlinks": false}
	if !sh.noIgnoreKey {
		ser["ignore_paths"] = append([]string{}, sh.ignore...)
	}
	root := sha256.Sum256(cat)
	name := sh.name
	if name == "" {
		name = "model"
	}
	st := map[string]any{
		"_type":         StatementType,
		"subject":       []any{map[string]any{"name": name, "digest": map[string]string{"sha256": hex.EncodeToString(root[:])}}},
		"predicateType": PredicateType,
		"predicate":     map[string]any{"serialization": ser, "resources": res},
	}
	payload, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return signForeign(t, key, payload, sh)
}

func signForeign(t *testing.T, key crypto.Signer, payload []byte, sh shape) []byte {
	t.Helper()
	// Signed here, not with KeySigner: what other signers do, written out
	// independently (ECDSA over the curve's own hash, ASN.1).
	pae := signing.PAE(PayloadType, payload)
	var sig []byte
	var err error
	switch k := key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, pae)
	case *ecdsa.PrivateKey:
		h := map[int]crypto.Hash{256: crypto.SHA256, 384: crypto.SHA384, 521: crypto.SHA512}[k.Curve.Params().BitSize]
		d := h.New()
		d.Write(pae)
		sig, err = ecdsa.SignASN1(rand.Reader, k, d.Sum(nil))
	}
	if err != nil || sig == nil {
		t.Fatalf("sign: %v", err)
	}
	s := map[string]any{"sig": base64.StdEncoding.EncodeToString(sig)}
	switch sh.keyid {
	case "empty":
		s["keyid"] = ""
	case "null":
		s["keyid"] = nil
	}
	vm := map[string]any{}
	switch {
	case len(sh.chain) > 0:
		var cs []any
		for _, c := range sh.chain {
			cs = append(cs, map[string]string{"rawBytes": base64.StdEncoding.EncodeToString(c.Raw)})
		}
		vm["x509CertificateChain"] = map[string]any{"certificates": cs}
	case sh.rawBytes:
		der, _ := x509.MarshalPKIXPublicKey(key.Public())
		vm["publicKey"] = map[string]string{"rawBytes": base64.StdEncoding.EncodeToString(der), "keyDetails": "PKIX_ECDSA_P256_SHA_256"}
	default:
		// The hint as signers compute it: SHA-256 of the PEM public key.
		der, _ := x509.MarshalPKIXPublicKey(key.Public())
		h := sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		vm["publicKey"] = map[string]string{"hint": hex.EncodeToString(h[:])}
	}
	if sh.tlogEmpty {
		vm["tlogEntries"] = []any{}
	}
	b, err := json.MarshalIndent(map[string]any{
		"mediaType":            MediaType,
		"verificationMaterial": vm,
		"dsseEnvelope":         map[string]any{"payload": base64.StdEncoding.EncodeToString(payload), "payloadType": PayloadType, "signatures": []any{s}},
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func p256(t *testing.T) *ecdsa.PrivateKey { return testenv.P256(t) }

func ed(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

package oms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/signing"
)

// Signer signs an OMS payload's PAE. Public is its public key; Chain, when
// set, is the certificate chain (leaf first) for the certificate method.
type Signer interface {
	Public() crypto.PublicKey
	Sign(ctx context.Context, msg []byte) ([]byte, error)
	Chain() []*x509.Certificate
}

// KeySigner signs with an in-memory ed25519 or ECDSA private key, and a
// certificate chain when it has one.
type KeySigner struct {
	key   crypto.Signer
	chain []*x509.Certificate
}

// NewKeySigner wraps key (ed25519.PrivateKey or *ecdsa.PrivateKey). With a
// chain, the leaf (chain[0]) must certify key's public half.
func NewKeySigner(key crypto.Signer, chain []*x509.Certificate) (*KeySigner, error) {
	if err := checkKeyType(key.Public()); err != nil {
		return nil, err
	}
	if len(chain) > 0 && !reflect.DeepEqual(chain[0].PublicKey, key.Public()) {
		if eq, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(key.Public()) {
			return nil, errors.New("oms: the certificate's public key is not the signing key's")
		}
	}
	return &KeySigner{key: key, chain: chain}, nil
}

// Public implements Signer.
func (s *KeySigner) Public() crypto.PublicKey { return s.key.Public() }

// Chain implements Signer.
func (s *KeySigner) Chain() []*x509.Certificate { return s.chain }

// Sign implements Signer: ed25519 over msg, ECDSA (ASN.1) over the curve's
// digest of msg.
func (s *KeySigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	switch k := s.key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, msg), nil
	case *ecdsa.PrivateKey:
		return ecdsa.SignASN1(rand.Reader, k, digest(ecHash(&k.PublicKey), msg))
	}
	return nil, fmt.Errorf("oms: key type %T is not supported", s.key)
}

// hostSigner adapts the host's provenance signer (ed25519 key file or Vault
// transit key) to Signer.
type hostSigner struct{ s signing.Signer }

func (h hostSigner) Public() crypto.PublicKey                           { return h.s.Public() }
func (h hostSigner) Sign(ctx context.Context, m []byte) ([]byte, error) { return h.s.Sign(ctx, m) }
func (h hostSigner) Chain() []*x509.Certificate                         { return nil }

// FromSigning signs OMS bundles with a provenance signer (key method).
func FromSigning(s signing.Signer) Signer { return hostSigner{s} }

// LoadSigner loads a PKCS#8 (or SEC 1 "EC PRIVATE KEY") PEM private key file,
// refusing one that others can read, and, when certFile is set, a PEM
// certificate chain (leaf first) for the certificate method.
func LoadSigner(keyFile, certFile string) (*KeySigner, error) {
	b, err := readFile(keyFile, true)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: want a PEM private key", keyFile)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		err = fmt.Errorf("PEM block %q, want PRIVATE KEY", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	cs, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %T cannot sign", keyFile, k)
	}
	var chain []*x509.Certificate
	if certFile != "" {
		cb, err := readFile(certFile, false)
		if err != nil {
			return nil, err
		}
		if chain, err = ParseCertificates(cb); err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
	}
	s, err := NewKeySigner(cs, chain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return s, nil
}

// ParseCertificates parses every PEM CERTIFICATE block of b (at least one).
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

// ParsePublicKey parses a PEM "PUBLIC KEY" (PKIX) ed25519 or ECDSA key.
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("want a PEM \"PUBLIC KEY\" block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if err := checkKeyType(k); err != nil {
		return nil, err
	}
	return k, nil
}

func readFile(p string, private bool) ([]byte, error) { return signing.ReadKeyFile(p, private) }

// NewStatement builds the OMS statement for a model named name whose files
// are entries (sorted here); ignore is recorded as serialization.ignore_paths.
func NewStatement(name string, entries []pin.Entry, ignore []string) (*Statement, error) {
	if len(entries) == 0 {
		return nil, errors.New("oms: an empty model cannot be signed")
	}
	es := append([]pin.Entry(nil), entries...)
	sort.Slice(es, func(i, j int) bool { return es[i].Path < es[j].Path })
	st := &Statement{Type: StatementType, PredicateType: PredicateType}
	var cat []byte
	for _, e := range es {
		if err := checkName(e.Path); err != nil {
			return nil, fmt.Errorf("oms: %q: %w", e.Path, err)
		}
		st.Predicate.Resources = append(st.Predicate.Resources, Resource{Name: e.Path, Algorithm: "sha256", Digest: e.Digest.String()})
		cat = append(cat, e.Digest[:]...)
	}
	st.Predicate.Serialization = Serialization{Method: "files", HashType: "sha256", IgnorePaths: ignore}
	st.Subject = []Subject{{Name: name, Digest: map[string]string{"sha256": sha256Hex(cat)}}}
	return st, nil
}

// Sign signs st with s and returns the bundle JSON: the key method with a
// hint, or the certificate method with s's chain.
func Sign(ctx context.Context, st *Statement, s Signer) ([]byte, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	sig, err := s.Sign(ctx, signing.PAE(PayloadType, payload))
	if err != nil {
		return nil, fmt.Errorf("oms: sign: %w", err)
	}
	b := Bundle{MediaType: MediaType, DSSEEnvelope: &Envelope{
		Payload: base64.StdEncoding.EncodeToString(payload), PayloadType: PayloadType,
		Signatures: []Signature{{Sig: base64.StdEncoding.EncodeToString(sig)}},
	}}
	if ch := s.Chain(); len(ch) > 0 {
		cc := &CertificateChain{}
		for _, c := range ch {
			cc.Certificates = append(cc.Certificates, Certificate{RawBytes: base64.StdEncoding.EncodeToString(c.Raw)})
		}
		b.VerificationMaterial.X509CertificateChain = cc
	} else {
		hint, err := KeyHint(s.Public())
		if err != nil {
			return nil, err
		}
		b.VerificationMaterial.PublicKey = &PublicKeyIdentifier{Hint: hint}
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	if v := SchemaViolations(out); len(v) > 0 {
		return nil, fmt.Errorf("oms: the bundle breaks the OMS schema: %s", strings.Join(v, "; "))
	}
	return out, nil
}

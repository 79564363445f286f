// Package oms reads, verifies and writes OpenSSF Model Signing (OMS v1.0)
// signatures: a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose
// payload is an in-toto Statement v1 with the OMS predicate — a manifest of
// every file of a model directory (name, algorithm, digest) and the model's
// root digest as the statement's only subject.
//
// Verification takes its trust from the caller (a public key, or CA
// certificates with an allowed signer identity), never from the bundle: a
// key or certificate chain carried in the bundle is only compared with, or
// chained to, what the caller trusts. The `sigstore` method (Fulcio
// certificate plus Rekor entries) needs Sigstore's trust root and
// transparency-log verification; this build refuses it, closed.
//
// The bundle, envelope and statement are hand-written JSON types and the
// DSSE PAE is the one in package signing: the Sigstore Go libraries
// (sigstore-go, protobuf-specs) would bring a large dependency tree for the
// few fields the key and certificate methods use.
package oms

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Fixed identifiers of the format.
const (
	// MediaType is the Sigstore bundle v0.3 media type, what OMS signers
	// write and what the reference verifier requires.
	MediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// mediaTypeAlt is v0.3 in the parameter form some Sigstore clients
	// write.
	mediaTypeAlt  = "application/vnd.dev.sigstore.bundle+json;version=0.3"
	PayloadType   = "application/vnd.in-toto+json"
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://model_signing/signature/v1.0"
	// predicateTypeV01 is model_signing v0.2's deprecated layout (digests
	// in subjects, no serialization): the spec lets verifiers refuse it.
	predicateTypeV01 = "https://model_signing/Digests/v0.1"
)

// Default ignore paths of the spec (§6.2): top-level components only.
var DefaultIgnore = []string{".git", ".gitattributes", ".github", ".gitignore"}

// ErrBundle is wrapped by every error about a bundle's form.
var ErrBundle = errors.New("bad OMS bundle")

// Bundle is the Sigstore bundle. Only the fields OMS uses are typed.
type Bundle struct {
	MediaType            string               `json:"mediaType"`
	VerificationMaterial VerificationMaterial `json:"verificationMaterial"`
	DSSEEnvelope         *Envelope            `json:"dsseEnvelope"`
}

// VerificationMaterial holds exactly one of PublicKey (key method),
// X509CertificateChain (certificate method) or Certificate (sigstore).
type VerificationMaterial struct {
	PublicKey                 *PublicKeyIdentifier `json:"publicKey,omitempty"`
	X509CertificateChain      *CertificateChain    `json:"x509CertificateChain,omitempty"`
	Certificate               *Certificate         `json:"certificate,omitempty"`
	TlogEntries               []json.RawMessage    `json:"tlogEntries,omitempty"`
	TimestampVerificationData json.RawMessage      `json:"timestampVerificationData,omitempty"`
}

// PublicKeyIdentifier names the key: Hint (current: hex SHA-256 of the
// key's PEM SubjectPublicKeyInfo) or, in bundles before model_signing
// v1.1, RawBytes (base64 DER SubjectPublicKeyInfo) and KeyDetails.
type PublicKeyIdentifier struct {
	Hint       string `json:"hint,omitempty"`
	RawBytes   string `json:"rawBytes,omitempty"`
	KeyDetails string `json:"keyDetails,omitempty"`
}

// CertificateChain is the leaf followed by its CA chain.
type CertificateChain struct {
	Certificates []Certificate `json:"certificates"`
}

// Certificate is one base64 DER certificate.
type Certificate struct {
	RawBytes string `json:"rawBytes"`
}

// Envelope is the DSSE envelope as OMS bundles carry it.
type Envelope struct {
	Payload     string      `json:"payload"`
	PayloadType string      `json:"payloadType"`
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature. KeyID may be absent, "" or null; it is
// never used.
type Signature struct {
	Sig   string  `json:"sig"`
	KeyID *string `json:"keyid,omitempty"`
}

// Statement is the in-toto Statement v1 with the OMS predicate.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject is the model as a whole: its name and root digest.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Predicate is the OMS predicate body.
type Predicate struct {
	Resources     []Resource    `json:"resources"`
	Serialization Serialization `json:"serialization"`
}

// Resource is one file (or, for shards, one byte range) of the model.
type Resource struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
}

// Serialization records how the signer enumerated and hashed the model.
type Serialization struct {
	Method        string   `json:"method"`
	HashType      string   `json:"hash_type"`
	AllowSymlinks bool     `json:"allow_symlinks"`
	ShardSize     *int64   `json:"shard_size,omitempty"`
	IgnorePaths   []string `json:"ignore_paths,omitempty"`
}

// checkKeys refuses JSON object keys outside allowed (the schemas close the
// bundle and envelope objects).
func checkKeys(b []byte, what string, allowed ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBundle, what, err)
	}
	for k := range m {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("%w: %s: unknown field %q", ErrBundle, what, k)
		}
	}
	return nil
}

// ParseBundle parses a bundle and checks its structure: the media type, the
// fields the bundle and envelope may have, one signing method, and a
// payload that is base64. It checks no signature.
func ParseBundle(b []byte) (*Bundle, error) {
	if err := checkKeys(b, "bundle", "mediaType", "verificationMaterial", "dsseEnvelope"); err != nil {
		return nil, err
	}
	var raw struct {
		DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
	}
	_ = json.Unmarshal(b, &raw)
	var bu Bundle
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&bu); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundle, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the bundle", ErrBundle)
	}
	if bu.MediaType != MediaType && bu.MediaType != mediaTypeAlt {
		return nil, fmt.Errorf("%w: mediaType %q, want %q", ErrBundle, bu.MediaType, MediaType)
	}
	if bu.DSSEEnvelope == nil {
		return nil, fmt.Errorf("%w: no dsseEnvelope (a messageSignature bundle is not an OMS signature)", ErrBundle)
	}
	if err := checkKeys(raw.DSSEEnvelope, "dsseEnvelope", "payload", "payloadType", "signatures"); err != nil {
		return nil, err
	}
	e := bu.DSSEEnvelope
	if e.PayloadType != PayloadType {
		return nil, fmt.Errorf("%w: dsseEnvelope.payloadType %q, want %q", ErrBundle, e.PayloadType, PayloadType)
	}
	if e.Payload == "" {
		return nil, fmt.Errorf("%w: dsseEnvelope.payload is empty", ErrBundle)
	}
	if _, err := decodeB64(e.Payload); err != nil {
		return nil, fmt.Errorf("%w: dsseEnvelope.payload: %w", ErrBundle, err)
	}
	if len(e.Signatures) == 0 {
		return nil, fmt.Errorf("%w: dsseEnvelope has no signatures", ErrBundle)
	}
	for i, s := range e.Signatures {
		if s.Sig == "" {
			return nil, fmt.Errorf("%w: dsseEnvelope.signatures[%d].sig is empty", ErrBundle, i)
		}
	}
	vm := bu.VerificationMaterial
	n := 0
	for _, set := range []bool{vm.PublicKey != nil, vm.X509CertificateChain != nil, vm.Certificate != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("%w: verificationMaterial needs exactly one of publicKey, x509CertificateChain, certificate", ErrBundle)
	}
	if vm.PublicKey != nil && vm.PublicKey.Hint == "" && vm.PublicKey.RawBytes == "" {
		return nil, fmt.Errorf("%w: verificationMaterial.publicKey has neither hint nor rawBytes", ErrBundle)
	}
	if vm.X509CertificateChain != nil && len(vm.X509CertificateChain.Certificates) == 0 {
		return nil, fmt.Errorf("%w: verificationMaterial.x509CertificateChain has no certificates", ErrBundle)
	}
	return &bu, nil
}

// Method is the bundle's signing method: "key", "certificate" or
// "sigstore".
func (b *Bundle) Method() string {
	switch vm := b.VerificationMaterial; {
	case vm.PublicKey != nil:
		return "key"
	case vm.X509CertificateChain != nil:
		return "certificate"
	}
	return "sigstore"
}

// decodeB64 decodes standard base64 (with padding, as Sigstore writes it);
// the unpadded and URL-safe forms protobuf JSON parsers also read are
// accepted.
func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// ParseStatement decodes a payload and checks it as an OMS statement (§8.3,
// and the predicate's form): the types, one subject with a SHA-256 root
// digest, files serialization with SHA-256, canonical unique resource
// names, and a root digest that is the resources' digests hashed in order.
func ParseStatement(payload []byte) (*Statement, error) {
	var probe struct {
		Type          string `json:"_type"`
		PredicateType string `json:"predicateType"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrBundle, err)
	}
	if probe.Type != StatementType {
		return nil, fmt.Errorf("%w: statement _type %q, want %q", ErrBundle, probe.Type, StatementType)
	}
	switch probe.PredicateType {
	case PredicateType:
	case predicateTypeV01:
		return nil, fmt.Errorf("%w: predicateType %s is model_signing v0.2's deprecated layout (no serialization, unchecked file list); re-sign the model with a current signer", ErrBundle, predicateTypeV01)
	default:
		return nil, fmt.Errorf("%w: predicateType %q, want %q", ErrBundle, probe.PredicateType, PredicateType)
	}
	var st Statement
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("%w: statement: %w", ErrBundle, err)
	}
	if len(st.Subject) != 1 {
		return nil, fmt.Errorf("%w: statement has %d subjects, want 1 (the model)", ErrBundle, len(st.Subject))
	}
	root, ok := st.Subject[0].Digest["sha256"]
	if !ok || !isHex(root, 64) {
		return nil, fmt.Errorf("%w: subject digest needs a sha256 of 64 lowercase hex digits", ErrBundle)
	}
	s := st.Predicate.Serialization
	switch s.Method {
	case "files":
		if s.ShardSize != nil {
			return nil, fmt.Errorf("%w: serialization.shard_size must be absent with method files", ErrBundle)
		}
	case "shards":
		return nil, fmt.Errorf("%w: serialization.method shards is not supported by this verifier; sign with method files", ErrBundle)
	default:
		return nil, fmt.Errorf("%w: serialization.method %q, want files", ErrBundle, s.Method)
	}
	if s.HashType != "sha256" {
		return nil, fmt.Errorf("%w: serialization.hash_type %q is not supported; want sha256", ErrBundle, s.HashType)
	}
	for _, p := range s.IgnorePaths {
		if err := checkName(p); err != nil || strings.ContainsAny(p, "*?[") {
			return nil, fmt.Errorf("%w: serialization.ignore_paths entry %q: want a relative path without globs", ErrBundle, p)
		}
	}
	if len(st.Predicate.Resources) == 0 {
		return nil, fmt.Errorf("%w: predicate.resources is empty", ErrBundle)
	}
	seen := map[string]bool{}
	var cat []byte
	for _, r := range st.Predicate.Resources {
		if err := checkName(r.Name); err != nil {
			return nil, fmt.Errorf("%w: resource %q: %w", ErrBundle, r.Name, err)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%w: resource %q listed twice", ErrBundle, r.Name)
		}
		seen[r.Name] = true
		if r.Algorithm != s.HashType {
			return nil, fmt.Errorf("%w: resource %q: algorithm %q, serialization says %q", ErrBundle, r.Name, r.Algorithm, s.HashType)
		}
		if !isHex(r.Digest, 64) {
			return nil, fmt.Errorf("%w: resource %q: digest must be 64 lowercase hex digits", ErrBundle, r.Name)
		}
		d, _ := hexDecode(r.Digest)
		cat = append(cat, d...)
	}
	if got := sha256Hex(cat); got != root {
		return nil, fmt.Errorf("%w: subject root digest %s does not match the resources (they hash to %s)", ErrBundle, root, got)
	}
	return &st, nil
}

// checkName: a canonical relative slash path (§6.1.2).
func checkName(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("empty path")
	case strings.HasPrefix(p, "/"):
		return errors.New("absolute path")
	case strings.ContainsAny(p, "\\\x00\n\r"):
		return errors.New("backslash, NUL or newline")
	case p != cleanSlash(p):
		return errors.New("not canonical (., .., //, trailing /)")
	case p == ".." || strings.HasPrefix(p, "../"):
		return errors.New("leaves the model directory")
	}
	return nil
}

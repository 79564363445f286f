package oms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/signing"
)

// Errors callers can test for.
var (
	ErrSignature = errors.New("signature does not verify")
	ErrTrust     = errors.New("signer not trusted")
	ErrSigstore  = errors.New("sigstore method needs online verification")
)

// Trust is what the verifier trusts: a public key (key method), or CA
// certificates and the signer identities allowed under them (certificate
// method). Exactly one of Key and Roots is set.
type Trust struct {
	Key crypto.PublicKey // ed25519, or ECDSA P-256/P-384/P-521
	// Roots are the trusted CA certificates; Identities the allowed
	// signer identities (an e-mail, URI or DNS subject alternative name,
	// or the subject's common name of the leaf), at least one.
	Roots      *x509.CertPool
	Identities []string
	// Now is the verification time (zero: time.Now()).
	Now time.Time
}

// Verified is what a verified bundle says.
type Verified struct {
	Method     string // key or certificate
	Signer     string // key: "key sha256:<hint>"; certificate: identity and issuer
	RootDigest string // subject's sha256 root digest (hex)
	Name       string // subject name (informational)
	Statement  *Statement
	// Entries are the signed files as pin entries (path, sha256).
	Entries       []pin.Entry
	AllowSymlinks bool
	IgnorePaths   []string // as the signer declared them
}

// KeyHint is the hint OMS signers write for a public key: the hex SHA-256
// of its PEM SubjectPublicKeyInfo encoding (64-column lines, final newline).
func KeyHint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return hex.EncodeToString(s[:]), nil
}

// Verify checks a bundle against trust: its form, the DSSE signature over
// the PAE with the trusted key (or the leaf of a chain to a trusted CA,
// with an allowed identity), and the statement. It does not look at the
// model: check the returned Entries against the directory (pin.Verify with
// Ignore and NoSymlinks from Verified).
func Verify(b []byte, t Trust) (*Verified, error) {
	bu, err := ParseBundle(b)
	if err != nil {
		return nil, err
	}
	v := &Verified{Method: bu.Method()}
	var pub crypto.PublicKey
	switch v.Method {
	case "sigstore":
		return nil, fmt.Errorf("%w: the bundle uses the sigstore method (Fulcio certificate, Rekor entries): this build verifies key and certificate signatures only, offline; refused", ErrSigstore)
	case "key":
		if t.Key == nil {
			return nil, fmt.Errorf("%w: the bundle is signed with a bare key but the trust is a CA: give the publisher's public key", ErrTrust)
		}
		if pub, v.Signer, err = checkKey(bu.VerificationMaterial.PublicKey, t.Key); err != nil {
			return nil, err
		}
	case "certificate":
		if t.Roots == nil {
			return nil, fmt.Errorf("%w: the bundle is signed with a certificate but the trust is a bare key: give the CA certificates and the identity", ErrTrust)
		}
		if pub, v.Signer, err = checkChain(bu.VerificationMaterial.X509CertificateChain, t); err != nil {
			return nil, err
		}
	}
	payload, _ := decodeB64(bu.DSSEEnvelope.Payload)
	pae := signing.PAE(bu.DSSEEnvelope.PayloadType, payload)
	ok := false
	for _, s := range bu.DSSEEnvelope.Signatures {
		sig, err := decodeB64(s.Sig)
		if err == nil && verifySig(pub, pae, sig) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: the DSSE signature does not verify with %s", ErrSignature, v.Signer)
	}
	st, err := ParseStatement(payload)
	if err != nil {
		return nil, err
	}
	v.Statement = st
	v.RootDigest = st.Subject[0].Digest["sha256"]
	v.Name = st.Subject[0].Name
	v.AllowSymlinks = st.Predicate.Serialization.AllowSymlinks
	v.IgnorePaths = st.Predicate.Serialization.IgnorePaths
	for _, r := range st.Predicate.Resources {
		d, _ := pin.ParseDigest(r.Digest)
		v.Entries = append(v.Entries, pin.Entry{Path: r.Name, Digest: d})
	}
	return v, nil
}

// checkKey compares the bundle's key identifier with the trusted key: a
// hint must be the trusted key's hint, raw bytes must be the trusted key.
// The signature is checked with the trusted key only.
func checkKey(id *PublicKeyIdentifier, trusted crypto.PublicKey) (crypto.PublicKey, string, error) {
	if err := checkKeyType(trusted); err != nil {
		return nil, "", err
	}
	hint, err := KeyHint(trusted)
	if err != nil {
		return nil, "", fmt.Errorf("%w: trusted key: %w", ErrTrust, err)
	}
	who := "key sha256:" + hint
	if id.Hint != "" && id.Hint != hint {
		return nil, "", fmt.Errorf("%w: wrong key: the bundle names key %s, the trusted key is %s", ErrTrust, id.Hint, hint)
	}
	if id.RawBytes != "" {
		der, err := decodeB64(id.RawBytes)
		if err != nil {
			return nil, "", fmt.Errorf("%w: verificationMaterial.publicKey.rawBytes: %w", ErrBundle, err)
		}
		want, _ := x509.MarshalPKIXPublicKey(trusted)
		if !bytes.Equal(der, want) {
			return nil, "", fmt.Errorf("%w: wrong key: the bundle's public key (rawBytes) is not the trusted key %s", ErrTrust, hint)
		}
	}
	return trusted, who, nil
}

func checkKeyType(k crypto.PublicKey) error {
	switch k := k.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		if slices.Contains([]elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()}, k.Curve) {
			return nil
		}
	}
	return fmt.Errorf("%w: key type %T is not supported (ed25519, ECDSA P-256/P-384/P-521)", ErrTrust, k)
}

// ecHash is the digest the OMS key and certificate methods use with each
// curve.
func ecHash(k *ecdsa.PublicKey) crypto.Hash {
	switch k.Curve {
	case elliptic.P384():
		return crypto.SHA384
	case elliptic.P521():
		return crypto.SHA512
	}
	return crypto.SHA256
}

func digest(h crypto.Hash, msg []byte) []byte {
	switch h {
	case crypto.SHA384:
		s := sha512.Sum384(msg)
		return s[:]
	case crypto.SHA512:
		s := sha512.Sum512(msg)
		return s[:]
	}
	s := sha256.Sum256(msg)
	return s[:]
}

func verifySig(pub crypto.PublicKey, msg, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest(ecHash(k), msg), sig)
	}
	return false
}

// checkChain verifies the bundle's chain (leaf first, then intermediates)
// to one of t.Roots at t.Now, requires the leaf to be usable for signing
// (digitalSignature key usage, or code-signing extended key usage) and one
// of its identities to be allowed, and returns the leaf's key.
func checkChain(ch *CertificateChain, t Trust) (crypto.PublicKey, string, error) {
	var certs []*x509.Certificate
	for i, c := range ch.Certificates {
		der, err := decodeB64(c.RawBytes)
		if err != nil {
			return nil, "", fmt.Errorf("%w: x509CertificateChain.certificates[%d]: %w", ErrBundle, i, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, "", fmt.Errorf("%w: x509CertificateChain.certificates[%d]: %w", ErrBundle, i, err)
		}
		certs = append(certs, cert)
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	now := t.Now
	if now.IsZero() {
		now = time.Now()
	}
	ids := identities(leaf)
	who := fmt.Sprintf("certificate %s (issuer %s)", strings.Join(ids, ", "), leaf.Issuer.String())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.Roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, "", fmt.Errorf("%w: %s: chain: %w", ErrTrust, who, err)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageCodeSigning) {
		return nil, "", fmt.Errorf("%w: %s: the certificate may not sign (no digitalSignature key usage or code-signing extended key usage)", ErrTrust, who)
	}
	allowed := false
	for _, id := range ids {
		if slices.Contains(t.Identities, id) {
			allowed = true
		}
	}
	if !allowed {
		return nil, "", fmt.Errorf("%w: wrong identity: the certificate is for %s, allowed: %s", ErrTrust, strings.Join(ids, ", "), strings.Join(t.Identities, ", "))
	}
	if err := checkKeyType(leaf.PublicKey); err != nil {
		return nil, "", err
	}
	return leaf.PublicKey, who, nil
}

// identities lists what a leaf certificate names: e-mail, URI and DNS
// subject alternative names, then the subject's common name.
func identities(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.EmailAddresses...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	if c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

// Ignore returns the paths a verifier leaves out of the model directory:
// the spec's defaults, the signature file when it lies inside the model
// (sigRel, "" if not), and the signer's ignore_paths that allowed admits.
// A signer-declared path the policy does not allow stays in scope, so a file
// there fails verification as unsigned.
func (v *Verified) Ignore(sigRel string, allowed []string) []string {
	out := append([]string(nil), DefaultIgnore...)
	if sigRel != "" {
		out = append(out, sigRel)
	}
	for _, p := range v.IgnorePaths {
		if slices.Contains(out, p) || slices.Contains(allowed, p) {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	// A signed file is never ignored (a default like .gitignore may be
	// part of the manifest when the signer chose so).
	var keep []string
	for _, p := range out {
		signed := false
		for _, e := range v.Entries {
			if pin.Ignored([]string{p}, e.Path) {
				signed = true
				break
			}
		}
		if !signed {
			keep = append(keep, p)
		}
	}
	slices.Sort(keep)
	return keep
}

// Pin turns a verified signature into the pin that checks the model at path
// (a directory, or a single file when !dir) with package pin: every signed
// file's digest, no extra and no missing file, ignoring Ignore(sigRel,
// allowed), and refusing symlinks when the signer did not follow them.
// sigPath is the bundle's path (it is left out when it lies in the model
// directory); both paths must be resolved (no symlinks).
func (v *Verified) Pin(path string, dir bool, sigPath string, allowed []string) (pin.Pin, error) {
	if !dir {
		base := filepath.Base(path)
		if len(v.Entries) != 1 || v.Entries[0].Path != base {
			return pin.Pin{}, fmt.Errorf("the signature lists %d file(s), not the single file %s", len(v.Entries), base)
		}
		return pin.Pin{Path: path, Digest: v.Entries[0].Digest}, nil
	}
	sigRel := ""
	if r, err := filepath.Rel(path, sigPath); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
		sigRel = filepath.ToSlash(r)
	}
	return pin.Pin{Path: path, Dir: true, Manifest: v.Entries, Ignore: v.Ignore(sigRel, allowed), NoSymlinks: !v.AllowSymlinks}, nil
}

// Package signing signs and verifies with ed25519 keys that are either held
// in a key file or kept in Vault's transit engine (so no signing key sits on
// the node). Provenance attestations and the audit log's chain checkpoints
// use it. Verification always takes the public key the verifier trusts; it
// never takes a key from the signed material.
package signing

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// Signer signs messages with one ed25519 key.
type Signer interface {
	// KeyID names the key (see KeyID); it is a hint for verifiers, never
	// trusted by them.
	KeyID() string
	// Public returns the public key, for self-checks and for publishing.
	Public() ed25519.PublicKey
	// Sign returns an ed25519 signature of msg.
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// Errors callers can test for.
var (
	ErrBadSignature = errors.New("signature does not verify with the trusted key")
	ErrKeyFile      = errors.New("unusable key file")
)

// KeyID is "sha256:" and the hex SHA-256 of the public key's PKIX DER form.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Verify checks sig over msg with the trusted key pub.
func Verify(pub ed25519.PublicKey, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: trusted key has %d bytes, want %d", ErrBadSignature, len(pub), ed25519.PublicKeySize)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// FileSigner signs with a private key loaded from a PEM (PKCS#8) file.
type FileSigner struct {
	priv ed25519.PrivateKey
}

// KeyID implements Signer.
func (s *FileSigner) KeyID() string { return KeyID(s.Public()) }

// Public implements Signer.
func (s *FileSigner) Public() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// Sign implements Signer.
func (s *FileSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return ed25519.Sign(s.priv, msg), nil
}

// NewFileSigner wraps an in-memory key (tests, key rotation tools).
func NewFileSigner(priv ed25519.PrivateKey) *FileSigner { return &FileSigner{priv: priv} }

// ReadKeyFile reads a small key or certificate file as readKeyFile does
// (no symlink, regular file, a private key readable by its owner only).
func ReadKeyFile(path string, private bool) ([]byte, error) { return readKeyFile(path, private) }

// readKeyFile reads a small file without following a symlink and refuses a
// private key that others can read or write.
func readKeyFile(path string, private bool) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow|nonBlock, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s: not a regular file", ErrKeyFile, path)
	}
	if private && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s: mode %04o lets others read the private key, must be 0600 or 0400", ErrKeyFile, path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	return b, nil
}

// LoadPrivateKeyFile loads an ed25519 private key ("PRIVATE KEY" PEM block,
// PKCS#8, as written by GenerateKeyFiles or `openssl genpkey -algorithm
// ed25519`).
func LoadPrivateKeyFile(path string) (*FileSigner, error) {
	b, err := readKeyFile(path, true)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s: want a PEM \"PRIVATE KEY\" block (PKCS#8 ed25519)", ErrKeyFile, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s: %T is not an ed25519 key", ErrKeyFile, path, k)
	}
	return &FileSigner{priv: priv}, nil
}

// ParsePublicKeyPEM parses a "PUBLIC KEY" PEM block (PKIX ed25519).
func ParsePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: want a PEM \"PUBLIC KEY\" block", ErrKeyFile)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not an ed25519 key", ErrKeyFile, k)
	}
	return pub, nil
}

// LoadPublicKeyFile loads a trusted public key (PEM "PUBLIC KEY").
func LoadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	b, err := readKeyFile(path, false)
	if err != nil {
		return nil, err
	}
	pub, err := ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// MarshalPublicKeyPEM encodes pub as a PEM "PUBLIC KEY" block.
func MarshalPublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// GenerateKeyFiles writes a new key pair: the private key with mode 0600,
// the public key with mode 0644. Neither file may exist already.
func GenerateKeyFiles(privPath, pubPath string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubPEM, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		return nil, err
	}
	if err := writeNew(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(privPath)
		return nil, err
	}
	return pub, nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

package signing

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// ErrTransit wraps failures of Vault's transit engine.
var ErrTransit = errors.New("vault transit")

// TransitSigner signs through Vault's transit engine (POST
// <mount>/sign/<key>) with an ed25519 key that never leaves Vault. The
// token needs "update" on <mount>/sign/<key> and "read" on
// <mount>/keys/<key>.
type TransitSigner struct {
	c       *vault.Client
	mount   string
	key     string
	version int
	pub     ed25519.PublicKey
}

// NewTransitSigner reads the key's public part (of version, or the latest
// when version is 0) so that every signature can be checked before it is
// used, and pins that version for Sign.
func NewTransitSigner(ctx context.Context, c *vault.Client, mount, key string, version int) (*TransitSigner, error) {
	pub, v, err := TransitPublicKey(ctx, c, mount, key, version)
	if err != nil {
		return nil, err
	}
	return &TransitSigner{c: c, mount: strings.Trim(mount, "/"), key: key, version: v, pub: pub}, nil
}

// KeyID implements Signer.
func (s *TransitSigner) KeyID() string { return KeyID(s.pub) }

// Public implements Signer.
func (s *TransitSigner) Public() ed25519.PublicKey { return s.pub }

// Version is the transit key version used for signing.
func (s *TransitSigner) Version() int { return s.version }

// Sign implements Signer.
func (s *TransitSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	sec, err := s.c.Logical().WriteWithContext(ctx, s.mount+"/sign/"+s.key, map[string]any{
		"input":       base64.StdEncoding.EncodeToString(msg),
		"key_version": s.version,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: sign with %s/%s: %w", ErrTransit, s.mount, s.key, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("%w: sign with %s/%s: empty response", ErrTransit, s.mount, s.key)
	}
	raw, _ := sec.Data["signature"].(string)
	// "vault:v<N>:<base64>"
	parts := strings.SplitN(raw, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || parts[1] != "v"+strconv.Itoa(s.version) {
		return nil, fmt.Errorf("%w: sign with %s/%s: unexpected signature format (want vault:v%d:...)", ErrTransit, s.mount, s.key, s.version)
	}
	sig, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: sign with %s/%s: %w", ErrTransit, s.mount, s.key, err)
	}
	if err := Verify(s.pub, msg, sig); err != nil {
		return nil, fmt.Errorf("%w: signature from %s/%s v%d does not verify with its public key", ErrTransit, s.mount, s.key, s.version)
	}
	return sig, nil
}

// TransitPublicKey reads the public key of version (latest when 0) of an
// ed25519 transit key, for verifiers and for publishing as a PEM file.
func TransitPublicKey(ctx context.Context, c *vault.Client, mount, key string, version int) (ed25519.PublicKey, int, error) {
	mount = strings.Trim(mount, "/")
	sec, err := c.Logical().ReadWithContext(ctx, mount+"/keys/"+key)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read %s/keys/%s: %w", ErrTransit, mount, key, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, 0, fmt.Errorf("%w: %s/keys/%s not found", ErrTransit, mount, key)
	}
	if t, _ := sec.Data["type"].(string); t != "ed25519" {
		return nil, 0, fmt.Errorf("%w: %s/keys/%s has type %q, want ed25519", ErrTransit, mount, key, t)
	}
	if version == 0 {
		n, ok := sec.Data["latest_version"].(json.Number)
		if !ok {
			return nil, 0, fmt.Errorf("%w: %s/keys/%s: no latest_version", ErrTransit, mount, key)
		}
		v, err := n.Int64()
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s/keys/%s: latest_version %q", ErrTransit, mount, key, n)
		}
		version = int(v)
	}
	keys, _ := sec.Data["keys"].(map[string]any)
	kv, _ := keys[strconv.Itoa(version)].(map[string]any)
	pk, _ := kv["public_key"].(string)
	b, err := base64.StdEncoding.DecodeString(pk)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, 0, fmt.Errorf("%w: %s/keys/%s version %d: no ed25519 public key", ErrTransit, mount, key, version)
	}
	return ed25519.PublicKey(b), version, nil
}

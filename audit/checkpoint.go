package audit

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Checkpoint is a signed statement "log L had head H at seq N at time T".
// Kept where the node cannot rewrite it (a remote log, the journal shipped
// off the node, a store only the signer can write), it catches what the chain
// alone cannot: a truncated tail and a chain recomputed from an edit on.
type Checkpoint struct {
	Log  string    `json:"log"`
	Seq  uint64    `json:"seq"`
	Head string    `json:"head"`
	Time time.Time `json:"time"`
	Sig  []byte    `json:"sig"`
}

// Message is the exact byte string that is signed.
func (c Checkpoint) Message() []byte {
	return fmt.Appendf(nil, "securetrain-audit-checkpoint-v1\nlog %s\nseq %d\nhead %s\ntime %s\n",
		c.Log, c.Seq, c.Head, c.Time.UTC().Format(time.RFC3339Nano))
}

// Signer signs checkpoint messages. The signing package's ed25519-file and
// Vault-transit signers satisfy it.
type Signer interface {
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

// SigVerifier verifies what a Signer signed.
type SigVerifier interface {
	Verify(ctx context.Context, msg, sig []byte) error
}

// Checkpointer commits the chain head outside the node's control.
type Checkpointer interface {
	Checkpoint(ctx context.Context, seq uint64, head string) (Checkpoint, error)
}

// CheckpointSink stores a signed checkpoint.
type CheckpointSink interface {
	Put(ctx context.Context, c Checkpoint) error
}

// ErrCheckpoint means a checkpoint could not be signed or stored. The event
// it was for is in the log.
var ErrCheckpoint = errors.New("audit checkpoint failed")

// SignedCheckpointer signs each checkpoint and puts it into every sink; it
// fails if signing or any sink fails.
type SignedCheckpointer struct {
	LogID  string // names the log among others in a shared store, e.g. "node7:/var/log/securetrain/audit.jsonl"
	Signer Signer
	Sinks  []CheckpointSink
	Now    func() time.Time
}

// Checkpoint implements Checkpointer.
func (s *SignedCheckpointer) Checkpoint(ctx context.Context, seq uint64, head string) (Checkpoint, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	c := Checkpoint{Log: s.LogID, Seq: seq, Head: head, Time: now().UTC()}
	sig, err := s.Signer.Sign(ctx, c.Message())
	if err != nil {
		return c, fmt.Errorf("%w: sign seq %d: %w", ErrCheckpoint, seq, err)
	}
	c.Sig = sig
	var errs []error
	for _, k := range s.Sinks {
		if err := k.Put(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: store seq %d: %w", ErrCheckpoint, seq, err)
	}
	return c, nil
}

// ReadCheckpoints reads JSON-lines checkpoints (as FileSink writes them).
// Blank lines are skipped; anything else that does not decode is an error
// naming the line.
func ReadCheckpoints(r io.Reader) ([]Checkpoint, error) {
	var out []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	no := 0
	for sc.Scan() {
		no++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var c Checkpoint
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("checkpoint line %d: %w", no, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return out, nil
}

// ReadCheckpointFile reads checkpoints from a file.
func ReadCheckpointFile(path string) ([]Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	defer f.Close()
	cs, err := ReadCheckpoints(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// Ed25519Signer signs with an in-memory ed25519 key (tests, and a stand-in
// until the signing package is wired).
type Ed25519Signer struct{ Key ed25519.PrivateKey }

// Sign implements Signer.
func (s Ed25519Signer) Sign(_ context.Context, msg []byte) ([]byte, error) {
	return ed25519.Sign(s.Key, msg), nil
}

// Ed25519Verifier verifies ed25519 signatures, raw or in Vault transit's
// "vault:vN:<base64>" form.
type Ed25519Verifier struct{ Key ed25519.PublicKey }

// ErrBadSignature means a signature did not verify.
var ErrBadSignature = errors.New("signature does not verify")

// Verify implements SigVerifier.
func (v Ed25519Verifier) Verify(_ context.Context, msg, sig []byte) error {
	if s := string(sig); strings.HasPrefix(s, "vault:v") {
		i := strings.Index(s[len("vault:v"):], ":")
		if i < 0 {
			return fmt.Errorf("%w: malformed Vault signature", ErrBadSignature)
		}
		raw, err := base64.StdEncoding.DecodeString(s[len("vault:v")+i+1:])
		if err != nil {
			return fmt.Errorf("%w: Vault signature: %w", ErrBadSignature, err)
		}
		sig = raw
	}
	if len(v.Key) != ed25519.PublicKeySize || !ed25519.Verify(v.Key, msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// ParseEd25519PublicKey reads a PEM "PUBLIC KEY" (PKIX) or the base64 of the
// raw 32-byte key (as Vault transit exports it).
func ParseEd25519PublicKey(b []byte) (ed25519.PublicKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("public key: PEM block %q, want PUBLIC KEY", blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, want ed25519", k)
		}
		return ek, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("public key: want PEM PUBLIC KEY or base64 of 32 raw ed25519 bytes")
	}
	return ed25519.PublicKey(raw), nil
}

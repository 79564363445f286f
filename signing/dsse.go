package signing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Envelope is a DSSE envelope
// (https://github.com/secure-systems-lab/dsse/blob/master/envelope.md).
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"` // standard base64
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature. KeyID is informational only.
type Signature struct {
	KeyID string `json:"keyid,omitempty"`
	Sig   string `json:"sig"` // standard base64
}

// ErrEnvelope is returned for an envelope that cannot be parsed or checked.
var ErrEnvelope = errors.New("bad DSSE envelope")

// PAE is DSSE's pre-authentication encoding: what is actually signed.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// SignEnvelope signs payload with s and returns the envelope.
func SignEnvelope(ctx context.Context, s Signer, payloadType string, payload []byte) (*Envelope, error) {
	sig, err := s.Sign(ctx, PAE(payloadType, payload))
	if err != nil {
		return nil, err
	}
	return &Envelope{
		PayloadType: payloadType,
		Payload:     base64.StdEncoding.EncodeToString(payload),
		Signatures:  []Signature{{KeyID: s.KeyID(), Sig: base64.StdEncoding.EncodeToString(sig)}},
	}, nil
}

// ParseEnvelope parses an envelope strictly: unknown fields, trailing data
// and non-canonical base64 are errors.
func ParseEnvelope(b []byte) (*Envelope, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Envelope
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnvelope, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the envelope", ErrEnvelope)
	}
	return &e, nil
}

// VerifyEnvelope checks that at least one signature verifies with the
// trusted key (and only that key: nothing in the envelope chooses it), that
// the payload type is wantType, and returns the payload.
func VerifyEnvelope(e *Envelope, trusted ed25519.PublicKey, wantType string) ([]byte, error) {
	if e.PayloadType != wantType {
		return nil, fmt.Errorf("%w: payloadType %q, want %q", ErrEnvelope, e.PayloadType, wantType)
	}
	payload, err := base64.StdEncoding.Strict().DecodeString(e.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrEnvelope, err)
	}
	if len(e.Signatures) == 0 {
		return nil, fmt.Errorf("%w: no signatures", ErrEnvelope)
	}
	pae := PAE(e.PayloadType, payload)
	for _, s := range e.Signatures {
		sig, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
		if err != nil {
			continue
		}
		if Verify(trusted, pae, sig) == nil {
			return payload, nil
		}
	}
	return nil, fmt.Errorf("%w (trusted key %s)", ErrBadSignature, KeyID(trusted))
}

package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// body is a line without its hash, in the order it is written.
type body struct {
	Seq  uint64          `json:"seq"`
	Time time.Time       `json:"time"`
	Type Type            `json:"type"`
	Job  string          `json:"job,omitempty"`
	User string          `json:"user,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	Prev string          `json:"prev"`
}

const hashKey = `,"hash":"`

// hashLen is the length of the hash member's suffix: `,"hash":"` + 64 hex + `"}`.
const suffixLen = len(hashKey) + 64 + 2

// encodeLine returns the full line (with newline) and its hash.
func encodeLine(b body) ([]byte, string, error) {
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw)
	h := hex.EncodeToString(sum[:])
	out := make([]byte, 0, len(raw)+suffixLen+1)
	out = append(out, raw[:len(raw)-1]...)
	out = append(out, hashKey...)
	out = append(out, h...)
	out = append(out, '"', '}', '\n')
	return out, h, nil
}

// errMalformed and errHash are the two ways a single line can be bad on its own.
var (
	errMalformed = errors.New("malformed")
	errHash      = errors.New("hash mismatch")
)

// parseLine decodes one line (without its newline) and checks its own hash.
// The Event is filled in as far as it could be decoded, also on errHash.
func parseLine(line []byte) (Event, error) {
	var ev Event
	if len(line) < suffixLen+2 || !bytes.HasSuffix(line, []byte(`"}`)) ||
		!bytes.Equal(line[len(line)-suffixLen:len(line)-suffixLen+len(hashKey)], []byte(hashKey)) {
		return ev, fmt.Errorf("%w: does not end in a %s…\"} member", errMalformed, hashKey[1:])
	}
	h := string(line[len(line)-suffixLen+len(hashKey) : len(line)-2])
	if _, err := hex.DecodeString(h); err != nil || h != hexLower(h) {
		return ev, fmt.Errorf("%w: hash %q is not 64 lower-case hex digits", errMalformed, h)
	}
	raw := make([]byte, 0, len(line)-suffixLen+1)
	raw = append(raw, line[:len(line)-suffixLen]...)
	raw = append(raw, '}')
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b body
	if err := dec.Decode(&b); err != nil {
		return ev, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if dec.More() {
		return ev, fmt.Errorf("%w: trailing data after the event", errMalformed)
	}
	ev = Event{Seq: b.Seq, Time: b.Time, Type: b.Type, Job: b.Job, User: b.User, Data: b.Data, Prev: b.Prev, Hash: h}
	if b.Seq == 0 {
		return ev, fmt.Errorf("%w: seq is missing or 0", errMalformed)
	}
	if len(b.Prev) != 64 || hexLower(b.Prev) != b.Prev {
		return ev, fmt.Errorf("%w: prev %q is not 64 lower-case hex digits", errMalformed, b.Prev)
	}
	if len(b.Data) > 0 && b.Data[0] != '{' {
		return ev, fmt.Errorf("%w: data is not a JSON object", errMalformed)
	}
	sum := sha256.Sum256(raw)
	if got := hex.EncodeToString(sum[:]); got != h {
		return ev, fmt.Errorf("%w: content hashes to %s…, line says %s…", errHash, got[:12], h[:12])
	}
	return ev, nil
}

func hexLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	if _, err := hex.DecodeString(string(b)); err != nil {
		return ""
	}
	return string(b)
}

// Decode decodes one line without checking anything but its syntax (for
// `audit show` on a log that may be damaged).
func Decode(line []byte) (Event, error) {
	ev, err := parseLine(bytes.TrimRight(line, "\r\n"))
	if err != nil && !errors.Is(err, errHash) {
		return ev, err
	}
	return ev, nil
}

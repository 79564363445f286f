// Package audit is securetrain's tamper-evident, append-only audit log: one
// JSON event per line, each line carrying the hash of the line before it.
//
// A line is
//
//	{"seq":N,"time":T,"type":K,"job":J,"user":U,"data":{...},"prev":P,"hash":H}
//
// where H is the hex SHA-256 of the exact bytes of the line with its
// `,"hash":"H"` member removed (that is, the line up to and including P's
// closing quote, followed by "}"), and P is the H of the line before (64 zeros
// for seq 1). The hash is over bytes, not over a re-encoding, so verification
// does not depend on a JSON canonical form. Editing, inserting, deleting or
// reordering a line breaks the chain at a line Verify names. Truncating the
// tail or recomputing the whole chain is caught only against checkpoints of
// the chain head kept where the node cannot rewrite them (see Checkpointer).
//
// Every writer (launchers, the daemon, the Slurm epilog, gc) appends through
// Log, which serializes writers across processes with flock on the log file.
// Payloads never carry secret values: Append refuses a payload with a member
// named like a credential (token, password, secret_id, ...), and redacts a
// string that looks like a Vault token or assigns a credential-named key
// (VAULT_TOKEN=..., --password=...). A secret passed as a separate argument
// ("--password", "hunter2") cannot be recognized: profiles deliver
// credentials as files, never on the command line.
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/violation"
)

// Type is the kind of an audit event.
type Type string

// Event types.
const (
	TypeJobStart     Type = "job_start"
	TypeSecretIssued Type = "secret_issued"
	TypeViolation    Type = "violation"
	TypeKill         Type = "kill"
	TypeExit         Type = "exit"
	TypeGC           Type = "gc"
	// TypeRecovered is written by the writer itself when it finds the log
	// ending in a partial line (a crash during a write): the fragment is
	// closed with a newline and described by this event, which chains to the
	// last complete line.
	TypeRecovered Type = "recovered"
)

// Payload is the data of one event. The types below cover the events the
// launcher writes; Custom covers the rest.
type Payload interface {
	AuditType() Type
}

// Mount is one bind mount of a job, as the sandbox was given it.
type Mount struct {
	Source   string `json:"source"`
	Dest     string `json:"dest"`
	ReadOnly bool   `json:"readonly,omitempty"`
}

// JobStart records what a job runs, with what, and under which policy.
type JobStart struct {
	Command     []string `json:"command"`
	Workdir     string   `json:"workdir,omitempty"`
	UID         int      `json:"uid"`
	GID         int      `json:"gid"`
	Profile     string   `json:"profile"`
	ProfileHash string   `json:"profile_hash"` // e.g. "sha256:…" of the profile file as loaded
	Mounts      []Mount  `json:"mounts,omitempty"`
	Allowlist   []string `json:"allowlist,omitempty"`
	GPUs        []string `json:"gpus,omitempty"`
	Runtime     string   `json:"runtime,omitempty"` // e.g. "runsc", or "unrestricted"
	// Models are the inputs verified by their OMS signatures.
	Models []ModelSignature `json:"models,omitempty"`
}

// ModelSignature names a model input verified by its OMS signature: who
// signed it and the root digest of what was verified.
type ModelSignature struct {
	Input      string `json:"input"`
	Path       string `json:"path"`
	Bundle     string `json:"bundle"`
	Method     string `json:"method"`
	Signer     string `json:"signer"`
	RootDigest string `json:"root_digest"`
}

// AuditType implements Payload.
func (JobStart) AuditType() Type { return TypeJobStart }

// SecretIssued records a credential handed to a job: where it came from and
// how to find and revoke it, never its value.
type SecretIssued struct {
	Path       string `json:"path"`               // Vault path read or role used
	Accessor   string `json:"accessor,omitempty"` // token accessor
	LeaseID    string `json:"lease_id,omitempty"`
	TTLSeconds int64  `json:"ttl_seconds"`
	Renewable  bool   `json:"renewable,omitempty"`
	Delivery   string `json:"delivery,omitempty"` // e.g. file path inside the sandbox
}

// AuditType implements Payload.
func (SecretIssued) AuditType() Type { return TypeSecretIssued }

// Violation records a broken rule; it is the violation package's event as is.
type Violation struct {
	violation.Violation
}

// AuditType implements Payload.
func (Violation) AuditType() Type { return TypeViolation }

// Kill records a job being stopped before it ended by itself.
type Kill struct {
	Signal    string         `json:"signal"`       // e.g. "SIGTERM", "SIGKILL"
	Reason    string         `json:"reason"`       // "violation", "user", "wall_time", "daemon_stop", ...
	By        string         `json:"by,omitempty"` // who asked, for a user kill
	Violation violation.Kind `json:"violation,omitempty"`
}

// AuditType implements Payload.
func (Kill) AuditType() Type { return TypeKill }

// Exit records how a job ended, with its usage record as the usage package
// encodes it.
type Exit struct {
	Code            int             `json:"code"`
	Signal          string          `json:"signal,omitempty"`
	Outcome         string          `json:"outcome"` // "success", "failed", "violation", "killed", ...
	DurationSeconds float64         `json:"duration_seconds"`
	Usage           json.RawMessage `json:"usage,omitempty"`
}

// AuditType implements Payload.
func (Exit) AuditType() Type { return TypeExit }

// GC records what gc removed for a job whose launcher is gone.
type GC struct {
	Removed []jobstate.Resource `json:"removed,omitempty"`
	Errors  []string            `json:"errors,omitempty"`
}

// AuditType implements Payload.
func (GC) AuditType() Type { return TypeGC }

// Recovered describes a partial line found at the end of the log.
type Recovered struct {
	DiscardedOffset int64  `json:"discarded_offset"`
	DiscardedBytes  int64  `json:"discarded_bytes"`
	DiscardedSHA256 string `json:"discarded_sha256"`
}

// AuditType implements Payload.
func (Recovered) AuditType() Type { return TypeRecovered }

// Custom is any other event (daemon_start, policy_refused, ...). Type must be
// lower-case letters, digits and underscores.
type Custom struct {
	Type   Type
	Fields map[string]any
}

// AuditType implements Payload.
func (c Custom) AuditType() Type { return c.Type }

// MarshalJSON encodes the fields only.
func (c Custom) MarshalJSON() ([]byte, error) { return json.Marshal(c.Fields) }

// ErrSecretField means a payload carried something that looks like a secret
// value. The event is not written.
var ErrSecretField = errors.New("audit payload carries a secret")

// SecretFieldError names the member that was refused.
type SecretFieldError struct {
	Path   string // JSON path of the member, e.g. "data.env.VAULT_TOKEN"
	Reason string
}

func (e *SecretFieldError) Error() string {
	return fmt.Sprintf("audit payload member %s refused: %s (record accessors, paths and TTLs, never values)", e.Path, e.Reason)
}

// Unwrap makes errors.Is(err, ErrSecretField) true.
func (e *SecretFieldError) Unwrap() error { return ErrSecretField }

// secretWords are the parts of a member name that mark a credential value.
var secretWords = []string{"password", "passwd", "passphrase", "token", "secret", "privatekey", "apikey", "credential", "cookie", "bearer", "authorization", "signingkey", "hmackey"}

// safeSuffixes are the endings that make such a name metadata, not a value
// (token_accessor, token_ttl, secret_path).
var safeSuffixes = []string{"accessor", "ttl", "ttlseconds", "path", "policies", "type", "count", "role", "mount", "version", "renewable", "expiry", "expires", "leaseid"}

// vaultTokenPrefixes are the prefixes of Vault service, batch and recovery
// tokens (and the legacy "s." service token).
var vaultTokenPrefixes = []string{"hvs.", "hvb.", "hvr.", "s.", "b.", "r."}

func secretName(name string) bool {
	n := strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r == '_' || r == '-' || r == '.' || r == ' ':
			return -1
		}
		return r
	}, name)
	hit := false
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	for _, s := range safeSuffixes {
		if strings.HasSuffix(n, s) {
			return false
		}
	}
	return true
}

func looksLikeVaultToken(s string) bool {
	for _, p := range vaultTokenPrefixes {
		if strings.HasPrefix(s, p) && len(s) >= len(p)+20 && !strings.ContainsAny(s[len(p):], " /:") {
			return true
		}
	}
	return false
}

// Redacted replaces a secret-looking value in a payload.
const Redacted = "[REDACTED]"

// scrubSecrets walks decoded JSON: a member named like a credential is an
// error (a payload type must never carry one); a string that looks like a
// Vault token, or assigns a credential-named key (VAULT_TOKEN=…,
// --password=…, as in a command line or environment), has its value
// replaced by Redacted. It reports whether anything was replaced.
func scrubSecrets(path string, v any) (any, bool, error) {
	switch x := v.(type) {
	case map[string]any:
		changed := false
		for k, e := range x {
			p := path + "." + k
			if secretName(k) {
				return nil, false, &SecretFieldError{Path: p, Reason: "its name marks a credential"}
			}
			ne, c, err := scrubSecrets(p, e)
			if err != nil {
				return nil, false, err
			}
			if c {
				x[k], changed = ne, true
			}
		}
		return x, changed, nil
	case []any:
		changed := false
		for i, e := range x {
			ne, c, err := scrubSecrets(fmt.Sprintf("%s[%d]", path, i), e)
			if err != nil {
				return nil, false, err
			}
			if c {
				x[i], changed = ne, true
			}
		}
		return x, changed, nil
	case string:
		if looksLikeVaultToken(x) {
			return Redacted, true, nil
		}
		if k, val, ok := strings.Cut(x, "="); ok && k != "" && val != "" && !strings.ContainsAny(k, " /") && secretName(strings.TrimLeft(k, "-")) {
			return k + "=" + Redacted, true, nil
		}
	}
	return v, false, nil
}

func validType(t Type) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// encodeData marshals a payload and applies the secret guard.
func encodeData(p Payload) (json.RawMessage, error) {
	if p == nil {
		return nil, nil
	}
	if !validType(p.AuditType()) {
		return nil, fmt.Errorf("audit event type %q: want 1-64 of [a-z0-9_]", p.AuditType())
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("audit %s payload: %w", p.AuditType(), err)
	}
	if string(b) == "null" {
		return nil, nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("audit %s payload encodes as %.20s: want a JSON object", p.AuditType(), b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // re-encoding keeps numbers exact
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("audit %s payload: %w", p.AuditType(), err)
	}
	v, changed, err := scrubSecrets("data", v)
	if err != nil {
		return nil, err
	}
	if changed {
		if b, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("audit %s payload: %w", p.AuditType(), err)
		}
	}
	return b, nil
}

// Event is one decoded line.
type Event struct {
	Seq  uint64          `json:"seq"`
	Time time.Time       `json:"time"`
	Type Type            `json:"type"`
	Job  string          `json:"job,omitempty"`
	User string          `json:"user,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	Prev string          `json:"prev"`
	Hash string          `json:"hash"`
}

// Genesis is the prev of the first line.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

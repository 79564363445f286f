package launcher

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/signing"
)

// With audit.checkpoints set, every log the launcher opens checkpoints its
// head, signed with the host key, into the checkpoints file; verify then
// catches a truncated tail.
func TestOpenAuditCheckpoints(t *testing.T) {
	dir := t.TempDir()
	priv, pubPath := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	pub, err := signing.GenerateKeyFiles(priv, pubPath)
	if err != nil {
		t.Fatal(err)
	}
	h := &configs.Host{Audit: configs.HostAudit{Path: filepath.Join(dir, "audit.jsonl"), Checkpoints: filepath.Join(dir, "remote", "cp.jsonl"), CheckpointEvery: 2},
		Integrity: configs.HostIntegrity{SigningKey: priv}}
	l := &Launcher{Host: h}
	ctx := context.Background()
	for range 2 { // two writers, one after the other, as two jobs
		lg, err := l.OpenAudit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := lg.Append(ctx, "j1", "u", audit.Custom{Type: "x", Fields: map[string]any{"a": 1}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := lg.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cps, err := audit.ReadCheckpointFile(h.Audit.Checkpoints)
	if err != nil {
		t.Fatal(err)
	}
	// every 2nd append and at close: seq 2, 3 (close), 5, 6 (close)
	if len(cps) != 4 || cps[len(cps)-1].Seq != 6 {
		t.Fatalf("checkpoints %+v, want 4 ending at seq 6", cps)
	}
	opts := audit.VerifyOptions{Checkpoints: cps, Verifier: audit.Ed25519Verifier{Key: pub}, RequireCheckpoint: true}
	verify := func() error {
		f, err := os.Open(h.Audit.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = audit.VerifyLog(ctx, f, opts)
		return err
	}
	if err := verify(); err != nil {
		t.Fatalf("untouched log: %v", err)
	}
	b, _ := os.ReadFile(h.Audit.Path)
	lines := strings.SplitAfter(string(b), "\n")
	os.WriteFile(h.Audit.Path, []byte(strings.Join(lines[:4], "")), 0o600)
	if err := verify(); err == nil {
		t.Error("a log truncated to 4 of 6 lines verifies against its checkpoints")
	}

	// A key that cannot be loaded: no log (and so no job).
	h.Integrity.SigningKey = filepath.Join(dir, "missing")
	if _, err := l.OpenAudit(ctx); err == nil || !strings.Contains(err.Error(), "audit.checkpoints: host integrity.signing_key") {
		t.Errorf("OpenAudit with a missing key: %v", err)
	}
	// No checkpoints configured: a plain log.
	h.Audit.Checkpoints = ""
	if o, err := l.AuditOptions(ctx); err != nil || o.Checkpointer != nil {
		t.Errorf("AuditOptions without checkpoints: %+v, %v", o, err)
	}
}

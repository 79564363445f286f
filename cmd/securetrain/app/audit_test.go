package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/audit"
)

func runAudit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	a := &cli.App{Name: "securetrain", Commands: []*cli.Command{AuditCommand}, Writer: &out, ErrWriter: &out}
	err := a.Run(append([]string{"securetrain", "audit"}, args...))
	return out.String(), err
}

func TestAuditVerifyAndShow(t *testing.T) {
	dir := t.TempDir()
	logPath, cpPath, keyPath := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "cp.jsonl"), filepath.Join(dir, "key.pem")
	pub, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	cp := &audit.SignedCheckpointer{LogID: "n1", Signer: audit.Ed25519Signer{Key: priv}, Sinks: []audit.CheckpointSink{audit.FileSink{Path: cpPath}}}
	l, err := audit.Open(logPath, audit.Options{Checkpointer: cp})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l.Append(ctx, "j1", "alice", audit.JobStart{Command: []string{"python", "train.py"}, Profile: "default"})
	l.Append(ctx, "j2", "bob", audit.JobStart{Command: []string{"python", "x.py"}, Profile: "default"})
	l.Append(ctx, "j1", "alice", audit.Exit{Code: 0, Outcome: "success"})
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}

	out, err := runAudit(t, "verify", "--checkpoints", cpPath, "--key", keyPath, logPath)
	if err != nil || !strings.Contains(out, "OK: 3 lines") || !strings.Contains(out, "1 checkpoint(s) match, the last at seq 3") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	out, err = runAudit(t, "show", "--job", "j1", logPath)
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, "bob") {
		t.Fatalf("show --job j1: %v\n%s", err, out)
	}

	// Drop the last line: the chain alone is fine, the checkpoint is not.
	b, _ := os.ReadFile(logPath)
	lines := strings.SplitAfter(string(b), "\n")
	os.WriteFile(logPath, []byte(lines[0]+lines[1]), 0o600)
	if out, err := runAudit(t, "verify", logPath); err != nil {
		t.Fatalf("chain-only verify of a truncated log: %v\n%s", err, out)
	}
	out, err = runAudit(t, "verify", "--checkpoints", cpPath, "--key", keyPath, logPath)
	if err == nil || !strings.Contains(out, "line 3: truncated") {
		t.Fatalf("truncated log verified: %v\n%s", err, out)
	}
	if _, err := runAudit(t, "verify", "--key", keyPath, logPath); err == nil {
		t.Fatal("--key without --checkpoints accepted")
	}
}

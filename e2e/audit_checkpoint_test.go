package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/signing"
)

// TestAuditCheckpoints: with audit.checkpoints and a signing key in the host
// config, each job's launcher checkpoints the chain head, signed, into the
// checkpoints file; `audit verify --checkpoints --key` accepts the log after
// two jobs, and catches it when its tail is cut off (which the chain alone
// cannot see).
func TestAuditCheckpoints(t *testing.T) {
	e := setup(t)
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "audit.key"), filepath.Join(dir, "audit.key.pub")
	if _, err := signing.GenerateKeyFiles(priv, pub); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	// The shared config, with its own audit log, checkpoints and key.
	var kept []string
	for _, l := range strings.Split(string(old), "\n") {
		if strings.HasPrefix(l, "audit:") || strings.HasPrefix(l, "  path:") {
			continue
		}
		kept = append(kept, l)
	}
	logPath, cps := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "remote", "checkpoints.jsonl")
	body := strings.Join(kept, "\n") + fmt.Sprintf("\naudit:\n  path: %s\n  checkpoints: %s\nintegrity:\n  signing_key: %s\n", logPath, cps, priv)
	ce := *e
	ce.config, ce.auditLog = filepath.Join(dir, "securetrain.yaml"), logPath
	if err := os.WriteFile(ce.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	proj := ce.project(t, nil)
	for i := range 2 {
		if r := ce.job(t, proj, nil, "/bin/true"); r.code != 0 {
			t.Fatalf("job %d: %s", i, r)
		}
	}
	b, err := os.ReadFile(cps)
	if err != nil {
		t.Fatalf("no checkpoints after two jobs: %v", err)
	}
	if n := strings.Count(string(b), "\n"); n < 2 {
		t.Fatalf("%d checkpoint(s) after two jobs, want one per job at least:\n%s", n, b)
	}
	v := ce.run(t, proj, nil, "audit", "verify", "--checkpoints", cps, "--key", pub, logPath)
	if v.code != 0 || !strings.Contains(v.stdout, "checkpoint(s) match") {
		t.Fatalf("audit verify of the untouched log: %s", v)
	}
	// A chain recomputed after an edit (the first job's command) is valid
	// on its own; the checkpoints catch it.
	recomputed := filepath.Join(dir, "recomputed.jsonl")
	rewriteChain(t, logPath, recomputed)
	if r := ce.run(t, proj, nil, "audit", "verify", recomputed); r.code != 0 {
		t.Fatalf("the recomputed chain alone should verify (that is why checkpoints exist): %s", r)
	}
	v = ce.run(t, proj, nil, "audit", "verify", "--checkpoints", cps, "--key", pub, recomputed)
	t.Logf("verify of the recomputed chain: %s", v)
	if v.code == 0 {
		t.Fatalf("audit verify accepted a recomputed chain: %s", v)
	}

	// Without checkpoints the chain of a truncated log is still valid.
	lb, _ := os.ReadFile(logPath)
	lines := strings.SplitAfter(strings.TrimSuffix(string(lb), "\n"), "\n")
	cut := strings.Join(lines[:len(lines)-1], "")
	if !strings.HasSuffix(cut, "\n") {
		cut += "\n"
	}
	if err := os.WriteFile(logPath, []byte(cut), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ce.run(t, proj, nil, "audit", "verify", logPath); r.code != 0 {
		t.Fatalf("the truncated log's chain alone should verify (that is why checkpoints exist): %s", r)
	}
	v = ce.run(t, proj, nil, "audit", "verify", "--checkpoints", cps, "--key", pub, logPath)
	t.Logf("verify of the truncated log: %s", v)
	if v.code == 0 {
		t.Fatalf("audit verify accepted a log whose last line was cut off: %s", v)
	}
}

// rewriteChain writes src's events, the first job_start's command changed,
// as a fresh valid chain to dst: what someone who can write the log can do.
func rewriteChain(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := audit.Open(dst, audit.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close(context.Background())
	edited := false
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		fields := map[string]any{}
		if len(ev.Data) > 0 {
			if err := json.Unmarshal(ev.Data, &fields); err != nil {
				t.Fatal(err)
			}
		}
		if ev.Type == audit.TypeJobStart && !edited {
			fields["command"], edited = []string{"/bin/something-else"}, true
		}
		if _, err := lg.Append(context.Background(), ev.Job, ev.User, audit.Custom{Type: ev.Type, Fields: fields}); err != nil {
			t.Fatal(err)
		}
	}
	if !edited {
		t.Fatal("no job_start in the log to edit")
	}
}

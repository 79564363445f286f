package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/audit"
)

// TestRefusalFlood: a caller no policy names sends refused runs with a
// 100 KB command as fast as it can. Each recorded refusal is bounded (the
// command cut, with its size and digest), past the burst they are counted,
// and one summary line records how many: the audit log grows by a few KiB,
// not by the commands, and no refusal goes uncounted.
func TestRefusalFlood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	al, err := audit.Open(path, audit.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close(context.Background())
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Server{Audit: al, Log: slog.New(slog.DiscardHandler), refusals: newRefusalLimiter(func() time.Time { return now })}
	big := strings.Repeat("A", 100_000)
	id := Identity{UID: 4321, Name: "mallory"}
	const n = 200
	for range n {
		req := &Request{Op: OpRun, Run: &RunArgs{Command: []string{"python", big}, Profile: strings.Repeat("p", 5000)}}
		s.refused(context.Background(), id, req, "user mallory may not run jobs through the daemon: refused by the host policy", s.Log)
	}
	s.refused(context.Background(), id, &Request{Op: OpKill}, "kill: job x: no such job", s.Log)
	s.summarizeRefusals(context.Background())
	fi, _ := os.Stat(path)
	t.Logf("%d refused 100 KB requests grew the audit log by %d bytes", n+1, fi.Size())
	if fi.Size() > 32<<10 {
		t.Errorf("audit log grew by %d bytes for %d refusals; want at most 32 KiB", fi.Size(), n+1)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != refusalBurst+1 {
		t.Fatalf("%d lines, want %d refusals and one summary", len(lines), refusalBurst+1)
	}
	var first, sum struct {
		Type string
		Data map[string]any
	}
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[len(lines)-1]), &sum)
	cmd, _ := first.Data["command"].([]any)
	if first.Type != "refused" || len(cmd) != 3 || !strings.HasPrefix(cmd[2].(string), "…[command cut: 2 arguments, 100006 bytes, sha256:") || len(first.Data["profile"].(string)) > refusalText+32 {
		t.Errorf("a recorded refusal: %s", clip(lines[0], 2048))
	}
	if sum.Type != "refused_summary" || sum.Data["count"] != float64(n+1-refusalBurst) || sum.Data["uid"] != 4321.0 {
		t.Errorf("summary %s; want %d refusals of uid 4321 counted", lines[len(lines)-1], n+1-refusalBurst)
	}
	if ops, _ := sum.Data["ops"].(map[string]any); ops["run"] != float64(n-refusalBurst) || ops["kill"] != 1.0 {
		t.Errorf("summary ops %v", sum.Data["ops"])
	}
	if f, _ := os.Open(path); audit.Verify(f) != nil {
		t.Error("the audit chain does not verify")
	}
	// The rate comes back with time; another uid has its own.
	if !s.refusals.allow(1, "bob", OpRun, "x") {
		t.Error("another uid is limited by mallory's flood")
	}
	if s.refusals.allow(id.UID, id.Name, OpRun, "x") {
		t.Error("mallory over the rate")
	}
	now = now.Add(refusalEvery)
	if !s.refusals.allow(id.UID, id.Name, OpRun, "x") {
		t.Errorf("mallory after %v", refusalEvery)
	}
}

func TestBoundedCommand(t *testing.T) {
	small := []string{"python", "train.py", "--lr", "0.1"}
	if got := boundedCommand(small); strings.Join(got, " ") != strings.Join(small, " ") {
		t.Errorf("small command changed: %q", got)
	}
	many := make([]string, 100)
	for i := range many {
		many[i] = "x"
	}
	got := boundedCommand(many)
	if len(got) != refusalArgs+1 || !strings.HasPrefix(got[refusalArgs], "…[command cut: 100 arguments, 100 bytes, sha256:") {
		t.Errorf("100 arguments: %q", got)
	}
	if c := clip("ééé", 3); c != "é…[4 bytes cut]" {
		t.Errorf("clip on a rune boundary: %q", c)
	}
}

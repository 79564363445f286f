package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/violation"
)

func TestMain(m *testing.M) {
	// Re-exec'd as a concurrent writer by TestConcurrentProcesses.
	if p := os.Getenv("AUDIT_TEST_WRITER"); p != "" {
		n, _ := strconv.Atoi(os.Getenv("AUDIT_TEST_N"))
		if err := writer(p, os.Getenv("AUDIT_TEST_ID"), n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writer(path, id string, n int) error {
	l, err := Open(path, Options{})
	if err != nil {
		return err
	}
	for i := range n {
		if _, err := l.Append(context.Background(), id, "u"+id, Custom{Type: "test", Fields: map[string]any{"i": i}}); err != nil {
			return err
		}
	}
	return l.Close(context.Background())
}

var ctx = context.Background()

func fixedNow() func() time.Time {
	t := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(time.Second); return t }
}

// sampleLog writes n events of the kinds the launcher writes and returns the
// path and the lines.
func sampleLog(t testing.TB, n int, opts Options) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if opts.Now == nil {
		opts.Now = fixedNow()
	}
	l, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	payloads := []Payload{
		JobStart{Command: []string{"python", "train.py"}, UID: 1000, GID: 1000, Profile: "default", ProfileHash: "sha256:ab", Mounts: []Mount{{Source: "/data", Dest: "/data", ReadOnly: true}}, Allowlist: []string{"pypi.org:443"}},
		SecretIssued{Path: "database/creds/train", Accessor: "acc123", LeaseID: "database/creds/train/xyz", TTLSeconds: 900},
		Violation{violation.Violation{Kind: violation.Network, Job: "j1", Proto: "tcp", Dest: "203.0.113.9", Port: 443, Action: violation.Killed}},
		Kill{Signal: "SIGKILL", Reason: "violation", Violation: violation.Network},
		Exit{Code: 137, Signal: "SIGKILL", Outcome: "violation", DurationSeconds: 12.5, Usage: json.RawMessage(`{"cpu_seconds":3.5}`)},
		GC{},
	}
	for i := range n {
		if _, err := l.Append(ctx, "j1", "alice", payloads[i%len(payloads)]); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return path, readLines(t, path)
}

func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
}

func join(lines []string) string {
	s := strings.Join(lines, "")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// rehash rewrites a line's hash after its content was changed, as an
// attacker who knows the format would.
func rehash(t *testing.T, line string, edit func(*body)) string {
	t.Helper()
	ev, err := Decode([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	b := body{Seq: ev.Seq, Time: ev.Time, Type: ev.Type, Job: ev.Job, User: ev.User, Data: ev.Data, Prev: ev.Prev}
	edit(&b)
	out, _, err := encodeLine(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// recompute rewrites the whole chain from line i on, as an attacker would
// after an edit there.
func recompute(t *testing.T, lines []string, from int) []string {
	t.Helper()
	out := append([]string(nil), lines...)
	prev := Genesis
	if from > 0 {
		ev, _ := Decode([]byte(out[from-1]))
		prev = ev.Hash
	}
	for i := from; i < len(out); i++ {
		out[i] = rehash(t, out[i], func(b *body) { b.Prev = prev; b.Seq = uint64(i + 1) })
		ev, _ := Decode([]byte(out[i]))
		prev = ev.Hash
	}
	return out
}

func TestAppendAndVerify(t *testing.T) {
	_, lines := sampleLog(t, 12, Options{})
	if len(lines) != 12 {
		t.Fatalf("got %d lines, want 12", len(lines))
	}
	sum, err := VerifyLog(ctx, strings.NewReader(join(lines)), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Lines != 12 || sum.FirstSeq != 1 || sum.LastSeq != 12 {
		t.Errorf("summary %+v", sum)
	}
	ev, err := Decode([]byte(lines[0]))
	if err != nil || ev.Type != TypeJobStart || ev.Prev != Genesis || ev.Job != "j1" || ev.User != "alice" {
		t.Errorf("first line decodes to %+v, %v", ev, err)
	}
	// The hash is over the line minus its hash member.
	want := rehash(t, lines[3], func(*body) {})
	if want != lines[3] {
		t.Errorf("line does not re-encode identically:\n%s%s", want, lines[3])
	}
	var v Violation
	ev, _ = Decode([]byte(lines[2]))
	if err := json.Unmarshal(ev.Data, &v); err != nil || v.Dest != "203.0.113.9" || v.Kind != violation.Network {
		t.Errorf("violation payload %s -> %+v %v", ev.Data, v, err)
	}
}

func TestTamperDetected(t *testing.T) {
	_, lines := sampleLog(t, 10, Options{})
	replace := func(i int, s string) []string {
		out := append([]string(nil), lines...)
		out[i] = s
		return out
	}
	del := func(i int) []string {
		return append(append([]string(nil), lines[:i]...), lines[i+1:]...)
	}
	ev4, _ := Decode([]byte(lines[4]))
	ev3, _ := Decode([]byte(lines[3]))
	cases := []struct {
		name  string
		lines []string
		line  int
		kind  ProblemKind
	}{
		{"edited user", replace(4, strings.Replace(lines[4], `"user":"alice"`, `"user":"mallory"`, 1)), 5, Edited},
		{"edited and rehashed", replace(4, rehash(t, lines[4], func(b *body) { b.User = "mallory" })), 5, Replaced},
		{"garbage line", replace(4, "hello\n"), 5, Malformed},
		{"deleted line", del(4), 5, Deleted},
		{"deleted first line", del(0), 1, BadStart},
		{"inserted copy", append(append(append([]string(nil), lines[:5]...),
			rehash(t, lines[4], func(b *body) { b.Seq = ev4.Seq + 1; b.Prev = ev4.Hash; b.User = "mallory" })), lines[5:]...), 6, Inserted},
		{"inserted raw duplicate", append(append(append([]string(nil), lines[:5]...), lines[4]), lines[5:]...), 6, Inserted},
		{"swapped", append(append(append([]string(nil), lines[:3]...), lines[4], lines[3]), lines[5:]...), 4, Reordered},
		{"edited prev", replace(4, rehash(t, lines[4], func(b *body) { b.Prev = ev3.Prev })), 5, Replaced},
		{"torn tail", replace(9, lines[9][:40]), 10, Torn},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := strings.Join(c.lines, "")
			if c.kind != Torn && !strings.HasSuffix(in, "\n") {
				in += "\n"
			}
			err := Verify(strings.NewReader(in))
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify = %v, want a *VerifyError", err)
			}
			p := ve.Problems[0]
			if p.Line != c.line || p.Kind != c.kind {
				t.Errorf("first problem %v, want line %d %s (all: %v)", p, c.line, c.kind, ve.Problems)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("line %d:", c.line)) {
				t.Errorf("message %q does not name line %d", err, c.line)
			}
		})
	}
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestCheckpointsCatchTruncationAndRewrite(t *testing.T) {
	pub, priv := newKey(t)
	store := filepath.Join(t.TempDir(), "checkpoints.jsonl")
	cp := &SignedCheckpointer{LogID: "node1", Signer: Ed25519Signer{priv}, Sinks: []CheckpointSink{FileSink{store}}}
	_, lines := sampleLog(t, 10, Options{Checkpointer: cp, CheckpointEvery: 4})
	cps, err := ReadCheckpointFile(store)
	if err != nil {
		t.Fatal(err)
	}
	// Every 4th append, and the head on Close.
	if len(cps) != 3 || cps[0].Seq != 4 || cps[1].Seq != 8 || cps[2].Seq != 10 {
		t.Fatalf("checkpoints %+v, want seq 4, 8, 10", cps)
	}
	opts := VerifyOptions{Checkpoints: cps, Verifier: Ed25519Verifier{pub}, LogID: "node1", RequireCheckpoint: true}

	sum, err := VerifyLog(ctx, strings.NewReader(join(lines)), opts)
	if err != nil || sum.Checkpoints != 3 || sum.LastCheckpointSeq != 10 {
		t.Fatalf("intact log: %+v, %v", sum, err)
	}
	check := func(name string, in []string, opts VerifyOptions, line int, kind ProblemKind) {
		t.Run(name, func(t *testing.T) {
			// Without checkpoints these pass the chain check.
			if kind == Truncated || kind == Rewritten {
				if err := Verify(strings.NewReader(join(in))); err != nil {
					t.Fatalf("chain alone: %v", err)
				}
			}
			_, err := VerifyLog(ctx, strings.NewReader(join(in)), opts)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("VerifyLog = %v, want *VerifyError", err)
			}
			if p := ve.Problems[0]; p.Line != line || p.Kind != kind {
				t.Errorf("first problem %v, want line %d %s (all %v)", p, line, kind, ve.Problems)
			}
		})
	}
	check("truncated tail", lines[:9], opts, 10, Truncated)
	check("truncated below a checkpoint", lines[:6], opts, 7, Truncated)
	edited := append([]string(nil), lines...)
	edited[5] = rehash(t, edited[5], func(b *body) { b.User = "mallory" })
	check("recomputed chain", recompute(t, edited, 5), opts, 8, Rewritten)
	// A whole new log in its place.
	check("replaced log", recompute(t, lines[2:], 0), opts, 4, Rewritten)

	_, other := newKey(t)
	forged := append([]Checkpoint(nil), cps...)
	forged[1].Sig = ed25519.Sign(other, forged[1].Message())
	check("forged checkpoint", lines, VerifyOptions{Checkpoints: forged, Verifier: Ed25519Verifier{pub}}, 0, BadCheckpoint)
	check("other log's checkpoints", lines, VerifyOptions{Checkpoints: cps, Verifier: Ed25519Verifier{pub}, LogID: "node2", RequireCheckpoint: true}, 0, NoCheckpoint)
}

func TestVaultSignatureForm(t *testing.T) {
	pub, priv := newKey(t)
	msg := []byte("m")
	sig := ed25519.Sign(priv, msg)
	v := Ed25519Verifier{pub}
	vs := "vault:v1:" + base64Std(sig)
	if err := v.Verify(ctx, msg, []byte(vs)); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(ctx, []byte("n"), []byte(vs)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong message verified: %v", err)
	}
	k, err := ParseEd25519PublicKey([]byte(base64Std(pub) + "\n"))
	if err != nil || !bytes.Equal(k, pub) {
		t.Fatalf("parse raw key: %v", err)
	}
}

func TestSecretGuard(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "a.jsonl"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	ok := []Payload{
		SecretIssued{Path: "secret/data/train", Accessor: "abc", TTLSeconds: 60},
		Custom{Type: "x", Fields: map[string]any{"token_accessor": "a", "token_ttl": 3, "secret_path": "kv/x", "token_policies": []string{"p"}}},
		JobStart{Command: []string{"python", "train.py", "--lr=3e-4", "s.py"}},
	}
	for _, p := range ok {
		if _, err := l.Append(ctx, "j", "u", p); err != nil {
			t.Errorf("%+v refused: %v", p, err)
		}
	}
	bad := map[string]Payload{
		"token":        Custom{Type: "x", Fields: map[string]any{"token": "abc"}},
		"client_token": Custom{Type: "x", Fields: map[string]any{"auth": map[string]any{"client_token": "abc"}}},
		"secret_id":    Custom{Type: "x", Fields: map[string]any{"secret_id": "abc"}},
		"Password":     Custom{Type: "x", Fields: map[string]any{"DB-Password": "abc"}},
	}
	for name, p := range bad {
		_, err := l.Append(ctx, "j", "u", p)
		var se *SecretFieldError
		if !errors.Is(err, ErrSecretField) || !errors.As(err, &se) {
			t.Errorf("%s: Append = %v, want ErrSecretField", name, err)
		}
	}
	if seq, _, _ := l.Head(); seq != uint64(len(ok)) {
		t.Errorf("head seq %d, want %d: a refused event was written", seq, len(ok))
	}
	// Values are redacted, the event is written.
	ev, err := l.Append(ctx, "j", "u", JobStart{UID: 1 << 40, Command: []string{"env", "VAULT_TOKEN=abc", "python", "--db-password=hunter2", "--lr=1"},
		Allowlist: []string{"hvs.CAESIJlU0123456789abcdefghij"}})
	if err != nil {
		t.Fatal(err)
	}
	got := string(ev.Data)
	for _, leak := range []string{"abc", "hunter2", "hvs.CAES"} {
		if strings.Contains(got, leak) {
			t.Errorf("secret %q written: %s", leak, got)
		}
	}
	for _, want := range []string{`"VAULT_TOKEN=[REDACTED]"`, `"--db-password=[REDACTED]"`, `"--lr=1"`, `"uid":1099511627776`} {
		if !strings.Contains(got, want) {
			t.Errorf("data lacks %s: %s", want, got)
		}
	}
	if b, _ := os.ReadFile(l.Path()); strings.Contains(string(b), "hunter2") {
		t.Error("secret reached the file")
	}
}

func TestRestartContinuesChain(t *testing.T) {
	path, _ := sampleLog(t, 3, Options{})
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := l.Append(ctx, "j2", "bob", GC{})
	if err != nil || ev.Seq != 4 {
		t.Fatalf("append after restart: %+v %v", ev, err)
	}
	l.Close(ctx)
	if err := Verify(strings.NewReader(join(readLines(t, path)))); err != nil {
		t.Fatal(err)
	}
}

func TestTornTailRecovered(t *testing.T) {
	path, lines := sampleLog(t, 3, Options{})
	// A crash in the middle of writing seq 4.
	frag := rehash(t, lines[2], func(b *body) { b.Seq = 4 })[:50]
	if err := os.WriteFile(path, []byte(join(lines)+frag), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Verify(strings.NewReader(join(lines) + frag)); err == nil {
		t.Fatal("torn tail verified before recovery")
	}
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := l.Append(ctx, "j", "u", GC{})
	if err != nil || ev.Seq != 5 {
		t.Fatalf("append after torn tail: %+v %v (want seq 5 after the recovered event)", ev, err)
	}
	l.Close(ctx)
	b, _ := os.ReadFile(path)
	sum, err := VerifyLog(ctx, bytes.NewReader(b), VerifyOptions{})
	if err != nil || sum.Recovered != 1 || sum.LastSeq != 5 {
		t.Fatalf("after recovery: %+v, %v\n%s", sum, err, b)
	}
	// The fragment cannot be swapped for something else afterwards.
	swapped := bytes.Replace(b, []byte(frag), []byte(strings.Repeat("x", len(frag))), 1)
	if err := Verify(bytes.NewReader(swapped)); err == nil {
		t.Fatal("changed fragment verified")
	}
}

func TestCorruptTailFailsClosed(t *testing.T) {
	path, lines := sampleLog(t, 2, Options{})
	os.WriteFile(path, []byte(join(lines)+"not an event\n"), 0o600)
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if _, err := l.Append(ctx, "j", "u", GC{}); !errors.Is(err, ErrCorruptTail) {
		t.Fatalf("Append = %v, want ErrCorruptTail", err)
	}
}

func TestReplacedFileReopened(t *testing.T) {
	path, _ := sampleLog(t, 2, Options{})
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	ev, err := l.Append(ctx, "j", "u", GC{})
	if err != nil || ev.Seq != 1 {
		t.Fatalf("append after rotation: %+v %v, want seq 1 in a new file", ev, err)
	}
	if got := readLines(t, path); len(got) != 1 {
		t.Fatalf("new file has %d lines", len(got))
	}
}

func TestConcurrentProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	const procs, n = 4, 40
	var cmds []*exec.Cmd
	for i := range procs {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = []string{"AUDIT_TEST_WRITER=" + path, "AUDIT_TEST_N=" + strconv.Itoa(n), "AUDIT_TEST_ID=" + strconv.Itoa(i)}
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	// This process writes too.
	if err := writer(path, "main", n); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	b, _ := os.ReadFile(path)
	sum, err := VerifyLog(ctx, bytes.NewReader(b), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (procs + 1) * n; sum.Lines != want || sum.LastSeq != uint64(want) {
		t.Fatalf("%d lines, last seq %d, want %d", sum.Lines, sum.LastSeq, want)
	}
	per := map[string]int{}
	for _, line := range strings.SplitAfter(strings.TrimSpace(string(b)), "\n") {
		ev, _ := Decode([]byte(line))
		per[ev.Job]++
	}
	for id, c := range per {
		if c != n {
			t.Errorf("writer %s has %d lines, want %d", id, c, n)
		}
	}
}

func base64Std(b []byte) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.Encode(b) // []byte encodes as standard base64
	return strings.Trim(strings.TrimSpace(buf.String()), `"`)
}

func benchAppend(b *testing.B, opts Options) {
	l, err := Open(filepath.Join(b.TempDir(), "audit.jsonl"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(ctx)
	p := Exit{Code: 0, Outcome: "success", DurationSeconds: 1, Usage: json.RawMessage(`{"cpu_seconds":1.5,"max_rss_bytes":123456}`)}
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.Append(ctx, "job-123", "alice", p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

func BenchmarkAppendFsync(b *testing.B)  { benchAppend(b, Options{}) }
func BenchmarkAppendNoSync(b *testing.B) { benchAppend(b, Options{NoSync: true}) }

func BenchmarkVerify(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	l, err := Open(path, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		l.Append(ctx, "job-"+strconv.Itoa(i/10), "alice", Exit{Code: 0, Outcome: "success", Usage: json.RawMessage(`{"cpu_seconds":1.5}`)})
	}
	l.Close(ctx)
	data, _ := os.ReadFile(path)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := Verify(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(10000*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

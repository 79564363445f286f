package launcher

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/internal/testenv"
)

func TestCappedLog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int64
		writes []string
		want   string
	}{
		{"under the limit", 100, []string{"hello ", "world\n"}, "hello world\n"},
		{"exactly the limit", 12, []string{"hello ", "world\n"}, "hello world\n"},
		{"cut in a write", 10, []string{"hello ", "world\n", "more\n"}, "hello worl\n[securetrain: log truncated at 10 bytes; the terminal got everything]\n"},
		{"cut between writes", 6, []string{"hello ", "world\n"}, "hello \n[securetrain: log truncated at 6 bytes; the terminal got everything]\n"},
		{"zero limit", 0, []string{"x"}, "\n[securetrain: log truncated at 0 bytes; the terminal got everything]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "job.log")
			l, err := openLog(p, os.Getuid(), os.Getgid(), tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.writes {
				// The job's output must never block on the log.
				if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
					t.Errorf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(p)
			if string(b) != tc.want {
				t.Errorf("log %q, want %q", b, tc.want)
			}
			if strings.Count(string(b), "[securetrain: log truncated") > 1 {
				t.Error("marker written twice")
			}
		})
	}
}

func TestOpenLog(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "job.log")
	l, err := openLog(p, os.Getuid(), os.Getgid(), 10)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
	if _, err := openLog(p, os.Getuid(), os.Getgid(), 10); err == nil {
		t.Error("opened an existing log")
	}
	// A planted symlink is never followed.
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o600)
	sl := filepath.Join(dir, "link.log")
	os.Symlink(target, sl)
	if _, err := openLog(sl, os.Getuid(), os.Getgid(), 10); err == nil {
		t.Error("followed a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("target changed: %q", b)
	}
	var nilLog *cappedLog
	if err := nilLog.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
}

func TestTee(t *testing.T) {
	p := filepath.Join(t.TempDir(), "job.log")
	l, err := openLog(p, os.Getuid(), os.Getgid(), 5)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	tee(&out, l, strings.NewReader("0123456789"), &wg, nil)
	wg.Wait()
	l.Close()
	if out.String() != "0123456789" {
		t.Errorf("terminal got %q", out.String())
	}
	if b, _ := os.ReadFile(p); !strings.HasPrefix(string(b), "01234\n[securetrain: log truncated") {
		t.Errorf("log %q", b)
	}
}

// stalledPipe is a pipe whose reader never reads, already full: a write to
// it blocks, as `securetrain run ... | sleep 1000` does once the pipe fills.
func stalledPipe(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	w.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		if _, err := w.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	w.SetWriteDeadline(time.Time{})
	return w
}

// TestOutputDrainCutsAStalledConsumer: the job wrote, then died; its
// consumer never reads. drain gives up at its deadline instead of waiting
// for the consumer; a consumer that reads gets everything.
func TestOutputDrainCutsAStalledConsumer(t *testing.T) {
	log, err := openLog(filepath.Join(t.TempDir(), "job.log"), os.Getuid(), os.Getgid(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	o, stdout, stderr, err := newJobOutput()
	if err != nil {
		t.Fatal(err)
	}
	job := func(out, errw *os.File) { // the job: some output, then it is gone
		out.Write([]byte("last words\n"))
		errw.Write([]byte("err\n"))
	}
	job(stdout, stderr)
	o.start(stalledPipe(t), stalledPipe(t), log)
	t0 := time.Now()
	if o.drain(300 * time.Millisecond) {
		t.Fatal("drain reported the output delivered to a consumer that never reads")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("drain took %s with a 300ms deadline", d)
	}

	var out, errb syncBuf
	o, stdout, stderr, err = newJobOutput()
	if err != nil {
		t.Fatal(err)
	}
	job(stdout, stderr)
	o.start(&out, &errb, log)
	if !o.drain(5 * time.Second) {
		t.Fatal("drain cut a consumer that reads")
	}
	if out.String() != "last words\n" || errb.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestWriteReportNeverWaitsOnAReader: --report to a FIFO with no reader, or
// to one whose reader does not read, ends within the deadline with a clear
// error; a plain file is written as the user.
func TestWriteReportNeverWaitsOnAReader(t *testing.T) {
	testenv.RequireRoot(t) // asUser changes the thread's file-system identity
	dir := t.TempDir()
	fifo := filepath.Join(dir, "report.fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 1<<20) // more than a pipe holds
	t0 := time.Now()
	err := writeReport(fifo, big, Caller{}, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "a FIFO with no reader") {
		t.Errorf("FIFO without a reader: %v", err)
	}
	// A reader that never reads.
	r, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = writeReport(fifo, big, Caller{}, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not take the report within 300ms") {
		t.Errorf("FIFO with a stalled reader: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("writeReport took %s with a 300ms deadline", d)
	}
	p := filepath.Join(dir, "report.json")
	if err := writeReport(p, []byte("{}\n"), Caller{}, time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "{}\n" {
		t.Errorf("report %q", b)
	}
}

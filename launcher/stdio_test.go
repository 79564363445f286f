package launcher

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
	tee(&out, l, strings.NewReader("0123456789"), &wg)
	wg.Wait()
	l.Close()
	if out.String() != "0123456789" {
		t.Errorf("terminal got %q", out.String())
	}
	if b, _ := os.ReadFile(p); !strings.HasPrefix(string(b), "01234\n[securetrain: log truncated") {
		t.Errorf("log %q", b)
	}
}

package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/securetrain/securetrain/configs"
)

// TestLauncherOpenLog: a viewer reads only a log they own (an admin any), never
// through a symlink, and a name that is not a job id opens nothing.
func TestLauncherOpenLog(t *testing.T) {
	dir := t.TempDir()
	l := New(&configs.Host{StateDir: filepath.Join(dir, "run"), DataDir: filepath.Join(dir, "lib")}, nil)
	if err := os.MkdirAll(l.JobData("j1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.JobData("j1"), "job.log"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.JobData("j2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(l.JobData("j1"), "job.log"), filepath.Join(l.JobData("j2"), "job.log")); err != nil {
		t.Fatal(err)
	}
	owner, other := os.Getuid(), os.Getuid()+1
	for _, tc := range []struct {
		v    Viewer
		id   string
		want error
	}{
		{Viewer{UID: owner}, "j1", nil},
		{Viewer{UID: other, Admin: true}, "j1", nil},
		{Viewer{UID: other}, "j1", ErrNoLog},
		{Viewer{UID: owner}, "j2", ErrNoLog}, // a symlink
		{Viewer{UID: owner}, "nope", ErrNoLog},
		{Viewer{UID: owner}, "../lib", ErrNotJobID},
		{Viewer{UID: owner}, "..", ErrNotJobID},
		{Viewer{UID: owner}, "", ErrNotJobID},
	} {
		f, err := l.OpenLog(tc.v, tc.id)
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("OpenLog(%+v, %q) = %v, want %v", tc.v, tc.id, err, tc.want)
		}
	}
	if _, err := l.OpenLog(Viewer{UID: other}, "j1"); err == nil || err.Error() != "no log for job j1" {
		t.Errorf("another user's log: %v, want the missing log's text", err)
	}
}

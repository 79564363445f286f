package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/internal/testenv"
)

func owner(t *testing.T, p string) (int, int) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// TestAsUser checks that paths are created and checked with the job user's
// own permissions, and that the thread is root again afterwards.
func TestAsUser(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir makes its parent 0700
	os.Chmod(dir, 0o755)
	private := filepath.Join(dir, "private") // root's, 0700
	os.Mkdir(private, 0o700)
	shared := filepath.Join(dir, "shared") // writable by everyone
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	groupDir := filepath.Join(dir, "group") // writable by group 4242 only
	os.Mkdir(groupDir, 0o770)
	os.Chown(groupDir, 0, 4242)
	os.Chmod(groupDir, 0o770)
	groupsBefore, _ := unix.Getgroups()

	const uid, gid = 65534, 65534
	err := asUser(uid, gid, nil, func() error {
		if err := os.Mkdir(filepath.Join(private, "x"), 0o755); !errors.Is(err, os.ErrPermission) {
			t.Errorf("mkdir in root's 0700 dir as the user: %v, want permission denied", err)
		}
		if err := os.Mkdir(filepath.Join(groupDir, "x"), 0o755); !errors.Is(err, os.ErrPermission) {
			t.Errorf("mkdir in a group dir without the group: %v, want permission denied", err)
		}
		return os.Mkdir(filepath.Join(shared, "out"), 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
	if u, g := owner(t, filepath.Join(shared, "out")); u != uid || g != gid {
		t.Errorf("created as %d:%d, want %d:%d", u, g, uid, gid)
	}
	// Supplementary groups apply.
	if err := asUser(uid, gid, []int{4242}, func() error {
		return os.Mkdir(filepath.Join(groupDir, "y"), 0o755)
	}); err != nil {
		t.Errorf("mkdir with the supplementary group: %v", err)
	}
	// Root again on this thread (and every other).
	for range 4 {
		p := filepath.Join(private, "after")
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatalf("root after asUser: %v", err)
		}
		if u, g := owner(t, p); u != 0 || g != 0 {
			t.Errorf("created as %d:%d after asUser, want 0:0", u, g)
		}
		os.Remove(p)
	}
	if g, _ := unix.Getgroups(); !slices.Equal(g, groupsBefore) {
		t.Errorf("groups %v after asUser, want %v", g, groupsBefore)
	}
}

package pin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIgnoreAndNoSymlinks: ignored paths (and their subtrees) are neither
// verified nor unpinned, but one that appears after verification is a
// change; NoSymlinks refuses a symlink.
func TestIgnoreAndNoSymlinks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeTree(t, dir, sample)
	p := pinDir(t, dir)
	writeTree(t, dir, map[string]string{".git/HEAD": "ref\n", "model.sig": "{}"})
	p.Ignore = []string{".git", "model.sig", "notes.md"}
	res, err := New(Options{}).Verify(ctx, p)
	if err != nil {
		t.Fatalf("ignored files must not count as unpinned: %v", err)
	}
	if got := res.Snapshot.Pins[0].Ignored; got[".git"] != "dir" || got["model.sig"] != "file" || len(got) != 2 {
		t.Fatalf("ignored present = %v", got)
	}
	writeTree(t, dir, map[string]string{".git/ORIG_HEAD": "x"}) // inside an ignored dir seen at verification
	if err := Recheck(ctx, res.Snapshot); err != nil {
		t.Fatalf("a change inside a hidden ignored directory: %v", err)
	}
	writeTree(t, dir, map[string]string{"notes.md": "appeared"})
	err = Recheck(ctx, res.Snapshot)
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "notes.md (added (ignored path))") {
		t.Fatalf("an ignored path that appears after verification: %v", err)
	}
	os.Remove(filepath.Join(dir, "notes.md"))
	p.NoSymlinks = true
	os.Symlink("README", filepath.Join(dir, "link"))
	if _, err := New(Options{}).Verify(ctx, p); !errors.Is(err, ErrSymlink) {
		t.Fatalf("symlink with NoSymlinks: %v", err)
	}
}

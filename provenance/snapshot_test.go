//go:build linux

package provenance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The snapshot is taken before the job starts and is what the job runs: a
// change on the host afterwards reaches neither the copy nor the recorded
// digest, and the end-of-run recheck names it.
func TestSnapshotCodeIsTheStartState(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	write(t, filepath.Join(f.code, "train.py"), "print('evil')\n") // tampered before the start
	write(t, filepath.Join(f.code, ".aws/credentials"), "secret")
	write(t, filepath.Join(f.code, "outputs/old.pt"), "ckpt")
	os.Chmod(filepath.Join(f.code, "lib/util.py"), 0o750)
	os.Symlink("lib/util.py", filepath.Join(f.code, "link.py"))
	before, err := CodeStateOf(ctx, f.code)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "code")
	snap, err := SnapshotCode(ctx, f.code, f.code, to, SnapshotOptions{Exclude: []string{".aws", "outputs"}, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// The tree digest covers exactly the copy: the same as the host's
	// tree without the excluded paths.
	if snap.State.Files != before.Files-2 || !snap.State.Dirty || snap.State.GitCommit != before.GitCommit {
		t.Fatalf("snapshot state %+v, host %+v", snap.State, before)
	}
	if exists(filepath.Join(to, ".aws")) || exists(filepath.Join(to, "outputs")) || exists(filepath.Join(to, ".git")) {
		t.Fatal("excluded paths and .git must not be copied")
	}
	if l, err := os.Readlink(filepath.Join(to, "link.py")); err != nil || l != "lib/util.py" {
		t.Fatalf("symlink copied as %q %v", l, err)
	}
	fi, err := os.Stat(filepath.Join(to, "lib/util.py"))
	hi, _ := os.Stat(filepath.Join(f.code, "lib/util.py"))
	if err != nil || fi.Mode() != hi.Mode() || !fi.ModTime().Equal(hi.ModTime()) {
		t.Fatalf("mode and mtime must be kept: %v %v / %v", fi, err, hi)
	}
	copied, err := CodeStateOf(ctx, to)
	if err != nil || copied.TreeSHA256 != snap.State.TreeSHA256 {
		t.Fatalf("the copy's own digest %s differs from the recorded %s (%v)", copied.TreeSHA256, snap.State.TreeSHA256, err)
	}

	// The insider restores the clean file and adds one while the job runs.
	if ch, err := snap.Recheck(ctx, f.code); err != nil || len(ch) != 0 {
		t.Fatalf("unchanged host tree: %v %v", ch, err)
	}
	if exists(f.marker) {
		t.Fatal("the snapshot ran the repository's hooks")
	}
	git(t, f.code, "checkout", "--", "train.py")
	os.Remove(f.marker) // git ran its hook; the recheck must not
	write(t, filepath.Join(f.code, "helper.py"), "x\n")
	write(t, filepath.Join(f.code, "outputs/new.pt"), "ckpt") // outputs are not code
	if b, _ := os.ReadFile(filepath.Join(to, "train.py")); string(b) != "print('evil')\n" {
		t.Fatalf("the copy followed the host: %q", b)
	}
	ch, err := snap.Recheck(ctx, f.code)
	if err != nil || strings.Join(ch, ",") != "A helper.py,M train.py" {
		t.Fatalf("recheck = %v %v", ch, err)
	}

	// Bounded: a tree over the limit is refused, naming the bound.
	write(t, filepath.Join(f.code, "big.bin"), strings.Repeat("x", 4096))
	_, err = SnapshotCode(ctx, f.code, f.code, filepath.Join(t.TempDir(), "c"), SnapshotOptions{MaxBytes: 1024})
	var tl *TooLargeError
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), "integrity.code_snapshot_max") {
		t.Fatalf("want a TooLargeError, got %v", err)
	}
	if exists(f.marker) {
		t.Fatal("the snapshot ran the repository's hooks")
	}
}

// codeTree writes n files of size bytes (random content) in directories of
// 100, like a source tree.
func codeTree(b *testing.B, root string, n, size int) {
	buf := make([]byte, size)
	for i := range n {
		p := filepath.Join(root, fmt.Sprintf("pkg%03d/mod%05d.py", i/100, i))
		if i%100 == 0 {
			os.MkdirAll(filepath.Dir(p), 0o755)
		}
		rand.Read(buf)
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSnapshot(b *testing.B, build func(root string)) {
	src := b.TempDir()
	build(src)
	dst := b.TempDir()
	ctx := context.Background()
	b.Run("digest-only", func(b *testing.B) {
		for b.Loop() {
			if _, err := CodeStateOf(ctx, src); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("copy+digest", func(b *testing.B) {
		i := 0
		for b.Loop() {
			to := filepath.Join(dst, fmt.Sprint(i))
			i++
			s, err := SnapshotCode(ctx, src, src, to, SnapshotOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(s.Bytes)
			b.StopTimer()
			os.RemoveAll(to)
			b.StartTimer()
		}
	})
}

// BenchmarkSnapshotCode10k measures the code snapshot on a 10k-file
// repository of 4 KiB files (40 MiB), and on a realistic mix: 10k source
// files of 4 KiB, 200 of 64 KiB (notebooks, configs) and 5 of 16 MiB
// (small checkpoints and data kept in the repository).
func BenchmarkSnapshotCode10k(b *testing.B) {
	b.Run("10k-x-4KiB", func(b *testing.B) {
		benchSnapshot(b, func(root string) { codeTree(b, root, 10000, 4096) })
	})
	b.Run("mix", func(b *testing.B) {
		benchSnapshot(b, func(root string) {
			codeTree(b, root, 10000, 4096)
			codeTree(b, filepath.Join(root, "notebooks"), 200, 64<<10)
			codeTree(b, filepath.Join(root, "assets"), 5, 16<<20)
		})
	})
}

//go:build linux

package pin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/testenv"
)

func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var sample = map[string]string{
	"train/a.csv":     "1,2,3\n",
	"train/b.csv":     "4,5,6\n",
	"val/c.csv":       "7,8,9\n",
	"README":          "dataset\n",
	"deep/x/y/z.bin":  strings.Repeat("\x00\x01", 5000),
	"name with space": "ok\n",
}

func TestManifestMatchesSha256sum(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	es, err := Manifest(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(sample) {
		t.Fatalf("got %d entries, want %d", len(es), len(sample))
	}
	var buf bytes.Buffer
	if err := WriteManifest(&buf, es); err != nil {
		t.Fatal(err)
	}
	// The real sha256sum must accept our manifest.
	sum := testenv.LookPath(t, "sha256sum")
	cmd := exec.Command(sum, "--check", "--strict", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c rejected our manifest: %v\n%s\n%s", err, out, buf.String())
	}
	back, err := ParseManifest(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if ManifestDigest(back) != ManifestDigest(es) {
		t.Fatal("manifest does not round-trip")
	}
}

func TestParseManifestRefuses(t *testing.T) {
	d := strings.Repeat("a", 64)
	for name, in := range map[string]string{
		"absolute":  d + "  /etc/passwd\n",
		"dotdot":    d + "  a/../../x\n",
		"escape":    d + "  ../x\n",
		"duplicate": d + "  x\n" + d + "  x\n",
		"short":     "abc  x\n",
		"nonhex":    strings.Repeat("z", 64) + "  x\n",
		"escaped":   "\\" + d + "  a\\nb\n",
	} {
		if _, err := ParseManifest(strings.NewReader(in)); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: got %v, want ErrBadManifest", name, err)
		}
	}
	es, err := ParseManifest(strings.NewReader(d + " *./bin/x\n"))
	if err != nil || len(es) != 1 || es[0].Path != "bin/x" {
		t.Fatalf("binary-mode line: %v %v", es, err)
	}
}

func pinDir(t *testing.T, dir string) Pin {
	t.Helper()
	es, err := Manifest(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return Pin{Path: dir, Dir: true, Manifest: es}
}

func TestModifiedFileRefused(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	p := pinDir(t, dir)
	// Same size, different content.
	writeTree(t, dir, map[string]string{"train/b.csv": "4,5,7\n"})
	_, err := New(Options{}).Verify(context.Background(), p)
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("got %v, want *MismatchError", err)
	}
	if me.Path != filepath.Join(dir, "train/b.csv") || me.Want == me.Got {
		t.Fatalf("mismatch names %s want %s got %s", me.Path, me.Want, me.Got)
	}
	msg := err.Error()
	for _, s := range []string{"train/b.csv", me.Want.String(), me.Got.String()} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not name %s", msg, s)
		}
	}
}

func TestSingleFilePin(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"model.pt": "weights"})
	f := filepath.Join(dir, "model.pt")
	want, _ := ParseDigest("sha256:" + "2d5b6ad7c2bdf1c2ae4a2c8f52cf6b55d66bb4afb9cfbd79c98a2a2bd6d5c38f")
	_, err := New(Options{}).Verify(context.Background(), Pin{Path: f, Digest: want})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong digest accepted: %v", err)
	}
	es, _ := Manifest(context.Background(), dir)
	r, err := New(Options{}).Verify(context.Background(), Pin{Path: f, Digest: es[0].Digest})
	if err != nil || r.Stats.Files != 1 {
		t.Fatalf("good digest refused: %v %+v", err, r.Stats)
	}
	if err := Recheck(context.Background(), r.Snapshot); err != nil {
		t.Fatal(err)
	}
}

func TestUnpinnedAndMissing(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	p := pinDir(t, dir)
	writeTree(t, dir, map[string]string{"train/extra.csv": "x"})
	os.Remove(filepath.Join(dir, "README"))
	_, err := New(Options{}).Verify(context.Background(), p)
	if !errors.Is(err, ErrUnpinned) || !errors.Is(err, ErrMissing) {
		t.Fatalf("got %v, want unpinned and missing", err)
	}
	if !strings.Contains(err.Error(), "extra.csv") || !strings.Contains(err.Error(), "README") {
		t.Fatalf("error does not name the files: %v", err)
	}
}

func TestCacheUsedOnRerun(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	p := pinDir(t, dir)
	cdir := filepath.Join(t.TempDir(), "cache")
	c, err := OpenCache(cdir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Cache: c}).Verify(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stats.Hashed != len(sample) || r.Stats.Cached != 0 {
		t.Fatalf("first run: %+v", r.Stats)
	}
	// A new process: reopen the cache from disk.
	c2, err := OpenCache(cdir)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Len() != len(sample) {
		t.Fatalf("cache holds %d entries, want %d", c2.Len(), len(sample))
	}
	r, err = New(Options{Cache: c2}).Verify(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stats.Cached != len(sample) || r.Stats.Hashed != 0 || r.Stats.HashedBytes != 0 {
		t.Fatalf("re-run did not use the cache: %+v", r.Stats)
	}
	// Change a file and put its mtime back: ctime still moves, so the
	// cache misses and the change is caught.
	f := filepath.Join(dir, "val/c.csv")
	st, _ := os.Stat(f)
	time.Sleep(10 * time.Millisecond) // let ctime differ at coarse timestamp granularity
	writeTree(t, dir, map[string]string{"val/c.csv": "7,8,0\n"})
	os.Chtimes(f, st.ModTime(), st.ModTime())
	r, err = New(Options{Cache: c2}).Verify(context.Background(), p)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("changed file with restored mtime passed: %v %+v", err, r.Stats)
	}
	if r.Stats.Hashed != 1 || r.Stats.Cached != len(sample)-1 {
		t.Fatalf("stats after change: %+v", r.Stats)
	}
}

func TestCacheRefusesUntrusted(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	if _, err := OpenCache(open); !errors.Is(err, ErrBadCache) {
		t.Errorf("world-writable cache dir accepted: %v", err)
	}
	good := filepath.Join(base, "good")
	if _, err := OpenCache(good); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(good, cacheFile), []byte(cacheHeader+"\n"), 0o600)
	os.Chmod(filepath.Join(good, cacheFile), 0o666)
	if _, err := OpenCache(good); !errors.Is(err, ErrBadCache) {
		t.Errorf("world-writable cache file accepted: %v", err)
	}
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	if _, err := OpenCache(link); !errors.Is(err, ErrBadCache) {
		t.Errorf("symlinked cache dir accepted: %v", err)
	}
	wparent := filepath.Join(base, "wparent")
	os.Mkdir(wparent, 0o777)
	os.Chmod(wparent, 0o777)
	if _, err := OpenCache(filepath.Join(wparent, "c")); !errors.Is(err, ErrBadCache) {
		t.Errorf("cache under a world-writable parent accepted: %v", err)
	}
}

func TestCacheRefusesForeignOwner(t *testing.T) {
	testenv.RequireRoot(t)
	d := filepath.Join(t.TempDir(), "c")
	os.Mkdir(d, 0o700)
	if err := os.Chown(d, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCache(d); !errors.Is(err, ErrBadCache) {
		t.Fatalf("cache dir owned by nobody accepted: %v", err)
	}
}

func TestSymlinks(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	// A symlink inside the directory is followed.
	os.Symlink("train/a.csv", filepath.Join(dir, "alias.csv"))
	es, err := Manifest(context.Background(), dir)
	if err != nil {
		t.Fatalf("in-tree symlink refused: %v", err)
	}
	if len(es) != len(sample)+1 {
		t.Fatalf("got %d entries", len(es))
	}
	for _, target := range []string{"/etc/passwd", "../../../../../../etc/passwd", "train/../../outside"} {
		os.Remove(filepath.Join(dir, "evil"))
		os.Symlink(target, filepath.Join(dir, "evil"))
		if _, err := Manifest(context.Background(), dir); !errors.Is(err, ErrEscapes) && !errors.Is(err, ErrMissing) {
			t.Errorf("symlink to %s: got %v, want ErrEscapes", target, err)
		}
	}
}

func TestFIFORefusedWithoutHanging(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Manifest(context.Background(), dir); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("FIFO: got %v, want ErrNotRegular", err)
	}
	// A symlink to a FIFO inside the tree: refused after an O_PATH open that
	// cannot block.
	os.Remove(filepath.Join(dir, "fifo"))
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	syscall.Mkfifo(filepath.Join(dir, "sub", "fifo"), 0o644)
	os.Symlink("sub/fifo", filepath.Join(dir, "tofifo"))
	os.Remove(filepath.Join(dir, "sub", "fifo"))
	syscall.Mkfifo(filepath.Join(dir, "sub", "fifo"), 0o644)
	if _, err := Manifest(context.Background(), dir); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("FIFO via symlink: got %v, want ErrNotRegular", err)
	}
}

func TestRecheckCatchesSwap(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, sample)
	p := pinDir(t, dir)
	r, err := New(Options{}).Verify(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if err := Recheck(context.Background(), r.Snapshot); err != nil {
		t.Fatalf("unchanged inputs: %v", err)
	}
	// Swap: a new file renamed over an input mid-run.
	tmp := filepath.Join(dir, "train", ".new")
	os.WriteFile(tmp, []byte("4,5,6\n"), 0o644)
	os.Rename(tmp, filepath.Join(dir, "train/b.csv"))
	// In-place rewrite of another, and one added file.
	time.Sleep(10 * time.Millisecond)
	writeTree(t, dir, map[string]string{"README": "datasex\n", "val/new.csv": "x"})
	err = Recheck(context.Background(), r.Snapshot)
	var ce *ChangedError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want *ChangedError", err)
	}
	want := map[string]string{
		filepath.Join(dir, "train/b.csv"): "replaced",
		filepath.Join(dir, "README"):      "modified",
		filepath.Join(dir, "val/new.csv"): "added",
	}
	if len(ce.Changes) != len(want) {
		t.Fatalf("changes %+v", ce.Changes)
	}
	for _, c := range ce.Changes {
		if want[c.Path] != c.What {
			t.Errorf("change %+v, want %s", c, want[c.Path])
		}
	}
	if v := ce.Violation("job1"); v.Kind != "input" || !v.Kind.IsPolicy() {
		t.Errorf("violation %+v", v)
	}
}

func TestRecheckBindMount(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	dir, mnt := filepath.Join(base, "data"), filepath.Join(base, "mnt")
	writeTree(t, dir, sample)
	os.Mkdir(mnt, 0o755)
	r, err := New(Options{}).Verify(context.Background(), pinDir(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	bind := func() {
		if err := syscall.Mount(dir, mnt, "", syscall.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	unbind := func() { syscall.Unmount(mnt, syscall.MNT_DETACH) }
	bind()
	t.Cleanup(unbind)
	if err := Recheck(context.Background(), r.Snapshot.Rebase(dir, mnt)); err != nil {
		t.Fatalf("bind mount of the verified dir: %v", err)
	}
	unbind()
	// The user swaps the directory after verification, before the mount.
	os.Rename(dir, dir+".orig")
	writeTree(t, dir, sample)
	bind()
	if err := Recheck(context.Background(), r.Snapshot.Rebase(dir, mnt)); !errors.Is(err, ErrChanged) {
		t.Fatalf("swapped directory passed the recheck: %v", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(strings.Repeat("a", 64) + "  x\n"))
	f.Add([]byte(strings.Repeat("0", 64) + " *./a/b\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseManifest(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What parses writes back and parses to the same entries.
		var buf bytes.Buffer
		if err := WriteManifest(&buf, es); err != nil {
			t.Fatalf("parsed entries do not write: %v", err)
		}
		es2, err := ParseManifest(&buf)
		if err != nil || len(es2) != len(es) || ManifestDigest(es2) != ManifestDigest(es) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

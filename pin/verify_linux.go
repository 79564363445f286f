package pin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Options configure a Verifier. The zero value works: GOMAXPROCS workers, no
// cache, a discarding logger.
type Options struct {
	Workers int          // parallel hashing workers; 0 means GOMAXPROCS
	Cache   *Cache       // optional root-owned verification cache
	Logger  *slog.Logger // optional
}

// Stats says what one call cost. Files = Hashed + Cached.
type Stats struct {
	Files       int   `json:"files"`
	Hashed      int   `json:"hashed"`       // files read and hashed
	Cached      int   `json:"cached"`       // files answered from the cache (one stat, no read)
	Bytes       int64 `json:"bytes"`        // size of all files
	HashedBytes int64 `json:"hashed_bytes"` // bytes actually read
}

func (s *Stats) add(o Stats) {
	s.Files += o.Files
	s.Hashed += o.Hashed
	s.Cached += o.Cached
	s.Bytes += o.Bytes
	s.HashedBytes += o.HashedBytes
}

// Pin is one pinned input: a single file with its Digest, or a directory
// with its Manifest (set Dir).
type Pin struct {
	Path     string  // absolute path of the file or directory
	Dir      bool    // Path is a directory pinned by Manifest
	Digest   Digest  // when !Dir
	Manifest []Entry // when Dir
	// Ignore lists paths relative to a Dir pin (a file, or a directory
	// with its subtree) that are neither verified nor reported as
	// unpinned: an OMS signature's ignore_paths. The launcher hides them
	// from the job.
	Ignore []string
	// NoSymlinks refuses a symlink anywhere in a Dir pin (an OMS signature
	// made with allow_symlinks: false) instead of following it beneath
	// the directory.
	NoSymlinks bool
}

// Result of a verification: the cost and the stat snapshot of exactly what
// was verified, for Recheck at the end of the run.
type Result struct {
	Stats    Stats
	Snapshot *Snapshot
}

// FileState is what Recheck compares.
type FileState struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	Ctime int64  `json:"ctime_ns"`
}

func stateOf(st *unix.Stat_t) FileState {
	return FileState{
		Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
	}
}

// SnapPin is the snapshot of one pin; Files is keyed by path relative to
// Root ("" for a single-file pin).
type SnapPin struct {
	Root   string               `json:"root"`
	Dir    bool                 `json:"dir"`
	Files  map[string]FileState `json:"files"`
	Ignore []string             `json:"ignore,omitempty"`
	// Ignored are the ignore paths that existed at verification and what
	// they were ("dir", "file", "other"): the launcher hides them from the
	// job, and Recheck reports one that appears later.
	Ignored map[string]string `json:"ignored,omitempty"`
}

// ignoredPresent stats each ignore path beneath root without following a
// final symlink.
func ignoredPresent(root *os.File, ignore []string) map[string]string {
	out := map[string]string{}
	for _, p := range ignore {
		if k := ignoredKind(root, p); k != "" {
			out[p] = k
		}
	}
	return out
}

func ignoredKind(root *os.File, p string) string {
	fd, err := openBeneath(root, p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return ""
		}
		return "other"
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return "other"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	}
	return "other"
}

// Snapshot is the stat state of every verified input. It is JSON-encodable
// so the launcher can keep it in the job's state.
type Snapshot struct {
	Pins []SnapPin `json:"pins"`
}

// Verifier verifies pins and builds manifests.
type Verifier struct {
	workers int
	cache   *Cache
	log     *slog.Logger
}

// New returns a Verifier.
func New(o Options) *Verifier {
	v := &Verifier{workers: o.Workers, cache: o.Cache, log: o.Logger}
	if v.workers <= 0 {
		v.workers = runtime.GOMAXPROCS(0)
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	return v
}

// Manifest hashes every regular file under dir (symlinks are followed only
// while they stay inside dir) and returns the entries sorted by path.
func Manifest(ctx context.Context, dir string) ([]Entry, error) {
	es, _, err := New(Options{}).Manifest(ctx, dir)
	return es, err
}

// Manifest is like the package-level Manifest, using v's workers and cache.
func (v *Verifier) Manifest(ctx context.Context, dir string) ([]Entry, Stats, error) {
	root, err := openRoot(dir)
	if err != nil {
		return nil, Stats{}, err
	}
	defer root.Close()
	rels, err := listTree(ctx, root, dir, treeOpts{})
	if err != nil {
		return nil, Stats{}, err
	}
	res, st, err := v.hashAll(ctx, root, dir, rels)
	if err != nil {
		return nil, st, err
	}
	es := make([]Entry, len(rels))
	for i, r := range rels {
		es[i] = Entry{Path: r, Digest: res[i].digest}
	}
	return es, st, nil
}

// Verify checks one pin. A mismatch returns a *MismatchError naming the file
// and both digests; a file in the directory but not in the manifest, or the
// reverse, is an error too (the job would see an unpinned file).
func (v *Verifier) Verify(ctx context.Context, p Pin) (Result, error) {
	return v.VerifyAll(ctx, []Pin{p})
}

// VerifyAll checks every pin and joins all failures, so the user sees every
// bad file at once. The snapshot is returned only when all pins verified.
func (v *Verifier) VerifyAll(ctx context.Context, pins []Pin) (Result, error) {
	var res Result
	snap := &Snapshot{}
	var errs []error
	for _, p := range pins {
		sp, st, err := v.verifyOne(ctx, p)
		res.Stats.add(st)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		snap.Pins = append(snap.Pins, sp)
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if v.cache != nil {
		if err := v.cache.Save(); err != nil {
			v.log.Warn("verification cache not saved", "err", err)
		}
	}
	res.Snapshot = snap
	return res, nil
}

func (v *Verifier) verifyOne(ctx context.Context, p Pin) (SnapPin, Stats, error) {
	if !filepath.IsAbs(p.Path) {
		return SnapPin{}, Stats{}, fmt.Errorf("input %s: path must be absolute", p.Path)
	}
	if !p.Dir {
		return v.verifyFile(ctx, p)
	}
	root, err := openRoot(p.Path)
	if err != nil {
		return SnapPin{}, Stats{}, err
	}
	defer root.Close()
	rels, err := listTree(ctx, root, p.Path, treeOpts{ignore: p.Ignore, noSymlinks: p.NoSymlinks})
	if err != nil {
		return SnapPin{}, Stats{}, err
	}
	want := make(map[string]Digest, len(p.Manifest))
	for _, e := range p.Manifest {
		want[e.Path] = e.Digest
	}
	var errs []error
	var present []string
	for _, r := range rels {
		if _, ok := want[r]; !ok {
			errs = append(errs, fmt.Errorf("input %s: %w (remove it or pin it)", filepath.Join(p.Path, r), ErrUnpinned))
			continue
		}
		present = append(present, r)
		delete(want, r)
	}
	for r := range want {
		errs = append(errs, fmt.Errorf("input %s: %w", filepath.Join(p.Path, r), ErrMissing))
	}
	if len(errs) > 0 {
		sortErrs(errs)
		return SnapPin{}, Stats{}, errors.Join(errs...)
	}
	res, st, err := v.hashAll(ctx, root, p.Path, present)
	if err != nil {
		return SnapPin{}, st, err
	}
	byPath := make(map[string]Digest, len(p.Manifest))
	for _, e := range p.Manifest {
		byPath[e.Path] = e.Digest
	}
	sp := SnapPin{Root: p.Path, Dir: true, Files: make(map[string]FileState, len(present)), Ignore: p.Ignore,
		Ignored: ignoredPresent(root, p.Ignore)}
	for i, r := range present {
		if res[i].digest != byPath[r] {
			errs = append(errs, &MismatchError{Path: filepath.Join(p.Path, r), Want: byPath[r], Got: res[i].digest})
		}
		sp.Files[r] = res[i].state
	}
	return sp, st, errors.Join(errs...)
}

func (v *Verifier) verifyFile(ctx context.Context, p Pin) (SnapPin, Stats, error) {
	dir, name := filepath.Split(p.Path)
	root, err := openRoot(dir)
	if err != nil {
		return SnapPin{}, Stats{}, err
	}
	defer root.Close()
	res, st, err := v.hashAll(ctx, root, dir, []string{name})
	if err != nil {
		return SnapPin{}, st, err
	}
	if res[0].digest != p.Digest {
		return SnapPin{}, st, &MismatchError{Path: p.Path, Want: p.Digest, Got: res[0].digest}
	}
	return SnapPin{Root: p.Path, Files: map[string]FileState{"": res[0].state}}, st, nil
}

func sortErrs(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}

// openRoot opens a directory without following a symlink at its last
// component.
func openRoot(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("input %s: open directory: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// maxDepth bounds directory nesting so a hostile tree cannot exhaust fds.
const maxDepth = 128

// treeOpts narrow a listing: paths skipped (with their subtrees) and
// whether a symlink is an error.
type treeOpts struct {
	ignore     []string
	noSymlinks bool
}

// ErrSymlink is returned for a symlink in a tree listed with noSymlinks.
var ErrSymlink = errors.New("symlink (the signature was made with allow_symlinks: false)")

// listTree returns the relative paths of all non-directory entries under
// root, sorted, leaving out o.ignore. Directories are opened by fd with O_NOFOLLOW, so a
// directory swapped for a symlink while we walk is not followed. Special
// files (FIFOs, devices, sockets) are refused here, before anything opens
// them.
func listTree(ctx context.Context, root *os.File, rootName string, o treeOpts) ([]string, error) {
	var out []string
	var walk func(d *os.File, rel string, depth int) error
	walk = func(d *os.File, rel string, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("input %s: deeper than %d directories", filepath.Join(rootName, rel), maxDepth)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(-1)
		if err != nil {
			return fmt.Errorf("input %s: read directory: %w", filepath.Join(rootName, rel), err)
		}
		for _, e := range ents {
			r := e.Name()
			if rel != "" {
				r = rel + "/" + e.Name()
			}
			if err := checkRel(r); err != nil {
				return fmt.Errorf("input %s: %w", filepath.Join(rootName, r), err)
			}
			if Ignored(o.ignore, r) {
				continue
			}
			switch t := e.Type(); {
			case t&fs.ModeSymlink != 0 && o.noSymlinks:
				return fmt.Errorf("input %s: %w", filepath.Join(rootName, r), ErrSymlink)
			case t.IsDir():
				fd, err := unix.Openat(int(d.Fd()), e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("input %s: open directory: %w", filepath.Join(rootName, r), err)
				}
				sub := os.NewFile(uintptr(fd), r)
				err = walk(sub, r, depth+1)
				sub.Close()
				if err != nil {
					return err
				}
			case t.IsRegular(), t&fs.ModeSymlink != 0:
				out = append(out, r)
			default:
				return fmt.Errorf("input %s: %w (%v)", filepath.Join(rootName, r), ErrNotRegular, t)
			}
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

type fileResult struct {
	digest Digest
	state  FileState
}

const bufSize = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// hashAll hashes rels (relative to root) with v.workers goroutines, using
// the cache when a file's (dev, ino, size, mtime, ctime, path) is known.
func (v *Verifier) hashAll(parent context.Context, root *os.File, rootName string, rels []string) ([]fileResult, Stats, error) {
	out := make([]fileResult, len(rels))
	errs := make([]error, len(rels))
	var hashed, cached atomic.Int64
	var bytes, hashedBytes atomic.Int64
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	n := min(v.workers, max(len(rels), 1))
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				full := filepath.Join(rootName, rels[i])
				r, hit, err := v.hashOne(ctx, root, rels[i], full)
				if err != nil {
					if parent.Err() != nil || !errors.Is(err, context.Canceled) {
						errs[i] = err
					}
					cancel()
					continue
				}
				out[i] = r
				bytes.Add(r.state.Size)
				if hit {
					cached.Add(1)
				} else {
					hashed.Add(1)
					hashedBytes.Add(r.state.Size)
				}
			}
		}()
	}
feed:
	for i := range rels {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	st := Stats{Files: int(hashed.Load() + cached.Load()), Hashed: int(hashed.Load()), Cached: int(cached.Load()),
		Bytes: bytes.Load(), HashedBytes: hashedBytes.Load()}
	if err := errors.Join(errs...); err != nil {
		return nil, st, err
	}
	if err := parent.Err(); err != nil {
		return nil, st, err
	}
	return out, st, nil
}

// resolveHow keeps every lookup beneath the pinned directory: symlinks that
// point outside (absolute, or with too many "..") fail with EXDEV, and
// /proc magic links are refused.
var resolveHow = unix.OpenHow{Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}

func openBeneath(root *os.File, rel string, flags int) (int, error) {
	how := resolveHow
	flags |= unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NOCTTY
	}
	how.Flags = uint64(flags)
	for {
		fd, err := unix.Openat2(int(root.Fd()), rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

func (v *Verifier) hashOne(ctx context.Context, root *os.File, rel, full string) (fileResult, bool, error) {
	if err := ctx.Err(); err != nil {
		return fileResult{}, false, err
	}
	// O_PATH: no open of the file itself, so a FIFO or device is never
	// opened; the fstat says what it is.
	pfd, err := openBeneath(root, rel, unix.O_PATH)
	if err != nil {
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ELOOP) {
			return fileResult{}, false, fmt.Errorf("input %s: %w (symlink)", full, ErrEscapes)
		}
		if errors.Is(err, unix.ENOENT) {
			return fileResult{}, false, fmt.Errorf("input %s: %w", full, ErrMissing)
		}
		return fileResult{}, false, fmt.Errorf("input %s: %w", full, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(pfd, &st)
	unix.Close(pfd)
	if err != nil {
		return fileResult{}, false, fmt.Errorf("input %s: stat: %w", full, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileResult{}, false, fmt.Errorf("input %s: %w", full, ErrNotRegular)
	}
	state := stateOf(&st)
	key := cacheKey{FileState: state, Path: full}
	if v.cache != nil {
		if d, ok := v.cache.lookup(key); ok {
			return fileResult{digest: d, state: state}, true, nil
		}
	}
	fd, err := openBeneath(root, rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return fileResult{}, false, fmt.Errorf("input %s: open: %w", full, err)
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil {
		return fileResult{}, false, fmt.Errorf("input %s: stat: %w", full, err)
	}
	if st2.Mode&unix.S_IFMT != unix.S_IFREG || stateOf(&st2) != state {
		return fileResult{}, false, fmt.Errorf("input %s: %w while being verified", full, ErrChanged)
	}
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
	d, err := hashReader(ctx, f)
	if err != nil {
		return fileResult{}, false, fmt.Errorf("input %s: read: %w", full, err)
	}
	if err := unix.Fstat(fd, &st2); err != nil {
		return fileResult{}, false, fmt.Errorf("input %s: stat: %w", full, err)
	}
	if stateOf(&st2) != state {
		return fileResult{}, false, fmt.Errorf("input %s: %w while being verified", full, ErrChanged)
	}
	if v.cache != nil {
		v.cache.add(key, d)
	}
	return fileResult{digest: d, state: state}, false, nil
}

// ctxReader stops a long read when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func hashReader(ctx context.Context, r io.Reader) (Digest, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	h := sha256.New()
	var d Digest
	if _, err := io.CopyBuffer(h, ctxReader{ctx, r}, *bp); err != nil {
		return d, err
	}
	h.Sum(d[:0])
	return d, nil
}

// HashFile hashes one regular file that the caller opened.
func HashFile(ctx context.Context, f *os.File) (Digest, error) { return hashReader(ctx, f) }

// Rebase returns a copy of the snapshot with the roots under from moved
// under to. The launcher uses it to recheck the read-only bind mount it
// made of a verified input before the job starts: a bind mount shows the
// same inodes, so Recheck of the rebased snapshot fails if the path was
// swapped between verification and mounting.
func (s *Snapshot) Rebase(from, to string) *Snapshot {
	out := &Snapshot{}
	for _, p := range s.Pins {
		if rel, err := filepath.Rel(from, p.Root); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			p.Root = filepath.Join(to, rel)
		}
		out.Pins = append(out.Pins, p)
	}
	return out
}

// Recheck compares every file of the snapshot with its state now (inode,
// size, mtime, ctime) and lists the files added to or removed from pinned
// directories. It reads no content: it is the end-of-run check, cheap
// enough to run on every job. A change returns a *ChangedError.
func Recheck(ctx context.Context, s *Snapshot) error {
	if s == nil {
		return errors.New("recheck: no snapshot (inputs were not verified)")
	}
	var changes []Change
	for _, p := range s.Pins {
		if !p.Dir {
			dir, name := filepath.Split(p.Root)
			changes = append(changes, recheckFiles(ctx, dir, map[string]FileState{name: p.Files[""]}, p.Root, nil, nil)...)
			continue
		}
		changes = append(changes, recheckFiles(ctx, p.Root, p.Files, "", p.Ignore, p.Ignored)...)
	}
	if len(changes) > 0 {
		sort.Slice(changes, func(i, j int) bool { return changes[i].Path < changes[j].Path })
		return &ChangedError{Changes: changes}
	}
	return ctx.Err()
}

func recheckFiles(ctx context.Context, dir string, files map[string]FileState, single string, ignore []string, ignored map[string]string) []Change {
	name := func(rel string) string {
		if single != "" {
			return single
		}
		return filepath.Join(dir, rel)
	}
	root, err := openRoot(dir)
	if err != nil {
		return []Change{{Path: dir, What: "missing"}}
	}
	defer root.Close()
	var changes []Change
	if single == "" {
		rels, err := listTree(ctx, root, dir, treeOpts{ignore: ignore})
		if err != nil {
			return []Change{{Path: dir, What: err.Error()}}
		}
		for _, r := range rels {
			if _, ok := files[r]; !ok {
				changes = append(changes, Change{Path: name(r), What: "added"})
			}
		}
		// An ignored path is hidden from the job only if it was there
		// when verified: one that appears (or changes kind) later is not.
		for _, p := range ignore {
			if k := ignoredKind(root, p); k != "" && k != ignored[p] {
				changes = append(changes, Change{Path: name(p), What: "added (ignored path)"})
			}
		}
	}
	for rel, want := range files {
		pfd, err := openBeneath(root, rel, unix.O_PATH)
		if err != nil {
			changes = append(changes, Change{Path: name(rel), What: "missing"})
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(pfd, &st)
		unix.Close(pfd)
		switch got := stateOf(&st); {
		case err != nil:
			changes = append(changes, Change{Path: name(rel), What: "missing"})
		case st.Mode&unix.S_IFMT != unix.S_IFREG:
			changes = append(changes, Change{Path: name(rel), What: "not regular"})
		case got.Dev != want.Dev || got.Ino != want.Ino:
			changes = append(changes, Change{Path: name(rel), What: "replaced"})
		case got != want:
			changes = append(changes, Change{Path: name(rel), What: "modified"})
		}
	}
	return changes
}

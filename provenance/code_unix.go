//go:build unix

package provenance

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrGit is returned for a .git that cannot be read.
var ErrGit = errors.New("git metadata")

const (
	maxCodeFiles  = 200000
	maxGitFile    = 64 << 20
	maxChangeList = 100
)

type codeFile struct {
	sha256 [32]byte
	blob   string // git blob id of the content (sha1 or sha256 repo)
	mode   uint32 // 0100644, 0100755 or 0120000
}

// CodeStateOf reads the state of the code directory without running
// anything from it.
func CodeStateOf(ctx context.Context, dir string) (CodeState, error) {
	cs, _, err := codeState(ctx, dir, &treeWalk{from: dir})
	return cs, err
}

// codeState walks the tree (reading it from w.from, copying it when w.dst
// is set) and reads git's view of it from dir.
func codeState(ctx context.Context, dir string, w *treeWalk) (CodeState, map[string]codeFile, error) {
	cs := CodeState{Dir: dir}
	gitDir, common, isGit := findGitDir(dir)
	newHash := sha1.New
	if isGit && objectFormat(common) == "sha256" {
		newHash = sha256.New
	}
	files, err := w.read(ctx, newHash)
	if err != nil {
		return cs, nil, err
	}
	cs, err = gitState(cs, files, gitDir, common, isGit, newHash, w.exclude)
	return cs, files, err
}

// gitState fills the tree digest and git's view of the files; index
// entries under an excluded path (a mount on top of the code directory)
// are not compared.
func gitState(cs CodeState, files map[string]codeFile, gitDir, common string, isGit bool, newHash func() hash.Hash, exclude map[string]bool) (CodeState, error) {
	cs.Files = len(files)
	rels := make([]string, 0, len(files))
	for r := range files {
		rels = append(rels, r)
	}
	sort.Strings(rels)
	th := sha256.New()
	for _, r := range rels {
		fmt.Fprintf(th, "%x  %s\n", files[r].sha256, r)
	}
	cs.TreeSHA256 = hex.EncodeToString(th.Sum(nil))
	if !isGit {
		return cs, nil
	}
	ref, commit, err := resolveHEAD(gitDir, common)
	if err != nil {
		return cs, err
	}
	cs.GitRef, cs.GitCommit = ref, commit
	idxPath := filepath.Join(gitDir, "index")
	idxBytes, err := readSmall(idxPath)
	if errors.Is(err, os.ErrNotExist) {
		idxBytes = nil
	} else if err != nil {
		return cs, err
	}
	hashLen := newHash().Size()
	entries, unmerged, err := parseIndex(idxBytes, hashLen)
	if err != nil {
		return cs, fmt.Errorf("%w: %s: %w", ErrGit, idxPath, err)
	}
	var changes []string
	inIndex := map[string]bool{}
	var gitlinks []string
	for _, e := range entries {
		inIndex[e.path] = true
		if excluded(e.path, exclude) {
			continue
		}
		if e.mode == 0o160000 {
			gitlinks = append(gitlinks, e.path+"/")
			continue
		}
		f, ok := files[e.path]
		switch {
		case !ok && e.skipWorktree:
		case !ok:
			changes = append(changes, "D "+e.path)
		case f.blob != e.oid || f.mode != normMode(e.mode):
			changes = append(changes, fmt.Sprintf("M %s %x", e.path, f.sha256))
		}
	}
	for _, r := range rels {
		if inIndex[r] || underAny(r, gitlinks) {
			continue
		}
		changes = append(changes, fmt.Sprintf("? %s %x", r, files[r].sha256))
	}
	for _, u := range unmerged {
		changes = append(changes, "U "+u)
	}
	// Staged: the tree the index would commit differs from HEAD's tree.
	switch tree, err := indexTreeID(entries, newHash); {
	case err != nil:
		cs.Staged = "unknown"
	case commit == "":
		if len(entries) > 0 {
			cs.Staged = "staged"
		}
	default:
		headTree, err := commitTreeID(common, commit, hashLen)
		switch {
		case err != nil:
			cs.Staged = "unknown"
		case headTree != tree:
			cs.Staged = "staged"
		}
	}
	if cs.Staged != "" {
		changes = append(changes, "S index "+cs.Staged)
	}
	if len(changes) > 0 {
		sort.Strings(changes)
		cs.Dirty = true
		h := sha256.New()
		fmt.Fprintf(h, "index %x\n", sha256.Sum256(idxBytes))
		for _, c := range changes {
			io.WriteString(h, c+"\n")
		}
		cs.UncommittedSHA256 = hex.EncodeToString(h.Sum(nil))
		for i, c := range changes {
			if i == maxChangeList {
				break
			}
			// Drop the digest from the human list.
			if j := strings.LastIndexByte(c, ' '); j > 1 && (c[0] == 'M' || c[0] == '?') {
				c = c[:j]
			}
			cs.Changed = append(cs.Changed, c)
		}
	}
	return cs, nil
}

func underAny(p string, prefixes []string) bool {
	for _, x := range prefixes {
		if strings.HasPrefix(p, x) {
			return true
		}
	}
	return false
}

func normMode(m uint32) uint32 {
	switch {
	case m&0o170000 == 0o120000:
		return 0o120000
	case m&0o111 != 0:
		return 0o100755
	}
	return 0o100644
}

// treeWalk reads the code tree: every regular file hashed, every symlink
// recorded by target, .git at the top and the excluded paths skipped.
// Nothing is followed; FIFOs and devices are not opened. With dst set, it
// copies what it reads there in the same pass (a file is read once, and the
// digest is of the bytes written to the copy).
type treeWalk struct {
	from     string          // the directory read
	exclude  map[string]bool // paths relative to the code directory, not read
	dst      *os.File        // the root of the copy, or nil
	maxBytes int64           // bound on the regular files' total size (0: none)
	bytes    int64
}

// excluded says whether rel is one of the excluded paths or below one.
func excluded(rel string, exclude map[string]bool) bool {
	for p := rel; p != "." && p != "/" && p != ""; p = filepath.Dir(p) {
		if exclude[p] {
			return true
		}
	}
	return false
}

func (w *treeWalk) read(ctx context.Context, newHash func() hash.Hash) (map[string]codeFile, error) {
	dir := w.from
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("code dir %s: %w", dir, err)
	}
	root := os.NewFile(uintptr(fd), dir)
	defer root.Close()
	out := map[string]codeFile{}
	buf := make([]byte, 1<<20)
	var walk func(d, dd *os.File, rel string, depth int) error
	walk = func(d, dd *os.File, rel string, depth int) error {
		if depth > maxOutputDepth {
			return fmt.Errorf("code dir %s: deeper than %d directories", filepath.Join(dir, rel), maxOutputDepth)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(-1)
		if err != nil {
			return fmt.Errorf("code dir %s: %w", filepath.Join(dir, rel), err)
		}
		for _, e := range ents {
			if rel == "" && e.Name() == ".git" {
				continue
			}
			r := e.Name()
			if rel != "" {
				r = rel + "/" + e.Name()
			}
			if w.exclude[r] {
				continue
			}
			if len(out) >= maxCodeFiles {
				return fmt.Errorf("code dir %s: more than %d files", dir, maxCodeFiles)
			}
			var err error
			switch t := e.Type(); {
			case t.IsDir():
				err = w.dir(d, dd, e.Name(), r, func(sub, subd *os.File) error { return walk(sub, subd, r, depth+1) })
			case t&os.ModeSymlink != 0:
				err = w.symlink(d, dd, e.Name(), r, newHash, out)
			case t.IsRegular():
				err = w.file(d, dd, e.Name(), r, newHash, buf, out)
			default:
				// FIFOs, sockets, devices: not code, never opened.
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, w.dst, "", 0); err != nil {
		return nil, err
	}
	if w.dst != nil {
		// The copy's root takes the code directory's owner and mode last,
		// once nothing more is written into it.
		if err := copyAttrs(root, w.dst); err != nil {
			return nil, fmt.Errorf("code snapshot %s: %w", w.dst.Name(), err)
		}
	}
	return out, nil
}

func (w *treeWalk) dir(d, dd *os.File, name, rel string, walk func(sub, subd *os.File) error) error {
	sfd, err := unix.Openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("code dir %s: %w", filepath.Join(w.from, rel), err)
	}
	sub := os.NewFile(uintptr(sfd), rel)
	defer sub.Close()
	if dd == nil {
		return walk(sub, nil)
	}
	if err := unix.Mkdirat(int(dd.Fd()), name, 0o700); err != nil {
		return fmt.Errorf("code snapshot %s: %w", rel, err)
	}
	dfd, err := unix.Openat(int(dd.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("code snapshot %s: %w", rel, err)
	}
	subd := os.NewFile(uintptr(dfd), rel)
	defer subd.Close()
	if err := walk(sub, subd); err != nil {
		return err
	}
	if err := copyAttrs(sub, subd); err != nil {
		return fmt.Errorf("code snapshot %s: %w", rel, err)
	}
	return nil
}

func (w *treeWalk) symlink(d, dd *os.File, name, rel string, newHash func() hash.Hash, out map[string]codeFile) error {
	target := make([]byte, 4096)
	n, err := unix.Readlinkat(int(d.Fd()), name, target)
	if err != nil {
		return fmt.Errorf("code dir %s: %w", filepath.Join(w.from, rel), err)
	}
	target = target[:n]
	out[rel] = codeFile{sha256: sha256.Sum256(target), blob: blobID(newHash, target), mode: 0o120000}
	if dd == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstatat(int(d.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("code dir %s: %w", filepath.Join(w.from, rel), err)
	}
	if err := unix.Symlinkat(string(target), int(dd.Fd()), name); err != nil {
		return fmt.Errorf("code snapshot %s: %w", rel, err)
	}
	if err := unix.Fchownat(int(dd.Fd()), name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("code snapshot %s: %w", rel, err)
	}
	return nil
}

func (w *treeWalk) file(d, dd *os.File, name, rel string, newHash func() hash.Hash, buf []byte, out map[string]codeFile) error {
	ffd, err := unix.Openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("code dir %s: %w", filepath.Join(w.from, rel), err)
	}
	f := os.NewFile(uintptr(ffd), rel)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("code dir %s: %w", filepath.Join(w.from, rel), err)
	}
	w.bytes += st.Size()
	if w.maxBytes > 0 && w.bytes > w.maxBytes {
		return &TooLargeError{Dir: w.from, Limit: w.maxBytes, At: rel}
	}
	var copyTo *os.File
	if dd != nil {
		cfd, err := unix.Openat(int(dd.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("code snapshot %s: %w", rel, err)
		}
		copyTo = os.NewFile(uintptr(cfd), rel)
		defer copyTo.Close()
	}
	var sink io.Writer
	if copyTo != nil {
		sink = copyTo
	}
	cf, err := hashCodeFile(f, st, newHash, buf, sink)
	if err != nil {
		return fmt.Errorf("code dir %s: %w", filepath.Join(w.from, rel), err)
	}
	out[rel] = cf
	if copyTo != nil {
		if err := copyAttrs(f, copyTo); err != nil {
			return fmt.Errorf("code snapshot %s: %w", rel, err)
		}
	}
	return nil
}

// copyAttrs gives dst src's owner, permission bits (never set-id) and
// times, so the job sees its code as it is on the host and Python's
// bytecode caches stay valid.
func copyAttrs(src, dst *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return err
	}
	if err := unix.Fchown(int(dst.Fd()), int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(int(dst.Fd()), uint32(st.Mode)&0o1777); err != nil {
		return err
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(dst.Fd())), ts, 0)
}

// TooLargeError refuses a code snapshot over its bound.
type TooLargeError struct {
	Dir   string
	Limit int64
	At    string // the file that crossed the bound
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("code directory %s holds more than %d bytes of files (at %s): the job runs a copy of it, bounded by integrity.code_snapshot_max in the host config; move datasets and checkpoints out (mount them with --data or pin them as inputs)", e.Dir, e.Limit, e.At)
}

func hashCodeFile(f *os.File, st os.FileInfo, newHash func() hash.Hash, buf []byte, copyTo io.Writer) (codeFile, error) {
	if !st.Mode().IsRegular() {
		return codeFile{}, fmt.Errorf("not a regular file when opened")
	}
	s, g := sha256.New(), newHash()
	fmt.Fprintf(g, "blob %d\x00", st.Size())
	sink := io.MultiWriter(s, g)
	if copyTo != nil {
		sink = io.MultiWriter(s, g, copyTo)
	}
	n, err := io.CopyBuffer(sink, io.LimitReader(f, st.Size()), buf)
	if err != nil {
		return codeFile{}, err
	}
	if n != st.Size() {
		return codeFile{}, fmt.Errorf("changed while reading")
	}
	var cf codeFile
	s.Sum(cf.sha256[:0])
	cf.blob = hex.EncodeToString(g.Sum(nil))
	cf.mode = 0o100644
	if st.Mode().Perm()&0o111 != 0 {
		cf.mode = 0o100755
	}
	return cf, nil
}

func blobID(newHash func() hash.Hash, b []byte) string {
	h := newHash()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// readSmall reads a metadata file without following a symlink or blocking
// on a FIFO.
func readSmall(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s: not a regular file", ErrGit, path)
	}
	if st.Size() > maxGitFile {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrGit, path, maxGitFile)
	}
	return io.ReadAll(io.LimitReader(f, maxGitFile))
}

// findGitDir finds the git directory of a work tree rooted at dir: a .git
// directory, or a .git file ("gitdir: PATH", worktrees and submodules).
// The common dir (refs, config, packed-refs) comes from "commondir".
func findGitDir(dir string) (gitDir, common string, ok bool) {
	dot := filepath.Join(dir, ".git")
	st, err := os.Lstat(dot)
	if err != nil {
		return "", "", false
	}
	switch {
	case st.IsDir():
		gitDir = dot
	case st.Mode().IsRegular():
		b, err := readSmall(dot)
		if err != nil {
			return "", "", false
		}
		s := strings.TrimSpace(string(b))
		if !strings.HasPrefix(s, "gitdir: ") {
			return "", "", false
		}
		gitDir = strings.TrimPrefix(s, "gitdir: ")
		if !filepath.IsAbs(gitDir) {
			gitDir = filepath.Join(dir, gitDir)
		}
	default:
		return "", "", false
	}
	common = gitDir
	if b, err := readSmall(filepath.Join(gitDir, "commondir")); err == nil {
		c := strings.TrimSpace(string(b))
		if !filepath.IsAbs(c) {
			c = filepath.Join(gitDir, c)
		}
		common = c
	}
	if _, err := os.Stat(filepath.Join(gitDir, "HEAD")); err != nil {
		return "", "", false
	}
	return gitDir, common, true
}

// objectFormat reads extensions.objectformat from the repository config
// (only that key; nothing in the config is acted on).
func objectFormat(common string) string {
	b, err := readSmall(filepath.Join(common, "config"))
	if err != nil {
		return "sha1"
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "objectformat") && strings.TrimSpace(v) == "sha256" {
			return "sha256"
		}
	}
	return "sha1"
}

func isHexID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// resolveHEAD returns the symbolic ref (if any) and the commit of HEAD.
func resolveHEAD(gitDir, common string) (string, string, error) {
	b, err := readSmall(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return "", "", fmt.Errorf("%w: HEAD: %w", ErrGit, err)
	}
	head := strings.TrimSpace(string(b))
	if isHexID(head) {
		return "", head, nil
	}
	var first string
	for range 5 {
		ref, ok := strings.CutPrefix(head, "ref: ")
		if !ok || !strings.HasPrefix(ref, "refs/") || strings.Contains(ref, "..") || strings.ContainsAny(ref, "\x00\\") {
			return "", "", fmt.Errorf("%w: HEAD %q is not a ref or commit", ErrGit, head)
		}
		if first == "" {
			first = ref
		}
		var val string
		for _, d := range []string{gitDir, common} {
			if b, err := readSmall(filepath.Join(d, filepath.FromSlash(ref))); err == nil {
				val = strings.TrimSpace(string(b))
				break
			}
		}
		if val == "" {
			val = packedRef(common, ref)
		}
		if val == "" {
			return first, "", nil // unborn branch: no commit yet
		}
		if isHexID(val) {
			return first, val, nil
		}
		head = val
	}
	return "", "", fmt.Errorf("%w: HEAD: symbolic refs nested too deep", ErrGit)
}

func packedRef(common, ref string) string {
	b, err := readSmall(filepath.Join(common, "packed-refs"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		id, name, ok := strings.Cut(strings.TrimSpace(l), " ")
		if ok && name == ref && isHexID(id) {
			return id
		}
	}
	return ""
}

type indexEntry struct {
	path         string
	mode         uint32
	oid          string
	skipWorktree bool
}

// parseIndex reads a git index (versions 2, 3 and 4). It returns stage-0
// entries and the paths of unmerged (conflicted) entries.
func parseIndex(b []byte, hashLen int) ([]indexEntry, []string, error) {
	if len(b) == 0 {
		return nil, nil, nil
	}
	if len(b) < 12 || string(b[:4]) != "DIRC" {
		return nil, nil, errors.New("not a git index")
	}
	ver := binary.BigEndian.Uint32(b[4:8])
	if ver < 2 || ver > 4 {
		return nil, nil, fmt.Errorf("index version %d not supported", ver)
	}
	n := binary.BigEndian.Uint32(b[8:12])
	p := 12
	var out []indexEntry
	var unmerged []string
	prev := ""
	for i := uint32(0); i < n; i++ {
		start := p
		if p+40+hashLen+2 > len(b) {
			return nil, nil, errors.New("truncated entry")
		}
		mode := binary.BigEndian.Uint32(b[p+24 : p+28])
		oid := hex.EncodeToString(b[p+40 : p+40+hashLen])
		flags := binary.BigEndian.Uint16(b[p+40+hashLen:])
		p += 40 + hashLen + 2
		skip := false
		if flags&0x4000 != 0 {
			if ver < 3 || p+2 > len(b) {
				return nil, nil, errors.New("bad extended flags")
			}
			skip = binary.BigEndian.Uint16(b[p:])&0x4000 != 0
			p += 2
		}
		var name string
		if ver == 4 {
			strip, k := indexVarint(b[p:])
			if k == 0 || strip > uint64(len(prev)) {
				return nil, nil, errors.New("bad path prefix")
			}
			p += k
			end := bytes.IndexByte(b[p:], 0)
			if end < 0 {
				return nil, nil, errors.New("unterminated path")
			}
			name = prev[:len(prev)-int(strip)] + string(b[p:p+end])
			p += end + 1
		} else {
			end := bytes.IndexByte(b[p:], 0)
			if end < 0 {
				return nil, nil, errors.New("unterminated path")
			}
			name = string(b[p : p+end])
			p += end + 1
			// Pad the entry to a multiple of 8 bytes (1 to 8 NULs in all).
			for (p-start)%8 != 0 {
				p++
			}
			if p > len(b) {
				return nil, nil, errors.New("truncated padding")
			}
		}
		prev = name
		if stage := (flags >> 12) & 3; stage != 0 {
			unmerged = append(unmerged, name)
			continue
		}
		out = append(out, indexEntry{path: name, mode: mode, oid: oid, skipWorktree: skip})
	}
	return out, unmerged, nil
}

func indexVarint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	c := b[0]
	v := uint64(c & 127)
	i := 1
	for c&128 != 0 {
		if i >= len(b) || i > 9 {
			return 0, 0
		}
		v++
		c = b[i]
		v = v<<7 + uint64(c&127)
		i++
	}
	return v, i
}

const maxMetadata = 4 << 20

func readMetadataFile(path string) ([]byte, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	if len(b) > maxMetadata {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxMetadata)
	}
	return b, nil
}

// SnapshotOptions say what a code snapshot leaves out and how large it may
// be.
type SnapshotOptions struct {
	// Exclude lists paths relative to the code directory that are neither
	// copied nor digested: credentials the job must not see, and the
	// targets of mounts on top of the code directory (outputs,
	// environments), which the job sees from their own mounts.
	Exclude []string
	// MaxBytes bounds the total size of the copied files (0: no bound).
	MaxBytes int64
}

// CodeSnapshot is the code directory as it was when a job started: its
// state (digested from the bytes copied) and the copy the job runs.
type CodeSnapshot struct {
	State CodeState
	Copy  string // the directory the job's code mount comes from
	Bytes int64  // total size of the copied files
	files map[string]codeFile
	opt   map[string]bool
	max   int64
}

// SnapshotCode copies the code directory read from from (the directory the
// launcher opened and checked) into to, a directory that must not exist
// (its parent should be reachable by root only), and returns the state of
// the copy. dir is the code directory's own path, where .git is read and
// which the state names. The digest is of the bytes written to the copy, so
// it describes exactly what the job can read, whatever happens to the
// host's tree during the run.
func SnapshotCode(ctx context.Context, dir, from, to string, opt SnapshotOptions) (*CodeSnapshot, error) {
	if err := os.Mkdir(to, 0o700); err != nil {
		return nil, fmt.Errorf("code snapshot: %w", err)
	}
	dfd, err := unix.Open(to, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("code snapshot: %w", err)
	}
	dst := os.NewFile(uintptr(dfd), to)
	defer dst.Close()
	ex := map[string]bool{}
	for _, p := range opt.Exclude {
		ex[filepath.ToSlash(filepath.Clean(p))] = true
	}
	w := &treeWalk{from: from, exclude: ex, dst: dst, maxBytes: opt.MaxBytes}
	cs, files, err := codeState(ctx, dir, w)
	if err != nil {
		return nil, err
	}
	return &CodeSnapshot{State: cs, Copy: to, Bytes: w.bytes, files: files, opt: ex, max: opt.MaxBytes}, nil
}

// Recheck reads the host's code directory dir again (with the snapshot's
// exclusions) and lists what changed there since the snapshot: "M path",
// "A path" (added), "D path" (deleted), sorted, at most 100 with a count of
// the rest. The job never saw these changes; the attestation records them
// as a finding.
func (s *CodeSnapshot) Recheck(ctx context.Context, dir string) ([]string, error) {
	newHash := sha1.New
	if _, common, isGit := findGitDir(s.State.Dir); isGit && objectFormat(common) == "sha256" {
		newHash = sha256.New
	}
	// Bounded like the snapshot: a tree grown past it mid-run is reported,
	// not read to its end.
	now, err := (&treeWalk{from: dir, exclude: s.opt, maxBytes: s.max}).read(ctx, newHash)
	if err != nil {
		return nil, err
	}
	var changes []string
	for r, f := range now {
		old, ok := s.files[r]
		switch {
		case !ok:
			changes = append(changes, "A "+r)
		case old.sha256 != f.sha256 || old.mode != f.mode:
			changes = append(changes, "M "+r)
		}
	}
	for r := range s.files {
		if _, ok := now[r]; !ok {
			changes = append(changes, "D "+r)
		}
	}
	sort.Strings(changes)
	if len(changes) > maxChangeList {
		more := len(changes) - maxChangeList
		changes = append(changes[:maxChangeList], fmt.Sprintf("... and %d more", more))
	}
	return changes, nil
}

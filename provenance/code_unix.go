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
	cs := CodeState{Dir: dir}
	gitDir, common, isGit := findGitDir(dir)
	newHash := sha1.New
	if isGit && objectFormat(common) == "sha256" {
		newHash = sha256.New
	}
	files, err := readCodeTree(ctx, dir, newHash)
	if err != nil {
		return cs, err
	}
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
		return cs, fmt.Errorf("%w: %s: %v", ErrGit, idxPath, err)
	}
	var changes []string
	inIndex := map[string]bool{}
	var gitlinks []string
	for _, e := range entries {
		inIndex[e.path] = true
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

// readCodeTree hashes every regular file and records every symlink under
// dir, skipping .git at the top. Nothing is followed; FIFOs and devices are
// not opened.
func readCodeTree(ctx context.Context, dir string, newHash func() hash.Hash) (map[string]codeFile, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("code dir %s: %w", dir, err)
	}
	root := os.NewFile(uintptr(fd), dir)
	defer root.Close()
	out := map[string]codeFile{}
	buf := make([]byte, 1<<20)
	var walk func(d *os.File, rel string, depth int) error
	walk = func(d *os.File, rel string, depth int) error {
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
			if len(out) >= maxCodeFiles {
				return fmt.Errorf("code dir %s: more than %d files", dir, maxCodeFiles)
			}
			t := e.Type()
			switch {
			case t.IsDir():
				sfd, err := unix.Openat(int(d.Fd()), e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("code dir %s: %w", filepath.Join(dir, r), err)
				}
				sub := os.NewFile(uintptr(sfd), r)
				err = walk(sub, r, depth+1)
				sub.Close()
				if err != nil {
					return err
				}
			case t&os.ModeSymlink != 0:
				target := make([]byte, 4096)
				n, err := unix.Readlinkat(int(d.Fd()), e.Name(), target)
				if err != nil {
					return fmt.Errorf("code dir %s: %w", filepath.Join(dir, r), err)
				}
				target = target[:n]
				out[r] = codeFile{sha256: sha256.Sum256(target), blob: blobID(newHash, target), mode: 0o120000}
			case t.IsRegular():
				ffd, err := unix.Openat(int(d.Fd()), e.Name(), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("code dir %s: %w", filepath.Join(dir, r), err)
				}
				f := os.NewFile(uintptr(ffd), r)
				cf, err := hashCodeFile(f, newHash, buf)
				f.Close()
				if err != nil {
					return fmt.Errorf("code dir %s: %w", filepath.Join(dir, r), err)
				}
				out[r] = cf
			default:
				// FIFOs, sockets, devices: not code, never opened.
			}
		}
		return nil
	}
	return out, walk(root, "", 0)
}

func hashCodeFile(f *os.File, newHash func() hash.Hash, buf []byte) (codeFile, error) {
	st, err := f.Stat()
	if err != nil {
		return codeFile{}, err
	}
	if !st.Mode().IsRegular() {
		return codeFile{}, fmt.Errorf("not a regular file when opened")
	}
	s, g := sha256.New(), newHash()
	fmt.Fprintf(g, "blob %d\x00", st.Size())
	n, err := io.CopyBuffer(io.MultiWriter(s, g), io.LimitReader(f, st.Size()), buf)
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
		return "", "", fmt.Errorf("%w: HEAD: %v", ErrGit, err)
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

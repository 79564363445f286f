// Package pin pins training inputs by SHA-256 and checks them: manifests in
// the common sha256sum format, parallel verification with a root-owned cache
// keyed by (device, inode, size, mtime, ctime, path), and a stat snapshot that
// is checked again at the end of a run so that an input swapped while the job
// ran fails the run.
//
// Files are opened beneath their pinned directory only (openat2
// RESOLVE_BENEATH): a symlink that leaves the directory is refused, and FIFOs,
// devices and sockets are refused without being opened for reading.
package pin

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Digest is a SHA-256 digest.
type Digest [sha256.Size]byte

// String returns the lowercase hex form used by sha256sum.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is the zero value (no digest).
func (d Digest) IsZero() bool { return d == Digest{} }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ErrBadDigest is returned for a digest that is not 64 hex digits.
var ErrBadDigest = errors.New("bad sha256 digest")

// ParseDigest parses 64 hex digits, optionally prefixed by "sha256:".
func ParseDigest(s string) (Digest, error) {
	var d Digest
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) != 2*sha256.Size {
		return d, fmt.Errorf("%w: %q: want 64 hex digits", ErrBadDigest, s)
	}
	if _, err := hex.Decode(d[:], []byte(strings.ToLower(s))); err != nil {
		return d, fmt.Errorf("%w: %q: want 64 hex digits", ErrBadDigest, s)
	}
	return d, nil
}

// Entry is one line of a manifest: a file's path relative to the pinned
// directory (slash-separated, clean) and its digest.
type Entry struct {
	Path   string `json:"path"`
	Digest Digest `json:"sha256"`
}

// ErrBadManifest is returned for a manifest line that cannot be used.
var ErrBadManifest = errors.New("bad manifest")

// checkRel reports whether p is a clean relative path that stays inside its
// directory and can be written on one manifest line.
func checkRel(p string) error {
	switch {
	case p == "" || p == ".":
		return fmt.Errorf("empty path")
	case strings.ContainsAny(p, "\n\r\\\x00"):
		return fmt.Errorf("path %q: newline, backslash and NUL are not allowed", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q: must be relative", p)
	case path.Clean(p) != p:
		return fmt.Errorf("path %q: must be clean (no ., .., //, trailing /)", p)
	case p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("path %q: leaves the directory", p)
	}
	return nil
}

// WriteManifest writes entries in the sha256sum format ("<hex>  <path>\n"),
// sorted by path, so that `sha256sum -c` in the directory accepts it.
func WriteManifest(w io.Writer, entries []Entry) error {
	es := append([]Entry(nil), entries...)
	sortEntries(es)
	bw := bufio.NewWriter(w)
	for _, e := range es {
		if err := checkRel(e.Path); err != nil {
			return fmt.Errorf("%w: %w", ErrBadManifest, err)
		}
		fmt.Fprintf(bw, "%s  %s\n", e.Digest, e.Path)
	}
	return bw.Flush()
}

// ParseManifest reads a manifest in the sha256sum format. Text ("  ") and
// binary (" *") mode lines are accepted; "./" prefixes are removed. Absolute
// paths, paths with "..", duplicates and escaped (backslash) lines are
// refused, naming the line.
func ParseManifest(r io.Reader) ([]Entry, error) {
	var out []Entry
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		if len(line) < 67 || (line[64:66] != "  " && line[64:66] != " *") {
			return nil, fmt.Errorf("%w: line %d: want \"<64 hex digits>  <path>\"", ErrBadManifest, n)
		}
		d, err := ParseDigest(line[:64])
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrBadManifest, n, err)
		}
		p := line[66:]
		for strings.HasPrefix(p, "./") {
			p = p[2:]
		}
		if err := checkRel(p); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrBadManifest, n, err)
		}
		if prev, ok := seen[p]; ok {
			return nil, fmt.Errorf("%w: line %d: %q already listed on line %d", ErrBadManifest, n, p, prev)
		}
		seen[p] = n
		out = append(out, Entry{Path: p, Digest: d})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	sortEntries(out)
	return out, nil
}

// ManifestDigest is the SHA-256 of the canonical (sorted) manifest text: one
// digest that stands for a whole pinned directory.
func ManifestDigest(entries []Entry) Digest {
	h := sha256.New()
	_ = WriteManifest(h, entries)
	var d Digest
	h.Sum(d[:0])
	return d
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].Path < es[j].Path })
}

// Ignored reports whether rel is one of ignore or lies beneath one.
func Ignored(ignore []string, rel string) bool {
	for _, p := range ignore {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

//go:build unix

package provenance

import (
	"bytes"
	"compress/zlib"
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
)

// errUnknown: the staged state could not be worked out (e.g. a commit
// stored as a delta); the caller reports "unknown", never "clean".
var errUnknown = errors.New("cannot tell")

// indexTreeID computes the id of the tree the index would commit, the way
// `git write-tree` does, from stage-0 entries.
func indexTreeID(entries []indexEntry, newHash func() hash.Hash) (string, error) {
	type node struct {
		files map[string]indexEntry
		dirs  map[string]*node
	}
	newNode := func() *node { return &node{files: map[string]indexEntry{}, dirs: map[string]*node{}} }
	root := newNode()
	for _, e := range entries {
		parts := strings.Split(e.path, "/")
		n := root
		for _, p := range parts[:len(parts)-1] {
			c, ok := n.dirs[p]
			if !ok {
				c = newNode()
				n.dirs[p] = c
			}
			n = c
		}
		n.files[parts[len(parts)-1]] = e
	}
	var write func(n *node) ([]byte, error)
	write = func(n *node) ([]byte, error) {
		type item struct {
			key, name, mode string
			oid             []byte
		}
		var items []item
		for name, e := range n.files {
			oid, err := hex.DecodeString(e.oid)
			if err != nil {
				return nil, err
			}
			items = append(items, item{name, name, fmt.Sprintf("%o", normIndexMode(e.mode)), oid})
		}
		for name, c := range n.dirs {
			oid, err := write(c)
			if err != nil {
				return nil, err
			}
			items = append(items, item{name + "/", name, "40000", oid})
		}
		// git sorts tree entries by name, directories as if followed by '/'.
		sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
		var body bytes.Buffer
		for _, it := range items {
			fmt.Fprintf(&body, "%s %s\x00", it.mode, it.name)
			body.Write(it.oid)
		}
		h := newHash()
		fmt.Fprintf(h, "tree %d\x00", body.Len())
		h.Write(body.Bytes())
		return h.Sum(nil), nil
	}
	id, err := write(root)
	return hex.EncodeToString(id), err
}

func normIndexMode(m uint32) uint32 {
	switch m & 0o170000 {
	case 0o120000:
		return 0o120000
	case 0o160000:
		return 0o160000
	}
	if m&0o111 != 0 {
		return 0o100755
	}
	return 0o100644
}

// commitTreeID reads the tree id of a commit from the object store
// (loose objects and pack files, without deltas).
func commitTreeID(common, commit string, hashLen int) (string, error) {
	body, err := readObject(common, commit, hashLen)
	if err != nil {
		return "", err
	}
	hdr, rest, ok := bytes.Cut(body, []byte{0})
	if !ok || !bytes.HasPrefix(hdr, []byte("commit ")) {
		return "", fmt.Errorf("%w: object %s is not a commit", ErrGit, commit)
	}
	line, _, _ := bytes.Cut(rest, []byte{'\n'})
	tree, ok := bytes.CutPrefix(line, []byte("tree "))
	if !ok || !isHexID(string(tree)) {
		return "", fmt.Errorf("%w: commit %s has no tree line", ErrGit, commit)
	}
	return string(tree), nil
}

const maxObject = 16 << 20

// readObject returns "<type> <size>\0<content>" of a commit object.
func readObject(common, id string, hashLen int) ([]byte, error) {
	obj := filepath.Join(common, "objects")
	if b, err := readSmall(filepath.Join(obj, id[:2], id[2:])); err == nil {
		zr, err := zlib.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%w: object %s: %w", ErrGit, id, err)
		}
		return io.ReadAll(io.LimitReader(zr, maxObject))
	}
	raw, _ := hex.DecodeString(id)
	idxs, _ := filepath.Glob(filepath.Join(obj, "pack", "pack-*.idx"))
	for _, idx := range idxs {
		off, ok, err := packOffset(idx, raw, hashLen)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		return readPacked(strings.TrimSuffix(idx, ".idx")+".pack", off)
	}
	return nil, fmt.Errorf("%w: object %s not found (alternates are not read)", errUnknown, id)
}

func packOffset(idxPath string, id []byte, hashLen int) (int64, bool, error) {
	b, err := os.ReadFile(idxPath)
	if err != nil {
		return 0, false, err
	}
	bad := fmt.Errorf("%w: %s: bad pack index", ErrGit, idxPath)
	if len(b) < 8+256*4 || string(b[:4]) != "\xfftOc" || binary.BigEndian.Uint32(b[4:8]) != 2 {
		return 0, false, bad
	}
	fan := b[8 : 8+256*4]
	n := int(binary.BigEndian.Uint32(fan[255*4:]))
	names := 8 + 256*4
	crcs := names + n*hashLen
	offs := crcs + n*4
	large := offs + n*4
	if len(b) < large {
		return 0, false, bad
	}
	i := sort.Search(n, func(i int) bool { return bytes.Compare(b[names+i*hashLen:names+(i+1)*hashLen], id) >= 0 })
	if i == n || !bytes.Equal(b[names+i*hashLen:names+(i+1)*hashLen], id) {
		return 0, false, nil
	}
	o := binary.BigEndian.Uint32(b[offs+i*4:])
	if o&0x80000000 == 0 {
		return int64(o), true, nil
	}
	li := int(o &^ 0x80000000)
	if len(b) < large+(li+1)*8 {
		return 0, false, bad
	}
	return int64(binary.BigEndian.Uint64(b[large+li*8:])), true, nil
}

func readPacked(packPath string, off int64) ([]byte, error) {
	f, err := os.Open(packPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := io.NewSectionReader(f, off, 1<<40)
	var hdr [1]byte
	if _, err := r.Read(hdr[:]); err != nil {
		return nil, err
	}
	typ := (hdr[0] >> 4) & 7
	size := uint64(hdr[0] & 15)
	shift := uint(4)
	for c := hdr[0]; c&0x80 != 0; shift += 7 {
		if _, err := r.Read(hdr[:]); err != nil || shift > 56 {
			return nil, fmt.Errorf("%w: %s: bad object header", ErrGit, packPath)
		}
		c = hdr[0]
		size |= uint64(c&0x7f) << shift
	}
	if typ != 1 {
		return nil, fmt.Errorf("%w: packed commit stored as type %d (delta)", errUnknown, typ)
	}
	if size > maxObject {
		return nil, fmt.Errorf("%w: %s: commit of %d bytes", ErrGit, packPath, size)
	}
	zr, err := zlib.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrGit, packPath, err)
	}
	body, err := io.ReadAll(io.LimitReader(zr, int64(size)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrGit, packPath, err)
	}
	return append([]byte(fmt.Sprintf("commit %d\x00", len(body))), body...), nil
}

package scan

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Legacy torch checkpoints (before PyTorch 0.4 wrote the pickle sequence)
// are tar archives, and torch.load still tries tarfile.open on every file
// that does not start with a zip header: a file whose first 512 bytes pass
// Python's tar header checks IS a tar archive to torch.load, whatever else
// it is. This file reads tar headers the way Python's tarfile does, and
// the members torch's legacy_load reads: storages, tensors and pickle
// (and sys_info, which it skips).

const tarBlock = 512

type tarHeader struct {
	name string
	typ  byte
	size int64
}

// errTarEnd is a header block that ends the archive for tarfile: a zero
// block, or (after the first member) one that is not a valid header.
var errTarEnd = errors.New("end of archive")

// parseTarHeader follows tarfile.TarInfo.frombuf: every numeric field
// must parse (nti), the checksum must match the signed or unsigned sum.
func parseTarHeader(b []byte) (tarHeader, error) {
	if len(b) < tarBlock {
		return tarHeader{}, errTarEnd
	}
	b = b[:tarBlock]
	if bytes.Count(b, []byte{0}) == tarBlock {
		return tarHeader{}, errTarEnd
	}
	chk, err := tarNumber(b[148:156])
	if err != nil {
		return tarHeader{}, err
	}
	var unsigned, signed int64 = 256, 256
	for i, c := range b {
		if i >= 148 && i < 156 {
			continue
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	if chk != unsigned && chk != signed {
		return tarHeader{}, fmt.Errorf("bad checksum")
	}
	for _, f := range [][2]int{{100, 108}, {108, 116}, {116, 124}, {136, 148}, {329, 337}, {337, 345}} {
		if _, err := tarNumber(b[f[0]:f[1]]); err != nil {
			return tarHeader{}, err
		}
	}
	size, err := tarNumber(b[124:136])
	if err != nil {
		return tarHeader{}, err
	}
	h := tarHeader{name: cString(b[0:100]), typ: b[156], size: size}
	if prefix := cString(b[345:500]); prefix != "" && strings.IndexByte("LKSxg", h.typ) < 0 {
		h.name = prefix + "/" + h.name
	}
	return h, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// tarNumber is tarfile's nti: base-256 when the first byte is 0x80 or
// 0xff, otherwise an octal number as Python's int(s.strip() or "0", 8)
// reads it (sign, 0o prefix and underscores allowed).
func tarNumber(b []byte) (int64, error) {
	if b[0] == 0x80 || b[0] == 0xff {
		var n int64
		for _, c := range b[1:] {
			if n > 1<<54 {
				return 0, fmt.Errorf("tar number out of range")
			}
			n = n<<8 | int64(c)
		}
		if b[0] == 0xff {
			return 0, fmt.Errorf("negative tar number")
		}
		return n, nil
	}
	s := strings.Trim(cString(b), " \t\n\r\v\f")
	for _, c := range []byte(s) {
		if c >= 0x80 {
			return 0, fmt.Errorf("invalid header")
		}
	}
	if s == "" {
		return 0, nil
	}
	neg := false
	if s[0] == '+' || s[0] == '-' {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'O') {
		s = s[2:]
		if strings.HasPrefix(s, "_") {
			s = s[1:]
		}
	}
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return 0, fmt.Errorf("invalid header")
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 8, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid header")
	}
	if neg {
		n = -n
	}
	return n, nil
}

// isTar reports whether tarfile.open reads head as the first header of
// an archive.
func isTar(head []byte) bool {
	_, err := parseTarHeader(head)
	return err == nil
}

// legacyElementSize is torch._utils._element_size of the storage types a
// legacy tar checkpoint names.
var legacyElementSize = map[string]int64{
	"Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
	"Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QUInt8": 1, "QInt8": 1, "QInt32": 4,
	"QUInt4x2": 1, "QUInt2x4": 1,
}

// scanTar reads every member of a tar archive as torch's legacy_load
// would. Only regular files are accepted: tarfile.extract makes a symlink
// member a symlink that torch then opens, reading a file the scan never
// saw.
func scanTar(r io.ReaderAt, size int64, rep *Report) {
	rep.Format = "pytorch-legacy-tar"
	seen := map[string]bool{}
	off := int64(0)
	for {
		hb := make([]byte, tarBlock)
		n, _ := r.ReadAt(hb, off)
		h, err := parseTarHeader(hb[:n])
		if err != nil {
			// tarfile stops at the first block that is not a header.
			break
		}
		member := h.name
		if h.typ != '0' && h.typ != 0 && h.typ != '7' || strings.HasSuffix(h.name, "/") {
			rep.add(Finding{Verdict: Unsupported, Member: member, Detail: fmt.Sprintf("tar member of type %q: only regular files can be checked", h.typ)})
			return
		}
		if seen[member] {
			rep.add(Finding{Verdict: Malformed, Member: member, Detail: "tar member named twice (tarfile reads the last one)"})
			return
		}
		seen[member] = true
		data := off + tarBlock
		if h.size < 0 || h.size > size-data {
			rep.add(Finding{Verdict: Malformed, Member: member, Detail: fmt.Sprintf("tar member of %d bytes runs past the end of the file", h.size)})
			return
		}
		sr := io.NewSectionReader(r, data, h.size)
		switch member {
		case "sys_info", "pickle":
			scanPickleStream(sr, member, rep)
		case "storages":
			scanLegacyRecords(sr, h.size, member, rep, storageRecord)
		case "tensors":
			scanLegacyRecords(sr, h.size, member, rep, tensorRecord)
		default:
			rep.add(Finding{Verdict: Malformed, Member: member, Detail: "unexpected tar member (a legacy torch archive holds sys_info, pickle, storages and tensors)"})
		}
		off = data + (h.size+tarBlock-1)/tarBlock*tarBlock
	}
	for _, m := range []string{"storages", "tensors", "pickle"} {
		if !seen[m] {
			rep.add(Finding{Verdict: Malformed, Detail: "tar archive without a " + m + " member: not a torch checkpoint"})
		}
	}
}

type legacyRecord int

const (
	storageRecord legacyRecord = iota // pickle (key, location, storage type), int64 numel, numel*size bytes
	tensorRecord                      // pickle (key, storage id, type), int32 ndim, 4 bytes, 2*ndim int64, int64
)

// scanLegacyRecords reads the storages or tensors member: a pickle with
// the record count, the records (each a pickle and raw bytes), and for
// storages a last pickle of storage views.
func scanLegacyRecords(r io.Reader, size int64, member string, rep *Report, kind legacyRecord) {
	rd := &preader{r: bufio.NewReaderSize(r, int(min(size, 64<<10)))}
	bad := func(format string, a ...any) {
		rep.add(Finding{Verdict: Malformed, Member: member, Detail: fmt.Sprintf(format, a...)})
	}
	walk := func(i int) (*walker, bool) {
		w := &walker{rd: rd, member: member, rep: rep}
		if err := w.walk(); err != nil {
			if !errors.Is(err, errStop) {
				bad("pickle #%d: %v", i+1, err)
			}
			return nil, false
		}
		return w, true
	}
	w, ok := walk(0)
	if !ok {
		return
	}
	if w.result.k != vInt || w.result.n < 0 || w.result.n > size {
		bad("record count is not a small int")
		return
	}
	for i := int64(0); i < w.result.n; i++ {
		rw, ok := walk(int(i) + 1)
		if !ok {
			return
		}
		switch kind {
		case storageRecord:
			elem := int64(0)
			for _, imp := range rw.imports {
				t := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(imp, "torch.cuda."), "torch."), "Storage")
				if e, ok := legacyElementSize[t]; ok && strings.HasSuffix(imp, "Storage") {
					elem = e
				}
			}
			if elem == 0 {
				bad("storage record %d names no storage type", i)
				return
			}
			numel, err := rd.uint(8)
			if err != nil || numel > uint64(size)/uint64(elem) {
				bad("storage record %d: bad size", i)
				return
			}
			if _, _, err := rd.data(numel*uint64(elem), 0); err != nil {
				bad("storage record %d: %v", i, err)
				return
			}
		case tensorRecord:
			b, err := rd.full(8)
			if err != nil {
				bad("tensor record %d: %v", i, err)
				return
			}
			ndim := int32(binary.LittleEndian.Uint32(b))
			if ndim < 0 || ndim > 64 {
				bad("tensor record %d: %d dimensions", i, ndim)
				return
			}
			if _, err := rd.full(16*int(ndim) + 8); err != nil {
				bad("tensor record %d: %v", i, err)
				return
			}
		}
	}
	if kind == storageRecord {
		if _, ok := walk(int(w.result.n) + 1); !ok {
			return
		}
	}
	if rd.off != size {
		bad("%d bytes after the last record", size-rd.off)
	}
}

package scan

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxNpyHeader is far above what numpy writes (it refuses more than 10000
// bytes by default).
const maxNpyHeader = 1 << 20

// scanNpy checks a .npy stream: magic, version, the header dict, and either
// the pickle that holds an object array or enough bytes for the array.
func scanNpy(r io.Reader, size int64, member string, rep *Report) {
	bad := func(format string, a ...any) {
		rep.add(Finding{Verdict: Malformed, Member: member, Detail: "npy: " + fmt.Sprintf(format, a...)})
	}
	pre := make([]byte, 8)
	if _, err := io.ReadFull(r, pre); err != nil {
		bad("truncated preamble")
		return
	}
	var hlen int64
	switch pre[6] {
	case 1:
		b := make([]byte, 2)
		if _, err := io.ReadFull(r, b); err != nil {
			bad("truncated header length")
			return
		}
		hlen = int64(binary.LittleEndian.Uint16(b))
	case 2, 3:
		b := make([]byte, 4)
		if _, err := io.ReadFull(r, b); err != nil {
			bad("truncated header length")
			return
		}
		hlen = int64(binary.LittleEndian.Uint32(b))
	default:
		bad("unknown format version %d.%d", pre[6], pre[7])
		return
	}
	if pre[7] != 0 {
		bad("unknown format version %d.%d", pre[6], pre[7])
		return
	}
	if hlen > maxNpyHeader {
		bad("header of %d bytes (limit %d)", hlen, maxNpyHeader)
		return
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		bad("truncated header")
		return
	}
	h, err := parseNpyHeader(hdr, pre[6])
	if err != nil {
		bad("%v", err)
		return
	}
	if h.obj {
		// np.load(allow_pickle=True) unpickles the rest of the file.
		scanPickleStream(r, member, rep)
		return
	}
	shape, descr := h.shape, h.descr
	n := uint64(1)
	for _, x := range shape {
		if x < 0 {
			bad("shape %v", shape)
			return
		}
		hi, lo := bits.Mul64(n, uint64(x))
		if hi != 0 {
			bad("shape %v overflows", shape)
			return
		}
		n = lo
	}
	if s, ok := descr.(string); ok {
		item, ok := itemSize(s)
		if !ok {
			return
		}
		hi, need := bits.Mul64(n, item)
		have := size - 10 - hlen
		if pre[6] != 1 {
			have -= 2
		}
		if hi != 0 || have < 0 || need > uint64(have) {
			bad("%d bytes of array data, shape and dtype need %d", max(have, 0), need)
		}
	}
}

type npyHeader struct {
	descr any
	shape []int64
	obj   bool // the array holds Python objects: a pickle follows
}

// parseNpyHeader reads a header the way numpy.lib.format's
// _read_array_header does: a Python literal dict of exactly descr,
// fortran_order (a bool) and shape (a tuple of ints), and the dtype
// descr_to_dtype makes of descr.
func parseNpyHeader(hdr []byte, version byte) (*npyHeader, error) {
	text := string(hdr)
	if version < 3 {
		// Versions 1.0 and 2.0 are latin-1, 3.0 is UTF-8.
		text = latin1(hdr)
	} else if !utf8.ValidString(text) {
		return nil, fmt.Errorf("version 3.0 header is not UTF-8")
	}
	v, err := parsePyLiteral(text)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	d, ok := v.(pyDict)
	descr, okd := d.get("descr")
	fo, _ := d.get("fortran_order")
	_, okf := fo.(bool)
	sh, _ := d.get("shape")
	shape, oks := sh.(pyTuple)
	if !ok || len(d.keys) != 3 || !okd || !okf || !oks {
		return nil, fmt.Errorf("header must be a dict of exactly descr, fortran_order (a bool) and shape (a tuple)")
	}
	h := &npyHeader{descr: descr}
	for _, s := range shape {
		switch x := s.(type) {
		case int64:
			h.shape = append(h.shape, x)
		case bool: // Python's bool is an int: numpy accepts (True,)
			h.shape = append(h.shape, map[bool]int64{false: 0, true: 1}[x])
		default:
			return nil, fmt.Errorf("shape %v is not a tuple of ints", shape)
		}
	}
	if h.obj, err = descrHasObject(descr); err != nil {
		return nil, fmt.Errorf("descr %v: %w", descr, err)
	}
	return h, nil
}

// itemSize is the size of a plain "<kind><size>" dtype string (the form
// np.save writes for unstructured arrays); ok is false for anything else.
func itemSize(s string) (uint64, bool) {
	s = strings.TrimLeft(s, "<>|=")
	if len(s) < 2 || strings.IndexByte("biufcSUVa", s[0]) < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(s[1:], 10, 32)
	if err != nil {
		return 0, false
	}
	if s[0] == 'U' {
		n *= 4
	}
	return n, true
}

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

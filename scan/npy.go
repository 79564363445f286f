package scan

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
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
	if hlen > maxNpyHeader {
		bad("header of %d bytes (limit %d)", hlen, maxNpyHeader)
		return
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		bad("truncated header")
		return
	}
	v, err := parsePyLiteral(string(hdr))
	if err != nil {
		bad("header: %v", err)
		return
	}
	d, ok := v.(map[string]any)
	if !ok || len(d) != 3 {
		bad("header must be a dict with descr, fortran_order and shape")
		return
	}
	descr, okd := d["descr"]
	_, okf := d["fortran_order"].(bool)
	shape, oks := d["shape"].(pyTuple)
	if !okd || !okf || !oks {
		bad("header must be a dict with descr, fortran_order and shape")
		return
	}
	obj, err := descrHasObject(descr)
	if err != nil {
		bad("descr: %v", err)
		return
	}
	if obj {
		// np.load(allow_pickle=True) unpickles the rest of the file.
		scanPickleStream(r, member, rep)
		return
	}
	n := uint64(1)
	for _, s := range shape {
		x, ok := s.(int64)
		if !ok || x < 0 {
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
		item, err := itemSize(s)
		if err != nil {
			bad("descr %q: %v", s, err)
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

// descrHasObject reports whether a dtype description contains the object
// type, whose values are pickled.
func descrHasObject(d any) (bool, error) {
	switch t := d.(type) {
	case string:
		s := strings.TrimLeft(t, "<>|=")
		return strings.HasPrefix(s, "O"), nil
	case pyList:
		for _, f := range t {
			ft, ok := f.(pyTuple)
			if !ok || len(ft) < 2 || len(ft) > 3 {
				return false, fmt.Errorf("field %v", f)
			}
			o, err := descrHasObject(ft[1])
			if err != nil || o {
				return o, err
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("unexpected %T", d)
}

func itemSize(s string) (uint64, error) {
	s = strings.TrimLeft(s, "<>|=")
	if s == "" {
		return 0, fmt.Errorf("empty")
	}
	kind := s[0]
	num := s[1:]
	if i := strings.IndexByte(num, '['); i >= 0 {
		num = num[:i]
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("no item size")
	}
	if kind == 'U' {
		n *= 4
	}
	return n, nil
}

type pyTuple []any
type pyList []any

// parsePyLiteral parses the subset of Python literals numpy writes in .npy
// headers: dicts, tuples, lists, strings, integers, True/False/None.
func parsePyLiteral(s string) (any, error) {
	p := &litParser{s: s}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("trailing text at %d", p.i)
	}
	return v, nil
}

type litParser struct {
	s string
	i int
}

func (p *litParser) ws() {
	for p.i < len(p.s) && strings.IndexByte(" \t\n\r", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *litParser) value(depth int) (any, error) {
	if depth > 32 {
		return nil, fmt.Errorf("nested too deep")
	}
	p.ws()
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		p.i++
		m := map[string]any{}
		for {
			p.ws()
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				return m, nil
			}
			k, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("dict key %v is not a string", k)
			}
			p.ws()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, fmt.Errorf("missing ':' at %d", p.i)
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if _, dup := m[ks]; dup {
				return nil, fmt.Errorf("duplicate key %q", ks)
			}
			m[ks] = v
			if err := p.sep('}'); err != nil {
				return nil, err
			}
		}
	case c == '(' || c == '[':
		end := byte(')')
		if c == '[' {
			end = ']'
		}
		p.i++
		var items []any
		for {
			p.ws()
			if p.i < len(p.s) && p.s[p.i] == end {
				p.i++
				if end == ']' {
					return pyList(items), nil
				}
				return pyTuple(items), nil
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
			if err := p.sep(end); err != nil {
				return nil, err
			}
		}
	case c == '\'' || c == '"':
		j := strings.IndexByte(p.s[p.i+1:], c)
		if j < 0 {
			return nil, fmt.Errorf("unterminated string")
		}
		v := p.s[p.i+1 : p.i+1+j]
		if strings.ContainsRune(v, '\\') {
			return nil, fmt.Errorf("escapes in header strings are not supported")
		}
		p.i += j + 2
		return v, nil
	case c == '-' || c >= '0' && c <= '9':
		j := p.i + 1
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(p.s[p.i:j], "L"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("integer %q", p.s[p.i:j])
		}
		p.i = j
		if p.i < len(p.s) && p.s[p.i] == 'L' {
			p.i++
		}
		return n, nil
	default:
		for _, w := range []struct {
			s string
			v any
		}{{"True", true}, {"False", false}, {"None", nil}} {
			if strings.HasPrefix(p.s[p.i:], w.s) {
				p.i += len(w.s)
				return w.v, nil
			}
		}
		return nil, fmt.Errorf("unexpected %q at %d", c, p.i)
	}
}

// sep consumes ',' or peeks the closing byte.
func (p *litParser) sep(end byte) error {
	p.ws()
	if p.i >= len(p.s) {
		return fmt.Errorf("unexpected end")
	}
	switch p.s[p.i] {
	case ',':
		p.i++
		return nil
	case end:
		return nil
	}
	return fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
}

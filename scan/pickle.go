package scan

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// errMalformed marks a pickle the Python unpickler would refuse (or that we
// cannot follow). It is reported as a Malformed verdict.
var errMalformed = errors.New("malformed pickle")

// errStop ends a walk early on purpose (an unsupported importer).
var errStop = errors.New("stop")

// maxKeptString bounds the strings the walker remembers for STACK_GLOBAL;
// a longer one is still read but becomes an opaque value.
const maxKeptString = 1024

// maxLine bounds a protocol 0 text argument.
const maxLine = 1 << 20

type vkind uint8

const (
	vOther  vkind = iota // any value whose content does not matter
	vStr                 // a str whose exact value we know
	vGlobal              // the result of an import
	vInt                 // an int whose value we know
)

type val struct {
	k vkind
	s string
	n int64
}

// preader reads a pickle stream and counts the offset.
type preader struct {
	r   *bufio.Reader
	off int64
}

func (p *preader) byte() (byte, error) {
	b, err := p.r.ReadByte()
	if err != nil {
		return 0, p.eof(err)
	}
	p.off++
	return b, nil
}

func (p *preader) eof(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: truncated at offset %d", errMalformed, p.off)
	}
	return err
}

func (p *preader) full(n int) ([]byte, error) {
	b := make([]byte, n)
	k, err := io.ReadFull(p.r, b)
	p.off += int64(k)
	if err != nil {
		return nil, p.eof(err)
	}
	return b, nil
}

func (p *preader) uint(n int) (uint64, error) {
	b, err := p.full(n)
	if err != nil {
		return 0, err
	}
	var x uint64
	for i := n - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	return x, nil
}

// data reads n bytes and keeps them only if n <= keep.
func (p *preader) data(n uint64, keep int) ([]byte, bool, error) {
	if n <= uint64(keep) {
		b, err := p.full(int(n))
		return b, true, err
	}
	k, err := io.CopyN(io.Discard, p.r, int64(min(n, 1<<62)))
	p.off += k
	if err != nil {
		return nil, false, p.eof(err)
	}
	return nil, false, nil
}

// line reads a protocol 0 argument up to '\n' (which it drops).
func (p *preader) line() ([]byte, error) {
	var out []byte
	for {
		frag, err := p.r.ReadSlice('\n')
		p.off += int64(len(frag))
		out = append(out, frag...)
		if len(out) > maxLine {
			return nil, fmt.Errorf("%w: text argument longer than %d bytes at offset %d", errMalformed, maxLine, p.off)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			// Like CPython's readline at EOF: the partial line comes back
			// (the unpickler then drops its last byte as if it were '\n').
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			return out, p.eof(err)
		}
		return out[:len(out)-1], nil
	}
}

// walker follows a pickle's opcodes the way CPython's Unpickler
// (Lib/pickle.py) does, without building objects: it keeps a stack of
// opaque values, the marks and the memo, so that STACK_GLOBAL operands are
// known exactly. Every import (GLOBAL, INST, STACK_GLOBAL, EXT*) is checked
// against the allowlist; callables can only come from imports, so a pickle
// whose imports are all allowed cannot call anything else.
type walker struct {
	rd     *preader
	base   int64 // offset of this pickle in its member
	member string
	rep    *Report
	proto  int
	stack  []val
	meta   [][]val
	memo   map[int64]val

	result  val      // what STOP returned
	imports []string // module.name of every import, in order
}

func (w *walker) malformed(off int64, format string, a ...any) error {
	return fmt.Errorf("%w: offset %d: %s", errMalformed, w.base+off, fmt.Sprintf(format, a...))
}

func (w *walker) push(v val) { w.stack = append(w.stack, v) }

func (w *walker) pop(off int64, op string) (val, error) {
	if len(w.stack) == 0 {
		return val{}, w.malformed(off, "%s on an empty stack", op)
	}
	v := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	return v, nil
}

func (w *walker) top(off int64, op string) (val, error) {
	if len(w.stack) == 0 {
		return val{}, w.malformed(off, "%s on an empty stack", op)
	}
	return w.stack[len(w.stack)-1], nil
}

func (w *walker) popMark(off int64, op string) ([]val, error) {
	if len(w.meta) == 0 {
		return nil, w.malformed(off, "%s without MARK", op)
	}
	items := w.stack
	w.stack = w.meta[len(w.meta)-1]
	w.meta = w.meta[:len(w.meta)-1]
	return items, nil
}

func (w *walker) importGlobal(off int64, op, module, name string) error {
	full := module + "." + name
	w.rep.addImport(full)
	w.imports = append(w.imports, full)
	if why := unsupportedModule(module); why != "" {
		w.rep.add(Finding{Verdict: Unsupported, Member: w.member, Offset: w.base + off, Opcode: op, Import: full, Detail: why})
		return errStop
	}
	if !isAllowed(module, name) {
		w.rep.add(Finding{Verdict: Dangerous, Member: w.member, Offset: w.base + off, Opcode: op, Import: full,
			Detail: "imports " + full + ", which is not on the tensor-checkpoint allowlist"})
	}
	w.push(val{k: vGlobal, s: full})
	return nil
}

// truncatedImport handles a GLOBAL/INST cut by the end of the data:
// CPython still imports the module it read before failing, and importing
// runs the module's code, so a module outside the allowlist is dangerous.
func (w *walker) truncatedImport(off int64, module string) {
	if module == "" || allowedModules[canonicalModule(module)] {
		return
	}
	w.rep.add(Finding{Verdict: Dangerous, Member: w.member, Offset: w.base + off, Opcode: "GLOBAL", Import: module,
		Detail: "truncated import of module " + module + ", which is not on the allowlist (the import itself runs code)"})
}

// strVal returns a known str for bytes that Python decodes to the same
// text under every encoding the loaders use (ASCII without escapes), and an
// opaque value otherwise.
func strVal(b []byte, kept bool, utf8OK bool) val {
	if !kept {
		return val{}
	}
	for _, c := range b {
		if c >= 0x80 && !utf8OK {
			return val{}
		}
	}
	if utf8OK && !utf8.Valid(b) {
		return val{}
	}
	return val{k: vStr, s: string(b)}
}

func isASCIIPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// walk reads one pickle up to and including STOP.
// memoIndex reads the memo index of GET/PUT (a decimal text line, for the
// protocol-0 opcodes 'g' and 'p'), BINGET/BINPUT (one byte, 'h' and 'q') and
// LONG_BINGET/LONG_BINPUT (four bytes, 'j' and 'r').
func (w *walker) memoIndex(off int64, op byte, name string) (int64, error) {
	switch op {
	case 'g', 'p':
		l, err := w.rd.line()
		if err != nil {
			return 0, err
		}
		idx, err := strconv.ParseInt(string(l), 10, 64)
		if err != nil {
			return 0, w.malformed(off, "%s index %q", name, l)
		}
		if idx < 0 {
			return 0, w.malformed(off, "negative %s index", name)
		}
		return idx, nil
	case 'h', 'q':
		n, err := w.rd.uint(1)
		return int64(n), err
	default:
		n, err := w.rd.uint(4)
		return int64(n), err
	}
}

func (w *walker) walk() error {
	w.memo = map[int64]val{}
	rd := w.rd
	for {
		off := rd.off
		op, err := rd.byte()
		if err != nil {
			return err
		}
		switch op {
		case '(': // MARK
			w.meta = append(w.meta, w.stack)
			w.stack = nil
		case '.': // STOP
			v, err := w.pop(off, "STOP")
			if err != nil {
				return err
			}
			w.result = v
			return nil
		case '0': // POP
			if len(w.stack) > 0 {
				w.stack = w.stack[:len(w.stack)-1]
			} else if _, err := w.popMark(off, "POP"); err != nil {
				return err
			}
		case '1': // POP_MARK
			if _, err := w.popMark(off, "POP_MARK"); err != nil {
				return err
			}
		case '2': // DUP
			v, err := w.top(off, "DUP")
			if err != nil {
				return err
			}
			w.push(v)
		case 'F', 'I', 'L': // FLOAT, INT, LONG (text)
			l, err := rd.line()
			if err != nil {
				return err
			}
			if len(l) == 0 {
				return w.malformed(off, "empty number")
			}
			w.push(val{})
		case 'J': // BININT
			n, err := rd.uint(4)
			if err != nil {
				return err
			}
			w.push(val{k: vInt, n: int64(int32(n))})
		case 'K': // BININT1
			n, err := rd.uint(1)
			if err != nil {
				return err
			}
			w.push(val{k: vInt, n: int64(n)})
		case 'M': // BININT2
			n, err := rd.uint(2)
			if err != nil {
				return err
			}
			w.push(val{k: vInt, n: int64(n)})
		case 'G': // BINFLOAT
			if _, err := rd.full(8); err != nil {
				return err
			}
			w.push(val{})
		case 0x8a, 0x8b: // LONG1, LONG4
			n, err := rd.uint(map[byte]int{0x8a: 1, 0x8b: 4}[op])
			if err != nil {
				return err
			}
			if op == 0x8b && int32(n) < 0 {
				return w.malformed(off, "LONG4 with negative length")
			}
			if _, _, err := rd.data(n, 0); err != nil {
				return err
			}
			w.push(val{})
		case 'N', 0x88, 0x89, '}', ']', ')', 0x8f: // NONE NEWTRUE NEWFALSE EMPTY_DICT EMPTY_LIST EMPTY_TUPLE EMPTY_SET
			w.push(val{})
		case 'P': // PERSID
			if _, err := rd.line(); err != nil {
				return err
			}
			w.push(val{})
		case 'Q': // BINPERSID
			if _, err := w.pop(off, "BINPERSID"); err != nil {
				return err
			}
			w.push(val{})
		case 'R': // REDUCE
			if len(w.stack) < 2 {
				return w.malformed(off, "REDUCE needs a callable and its arguments")
			}
			w.stack = w.stack[:len(w.stack)-2]
			w.push(val{})
		case 0x81: // NEWOBJ
			if len(w.stack) < 2 {
				return w.malformed(off, "NEWOBJ needs a class and its arguments")
			}
			w.stack = w.stack[:len(w.stack)-2]
			w.push(val{})
		case 0x92: // NEWOBJ_EX
			if len(w.stack) < 3 {
				return w.malformed(off, "NEWOBJ_EX needs a class, args and kwargs")
			}
			w.stack = w.stack[:len(w.stack)-3]
			w.push(val{})
		case 'S': // STRING: 'quoted' with Python escapes
			l, err := rd.line()
			if err != nil {
				return err
			}
			if len(l) < 2 || l[0] != l[len(l)-1] || (l[0] != '\'' && l[0] != '"') {
				return w.malformed(off, "STRING argument not quoted")
			}
			body := l[1 : len(l)-1]
			if isASCIIPrintable(body) && !containsByte(body, '\\') && len(body) <= maxKeptString {
				w.push(val{k: vStr, s: string(body)})
			} else {
				w.push(val{})
			}
		case 'V': // UNICODE: raw-unicode-escape
			l, err := rd.line()
			if err != nil {
				return err
			}
			if isASCIIPrintable(l) && !containsByte(l, '\\') && len(l) <= maxKeptString {
				w.push(val{k: vStr, s: string(l)})
			} else {
				w.push(val{})
			}
		case 'T', 'U': // BINSTRING, SHORT_BINSTRING: decoded with the loader's encoding
			n, err := rd.uint(map[byte]int{'T': 4, 'U': 1}[op])
			if err != nil {
				return err
			}
			if op == 'T' && int32(n) < 0 {
				return w.malformed(off, "BINSTRING with negative length")
			}
			b, kept, err := rd.data(n, maxKeptString)
			if err != nil {
				return err
			}
			w.push(strVal(b, kept, false))
		case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
			n, err := rd.uint(map[byte]int{'X': 4, 0x8c: 1, 0x8d: 8}[op])
			if err != nil {
				return err
			}
			b, kept, err := rd.data(n, maxKeptString)
			if err != nil {
				return err
			}
			w.push(strVal(b, kept, true))
		case 'B', 'C', 0x8e, 0x96: // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
			n, err := rd.uint(map[byte]int{'B': 4, 'C': 1, 0x8e: 8, 0x96: 8}[op])
			if err != nil {
				return err
			}
			if _, _, err := rd.data(n, 0); err != nil {
				return err
			}
			w.push(val{})
		case 'a': // APPEND
			if _, err := w.pop(off, "APPEND"); err != nil {
				return err
			}
			if _, err := w.top(off, "APPEND"); err != nil {
				return err
			}
		case 'e', 0x90: // APPENDS, ADDITEMS
			if _, err := w.popMark(off, "APPENDS"); err != nil {
				return err
			}
			if _, err := w.top(off, "APPENDS"); err != nil {
				return err
			}
		case 'b': // BUILD
			if _, err := w.pop(off, "BUILD"); err != nil {
				return err
			}
			if _, err := w.top(off, "BUILD"); err != nil {
				return err
			}
		case 'c', 'i': // GLOBAL, INST
			mod, err := rd.line()
			if err != nil {
				w.truncatedImport(off, string(mod))
				return err
			}
			name, err := rd.line()
			if err != nil {
				w.truncatedImport(off, string(mod))
				return err
			}
			if !utf8.Valid(mod) || !utf8.Valid(name) {
				return w.malformed(off, "import name is not UTF-8")
			}
			opname := "GLOBAL"
			if op == 'i' {
				opname = "INST"
			}
			// Python imports before it pops INST's mark: check first.
			if err := w.importGlobal(off, opname, string(mod), string(name)); err != nil {
				return err
			}
			if op == 'i' {
				w.stack = w.stack[:len(w.stack)-1]
				if _, err := w.popMark(off, "INST"); err != nil {
					return err
				}
				w.push(val{})
			}
		case 0x93: // STACK_GLOBAL
			name, err := w.pop(off, "STACK_GLOBAL")
			if err != nil {
				return err
			}
			mod, err := w.pop(off, "STACK_GLOBAL")
			if err != nil {
				return err
			}
			if name.k != vStr || mod.k != vStr {
				w.rep.add(Finding{Verdict: Dangerous, Member: w.member, Offset: w.base + off, Opcode: "STACK_GLOBAL",
					Detail: "imports a name that is not a plain string constant, so it cannot be checked"})
				w.push(val{k: vGlobal})
				continue
			}
			if err := w.importGlobal(off, "STACK_GLOBAL", mod.s, name.s); err != nil {
				return err
			}
		case 0x82, 0x83, 0x84: // EXT1, EXT2, EXT4
			n, err := rd.uint(map[byte]int{0x82: 1, 0x83: 2, 0x84: 4}[op])
			if err != nil {
				return err
			}
			w.rep.add(Finding{Verdict: Dangerous, Member: w.member, Offset: w.base + off, Opcode: "EXT",
				Import: "copyreg extension " + strconv.FormatUint(n, 10),
				Detail: "imports through the copyreg extension registry, which cannot be checked"})
			w.push(val{k: vGlobal})
		case 'd', 'l', 't', 0x91: // DICT, LIST, TUPLE, FROZENSET
			items, err := w.popMark(off, "DICT/LIST/TUPLE")
			if err != nil {
				return err
			}
			if op == 'd' && len(items)%2 != 0 {
				return w.malformed(off, "DICT with an odd number of items")
			}
			w.push(val{})
		case 'o': // OBJ
			items, err := w.popMark(off, "OBJ")
			if err != nil {
				return err
			}
			if len(items) == 0 {
				return w.malformed(off, "OBJ without a class")
			}
			w.push(val{})
		case 's': // SETITEM
			if len(w.stack) < 3 {
				return w.malformed(off, "SETITEM needs a dict, a key and a value")
			}
			w.stack = w.stack[:len(w.stack)-2]
		case 'u': // SETITEMS
			items, err := w.popMark(off, "SETITEMS")
			if err != nil {
				return err
			}
			if len(items)%2 != 0 {
				return w.malformed(off, "SETITEMS with an odd number of items")
			}
			if _, err := w.top(off, "SETITEMS"); err != nil {
				return err
			}
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op - 0x84)
			if len(w.stack) < n {
				return w.malformed(off, "TUPLE%d on a stack of %d", n, len(w.stack))
			}
			w.stack = w.stack[:len(w.stack)-n]
			w.push(val{})
		case 'g', 'h', 'j': // GET, BINGET, LONG_BINGET
			idx, err := w.memoIndex(off, op, "GET")
			if err != nil {
				return err
			}
			v, ok := w.memo[idx]
			if !ok {
				return w.malformed(off, "memo value %d not found", idx)
			}
			w.push(v)
		case 'p', 'q', 'r': // PUT, BINPUT, LONG_BINPUT
			idx, err := w.memoIndex(off, op, "PUT")
			if err != nil {
				return err
			}
			v, err := w.top(off, "PUT")
			if err != nil {
				return err
			}
			w.memo[idx] = v
		case 0x94: // MEMOIZE
			v, err := w.top(off, "MEMOIZE")
			if err != nil {
				return err
			}
			w.memo[int64(len(w.memo))] = v
		case 0x80: // PROTO
			b, err := rd.byte()
			if err != nil {
				return err
			}
			if b > 5 {
				return w.malformed(off, "unsupported protocol %d", b)
			}
			w.proto = int(b)
		case 0x95: // FRAME
			if _, err := rd.uint(8); err != nil {
				return err
			}
		case 0x97: // NEXT_BUFFER (out-of-band data)
			w.push(val{})
		case 0x98: // READONLY_BUFFER
			if _, err := w.top(off, "READONLY_BUFFER"); err != nil {
				return err
			}
		default:
			return w.malformed(off, "unknown opcode 0x%02x", op)
		}
	}
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// torchLegacyMagic is the first pickle of a legacy (pre-1.6) torch.save
// file: protocol 2, LONG1 0x1950a86a20f9469cfc6c, STOP.
var torchLegacyMagic = []byte{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e}

// isTorchLegacy reports whether the stream starts with the magic-number
// pickle of a legacy torch.save file, in any protocol (2 is the default; 3
// to 5 add a FRAME before the number).
func isTorchLegacy(head []byte) bool {
	if bytes.HasPrefix(head, torchLegacyMagic) {
		return true
	}
	magic := torchLegacyMagic[2 : len(torchLegacyMagic)-1] // LONG1 and the number
	i := bytes.Index(head, magic)
	return len(head) > 2 && head[0] == 0x80 && head[1] >= 2 && i >= 0 && i <= 11 &&
		len(head) > i+len(magic) && head[i+len(magic)] == '.'
}

// scanPickleStream walks the pickles in r. A legacy torch file is five
// pickles (magic, protocol, sys info, the object, storage keys) followed by
// raw storage bytes; any other stream must be a sequence of complete
// pickles, and trailing bytes that are not are malformed. It returns the
// format it found.
func scanPickleStream(r io.Reader, member string, rep *Report) string {
	br := bufio.NewReaderSize(r, 64<<10)
	format := "pickle"
	limit := -1 // pickles left to read; -1: until EOF
	if head, _ := br.Peek(32); isTorchLegacy(head) {
		format = "pytorch-legacy"
		limit = 5
	}
	rd := &preader{r: br}
	for n := 0; limit < 0 || n < limit; n++ {
		if n > 0 && limit < 0 {
			if _, err := br.Peek(1); err == io.EOF {
				break
			}
		}
		w := &walker{rd: rd, member: member, rep: rep} // offsets: from the member's start
		if err := w.walk(); err != nil {
			if errors.Is(err, errStop) {
				return format
			}
			if n > 0 && limit < 0 && !errors.Is(err, errMalformed) {
				err = fmt.Errorf("%w: %w", errMalformed, err)
			}
			rep.add(Finding{Verdict: Malformed, Member: member, Detail: malformedDetail(err, n)})
			return format
		}
	}
	return format
}

func malformedDetail(err error, n int) string {
	if n > 0 {
		return fmt.Sprintf("pickle #%d: %v", n+1, err)
	}
	return err.Error()
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

package scan

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The .npy header is a Python literal that numpy reads with
// ast.literal_eval. pyTuple, pyList, pyDict, pyBytes and the Go string,
// int64, bool and nil types stand for the Python values; parsePyLiteral
// reads the subset numpy could ever accept and refuses the rest (floats,
// sets, complex numbers, comments), which only makes a header Malformed.
type (
	pyTuple []any
	pyList  []any
	pyBytes string
	// pyDict keeps the keys in source order, as a Python dict does.
	pyDict struct {
		keys []any
		vals []any
	}
)

// get returns the value of a str key.
func (d pyDict) get(key string) (any, bool) {
	for i, k := range d.keys {
		if k == key {
			return d.vals[i], true
		}
	}
	return nil, false
}

// parsePyLiteral parses s as ast.literal_eval would (after numpy's
// lstrip of spaces and tabs).
func parsePyLiteral(s string) (any, error) {
	p := &litParser{s: strings.TrimLeft(s, " \t")}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.peek() == ',' {
		// A bare tuple: "2, 8" is (2, 8).
		items := pyTuple{v}
		for p.peek() == ',' {
			p.i++
			p.ws()
			if p.i == len(p.s) {
				break
			}
			x, err := p.value(1)
			if err != nil {
				return nil, err
			}
			items = append(items, x)
			p.ws()
		}
		v = items
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("trailing text at %d", p.i)
	}
	return v, nil
}

type litParser struct {
	s string
	i int
}

// ws skips what Python's tokenizer skips inside brackets: spaces, tabs,
// form feeds, newlines and backslash continuations.
func (p *litParser) ws() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			p.i++
		case c == '\\' && p.i+1 < len(p.s) && p.s[p.i+1] == '\n':
			p.i += 2
		default:
			return
		}
	}
}

func (p *litParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *litParser) value(depth int) (any, error) {
	if depth > 32 {
		return nil, fmt.Errorf("nested too deep")
	}
	p.ws()
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("unexpected end")
	}
	c := p.s[p.i]
	switch {
	case c == '{':
		p.i++
		var d pyDict
		seen := map[string]bool{}
		for {
			p.ws()
			if p.peek() == '}' {
				p.i++
				return d, nil
			}
			k, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if !hashable(k) {
				return nil, fmt.Errorf("unhashable dict key %v", k)
			}
			p.ws()
			if p.peek() != ':' {
				return nil, fmt.Errorf("missing ':' at %d (sets are not supported)", p.i)
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if ks := fmt.Sprintf("%T %#v", k, k); seen[ks] {
				// Python keeps the last value; a header that says
				// two things is refused.
				return nil, fmt.Errorf("duplicate key %v", k)
			} else {
				seen[ks] = true
			}
			d.keys = append(d.keys, k)
			d.vals = append(d.vals, v)
			if _, err := p.sep('}'); err != nil {
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
		comma := false
		for {
			p.ws()
			if p.peek() == end {
				p.i++
				if end == ']' {
					return pyList(items), nil
				}
				if len(items) == 1 && !comma {
					return items[0], nil // (x) is x
				}
				return pyTuple(items), nil
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
			if comma, err = p.sep(end); err != nil {
				return nil, err
			}
		}
	case c == '-' || c == '+':
		p.i++
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("unary %c on %T", c, v)
		}
		if c == '-' {
			n = -n
		}
		return n, nil
	case c >= '0' && c <= '9':
		return p.integer()
	case isIdentStart(c):
		j := p.i
		for j < len(p.s) && (isIdentStart(p.s[j]) || p.s[j] >= '0' && p.s[j] <= '9') {
			j++
		}
		word := p.s[p.i:j]
		if j < len(p.s) && (p.s[j] == '\'' || p.s[j] == '"') && len(word) <= 2 {
			return p.strings()
		}
		p.i = j
		switch word {
		case "True":
			return true, nil
		case "False":
			return false, nil
		case "None":
			return nil, nil
		}
		return nil, fmt.Errorf("name %q is not a literal", word)
	case c == '\'' || c == '"':
		return p.strings()
	}
	return nil, fmt.Errorf("unexpected %q at %d", c, p.i)
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func hashable(v any) bool {
	switch t := v.(type) {
	case string, pyBytes, int64, bool, nil:
		return true
	case pyTuple:
		for _, x := range t {
			if !hashable(x) {
				return false
			}
		}
		return true
	}
	return false
}

// integer reads a decimal integer; numpy's header filter drops the
// Python 2 'L' suffix of versions 1.0 and 2.0, which the caller allows.
func (p *litParser) integer() (any, error) {
	j := p.i
	for j < len(p.s) && (p.s[j] >= '0' && p.s[j] <= '9' || p.s[j] == '_') {
		j++
	}
	txt := p.s[p.i:j]
	if j < len(p.s) && (p.s[j] == '.' || p.s[j] == 'e' || p.s[j] == 'E' || p.s[j] == 'x' || p.s[j] == 'X' ||
		p.s[j] == 'o' || p.s[j] == 'O' || p.s[j] == 'b' || p.s[j] == 'B' || p.s[j] == 'j' || p.s[j] == 'J') {
		return nil, fmt.Errorf("only decimal integers are supported at %d", p.i)
	}
	if strings.HasPrefix(txt, "0") && strings.Trim(txt, "0_") != "" || strings.HasSuffix(txt, "_") || strings.Contains(txt, "__") {
		return nil, fmt.Errorf("invalid integer %q", txt)
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(txt, "_", ""), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("integer %q", txt)
	}
	p.i = j
	if p.peek() == 'L' {
		p.i++
	}
	return n, nil
}

// strings reads one string literal, or several adjacent ones, which
// Python concatenates ('O' 'bject' is 'Object'). Mixing bytes and str is
// a syntax error.
func (p *litParser) strings() (any, error) {
	var b strings.Builder
	kind := -1 // 0 str, 1 bytes
	for {
		p.ws()
		j := p.i
		for j < len(p.s) && isIdentStart(p.s[j]) {
			j++
		}
		if j >= len(p.s) || p.s[j] != '\'' && p.s[j] != '"' || j-p.i > 2 {
			break
		}
		prefix := strings.ToLower(p.s[p.i:j])
		raw, isBytes := strings.Contains(prefix, "r"), strings.Contains(prefix, "b")
		switch prefix {
		case "", "r", "u", "b", "br", "rb":
		default:
			return nil, fmt.Errorf("string prefix %q is not a literal", p.s[p.i:j])
		}
		k := 0
		if isBytes {
			k = 1
		}
		if kind >= 0 && kind != k {
			return nil, fmt.Errorf("bytes and str concatenated at %d", p.i)
		}
		kind = k
		p.i = j
		s, err := p.quoted(raw, isBytes)
		if err != nil {
			return nil, err
		}
		b.WriteString(s)
	}
	if kind == 1 {
		return pyBytes(b.String()), nil
	}
	return b.String(), nil
}

// quoted reads one quoted literal at p.i (after its prefix) and returns
// its value as UTF-8.
func (p *litParser) quoted(raw, isBytes bool) (string, error) {
	q := p.s[p.i : p.i+1]
	if strings.HasPrefix(p.s[p.i:], q+q+q) {
		q = q + q + q
	}
	p.i += len(q)
	var b strings.Builder
	for {
		if p.i >= len(p.s) {
			return "", fmt.Errorf("unterminated string")
		}
		if strings.HasPrefix(p.s[p.i:], q) {
			p.i += len(q)
			return b.String(), nil
		}
		c := p.s[p.i]
		if c == '\n' && len(q) == 1 {
			return "", fmt.Errorf("newline in string")
		}
		if isBytes && c >= 0x80 {
			return "", fmt.Errorf("bytes literal with a non-ASCII character")
		}
		if c != '\\' {
			b.WriteByte(c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.s) {
			return "", fmt.Errorf("unterminated string")
		}
		e := p.s[p.i+1]
		if raw {
			// A raw string keeps the backslash; it only stops the
			// next character from ending the string.
			b.WriteByte('\\')
			b.WriteByte(e)
			p.i += 2
			continue
		}
		p.i += 2
		switch e {
		case '\n':
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 'a':
			b.WriteByte(7)
		case 'b':
			b.WriteByte(8)
		case 'f':
			b.WriteByte(12)
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte(11)
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n := int(e - '0')
			for k := 0; k < 2 && p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '7'; k++ {
				n = n*8 + int(p.s[p.i]-'0')
				p.i++
			}
			if err := putCode(&b, n, isBytes); err != nil {
				return "", err
			}
		case 'x', 'u', 'U':
			w := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if isBytes && e != 'x' {
				b.WriteByte('\\')
				b.WriteByte(e)
				continue
			}
			if p.i+w > len(p.s) {
				return "", fmt.Errorf("truncated \\%c escape", e)
			}
			n, err := strconv.ParseUint(p.s[p.i:p.i+w], 16, 32)
			if err != nil || strings.ContainsAny(p.s[p.i:p.i+w], "+-_") {
				return "", fmt.Errorf("bad \\%c escape", e)
			}
			p.i += w
			if err := putCode(&b, int(n), isBytes); err != nil {
				return "", err
			}
		case 'N':
			return "", fmt.Errorf("\\N{...} escapes are not supported")
		default:
			// Python keeps an unknown escape as it is.
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
}

func putCode(b *strings.Builder, n int, isBytes bool) error {
	if isBytes {
		if n > 0xff {
			return fmt.Errorf("escape out of range")
		}
		b.WriteByte(byte(n))
		return nil
	}
	if n > utf8.MaxRune || n >= 0xd800 && n <= 0xdfff {
		return fmt.Errorf("escape %#x is not a character", n)
	}
	b.WriteRune(rune(n))
	return nil
}

// sep consumes ',' (reporting it) or peeks the closing byte.
func (p *litParser) sep(end byte) (bool, error) {
	p.ws()
	if p.i >= len(p.s) {
		return false, fmt.Errorf("unexpected end")
	}
	switch p.s[p.i] {
	case ',':
		p.i++
		return true, nil
	case end:
		return false, nil
	}
	return false, fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
}

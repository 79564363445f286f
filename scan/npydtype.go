package scan

import (
	"fmt"
	"math"
	"regexp"
	"strings"
)

// This file reads a .npy header's descr the way numpy.lib.format's
// descr_to_dtype does (numpy 1.24, the Debian version torch runs with):
// it answers whether the dtype holds Python objects (then np.load
// unpickles the rest of the file) or numpy would refuse the header. It
// follows numpy's own steps: a string goes to np.dtype(str) (comma
// strings, byte order, datetimes, one-letter codes, kind and size with
// C's strtol, then the names in numpy.sctypeDict), a tuple is (base,
// shape), and anything else is a list of fields (name, dtype[, shape]) at
// any depth.

// errDtype is a descr numpy would not turn into a dtype.
type errDtype struct{ what string }

func (e *errDtype) Error() string { return e.what }

func dtypeErr(format string, a ...any) error { return &errDtype{fmt.Sprintf(format, a...)} }

// dtypeInfo is what the scanner needs of a dtype: whether it holds
// Python objects, and whether it is a plain void (numpy's type is void
// and it has no field names: 'V4', or any subarray), which numpy drops as
// padding when its field name is empty.
type dtypeInfo struct {
	obj, void bool
	zero      bool // itemsize 0: an unsized 'S', 'U' or 'V', a shape with a 0, no fields
	fields    bool // structured
	negative  bool // a negative itemsize, which numpy takes alone but not in a structure
}

// descrHasObject reports whether numpy's descr_to_dtype(d) holds the
// object type anywhere, or an error where numpy raises.
func descrHasObject(d any) (bool, error) {
	dt, err := descrToDtype(d, 0)
	return dt.obj, err
}

func descrToDtype(d any, depth int) (dtypeInfo, error) {
	if depth > 32 {
		return dtypeInfo{}, dtypeErr("dtype nested too deep")
	}
	switch t := d.(type) {
	case string:
		return dtypeFromString(t, depth)
	case pyTuple:
		// (base, shape): numpy indexes [0] and [1] and ignores the rest.
		if len(t) < 2 {
			return dtypeInfo{}, dtypeErr("subarray dtype %v needs a base and a shape", t)
		}
		base, err := descrToDtype(t[0], depth+1)
		if err != nil {
			return dtypeInfo{}, err
		}
		return subarray(base, t[1])
	}
	// Anything else is iterated as a list of fields.
	var fields []any
	switch t := d.(type) {
	case pyList:
		fields = t
	case pyDict:
		fields = t.keys
	case pyBytes:
		return dtypeInfo{}, dtypeErr("descr is bytes, not str")
	default:
		return dtypeInfo{}, dtypeErr("descr %v (%T) is not a dtype", d, d)
	}
	out := dtypeInfo{zero: true, fields: true}
	names := map[string]bool{}
	for _, f := range fields {
		var parts []any
		switch ft := f.(type) {
		case pyTuple:
			parts = ft
		case pyList:
			parts = ft
		case string: // a string is a sequence of one-letter strings
			for _, r := range ft {
				parts = append(parts, string(r))
			}
		default:
			return dtypeInfo{}, dtypeErr("field %v is not a (name, dtype[, shape]) sequence", f)
		}
		if len(parts) != 2 && len(parts) != 3 {
			return dtypeInfo{}, dtypeErr("field %v has %d items, want 2 or 3", f, len(parts))
		}
		fdt, err := descrToDtype(parts[1], depth+1)
		if err != nil {
			return dtypeInfo{}, err
		}
		if len(parts) == 3 {
			if fdt, err = subarray(fdt, parts[2]); err != nil {
				return dtypeInfo{}, err
			}
		}
		out.zero = out.zero && fdt.zero
		if fdt.negative {
			return dtypeInfo{}, dtypeErr("field %v has a negative itemsize", f)
		}
		// numpy drops unnamed void padding; any other field counts.
		if name, ok := parts[0].(string); ok && name == "" && fdt.void {
			continue
		}
		name, ok := parts[0].(string)
		if !ok {
			tn, isTuple := parts[0].(pyTuple)
			if !isTuple || len(tn) != 2 {
				return dtypeInfo{}, dtypeErr("field name %v is not a string or a (title, name) pair", parts[0])
			}
			if name, ok = tn[1].(string); !ok {
				return dtypeInfo{}, dtypeErr("field name %v is not a string", tn[1])
			}
			if title, ok := tn[0].(string); ok {
				if names[title] {
					return dtypeInfo{}, dtypeErr("field title %q used twice", title)
				}
				names[title] = true
			}
		}
		if names[name] {
			return dtypeInfo{}, dtypeErr("field name %q used twice", name)
		}
		names[name] = true
		out.obj = out.obj || fdt.obj
	}
	return out, nil
}

// subarray is np.dtype((base, shape)): for an unsized base ('S', 'V',
// anything of size 0 without fields) the second item is its size;
// otherwise shape () is the base itself, anything else a subarray (a
// void).
func subarray(base dtypeInfo, shape any) (dtypeInfo, error) {
	if base.zero && !base.fields {
		n, ok := shape.(int64)
		if b, isBool := shape.(bool); isBool {
			n, ok = map[bool]int64{false: 0, true: 1}[b], true
		}
		if !ok || n > math.MaxInt32 {
			return dtypeInfo{}, dtypeErr("invalid itemsize in generic type tuple")
		}
		base.zero, base.negative = n == 0, n < 0
		return base, nil
	}
	if err := checkSubarrayShape(shape); err != nil {
		return dtypeInfo{}, err
	}
	if t, ok := shape.(pyTuple); ok && len(t) == 0 || shape == int64(1) {
		// (base, ()) is base, and so is (base, 1) (deprecated).
		return base, nil
	}
	zero := base.zero || shape == int64(0)
	if t, ok := shape.(pyTuple); ok {
		for _, d := range t {
			zero = zero || d == int64(0)
		}
	}
	return dtypeInfo{obj: base.obj, void: true, zero: zero, negative: base.negative}, nil
}

// checkSubarrayShape accepts what np.dtype((base, shape)) takes: a
// non-negative int or a tuple of them.
func checkSubarrayShape(s any) error {
	switch t := s.(type) {
	case int64:
		if t < 0 || t > math.MaxInt32 {
			return dtypeErr("subarray shape %d out of range", t)
		}
		return nil
	case pyTuple:
		for _, x := range t {
			if n, ok := x.(int64); !ok || n < 0 || n > math.MaxInt32 {
				return dtypeErr("subarray shape %v", s)
			}
		}
		return nil
	}
	return dtypeErr("subarray shape %v is not an int or a tuple of ints", s)
}

// typeChars are the one-letter codes np.dtype accepts.
const typeChars = "?BDFGHILMOPQSUVabcdefghilmpq"

// kindSizes are the sizes np.dtype accepts after a kind letter (C's
// PyArray_TypestrConvert on x86-64); S, a, U and V take any size.
var kindSizes = map[byte][]int32{
	'b': {1}, 'i': {1, 2, 4, 8}, 'u': {1, 2, 4, 8}, 'f': {2, 4, 8, 16}, 'c': {8, 16, 32},
	'O': {4, 8}, 'M': {8}, 'm': {8},
}

// sctypeNames are numpy.sctypeDict's string keys (numpy 1.24); true
// marks the names of the object type.
var sctypeNames = func() map[string]bool {
	m := map[string]bool{"O": true, "object": true, "object0": true, "object_": true}
	for _, n := range strings.Fields(`? B D F G H I L M M8 P Q S U V a b b1 bool bool8 bool_ byte bytes
		bytes0 bytes_ c16 c32 c8 cdouble cfloat clongdouble clongfloat complex complex128 complex256
		complex64 complex_ csingle d datetime64 double e f f16 f2 f4 f8 float float128 float16 float32
		float64 float_ g h half i i1 i2 i4 i8 int int0 int16 int32 int64 int8 int_ intc intp l long
		longcomplex longdouble longfloat longlong m m8 p q short single singlecomplex str str0 str_
		string_ timedelta64 u1 u2 u4 u8 ubyte uint uint0 uint16 uint32 uint64 uint8 uintc uintp ulong
		ulonglong unicode unicode_ ushort void void0`) {
		m[n] = false
	}
	return m
}()

// unsizedNames are the sctypeDict names of the flexible types, which
// have no size of their own.
var unsizedNames = map[string]bool{"S": true, "U": true, "V": true, "a": true, "str": true, "str0": true,
	"str_": true, "string_": true, "bytes": true, "bytes0": true, "bytes_": true, "unicode": true,
	"unicode_": true, "void": true, "void0": true}

func isByteOrder(c byte) bool { return c == '<' || c == '>' || c == '=' || c == '|' }

// dtypeFromString follows np.dtype(str) (descriptor.c _convert_from_str).
func dtypeFromString(s string, depth int) (dtypeInfo, error) {
	if s == "" {
		return dtypeInfo{}, dtypeErr("empty dtype string")
	}
	if isCommaString(s) {
		return dtypeFromCommaString(s, depth)
	}
	t := s
	if isByteOrder(t[0]) {
		t = t[1:]
	}
	if t == "" {
		return dtypeInfo{}, dtypeErr("dtype %q is only a byte order", s)
	}
	if isDatetimeTypestr(t) {
		return dtypeInfo{}, checkDatetime(s, t)
	}
	if len(t) == 1 {
		if strings.IndexByte(typeChars, t[0]) >= 0 {
			return dtypeInfo{obj: t[0] == 'O', void: t[0] == 'V', zero: strings.IndexByte("SUVa", t[0]) >= 0}, nil
		}
	} else if size, end := strtol(t[1:]); end == len(t)-1 {
		switch k := t[0]; k {
		case 'S', 'a', 'V':
			return dtypeInfo{void: k == 'V', zero: size == 0}, nil
		case 'U':
			return dtypeInfo{zero: size<<2 == 0}, nil
		default:
			for _, ok := range kindSizes[k] {
				if size == ok {
					return dtypeInfo{obj: k == 'O'}, nil
				}
			}
		}
	}
	if obj, ok := sctypeNames[s]; ok {
		return dtypeInfo{obj: obj, void: s == "V" || s == "void" || s == "void0", zero: unsizedNames[s]}, nil
	}
	return dtypeInfo{}, dtypeErr("data type %q not understood", s)
}

// strtol parses like C's strtol(s, &end, 10) and then numpy's cast to
// int: leading white space, a sign, digits; it returns the value and how
// many bytes were used (0 when there are no digits).
func strtol(s string) (int32, int) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] >= '\t' && s[i] <= '\r') {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var v uint64
	over := false
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		if v > (1<<63-1-9)/10 {
			over = true
		}
		v = v*10 + uint64(s[i]-'0')
		i++
	}
	if i == start {
		return 0, 0
	}
	var l int64
	switch {
	case over && neg:
		l = -1 << 63
	case over:
		l = 1<<63 - 1
	case neg:
		l = -int64(v)
	default:
		l = int64(v)
	}
	return int32(l), i
}

// isCommaString is numpy's _check_for_commastring.
func isCommaString(s string) bool {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	if digit(s[0]) || len(s) > 1 && isByteOrder(s[0]) && digit(s[1]) {
		return true
	}
	if len(s) > 1 && s[0] == '(' && s[1] == ')' || len(s) > 3 && isByteOrder(s[0]) && s[1] == '(' && s[2] == ')' {
		return true
	}
	sq := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',':
			if sq == 0 {
				return true
			}
		case '[':
			sq++
		case ']':
			sq--
		}
	}
	return false
}

// The regular expressions of numpy.core._internal._commastring; Go's
// RE2 matches them leftmost-first like Python's re.
var (
	commaItem  = regexp.MustCompile(`^([<>|=]?)( *[(]?[ ,0-9]*[)]? *)([<>|=]?)([A-Za-z0-9.?]*(?:\[[a-zA-Z0-9,.]+\])?)`)
	commaSep   = regexp.MustCompile(`^\s*,\s*`)
	commaSpace = regexp.MustCompile(`^\s+$`)
)

// dtypeFromCommaString follows _commastring and _convert_from_commastring:
// "i4, (2,)O" is a structured dtype with fields f0 and f1.
func dtypeFromCommaString(s string, depth int) (dtypeInfo, error) {
	type item struct {
		dtype   string
		repeats string
	}
	var items []item
	for at := 0; at < len(s); {
		m := commaItem.FindStringSubmatchIndex(s[at:])
		if m == nil {
			return dtypeInfo{}, dtypeErr("format %q is not understood", s)
		}
		g := func(i int) string { return s[at+m[2*i] : at+m[2*i+1]] }
		order1, repeats, order2, dt := g(1), g(2), g(3), g(4)
		at += m[1]
		if at < len(s) {
			if commaSpace.MatchString(s[at:]) {
				at = len(s)
			} else if sm := commaSep.FindStringIndex(s[at:]); sm != nil {
				at += sm[1]
			} else {
				return dtypeInfo{}, dtypeErr("format %q is not understood", s)
			}
		}
		order := order1
		if order2 != "" {
			if order1 != "" && convOrder(order1) != convOrder(order2) {
				return dtypeInfo{}, dtypeErr("inconsistent byte-order specification %s and %s", order1, order2)
			}
			order = order2
			if order1 != "" {
				order = order1
			}
		}
		if order == "|" || order == "=" || order == "<" {
			order = "" // the native order on little-endian x86-64
		}
		items = append(items, item{order + dt, repeats})
	}
	if len(items) == 0 {
		return dtypeInfo{}, dtypeErr("format %q is empty", s)
	}
	multi := len(items) > 1
	if last := items[len(items)-1]; multi && last.dtype == "" && last.repeats == "" {
		// A list of fields ignores a trailing empty string ("m8,=").
		items = items[:len(items)-1]
	}
	out := dtypeInfo{zero: true, fields: true}
	for _, it := range items {
		var dt dtypeInfo
		var err error
		if it.repeats == "" {
			dt, err = descrToDtype(it.dtype, depth+1)
		} else {
			var shape any
			shape, err = parsePyLiteral(it.repeats)
			if err != nil {
				return dtypeInfo{}, dtypeErr("repeat count %q: %v", it.repeats, err)
			}
			dt, err = descrToDtype(pyTuple{it.dtype, shape}, depth+1)
		}
		if err != nil {
			return dtypeInfo{}, err
		}
		if !multi {
			return dt, nil
		}
		if dt.negative {
			return dtypeInfo{}, dtypeErr("field %q has a negative itemsize", it.dtype)
		}
		out.obj = out.obj || dt.obj
		out.zero = out.zero && dt.zero
	}
	return out, nil
}

func convOrder(o string) string {
	switch o {
	case "=", "|":
		return "<"
	}
	return o
}

// isDatetimeTypestr is numpy's is_datetime_typestr.
func isDatetimeTypestr(t string) bool {
	return len(t) >= 2 && t[1] == '8' && (t[0] == 'M' || t[0] == 'm') ||
		strings.HasPrefix(t, "datetime64") || strings.HasPrefix(t, "timedelta64")
}

var datetimeMeta = regexp.MustCompile(`^\[ *[+]?[0-9]*(Y|M|W|D|h|m|s|ms|us|μs|ns|ps|fs|as|generic)(/[0-9]+)?\]$`)

// checkDatetime validates the unit of a datetime64/timedelta64 dtype;
// either way the dtype holds no objects.
func checkDatetime(s, t string) error {
	switch {
	case len(t) >= 2 && t[1] == '8' && (t[0] == 'M' || t[0] == 'm'):
		t = t[2:]
	case strings.HasPrefix(t, "datetime64"):
		t = t[len("datetime64"):]
	default:
		t = t[len("timedelta64"):]
	}
	if t != "" && !datetimeMeta.MatchString(t) {
		return dtypeErr("invalid datetime unit in %q", s)
	}
	return nil
}

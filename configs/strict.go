package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is a problem with one field of a configuration file. Its message
// is one line: the file, the field's path, what is wrong and what is allowed.
type FieldError struct {
	File  string // file name as the user gave it, or "" for flags
	Line  int    // 1-based line in File, 0 when unknown
	Field string // dotted path, e.g. limits.cpus or secrets[0].path
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// maxValues bounds how many YAML values one file may decode to, counting each
// use of an alias again: a few lines of anchors and aliases can otherwise
// expand to billions of values (the "billion laughs" file). No real profile
// comes near it.
const maxValues = 1 << 16

// fieldLines maps a field's dotted path to the line it was written on, so that
// errors found after decoding (Validate) can name the line too.
type fieldLines map[string]int

// line returns the line of field, or of its nearest written parent, or 0.
func (fl fieldLines) line(field string) int {
	for field != "" {
		if l, ok := fl[field]; ok {
			return l
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return 0
}

// annotate fills the file and line of every *FieldError in err (a single one
// or an errors.Join of them) that lacks them.
func annotate(err error, file string, fl fieldLines) {
	var fe *FieldError
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			annotate(x, file, fl)
		}
		return
	case *FieldError:
		fe = e
	default:
		if !errors.As(err, &fe) {
			return
		}
	}
	if fe.File == "" {
		fe.File = file
	}
	if fe.Line == 0 && fe.File == file {
		fe.Line = fl.line(fe.Field)
	}
}

// decodeStrict decodes data into out (a pointer to struct), refusing unknown
// fields, duplicate keys and wrong types with a FieldError that names the
// field and what is allowed. yaml.v3's own KnownFields errors name the Go type,
// not the field a user wrote; this walker names the field. The file must hold
// exactly one YAML document whose top level is a mapping; merge keys (<<) are
// refused. It returns the line of every field written.
func decodeStrict(file string, data []byte, out any) (fieldLines, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, &FieldError{File: file, Msg: "not valid YAML: " + oneLine(strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, &FieldError{File: file, Msg: "file is empty; it needs at least version: 1"}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, &FieldError{File: file, Msg: "not valid YAML: " + oneLine(strings.TrimPrefix(err.Error(), "yaml: "))}
	default:
		return nil, &FieldError{File: file, Line: extra.Line, Msg: "holds more than one YAML document (---); a file holds exactly one"}
	}
	d := &decoder{file: file, lines: fieldLines{}}
	if err := d.decode("", doc.Content[0], reflect.ValueOf(out).Elem()); err != nil {
		return nil, err
	}
	return d.lines, nil
}

type decoder struct {
	file   string
	lines  fieldLines
	values int
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// resolve follows an alias to the value it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// countValues counts the values under n, following aliases.
func (d *decoder) countValues(n *yaml.Node) {
	d.values++
	if d.values > maxValues {
		return
	}
	for _, c := range resolve(n).Content {
		d.countValues(c)
	}
}

func (d *decoder) tooMany(path string, n *yaml.Node) error {
	return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: fmt.Sprintf("file expands to more than %d values (anchors and aliases?); write a smaller file", maxValues)}
}

// key returns the name a mapping key spells, refusing merge keys and keys that
// are not plain names.
func (d *decoder) key(path string, k *yaml.Node) (string, error) {
	k = resolve(k)
	if k.Kind != yaml.ScalarNode {
		return "", &FieldError{File: d.file, Line: k.Line, Field: path, Msg: "has a key that is " + kindName(k) + "; keys must be plain names"}
	}
	if k.ShortTag() == "!!merge" {
		return "", &FieldError{File: d.file, Line: k.Line, Field: join(path, "<<"), Msg: "merge keys (<<) are not supported; write the fields out"}
	}
	return k.Value, nil
}

func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) error {
	n = resolve(n)
	d.values++
	if d.values > maxValues {
		return d.tooMany(path, n)
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if d.countValues(n); d.values > maxValues {
			return d.tooMany(path, n)
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return fieldErr(d.file, path, n, err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return nil
		}
		nv := reflect.New(v.Type().Elem())
		if err := d.decode(path, n, nv.Elem()); err != nil {
			return err
		}
		v.Set(nv)
		return nil
	case reflect.Struct:
		if isNull(n) {
			// "limits:" with every line below commented out: nothing set.
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: "want a mapping (key: value lines), got " + kindName(n)}
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			name, err := d.key(path, k)
			if err != nil {
				return err
			}
			sub := join(path, name)
			if seen[name] {
				return &FieldError{File: d.file, Line: k.Line, Field: sub, Msg: "appears twice"}
			}
			seen[name] = true
			idx, ok := fields[name]
			if !ok {
				return &FieldError{File: d.file, Line: k.Line, Field: sub, Msg: "unknown field; allowed: " + allowed(fields)}
			}
			d.lines[sub] = k.Line
			if err := d.decode(sub, val, v.Field(idx)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if isNull(n) {
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: "want a list, got " + kindName(n)}
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			d.lines[sub] = c.Line
			if err := d.decode(sub, c, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if isNull(n) {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: "want a mapping, got " + kindName(n)}
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			name, err := d.key(path, k)
			if err != nil {
				return err
			}
			sub := join(path, name)
			kv := reflect.New(v.Type().Key()).Elem()
			if err := resolve(k).Decode(kv.Addr().Interface()); err != nil {
				return fieldErr(d.file, sub, k, err)
			}
			if m.MapIndex(kv).IsValid() {
				return &FieldError{File: d.file, Line: k.Line, Field: sub, Msg: "appears twice"}
			}
			d.lines[sub] = k.Line
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(sub, val, ev); err != nil {
				return err
			}
			m.SetMapIndex(kv, ev)
		}
		v.Set(m)
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want %s, got %s", typeName(v.Type()), kindName(n))}
		}
		if v.Kind() == reflect.String {
			// "version: yes" or "name: 1" quietly becoming strings hides mistakes
			// in security settings; a bool or base64 blob is refused.
			switch n.ShortTag() {
			case "!!bool":
				return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want a string, got %s (quote it)", n.Value)}
			case "!!binary":
				return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: "want a plain string, got !!binary"}
			}
		}
		switch v.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			// yaml.v3 truncates a float into an integer ("pids: 1.5" is 1,
			// "version: 1.9" is 1); only integers are integers.
			if n.ShortTag() != "!!int" && n.ShortTag() != "!!null" {
				return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want %s, got %q", typeName(v.Type()), n.Value)}
			}
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return &FieldError{File: d.file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want %s, got %q", typeName(v.Type()), n.Value)}
		}
		return nil
	}
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

func fieldErr(file, path string, n *yaml.Node, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return err
	}
	msg := err.Error()
	if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	return &FieldError{File: file, Line: n.Line, Field: path, Msg: oneLine(strings.TrimPrefix(msg, "yaml: "))}
}

func structFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

func allowed(fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// join appends key k to a dotted path. A key with spaces, quotes or
// non-printable characters is quoted, so that a message stays one line.
func join(path, k string) string {
	if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r > '~' || r == '"' }) {
		k = strconv.Quote(k)
	}
	if path == "" {
		return k
	}
	return path + "." + k
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

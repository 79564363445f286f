package configs

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
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

// decodeStrict decodes data into out (a pointer to struct), refusing unknown
// fields, duplicate keys and wrong types with a FieldError that names the
// field and what is allowed. yaml.v3's own KnownFields errors name the Go type,
// not the field a user wrote; this walker names the field.
func decodeStrict(file string, data []byte, out any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return &FieldError{File: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &FieldError{File: file, Msg: "file is empty; it needs at least version: 1"}
	}
	return decodeNode(file, "", doc.Content[0], reflect.ValueOf(out).Elem())
}

func decodeNode(file, path string, n *yaml.Node, v reflect.Value) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return fieldErr(file, path, n, err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Tag == "!!null" {
			return nil
		}
		nv := reflect.New(v.Type().Elem())
		if err := decodeNode(file, path, n, nv.Elem()); err != nil {
			return err
		}
		v.Set(nv)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &FieldError{File: file, Line: n.Line, Field: path, Msg: "want a mapping (key: value lines), got " + kindName(n)}
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			if seen[k.Value] {
				return &FieldError{File: file, Line: k.Line, Field: sub, Msg: "appears twice"}
			}
			seen[k.Value] = true
			idx, ok := fields[k.Value]
			if !ok {
				return &FieldError{File: file, Line: k.Line, Field: sub, Msg: "unknown field; allowed: " + allowed(fields)}
			}
			if err := decodeNode(file, sub, val, v.Field(idx)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return &FieldError{File: file, Line: n.Line, Field: path, Msg: "want a list, got " + kindName(n)}
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := decodeNode(file, fmt.Sprintf("%s[%d]", path, i), c, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return &FieldError{File: file, Line: n.Line, Field: path, Msg: "want a mapping, got " + kindName(n)}
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			kv := reflect.New(v.Type().Key()).Elem()
			if err := k.Decode(kv.Addr().Interface()); err != nil {
				return fieldErr(file, sub, k, err)
			}
			if m.MapIndex(kv).IsValid() {
				return &FieldError{File: file, Line: k.Line, Field: sub, Msg: "appears twice"}
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := decodeNode(file, sub, val, ev); err != nil {
				return err
			}
			m.SetMapIndex(kv, ev)
		}
		v.Set(m)
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return &FieldError{File: file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want %s, got %s", typeName(v.Type()), kindName(n))}
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" && n.Tag != "!!null" {
			// "version: yes" or "name: 1" quietly becoming strings hides mistakes
			// in security settings; accept only plain strings.
			if n.Tag == "!!bool" {
				return &FieldError{File: file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want a string, got %s (quote it)", n.Value)}
			}
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return &FieldError{File: file, Line: n.Line, Field: path, Msg: fmt.Sprintf("want %s, got %q", typeName(v.Type()), n.Value)}
		}
		return nil
	}
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
	return &FieldError{File: file, Line: n.Line, Field: path, Msg: strings.TrimPrefix(msg, "yaml: ")}
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

func join(path, k string) string {
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

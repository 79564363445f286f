// Package oneline keeps an error's message on one line without losing the
// error: the lines of a multi-line message (errors.Join's) are joined with
// "; ", and errors.Is and errors.As still see the error underneath.
package oneline

import "strings"

// Error returns err with its message on one line, or nil for nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return flat{err}
}

type flat struct{ err error }

func (f flat) Error() string {
	return strings.ReplaceAll(strings.TrimSpace(f.err.Error()), "\n", "; ")
}

func (f flat) Unwrap() error { return f.err }

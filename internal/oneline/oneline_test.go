package oneline

import (
	"errors"
	"io/fs"
	"testing"
)

func TestError(t *testing.T) {
	base := &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}
	err := Error(errors.Join(base, errors.New("second\n")))
	if got, want := err.Error(), "open /x: file does not exist; second"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the chain is lost: %#v", err)
	}
	if Error(nil) != nil {
		t.Error("Error(nil) != nil")
	}
}

package pin

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// Sentinel errors; the typed errors below wrap them so callers can use
// errors.Is.
var (
	ErrMismatch   = errors.New("digest mismatch")
	ErrNotRegular = errors.New("not a regular file")
	ErrEscapes    = errors.New("path leaves the pinned directory")
	ErrMissing    = errors.New("pinned file missing")
	ErrUnpinned   = errors.New("file not in manifest")
	ErrChanged    = errors.New("input changed")
	ErrBadCache   = errors.New("verification cache not trusted")
)

// MismatchError names a file whose content is not the pinned content.
type MismatchError struct {
	Path      string
	Want, Got Digest
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("input %s: sha256 %s, pinned %s", e.Path, e.Got, e.Want)
}

// Unwrap lets errors.Is(err, ErrMismatch) match.
func (e *MismatchError) Unwrap() error { return ErrMismatch }

// Change is one difference found by Recheck.
type Change struct {
	Path string `json:"path"`
	What string `json:"what"` // "missing", "added", "replaced", "modified", "not regular"
}

// ChangedError lists the inputs that changed between verification and
// Recheck.
type ChangedError struct {
	Changes []Change
}

func (e *ChangedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d input file(s) changed during the run:", len(e.Changes))
	for i, c := range e.Changes {
		if i == 5 {
			fmt.Fprintf(&b, " ... and %d more", len(e.Changes)-5)
			break
		}
		fmt.Fprintf(&b, " %s (%s)", c.Path, c.What)
	}
	return b.String()
}

// Unwrap lets errors.Is(err, ErrChanged) match.
func (e *ChangedError) Unwrap() error { return ErrChanged }

// Violation returns the typed event the supervisor records for the change.
func (e *ChangedError) Violation(job string) violation.Violation {
	return violation.Violation{Kind: violation.Input, Job: job, Time: time.Now(), Action: violation.Killed, Detail: e.Error()}
}

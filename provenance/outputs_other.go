//go:build !unix

package provenance

import (
	"context"
	"errors"

	"github.com/securetrain/securetrain/pin"
)

// ErrOutputs is returned when the outputs cannot be walked at all.
var ErrOutputs = errors.New("outputs")

// HashOutputs needs a Unix system.
func HashOutputs(context.Context, string) ([]pin.Entry, []Skipped, error) {
	return nil, nil, errors.ErrUnsupported
}

// CodeStateOf needs a Unix system.
func CodeStateOf(context.Context, string) (CodeState, error) {
	return CodeState{}, errors.ErrUnsupported
}

func readMetadataFile(string) ([]byte, error) { return nil, errors.ErrUnsupported }

const maxMetadata = 0

// SnapshotOptions say what a code snapshot leaves out and how large it may
// be.
type SnapshotOptions struct {
	Exclude  []string
	MaxBytes int64
}

// CodeSnapshot is the code directory as it was when a job started.
type CodeSnapshot struct {
	State CodeState
	Copy  string
	Bytes int64
}

// SnapshotCode needs a Unix system.
func SnapshotCode(context.Context, string, string, string, SnapshotOptions) (*CodeSnapshot, error) {
	return nil, errors.ErrUnsupported
}

// Recheck needs a Unix system.
func (s *CodeSnapshot) Recheck(context.Context, string) ([]string, error) {
	return nil, errors.ErrUnsupported
}

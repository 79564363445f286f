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

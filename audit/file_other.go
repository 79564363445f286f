//go:build !unix

package audit

import (
	"context"
	"errors"
	"os"
)

var errUnsupported = errors.New("audit log needs flock: unix only")

func flock(*os.File) error                    { return errUnsupported }
func funlock(*os.File)                        {}
func fdatasync(f *os.File) error              { return f.Sync() }
func fileID(*os.File) (uint64, uint64, error) { return 0, 0, errUnsupported }
func statID(os.FileInfo) (uint64, uint64)     { return 0, 0 }

// FileSink appends checkpoints to a file (unix only).
type FileSink struct{ Path string }

// Put implements CheckpointSink.
func (FileSink) Put(context.Context, Checkpoint) error { return errUnsupported }

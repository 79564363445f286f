//go:build unix

package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

func funlock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

func fdatasync(f *os.File) error { return f.Sync() }

func fileID(f *os.File) (dev, ino uint64, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	dev, ino = statID(st)
	return dev, ino, nil
}

func statID(st os.FileInfo) (dev, ino uint64) {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(s.Dev), uint64(s.Ino)
	}
	return 0, 0
}

// FileSink appends checkpoints as JSON lines to a file, one writer at a time
// across processes (flock), fsynced. Point it at storage the node cannot
// rewrite (a remote append-only mount) or ship the file off the node.
type FileSink struct {
	Path string
}

// Put implements CheckpointSink.
func (s FileSink) Put(_ context.Context, c Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o750); err != nil {
		return fmt.Errorf("checkpoint store: %w", err)
	}
	f, err := os.OpenFile(s.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("checkpoint store: %w", err)
	}
	defer f.Close()
	if err := flock(f); err != nil {
		return fmt.Errorf("checkpoint store %s: lock: %w", s.Path, err)
	}
	defer funlock(f)
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("checkpoint store %s: %w", s.Path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("checkpoint store %s: %w", s.Path, err)
	}
	return nil
}

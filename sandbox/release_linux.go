package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ReleaseShared unmounts what runsc keeps under its root for all sandboxes
// (the pinned null network namespace) and removes the root when it is empty.
// Call it only when no sandbox under this root lives: gc does.
func (r *Runsc) ReleaseShared() error {
	p := filepath.Join(r.Root, NullNetNS)
	// Concurrent runsc invocations may stack bind mounts: unmount until none is left.
	for i := 0; i < 64 && unix.Unmount(p, unix.MNT_DETACH) == nil; i++ {
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

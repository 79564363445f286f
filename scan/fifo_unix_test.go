//go:build unix

package scan

import (
	"path/filepath"
	"syscall"
	"testing"
)

func TestFIFONotOpenedForReading(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(p); err == nil {
		t.Fatal("FIFO scanned")
	}
}

//go:build unix

package scan

import (
	"os"
	"syscall"
)

// openForScan opens without blocking on a FIFO or claiming a tty; the caller
// checks that it is a regular file before reading.
func openForScan(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
}

//go:build !unix

package scan

import "os"

func openForScan(path string) (*os.File, error) { return os.Open(path) }

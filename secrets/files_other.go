//go:build !linux

package secrets

import "errors"

var errNotLinux = errors.New("secrets delivery needs Linux (tmpfs mounts)")

func mountTmpfs(string, int, int) error                      { return errNotLinux }
func removeTmpfs(string) error                               { return errNotLinux }
func writeSecretFile(string, string, []byte, int, int) error { return errNotLinux }

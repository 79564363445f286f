//go:build !linux

package usage

import "syscall"

// streamProcAttr: its own process group (no parent-death signal here).
func streamProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

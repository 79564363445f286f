package usage

import "syscall"

// streamProcAttr: its own process group, killed when the supervisor dies.
func streamProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

package launcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// errNoSandbox: no runsc-sandbox process of the job among runsc's children.
var errNoSandbox = errors.New("no runsc-sandbox child of runsc run")

// killSandbox sends SIGKILL straight to the job's runsc-sandbox process (the
// gVisor kernel: every process of the job dies with it), found among the
// children of the `runsc run` process runscPID. It saves the tens of
// milliseconds of exec'ing `runsc kill`, which the caller still runs
// afterwards as the authoritative kill. The process is pinned with a pidfd
// and identified after that, so a recycled pid is never signalled.
func killSandbox(runscPID int, id string) error {
	if runscPID <= 0 {
		return errNoSandbox
	}
	for _, pid := range childPIDs(runscPID) {
		if err := killSandboxPID(pid, id); !errors.Is(err, errNoSandbox) {
			return err
		}
	}
	return errNoSandbox
}

// killSandboxPID sends SIGKILL to pid if it is sandbox id's runsc-sandbox
// process, pinned with a pidfd before it is identified.
func killSandboxPID(pid int, id string) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errNoSandbox // gone already
	}
	defer unix.Close(fd)
	if !isSandboxOf(pid, id) {
		return errNoSandbox
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return fmt.Errorf("SIGKILL runsc-sandbox %d: %w", pid, err)
	}
	return nil
}

// sandboxAlive reports whether pid is still sandbox id's runsc-sandbox
// process.
func sandboxAlive(pid int, id string) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return isSandboxOf(pid, id)
}

// killDirect kills the job's sandbox process: a warm sandbox's by the pid
// its boot wrote, else the child of the job's `runsc run`.
func (res *Result) killDirect() error {
	if res.WarmSandbox != "" {
		if res.sandboxPID <= 0 {
			return errNoSandbox
		}
		err := killSandboxPID(res.sandboxPID, res.WarmSandbox)
		res.sandboxKilled = res.sandboxKilled || err == nil
		return err
	}
	return killSandbox(res.runscPID, res.ID)
}

// childPIDs lists the children of pid from /proc/PID/task/*/children.
func childPIDs(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// isSandboxOf reports whether pid runs `runsc-sandbox ... boot ... ID`.
func isSandboxOf(pid int, id string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) > 2 && args[0] == "runsc-sandbox" && slices.Contains(args, "boot") && args[len(args)-1] == id
}

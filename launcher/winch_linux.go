package launcher

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/securetrain/securetrain/sandbox"
)

// watchWinch keeps the job's terminal size in step with the launcher's.
func watchWinch(ctx context.Context, pty *os.File, fd int) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			_ = sandbox.Resize(pty, fd)
		}
	}
}

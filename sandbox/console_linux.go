package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// ConsoleSocket receives the pty master of a job started with a terminal:
// runsc connects to it and passes the file descriptor (SCM_RIGHTS).
type ConsoleSocket struct {
	Path string
	ln   *net.UnixListener
}

// NewConsoleSocket listens on a Unix socket at path (mode 0600).
func NewConsoleSocket(path string) (*ConsoleSocket, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &ConsoleSocket{Path: path, ln: ln}, nil
}

// Receive waits for runsc to hand over the pty master.
func (c *ConsoleSocket) Receive(ctx context.Context) (*os.File, error) {
	go func() {
		<-ctx.Done()
		c.ln.Close()
	}()
	conn, err := c.ln.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	defer conn.Close()
	oob := make([]byte, unix.CmsgSpace(4))
	buf := make([]byte, 4096)
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("console socket: no file descriptor received")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("console socket: no file descriptor received")
	}
	unix.CloseOnExec(fds[0])
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

// Close stops listening and removes the socket file.
func (c *ConsoleSocket) Close() error {
	err := c.ln.Close()
	os.Remove(c.Path)
	if errors.Is(err, net.ErrClosed) {
		return nil // Receive already closed it
	}
	return err
}

// Resize sets the pty's window size from the launcher's terminal.
func Resize(pty *os.File, from int) error {
	ws, err := unix.IoctlGetWinsize(from, unix.TIOCGWINSZ)
	if err != nil {
		return err
	}
	return unix.IoctlSetWinsize(int(pty.Fd()), unix.TIOCSWINSZ, ws)
}

package daemon

import (
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// relayTTY gives the job a terminal of the client's own: a fresh
// pseudo-terminal whose slave side is what the daemon gets (as stdin, stdout
// and stderr), sized like the caller's terminal, while the client puts its
// terminal in raw mode and copies between it and the master side. Handing
// the daemon the caller's terminal itself would leave the daemon reading it
// after the job ended (a blocking read it cannot interrupt), stealing the
// shell's next keystroke; the slave instead reads end-of-file as soon as the
// client closes the master. The returned stop restores the terminal after
// the job's last output (bounded) has been copied.
func relayTTY(in, out *os.File) (slave *os.File, stop func(), err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	master := os.NewFile(uintptr(mfd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	sfd, err := unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	slave = os.NewFile(uintptr(sfd), "/dev/pts/"+strconv.Itoa(n))
	if ws, err := unix.IoctlGetWinsize(int(in.Fd()), unix.TIOCGWINSZ); err == nil {
		_ = unix.IoctlSetWinsize(sfd, unix.TIOCSWINSZ, ws)
	}
	restore := func() {}
	if st, err := term.MakeRaw(int(in.Fd())); err == nil {
		restore = func() { _ = term.Restore(int(in.Fd()), st) }
	}
	go io.Copy(master, in)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Ends with EIO once every copy of the slave is closed.
		_, err := io.Copy(out, master)
		if err != nil && !errors.Is(err, unix.EIO) {
			return
		}
	}()
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			select {
			case <-drained:
			case <-time.After(2 * time.Second):
			}
			restore()
			master.Close()
		})
	}
	return slave, stop, nil
}

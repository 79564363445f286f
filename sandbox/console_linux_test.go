package sandbox

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestConsoleSocket plays runsc: it connects and passes a file descriptor
// (a pipe standing in for the pty master) with SCM_RIGHTS.
func TestConsoleSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.sock")
	cs, err := NewConsoleSocket(p)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sent := make(chan error, 1)
	go func() {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		_, _, err = c.WriteMsgUnix([]byte("pty"), unix.UnixRights(int(w.Fd())), nil)
		sent <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, err := cs.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if flags, err := unix.FcntlInt(got.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received fd is not close-on-exec (flags %d, %v)", flags, err)
	}
	// The received descriptor is the pipe's write end.
	if _, err := got.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "hello" {
		t.Errorf("read %q through the received fd", b)
	}
}

func TestConsoleSocketCancel(t *testing.T) {
	cs, err := NewConsoleSocket(filepath.Join(t.TempDir(), "console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if f, err := cs.Receive(ctx); err == nil {
		f.Close()
		t.Fatal("Receive returned a file after cancel")
	}
}

func TestConsoleSocketNoFD(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.sock")
	cs, err := NewConsoleSocket(p)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	go func() {
		c, err := net.Dial("unix", p)
		if err == nil {
			c.Write([]byte("no fd"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f, err := cs.Receive(ctx); err == nil || err.Error() != "console socket: no file descriptor received" {
		if f != nil {
			f.Close()
		}
		t.Errorf("Receive without a descriptor: %v", err)
	}
}

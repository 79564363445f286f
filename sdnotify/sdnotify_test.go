package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// listen creates the socket systemd would, and returns a function reading
// one datagram.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		// A guard against hanging, not a timing assertion.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestProtocol(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify.sock"), "@securetrain-test-" + strconv.Itoa(os.Getpid())} {
		t.Run(name, func(t *testing.T) {
			read := listen(t, name)
			t.Setenv("NOTIFY_SOCKET", name)
			n, err := FromEnv(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
				t.Error("NOTIFY_SOCKET left in the environment for children")
			}
			if !n.Enabled() || n.WatchdogInterval() != 0 {
				t.Fatalf("enabled %v watchdog %v", n.Enabled(), n.WatchdogInterval())
			}
			steps := []struct {
				do   func() error
				want string
			}{
				{func() error { return n.Status("running gc") }, "STATUS=running gc"},
				{func() error { return n.ExtendTimeout(90 * time.Second) }, "EXTEND_TIMEOUT_USEC=90000000"},
				{func() error { return n.Ready("accepting jobs\non socket") }, "READY=1\nSTATUS=accepting jobs on socket"},
				{func() error { return n.Stopping("stopping 2 jobs") }, "STOPPING=1\nSTATUS=stopping 2 jobs"},
			}
			for _, s := range steps {
				if err := s.do(); err != nil {
					t.Fatal(err)
				}
				if got := read(); got != s.want {
					t.Errorf("got %q, want %q", got, s.want)
				}
			}
			if err := n.Send("READY=1\nMAINPID=1"); !errors.Is(err, ErrBadState) {
				t.Errorf("newline in a state: %v", err)
			}
		})
	}
}

func TestWatchdog(t *testing.T) {
	name := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.WatchdogInterval() != 20*time.Millisecond {
		t.Fatalf("interval %v", n.WatchdogInterval())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, nil); close(done) }()
	for range 2 {
		if got := read(); got != "WATCHDOG=1" {
			t.Fatalf("got %q", got)
		}
	}
	cancel()
	<-done

	// Another process's watchdog is not ours.
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "1")
	if n, err := FromEnv(nil); err != nil || n.WatchdogInterval() != 0 {
		t.Fatalf("foreign WATCHDOG_PID: %v %v", n.WatchdogInterval(), err)
	}
	t.Setenv("WATCHDOG_USEC", "soon")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if _, err := FromEnv(nil); err == nil {
		t.Fatal("bad WATCHDOG_USEC accepted")
	}
}

func TestNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	n, err := FromEnv(nil)
	if err != nil || n.Enabled() {
		t.Fatalf("%v %v", n.Enabled(), err)
	}
	if err := n.Ready("x"); err != nil {
		t.Fatal(err)
	}
	n.RunWatchdog(context.Background(), nil) // returns at once
}

func TestBadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative.sock")
	if _, err := FromEnv(nil); err == nil {
		t.Fatal("relative NOTIFY_SOCKET accepted")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	n, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Ready("x"); err == nil {
		t.Fatal("send to an absent socket succeeded")
	}
}

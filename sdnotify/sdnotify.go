// Package sdnotify tells the service manager (systemd, Type=notify) how the
// daemon is doing: READY=1 once gc has run and the socket accepts work,
// STATUS= lines, STOPPING=1, and WATCHDOG=1 pings when WatchdogSec is set.
// Without NOTIFY_SOCKET every call is a no-op, so the daemon runs the same
// under systemd, under another supervisor and in tests.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to the service manager's socket.
type Notifier struct {
	socket   string
	watchdog time.Duration
	log      *slog.Logger
}

// FromEnv reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID and removes them
// from the environment, so that no child (and no job) inherits them. An
// unusable watchdog setting is an error; a missing socket is not.
func FromEnv(log *slog.Logger) (*Notifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET"), log: log}
	wd, err := daemon.SdWatchdogEnabled(true)
	os.Unsetenv("NOTIFY_SOCKET")
	if err != nil {
		return nil, fmt.Errorf("systemd watchdog: %w", err)
	}
	n.watchdog = wd
	if n.socket != "" && n.socket[0] != '/' && n.socket[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or an @abstract name", n.socket)
	}
	return n, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is the watchdog timeout systemd set (0 if none).
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil || n.socket == "" {
		return 0
	}
	return n.watchdog
}

// ErrBadState means a state assignment would smuggle another one in.
var ErrBadState = errors.New("sd_notify state must be KEY=VALUE without newlines")

// Send sends state assignments in one datagram.
func (n *Notifier) Send(states ...string) error {
	if !n.Enabled() {
		return nil
	}
	for _, s := range states {
		k, _, ok := strings.Cut(s, "=")
		if !ok || k == "" || strings.ContainsAny(s, "\n\x00") {
			return fmt.Errorf("%w: %q", ErrBadState, s)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	return nil
}

// Ready says start-up is done (after gc, with the socket listening), with a
// status line.
func (n *Notifier) Ready(status string) error {
	return n.Send(daemon.SdNotifyReady, "STATUS="+oneLine(status))
}

// Status sets the line `systemctl status` shows.
func (n *Notifier) Status(status string) error { return n.Send("STATUS=" + oneLine(status)) }

// Stopping says shutdown has begun (jobs are being stopped).
func (n *Notifier) Stopping(status string) error {
	return n.Send(daemon.SdNotifyStopping, "STATUS="+oneLine(status))
}

// ExtendTimeout asks for more time for the current start-up or shutdown step
// (a long gc after a crash, for instance).
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	return n.Send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// Watchdog pings the watchdog once.
func (n *Notifier) Watchdog() error { return n.Send(daemon.SdNotifyWatchdog) }

// RunWatchdog pings at half the watchdog interval until ctx ends, as long as
// healthy (nil: always) says the daemon's loop is alive. Without a watchdog
// it returns at once.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func() bool) {
	iv := n.WatchdogInterval()
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		if healthy == nil || healthy() {
			if err := n.Watchdog(); err != nil {
				n.log.Warn("watchdog ping failed", "err", err)
			}
		} else {
			n.log.Warn("not pinging the watchdog: daemon unhealthy")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\x00", "").Replace(s) }

package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"

	"golang.org/x/term"

	"github.com/securetrain/securetrain/launcher"
)

// ErrNoDaemon means no daemon socket exists at the path.
var ErrNoDaemon = errors.New("no securetrain daemon socket")

// ReplyError is the daemon's refusal of a request: the one-line error its
// reply carried.
type ReplyError struct{ Msg string }

func (e *ReplyError) Error() string { return e.Msg }

// Client talks to the daemon; one Client serves one request.
type Client struct {
	c *net.UnixConn
}

// Available reports whether a daemon socket exists at path (or something
// there cannot be looked at, which Dial then reports).
func Available(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	return fi.Mode()&fs.ModeSocket != 0
}

// Dial connects to the daemon at path.
func Dial(path string) (*Client, error) {
	if !Available(path) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoDaemon)
	}
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("securetrain daemon at %s: %w (is it running? systemctl status securetrain)", path, err)
	}
	return &Client{c: c}, nil
}

// Close closes the connection.
func (cl *Client) Close() error { return cl.c.Close() }

func (cl *Client) roundTrip(req Request, files ...*os.File) (Reply, error) {
	if err := send(cl.c, req, files...); err != nil {
		return Reply{}, fmt.Errorf("securetrain daemon: %w", err)
	}
	return cl.reply()
}

func (cl *Client) reply() (Reply, error) {
	var rep Reply
	fs, err := recv(cl.c, &rep)
	closeAll(fs)
	if err != nil {
		return Reply{}, fmt.Errorf("securetrain daemon: %w", err)
	}
	if rep.Error != "" {
		return rep, &ReplyError{rep.Error}
	}
	return rep, nil
}

// Run runs a job through the daemon with the caller's stdio, forwarding
// the signals that arrive on sigs, and returns the job's reply (exit code
// and notes for stderr).
func (cl *Client) Run(args RunArgs, stdin, stdout, stderr *os.File, sigs <-chan os.Signal) (Reply, error) {
	var slave *os.File
	if args.TTY && term.IsTerminal(int(stdin.Fd())) {
		var stop func()
		var err error
		if slave, stop, err = relayTTY(stdin, stdout); err != nil {
			return Reply{}, fmt.Errorf("terminal for the job: %w", err)
		}
		defer stop()
		stdin, stdout, stderr = slave, slave, slave
	}
	err := send(cl.c, Request{Op: OpRun, Run: &args}, stdin, stdout, stderr)
	if slave != nil {
		// The daemon holds its copies now; ours would keep the relay open
		// after the job.
		slave.Close()
	}
	if err != nil {
		return Reply{}, fmt.Errorf("securetrain daemon: %w", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case s := <-sigs:
				name := "TERM"
				switch s {
				case syscall.SIGINT:
					name = "INT"
				case syscall.SIGHUP:
					name = "HUP"
				case syscall.SIGQUIT:
					name = "QUIT"
				}
				send(cl.c, Signal{Signal: name})
			}
		}
	}()
	return cl.reply()
}

// Ps lists the jobs the caller may see.
func (cl *Client) Ps(all bool) ([]launcher.JobRow, error) {
	rep, err := cl.roundTrip(Request{Op: OpPs, All: all})
	return rep.Jobs, err
}

// Kill stops one of the caller's jobs.
func (cl *Client) Kill(id string, force bool) error {
	_, err := cl.roundTrip(Request{Op: OpKill, ID: id, Force: force})
	return err
}

// Logs copies a job's log to out.
func (cl *Client) Logs(id string, out *os.File) error {
	_, err := cl.roundTrip(Request{Op: OpLogs, ID: id}, out)
	return err
}

// Package daemon is securetrain's root service: it listens on a Unix socket,
// authenticates callers by their peer credentials (SO_PEERCRED) and their
// groups (NSS), decides with the host policy what they may run, and runs
// their jobs as them through the launcher. Jobs are the daemon's children
// and die with it; a daemon that starts runs gc before it accepts work.
//
// The protocol is one JSON object per SOCK_SEQPACKET message. A client sends
// a Request; for run and logs its stdin, stdout and stderr travel with it as
// SCM_RIGHTS file descriptors, so the job reads and writes the caller's own
// terminal or pipes (TTY semantics included). While a job runs the client
// sends Signal messages; closing the connection stops the job. The daemon
// answers with one Reply.
package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/launcher"
)

// Request is what a client asks for.
type Request struct {
	Op    string   `json:"op"` // run, ps, kill, logs
	Run   *RunArgs `json:"run,omitempty"`
	ID    string   `json:"id,omitempty"`
	Force bool     `json:"force,omitempty"`
	All   bool     `json:"all,omitempty"`
}

// Operations.
const (
	OpRun  = "run"
	OpPs   = "ps"
	OpKill = "kill"
	OpLogs = "logs"
)

// RunArgs are `securetrain run`'s flags as the caller gave them. Relative
// paths are relative to Dir, the caller's working directory.
type RunArgs struct {
	Command      []string      `json:"command"`
	Profile      string        `json:"profile,omitempty"`
	Dir          string        `json:"dir"`
	Code         string        `json:"code,omitempty"`
	Output       string        `json:"output,omitempty"`
	Data         []string      `json:"data,omitempty"`
	Python       string        `json:"python,omitempty"`
	Env          []string      `json:"env,omitempty"`
	CallerEnv    []string      `json:"caller_env,omitempty"`
	CPUs         float64       `json:"cpus,omitempty"`
	Memory       string        `json:"memory,omitempty"`
	Pids         int64         `json:"pids,omitempty"`
	WallTime     time.Duration `json:"wall_time,omitempty"`
	GPUs         string        `json:"gpus,omitempty"`
	Network      string        `json:"network,omitempty"`
	Allow        []string      `json:"allow,omitempty"`
	Peers        []string      `json:"peers,omitempty"`
	Allocation   string        `json:"allocation,omitempty"`
	Report       string        `json:"report,omitempty"`
	TTY          bool          `json:"tty,omitempty"`
	User         string        `json:"user,omitempty"`
	Learn        bool          `json:"learn,omitempty"`
	Rootfs       string        `json:"rootfs,omitempty"`
	Unrestricted bool          `json:"unrestricted,omitempty"`
	// Model is a signed model input (--model and its companions).
	Model *launcher.ModelFlag `json:"model,omitempty"`
}

// Signal is a signal the client forwards to its job (INT, TERM, HUP, QUIT).
type Signal struct {
	Signal string `json:"signal"`
}

// Reply is the daemon's answer.
type Reply struct {
	Error string   `json:"error,omitempty"` // one line: why nothing happened
	Exit  *int     `json:"exit,omitempty"`  // the job's exit code (run)
	Notes []string `json:"notes,omitempty"` // lines for the caller's stderr
	// Summary is the job's usage summary, Suggested the allowlist --learn
	// suggests (printed by the client as a root run prints them).
	Summary   string            `json:"summary,omitempty"`
	Suggested []string          `json:"suggested,omitempty"`
	ID        string            `json:"id,omitempty"`
	Jobs      []launcher.JobRow `json:"jobs,omitempty"` // ps's rows
}

// maxMessage bounds one message (a request with the caller's environment).
const maxMessage = 1 << 20

func send(c *net.UnixConn, v any, files ...*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxMessage {
		return fmt.Errorf("message of %d bytes is too large", len(b))
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// recv reads one message into v and returns the files that came with it.
// io.EOF means the peer closed the connection. It waits for the message
// with a one-byte peek and then allocates what the message needs: an idle
// connection costs no buffer.
func recv(c *net.UnixConn, v any) ([]*os.File, error) {
	n, err := nextLen(c)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, min(max(n, 1), maxMessage)) // a longer one is truncated: refused
	oob := make([]byte, unix.CmsgSpace(4*8))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("peer-fd-%d", fd)))
			}
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll(files)
		return nil, errors.New("message truncated")
	}
	if n == 0 {
		closeAll(files)
		return nil, io.EOF
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeAll(files)
		return nil, fmt.Errorf("bad message: %w", err)
	}
	return files, nil
}

// nextLen waits for the next message and returns its length (SOCK_SEQPACKET
// reports a whole message's length with MSG_TRUNC); 0 at the peer's close.
// The connection's read deadline applies.
func nextLen(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var perr error
	var one [1]byte
	if err := raw.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_TRUNC)
		return perr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	if perr != nil {
		return 0, perr
	}
	return n, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

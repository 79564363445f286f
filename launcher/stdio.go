package launcher

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// cappedLog is the job's per-job log: a copy of its stdout and stderr, owned
// by the job's user, that stops growing at its limit.
type cappedLog struct {
	mu      sync.Mutex
	f       *os.File
	limit   int64
	n       int64
	trunced bool
}

// openLog creates the log file as the job's user (O_EXCL, no symlink follow).
func openLog(path string, uid, gid int, limit int64) (*cappedLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("job log: %w", err)
	}
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("job log: %w", err)
	}
	return &cappedLog{f: f, limit: limit}, nil
}

func (c *cappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trunced {
		return len(p), nil
	}
	room := c.limit - c.n
	if int64(len(p)) > room {
		if room > 0 {
			c.f.Write(p[:room])
		}
		fmt.Fprintf(c.f, "\n[securetrain: log truncated at %d bytes; the terminal got everything]\n", c.limit)
		c.trunced = true
		c.n = c.limit
		return len(p), nil
	}
	n, err := c.f.Write(p)
	c.n += int64(n)
	if err != nil {
		// A full disk must not stop the job's output on the terminal.
		c.trunced = true
	}
	return len(p), nil
}

func (c *cappedLog) Close() error {
	if c == nil || c.f == nil {
		return nil
	}
	return c.f.Close()
}

// tee copies r to both the caller's stream and the log until EOF.
func tee(dst io.Writer, log io.Writer, r io.Reader, done *sync.WaitGroup) {
	defer done.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if dst != nil {
				dst.Write(buf[:n])
			}
			log.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

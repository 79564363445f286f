package launcher

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// OutputDrain is how long the job's last output may take to reach the
// caller's stdout and stderr once the job is dead. A consumer that does not
// read (`securetrain run ... | sleep 1000`, a stopped pager) cannot hold the
// job's slot, GPUs or address past it: the copy is cut.
const OutputDrain = 2 * time.Second

// jobOutput copies the job's stdout and stderr to the caller's streams and
// the job log. The job writes into pipes of the launcher's own, not ones
// exec.Cmd owns, so that the job's end (runsc's exit) is seen at once,
// whether or not its consumer reads.
type jobOutput struct {
	writers []*os.File // the job's ends, closed in the launcher once runsc has them
	readers []*os.File
	copies  sync.WaitGroup
	// gone is closed when the caller's stdout or stderr reader went away
	// (`securetrain run ... | head`): the supervisor stops the job.
	gone     chan struct{}
	goneOnce sync.Once
}

// newJobOutput makes the two pipes; the job writes to stdout and stderr.
func newJobOutput() (o *jobOutput, stdout, stderr *os.File, err error) {
	o = &jobOutput{gone: make(chan struct{})}
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			o.close()
			return nil, nil, nil, err
		}
		o.readers, o.writers = append(o.readers, r), append(o.writers, w)
	}
	return o, o.writers[0], o.writers[1], nil
}

// start copies each pipe to its destination and the log, and closes the
// launcher's copies of the job's ends (runsc holds its own).
func (o *jobOutput) start(stdout, stderr, log io.Writer) {
	for _, w := range o.writers {
		w.Close()
	}
	o.writers = nil
	o.copies.Add(2)
	gone := func() { o.goneOnce.Do(func() { close(o.gone) }) }
	go tee(stdout, log, o.readers[0], &o.copies, gone)
	go tee(stderr, log, o.readers[1], &o.copies, gone)
}

// drain waits up to d for the copies to reach the end of the job's output;
// past it, the rest is cut (the read ends closed) and drain reports false.
// A copy stuck writing to a consumer that never reads is left behind: it
// ends when that consumer goes away, and nothing waits for it.
func (o *jobOutput) drain(d time.Duration) bool {
	done := make(chan struct{})
	go func() { o.copies.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		o.close()
		return true
	case <-t.C:
		o.close()
		return false
	}
}

func (o *jobOutput) close() {
	for _, f := range append(o.readers, o.writers...) {
		f.Close()
	}
}

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
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trunced = true // a copy cut by drain may still be writing
	return c.f.Close()
}

// note appends a line from securetrain itself to the log (past its limit
// too: it is short).
func (c *cappedLog) note(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.f, "\n[securetrain: "+format+"]\n", args...)
}

// tee copies r to both the log and the caller's stream until EOF (the log
// first: a caller's stream that blocks must not keep what was read from it).
// When the caller's reader goes away (EPIPE), tee says so through gone (nil:
// nobody to tell) and goes on into the log alone.
func tee(dst io.Writer, log io.Writer, r io.Reader, done *sync.WaitGroup, gone func()) {
	defer done.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			log.Write(buf[:n])
			if dst != nil {
				if _, werr := dst.Write(buf[:n]); errors.Is(werr, unix.EPIPE) {
					dst = nil
					if gone != nil {
						gone()
					}
				}
			}
		}
		if err != nil {
			return
		}
	}
}

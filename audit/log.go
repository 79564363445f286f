package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultPath is where the log lives on a node.
const DefaultPath = "/var/log/securetrain/audit.jsonl"

// ErrCorruptTail means the last complete line of the log is not a valid
// event, so there is no head to chain to. Nothing is appended until a person
// has looked (`securetrain audit verify`) and moved the log aside.
var ErrCorruptTail = errors.New("audit log tail is not a valid event")

// EventSink receives a copy of every line written (the journal, for instance).
// Its failures are logged, not returned: the log file is the record.
type EventSink interface {
	Send(ev Event, line []byte) error
}

// Options configure a Log.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Checkpointer, when set, signs the head after every CheckpointEvery
	// appends of this writer (0: only on Checkpoint and Close).
	Checkpointer    Checkpointer
	CheckpointEvery int
	// Sinks get a copy of every line (e.g. a JournalSink).
	Sinks []EventSink
	// NoSync skips fsync after each line. For benchmarks and tests only: an
	// event that is not durable may be lost in a crash.
	NoSync bool
}

// Log appends events to one audit log file. It is safe for concurrent use,
// and any number of processes may append to the same file: each append takes
// an exclusive flock on the file, reads the head from the file's tail,
// writes one line with O_APPEND and fsyncs before unlocking.
type Log struct {
	path string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	f       *os.File
	ino     uint64
	dev     uint64
	size    int64 // size after our last append; the cached head is valid only if the file still has it
	seq     uint64
	head    string
	appends int
}

// Open opens (creating it 0600, and its directory 0750, if needed) the log at
// path.
func Open(path string, opts Options) (*Log, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("audit log directory: %w", err)
	}
	l := &Log{path: path, opts: opts, log: opts.Logger, size: -1}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// Path returns the log's path.
func (l *Log) Path() string { return l.path }

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	dev, ino, err := fileID(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit log %s: %w", l.path, err)
	}
	l.f, l.dev, l.ino, l.size = f, dev, ino, -1
	return nil
}

// Append writes one event for job and user (either may be empty) and returns
// it as written. When it returns without error the line is durable. An error
// wrapping ErrCheckpoint means the line was written but the checkpoint due
// after it failed.
func (l *Log) Append(ctx context.Context, job, user string, p Payload) (Event, error) {
	if p == nil {
		return Event{}, errors.New("audit append: nil payload")
	}
	data, err := encodeData(p)
	if err != nil {
		return Event{}, err
	}
	b := body{Time: l.opts.Now().UTC(), Type: p.AuditType(), Job: job, User: user, Data: data}

	l.mu.Lock()
	ev, line, err := l.appendLocked(b)
	due := err == nil && l.opts.Checkpointer != nil && l.opts.CheckpointEvery > 0 && l.appends%l.opts.CheckpointEvery == 0
	l.mu.Unlock()
	if err != nil {
		return Event{}, err
	}
	for _, s := range l.opts.Sinks {
		if err := s.Send(ev, line); err != nil {
			l.log.Warn("audit sink failed", "seq", ev.Seq, "err", err)
		}
	}
	if due {
		if _, err := l.opts.Checkpointer.Checkpoint(ctx, ev.Seq, ev.Hash); err != nil {
			return ev, err
		}
	}
	return ev, nil
}

func (l *Log) appendLocked(b body) (Event, []byte, error) {
	if l.f == nil {
		return Event{}, nil, errors.New("audit log is closed")
	}
	unlock, err := l.lockFile()
	if err != nil {
		return Event{}, nil, err
	}
	defer unlock()

	var buf []byte
	seq, head := l.seq, l.head
	size, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return Event{}, nil, fmt.Errorf("audit log %s: %w", l.path, err)
	}
	if size != l.size {
		t, err := readTail(l.f, size)
		if err != nil {
			return Event{}, nil, fmt.Errorf("audit log %s: %w", l.path, err)
		}
		seq, head = t.seq, t.head
		if t.fragment != nil {
			// A write was cut off: close the fragment and record it.
			sum := sha256.Sum256(t.fragment)
			rb := body{Seq: seq + 1, Time: b.Time, Type: TypeRecovered, Prev: head}
			rb.Data, _ = encodeData(Recovered{DiscardedOffset: t.fragOff, DiscardedBytes: int64(len(t.fragment)), DiscardedSHA256: hex.EncodeToString(sum[:])})
			rl, rh, err := encodeLine(rb)
			if err != nil {
				return Event{}, nil, err
			}
			buf = append(append([]byte{'\n'}, rl...), buf...)
			seq, head = rb.Seq, rh
			l.log.Warn("audit log ended in a partial line; recorded and closed it", "path", l.path, "offset", t.fragOff, "bytes", len(t.fragment))
		} else if t.newline {
			buf = append([]byte{'\n'}, buf...)
		}
	}
	b.Seq, b.Prev = seq+1, head
	line, h, err := encodeLine(b)
	if err != nil {
		return Event{}, nil, fmt.Errorf("audit encode: %w", err)
	}
	buf = append(buf, line...)
	n, err := l.f.Write(buf)
	if err == nil && !l.opts.NoSync {
		err = fdatasync(l.f)
	}
	if err != nil {
		l.size = -1
		return Event{}, nil, fmt.Errorf("audit log %s: write seq %d: %w", l.path, b.Seq, err)
	}
	l.size, l.seq, l.head = size+int64(n), b.Seq, h
	l.appends++
	return Event{Seq: b.Seq, Time: b.Time, Type: b.Type, Job: b.Job, User: b.User, Data: b.Data, Prev: b.Prev, Hash: h}, line, nil
}

// Head returns the seq and hash of the last line in the file, read under the
// lock.
func (l *Log) Head() (uint64, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, "", errors.New("audit log is closed")
	}
	unlock, err := l.lockFile()
	if err != nil {
		return 0, "", err
	}
	defer unlock()
	size, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, "", err
	}
	t, err := readTail(l.f, size)
	if err != nil {
		return 0, "", fmt.Errorf("audit log %s: %w", l.path, err)
	}
	return t.seq, t.head, nil
}

// Checkpoint signs and stores the current head (no-op without a
// Checkpointer, or on an empty log).
func (l *Log) Checkpoint(ctx context.Context) error {
	if l.opts.Checkpointer == nil {
		return nil
	}
	seq, head, err := l.Head()
	if err != nil || seq == 0 {
		return err
	}
	_, err = l.opts.Checkpointer.Checkpoint(ctx, seq, head)
	return err
}

// Close checkpoints the head (if this writer appended since the last
// checkpoint) and closes the file.
func (l *Log) Close(ctx context.Context) error {
	var err error
	l.mu.Lock()
	pending := l.opts.Checkpointer != nil && l.appends > 0 && (l.opts.CheckpointEvery == 0 || l.appends%l.opts.CheckpointEvery != 0)
	l.mu.Unlock()
	if pending {
		err = l.Checkpoint(ctx)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		err = errors.Join(err, l.f.Close())
		l.f = nil
	}
	return err
}

// lockFile takes the cross-process lock, reopening the file first if it was
// replaced (rotated) under us.
func (l *Log) lockFile() (func(), error) {
	for range 3 {
		if err := flock(l.f); err != nil {
			return nil, fmt.Errorf("audit log %s: lock: %w", l.path, err)
		}
		st, err := os.Stat(l.path)
		if err == nil {
			dev, ino := statID(st)
			if dev == l.dev && ino == l.ino {
				f := l.f
				return func() { funlock(f) }, nil
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			funlock(l.f)
			return nil, fmt.Errorf("audit log: %w", err)
		}
		// Replaced or removed: reopen the path and lock that.
		funlock(l.f)
		l.f.Close()
		l.f = nil
		if err := l.open(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("audit log %s: keeps being replaced while locking", l.path)
}

type tail struct {
	seq      uint64
	head     string
	fragment []byte // a partial last line, if any
	fragOff  int64
	newline  bool // the last line is complete but lacks its newline
}

// readTail finds the head of the chain at the end of f.
func readTail(f *os.File, size int64) (tail, error) {
	t := tail{head: Genesis}
	if size == 0 {
		return t, nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return t, err
	}
	end := size // end of the complete part
	if last[0] != '\n' {
		start, frag, err := lineBefore(f, size)
		if err != nil {
			return t, err
		}
		end = start
		t.fragment, t.fragOff = frag, start
	} else {
		end = size - 1
	}
	var prev Event
	if end > 0 {
		if t.fragment != nil {
			end-- // the newline before the fragment
		}
		start, line, err := lineBefore(f, end)
		if err != nil {
			return t, err
		}
		prev, err = parseLine(line)
		if err != nil {
			return t, fmt.Errorf("%w: line at byte %d: %w", ErrCorruptTail, start, err)
		}
		t.seq, t.head = prev.Seq, prev.Hash
	}
	if t.fragment != nil {
		// A complete, chaining line that only lacks its newline is kept.
		if ev, err := parseLine(t.fragment); err == nil && ev.Seq == t.seq+1 && ev.Prev == t.head {
			t.seq, t.head, t.fragment, t.newline = ev.Seq, ev.Hash, nil, true
		}
	}
	return t, nil
}

// lineBefore returns the line that ends at end (exclusive, no newline) and
// where it starts.
func lineBefore(f *os.File, end int64) (int64, []byte, error) {
	const chunk = 64 << 10
	var acc []byte
	pos := end
	for pos > 0 {
		n := int64(chunk)
		if pos < n {
			n = pos
		}
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, pos-n); err != nil {
			return 0, nil, err
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			return pos - n + int64(i) + 1, append(buf[i+1:], acc...), nil
		}
		acc = append(buf, acc...)
		pos -= n
	}
	return 0, acc, nil
}

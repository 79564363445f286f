package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/sandbox"
)

// Run runs one job to its end. Signals on sigs (SIGINT, SIGTERM, SIGHUP) are
// forwarded to the job; a second one, or the stop grace running out, kills
// it. A non-nil error with a nil Result means the job never started
// (*JobRefusedError); teardown errors come back joined with a Result.
func (l *Launcher) Run(ctx context.Context, req Request, sigs <-chan os.Signal) (*Result, error) {
	j, err := l.startJob(ctx, req)
	if err != nil {
		return nil, &JobRefusedError{err}
	}
	started := time.Now()
	res, runErr := j.run(ctx, sigs)
	t0 := time.Now()
	tdErr := j.teardown()
	j.log.Debug("teardown done", "took", time.Since(t0))
	if res == nil {
		if tdErr != nil {
			j.log.Error("teardown after failed setup", "err", tdErr)
		}
		return nil, &JobRefusedError{runErr}
	}
	res.Started, res.Ended = started.UTC(), time.Now().UTC()
	res.WallSeconds = res.Ended.Sub(res.Started).Seconds()
	var left *LeftoverError
	if errors.As(tdErr, &left) {
		res.Leftover = left.Remaining
	}
	if err := j.writeResult(); err != nil {
		j.log.Warn("result record", "err", err)
		res.Notes = append(res.Notes, err.Error())
	}
	return res, errors.Join(runErr, tdErr)
}

// teardown runs the cleanup stack, then removes the job's state. Every step
// runs, each with its own deadline (a cancelled job context must not skip
// cleanup); a step that finds its resource gone counts as done. When any step
// failed, the state stays for gc with what remains (*LeftoverError).
func (l *Launcher) teardown(h *Handle, undo *cleanup) error {
	_ = h.Update(func(s *JobState) { s.Status = StatusExited })
	removed, err := undo.run()
	if err != nil {
		return l.keepForGC(h, removed, err)
	}
	return h.Remove()
}

// record writes r to the job state before the caller creates it and pushes
// its undo.
func (l *Launcher) record(h *Handle, undo *cleanup, r jobstate.Resource) error {
	if err := h.Record(r); err != nil {
		return err
	}
	clean := l.cleaners()[r.Kind]
	undo.pushRemoving([]jobstate.Resource{r}, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := clean(ctx, r); err != nil {
			return fmt.Errorf("removing %s: %w", r, err)
		}
		return nil
	})
	return nil
}

// attachTTY receives the job's pty, puts the launcher's terminal in raw
// mode, and copies both ways (and into the log). Ctrl-C then reaches the
// job through its own terminal, exactly as outside the sandbox.
func (l *Launcher) attachTTY(ctx context.Context, console *sandbox.ConsoleSocket, req Request, jlog io.Writer) (func(), error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pty, err := console.Receive(rctx)
	if err != nil {
		return nil, err
	}
	in, _ := req.Stdin.(*os.File)
	restore := func() { pty.Close() }
	if in != nil && term.IsTerminal(int(in.Fd())) {
		_ = sandbox.Resize(pty, int(in.Fd()))
		if st, err := term.MakeRaw(int(in.Fd())); err == nil {
			restore = func() { term.Restore(int(in.Fd()), st); pty.Close() }
		}
		go io.Copy(pty, in)
		go watchWinch(ctx, pty, int(in.Fd()))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go tee(req.Stdout, jlog, pty, &wg, nil)
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	// Before the terminal is restored, let the job's last output through
	// (the pty reads EOF once the sandbox has closed its side).
	inner := restore
	restore = func() {
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
		}
		inner()
	}
	return restore, nil
}

// writeResult writes the result record to the job's data directory and,
// with --report, where the user asked.
func (j *job) writeResult() error {
	pl := j.pl
	b, err := json.MarshalIndent(j.res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	p := filepath.Join(j.l.JobData(j.id), "result.json")
	if err := writeOwned(p, b, int(pl.user.UID), int(pl.user.GID)); err != nil {
		return err
	}
	if pl.req.ReportPath != "" {
		rp := pl.req.ReportPath
		if !filepath.IsAbs(rp) {
			rp = filepath.Join(pl.codeDir, rp)
		}
		// The report goes where the user asked, written with the user's
		// own permissions, and never waits long on a reader.
		if err := writeReport(rp, b, pl.req.Caller, OutputDrain); err != nil {
			return fmt.Errorf("--report %s: %w", pl.req.ReportPath, err)
		}
	}
	return nil
}

// writeReport writes b to p as the user, within d: a FIFO with no reader is
// refused at once (a non-blocking open), a reader that does not read gets
// what fits before the deadline, and a file system that hangs is left
// behind a second after it. The launcher's caller (the daemon releasing a
// job's GPUs) waits no longer.
func writeReport(p string, b []byte, as Caller, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		done <- asUser(as.UID, as.GID, as.Groups, func() error {
			fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
			if errors.Is(err, unix.ENXIO) {
				return errors.New("a FIFO with no reader: not written (the result is in the job's result.json)")
			}
			if err != nil {
				return err
			}
			// Non-blocking, so the runtime's poller applies the deadline
			// to a pipe; a regular file ignores both.
			f := os.NewFile(uintptr(fd), p)
			defer f.Close()
			_ = f.SetWriteDeadline(time.Now().Add(d))
			if _, err := f.Write(b); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return fmt.Errorf("its reader did not take the report within %s: cut", d)
				}
				return err
			}
			return nil
		})
	}()
	t := time.NewTimer(d + time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("not written within %s: left behind", d)
	}
}

func writeOwned(p string, b []byte, uid, gid int) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	_, err = f.Write(b)
	return err
}

func writeJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o600)
}

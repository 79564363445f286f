package launcher

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/sandbox"
)

// startRunsc creates the job's cgroup, prepares runsc's command and its
// stdio, rechecks the staged inputs and starts runsc with the job's
// accounting running. A failed start is accounted and leaves nothing
// running.
func (j *job) startRunsc(ctx context.Context) error {
	j.rs = j.l.runsc()
	if err := os.MkdirAll(j.rs.Root, 0o700); err != nil {
		return err
	}
	if j.warm == nil { // a warm sandbox's cgroup is its own
		if err := j.l.record(j.h, &j.undo, jobstate.Resource{Kind: KindCgroup, Name: jobCgroup(j.id)}); err != nil {
			return err
		}
		if err := makeCgroup(jobCgroup(j.id)); err != nil {
			return err
		}
	}
	if err := j.l.record(j.h, &j.undo, jobstate.Resource{Kind: KindRunsc, Name: j.id, Attrs: map[string]string{"root": j.rs.Root}}); err != nil {
		return err
	}
	if err := j.runscCommand(); err != nil {
		return err
	}
	if err := j.recheckInputs(ctx); err != nil {
		return err
	}
	started := time.Now()
	acct, err := j.l.startAccounting(ctx, j, started)
	if err != nil {
		return err
	}
	j.acct = acct
	if err := j.spawn(); err != nil {
		acct.finish(ctx, time.Now(), ExitRefused, true)
		return fmt.Errorf("starting runsc: %w", err)
	}
	return nil
}

// runscCommand is `runsc run` of the bundle, with the job's terminal
// (--tty: a console socket) or the launcher's own pipes for its output.
func (j *job) runscCommand() error {
	pl := j.pl
	opts := sandbox.RunOptions{OverlaySize: uint64(pl.prof.Limits.Scratch), Network: j.guard != nil}
	if len(pl.devices) > 0 {
		opts.GPUCaps = pl.prof.GPU.Capabilities
	}
	if pl.req.TTY {
		console, err := sandbox.NewConsoleSocket(filepath.Join(j.h.Dir(), "console.sock"))
		if err != nil {
			return err
		}
		j.console = console
		j.undo.push(console.Close)
		opts.ConsoleSocket = console.Path
	}
	cmd := exec.Command(j.rs.Path, j.rs.RunArgs(j.id, j.bundle, opts)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	j.cmd = cmd
	if pl.req.TTY {
		cmd.Stdout, cmd.Stderr = pl.req.Stderr, pl.req.Stderr
		return nil
	}
	cmd.Stdin = pl.req.Stdin
	if f, ok := pl.req.Stdin.(*os.File); !ok || f == nil {
		cmd.Stdin = nil
	}
	// The job writes into the launcher's own pipes, so its end is runsc's
	// exit, never its consumer's reading.
	output, stdout, stderr, err := newJobOutput()
	if err != nil {
		return err
	}
	j.output, cmd.Stdout, cmd.Stderr = output, stdout, stderr
	j.undo.push(func() error { output.close(); return nil })
	return nil
}

// spawn starts runsc and waits for it on a goroutine that reports its exit
// on j.exited.
func (j *job) spawn() error {
	j.exited = make(chan error, 1)
	startErr := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits
		// (Go issue 27505): keep this goroutine on its thread for the
		// child's whole life.
		runtime.LockOSThread()
		if err := j.cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		j.exited <- j.cmd.Wait()
	}()
	return <-startErr
}

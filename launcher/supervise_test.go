package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/violation"
)

// fakeRunsc is a runsc that reports each call's arguments on a FIFO. Writing
// blocks until the test reads, so the test sees every call in order and
// needs no sleeps or timeouts.
type fakeRunsc struct {
	rs   *sandbox.Runsc
	fifo string
}

func newFakeRunsc(t *testing.T) *fakeRunsc {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "calls")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "runsc")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" > %s\n", fifo)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &fakeRunsc{rs: &sandbox.Runsc{Path: bin, Root: filepath.Join(dir, "root")}, fifo: fifo}
}

// next returns the next runsc call's arguments without the global flags.
func (f *fakeRunsc) next(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.fifo)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(b)), "--root "+f.rs.Root+" ")
}

type supervised struct {
	exited chan error
	sigs   chan os.Signal
	done   chan error
	res    *Result
}

// startSupervise runs supervise for job "j1" with the profile's limits.
func startSupervise(ctx context.Context, t *testing.T, f *fakeRunsc, limits func(*configs.Limits)) *supervised {
	t.Helper()
	p := &configs.Profile{}
	p.SetDefaults()
	if limits != nil {
		limits(&p.Limits)
	}
	l := &Launcher{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s := &supervised{exited: make(chan error), sigs: make(chan os.Signal), done: make(chan error, 1), res: &Result{ID: "j1"}}
	sv := &supervisor{id: "j1", limits: p.Limits, rs: f.rs, log: l.Log, res: s.res, exited: s.exited, sigs: s.sigs}
	go func() { s.done <- sv.run(ctx) }()
	return s
}

func (s *supervised) exit(t *testing.T, err error) {
	t.Helper()
	s.exited <- err
	if err := <-s.done; err != nil {
		t.Fatalf("supervise: %v", err)
	}
}

func TestSuperviseExit(t *testing.T) {
	f := newFakeRunsc(t)
	s := startSupervise(context.Background(), t, f, nil)
	s.exit(t, exitErr(t, "exit 7"))
	if s.res.Outcome != OutcomeFailed || s.res.ExitCode != 7 {
		t.Errorf("result %+v", s.res)
	}
}

func TestSuperviseSignalForwarded(t *testing.T) {
	f := newFakeRunsc(t)
	s := startSupervise(context.Background(), t, f, func(l *configs.Limits) { l.StopGrace = configs.Duration(time.Hour) })
	s.sigs <- syscall.SIGINT
	if got := f.next(t); got != "kill --all j1 INT" {
		t.Errorf("runsc %q, want kill --all j1 INT", got)
	}
	s.exit(t, exitErr(t, "exit 130"))
	if s.res.Outcome != OutcomeStopped || s.res.Reason != "stopped by INT" || s.res.ExitCode != 130 {
		t.Errorf("result %+v", s.res)
	}
}

func TestSuperviseSecondSignalKills(t *testing.T) {
	f := newFakeRunsc(t)
	s := startSupervise(context.Background(), t, f, func(l *configs.Limits) { l.StopGrace = configs.Duration(time.Hour) })
	s.sigs <- syscall.SIGTERM
	if got := f.next(t); got != "kill --all j1 TERM" {
		t.Errorf("first signal: runsc %q", got)
	}
	s.sigs <- syscall.SIGINT
	if got := f.next(t); got != "kill --all j1 KILL" {
		t.Errorf("second signal: runsc %q, want KILL", got)
	}
	s.exit(t, exitErr(t, "kill -KILL $$"))
	if s.res.Outcome != OutcomeStopped || s.res.Reason != "stopped by TERM" || s.res.ExitCode != 137 {
		t.Errorf("result %+v", s.res)
	}
}

func TestSuperviseGraceKills(t *testing.T) {
	f := newFakeRunsc(t)
	s := startSupervise(context.Background(), t, f, func(l *configs.Limits) { l.StopGrace = configs.Duration(time.Nanosecond) })
	s.sigs <- syscall.SIGTERM
	if got := f.next(t); got != "kill --all j1 TERM" {
		t.Errorf("signal: runsc %q", got)
	}
	if got := f.next(t); got != "kill --all j1 KILL" {
		t.Errorf("after the grace: runsc %q, want KILL", got)
	}
	s.exit(t, exitErr(t, "kill -KILL $$"))
	if s.res.Outcome != OutcomeStopped || s.res.ExitCode != 137 {
		t.Errorf("result %+v", s.res)
	}
}

func TestSuperviseWallTime(t *testing.T) {
	f := newFakeRunsc(t)
	s := startSupervise(context.Background(), t, f, func(l *configs.Limits) {
		l.WallTime = configs.Duration(time.Nanosecond)
		l.StopGrace = configs.Duration(time.Hour)
	})
	if got := f.next(t); got != "kill --all j1 TERM" {
		t.Errorf("wall time: runsc %q, want TERM", got)
	}
	s.exit(t, exitErr(t, "kill -TERM $$"))
	r := s.res
	if r.Outcome != OutcomeLimit || r.ExitCode != ExitLimit || r.JobStatus != 143 {
		t.Errorf("result %+v", r)
	}
	if len(r.Violations) != 1 || r.Violations[0].Kind != violation.WallTime || r.Violations[0].Limit != "limits.wall_time" ||
		r.Violations[0].Job != "j1" || r.Violations[0].Action != violation.Killed || r.Reason == "" {
		t.Errorf("violations %+v reason %q", r.Violations, r.Reason)
	}
}

func TestSuperviseContextCanceled(t *testing.T) {
	f := newFakeRunsc(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	s := startSupervise(ctx, t, f, func(l *configs.Limits) { l.StopGrace = configs.Duration(time.Hour) })
	cancel(errors.New("daemon shutting down"))
	if got := f.next(t); got != "kill --all j1 TERM" {
		t.Errorf("cancel: runsc %q", got)
	}
	s.exit(t, exitErr(t, "kill -TERM $$"))
	if s.res.Outcome != OutcomeStopped || s.res.Reason != "stopped: daemon shutting down" || s.res.ExitCode != 143 {
		t.Errorf("result %+v", s.res)
	}
}

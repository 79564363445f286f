package launcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/secrets"
	"github.com/securetrain/securetrain/violation"
)

// supervise runs the job's supervisor until runsc exits, with the job's
// violations and credential renewals as its inputs.
func (j *job) supervise(ctx context.Context, sigs <-chan os.Signal) error {
	s := &supervisor{id: j.id, limits: j.pl.prof.Limits, rs: j.rs, log: j.log, res: j.res,
		exited: j.exited, sigs: sigs, usageViol: j.acct.viol}
	if j.guard != nil {
		s.netViol = j.guard.Violations()
	}
	if j.output != nil {
		s.readerGone = j.output.gone
	}
	if j.grant != nil {
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		s.renewals = j.grant.Watch(wctx)
	}
	return s.run(ctx)
}

// supervisor is the job's one select loop: its exit, signals, the wall
// clock, violations and renewal failures. A nil channel is one that never
// delivers.
type supervisor struct {
	id     string
	limits configs.Limits
	rs     *sandbox.Runsc
	log    *slog.Logger
	res    *Result

	exited    <-chan error
	sigs      <-chan os.Signal
	netViol   <-chan violation.Violation
	usageViol <-chan violation.Violation
	renewals  <-chan secrets.Event
	// readerGone: the caller's stdout or stderr reader went away.
	readerGone <-chan struct{}

	grace    <-chan time.Time // the stop grace, once a stop was asked
	stopping bool
	killed   bool // SIGKILL was delivered
}

func (s *supervisor) run(ctx context.Context) error {
	wall := time.NewTimer(s.limits.WallTime.D())
	defer wall.Stop()
	done := ctx.Done()
	for {
		select {
		case err := <-s.exited:
			s.res.finish(err)
			return nil
		case sig := <-s.sigs:
			s.signal(sig)
		case <-done:
			done = nil
			s.stopped("stopped: " + context.Cause(ctx).Error())
			s.stop("TERM")
		case <-wall.C:
			w := s.limits.WallTime.D()
			s.terminate(violation.Violation{Kind: violation.WallTime, Limit: "limits.wall_time",
				Measured: w.Seconds(), Threshold: w.Seconds(), Unit: "s",
				Detail: fmt.Sprintf("ran for %s; raise limits.wall_time or pass --wall-time", w)})
		case v := <-s.netViol:
			if v.Action == violation.Killed {
				s.terminate(v)
			} else {
				v.Job = s.id
				s.res.Violations = append(s.res.Violations, v)
			}
		case v, ok := <-s.usageViol:
			if !ok {
				s.usageViol = nil
				continue
			}
			s.terminate(v)
		case ev, ok := <-s.renewals:
			if !ok {
				s.renewals = nil
				continue
			}
			s.renewal(ev)
		case <-s.readerGone:
			// `securetrain run ... | head`: as closing its terminal, the
			// job's consumer leaving stops it.
			s.readerGone = nil
			s.log.Info("the job's output reader went away: stopping it")
			s.stopped("stopped: its output reader went away")
			s.stop("TERM")
		case <-s.grace:
			s.log.Info("stop grace over: killing job", "grace", s.limits.StopGrace.D())
			s.kill()
			s.grace = nil
		}
	}
}

// signal forwards a signal the launcher got; the second one kills.
func (s *supervisor) signal(sig os.Signal) {
	name := signalName(sig)
	if s.stopping {
		s.log.Info("second signal: killing job", "sig", name)
		s.kill()
		return
	}
	s.stopped("stopped by " + name)
	s.stop(name)
}

// stopped sets the outcome of a stop asked for, unless a violation came
// first.
func (s *supervisor) stopped(reason string) {
	if s.res.Outcome == "" {
		s.res.Outcome, s.res.Reason = OutcomeStopped, reason
	}
}

// renewal handles a credential renewal event: a failure is a violation,
// which stops the job when the profile says so.
func (s *supervisor) renewal(ev secrets.Event) {
	if ev.Kind != secrets.Failed {
		s.log.Debug("credential renewal", "what", ev.What, "kind", ev.Kind, "ttl", ev.TTL)
		return
	}
	v := ev.Violation(s.id)
	if ev.Stop {
		s.terminate(v)
		return
	}
	s.res.Violations = append(s.res.Violations, v)
}

// kill delivers SIGKILL: straight to the sandbox process first
// (fastkill_linux.go), then runsc kill, which fails once the sandbox is
// gone. More violations while it dies need no second one.
func (s *supervisor) kill() {
	if s.killed {
		return
	}
	s.res.killedByUs = true
	direct := s.res.killDirect()
	kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.rs.Kill(kctx, s.id, "KILL", true); err != nil && !errors.Is(err, sandbox.ErrNotFound) && direct != nil {
		s.log.Warn("kill", "err", err, "direct", direct)
		return // a later call tries again
	}
	s.killed = true
}

// stop sends sig and starts the stop grace, after which the job is killed.
func (s *supervisor) stop(sig string) {
	s.res.killedByUs = true
	kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.rs.Kill(kctx, s.id, sig, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		s.log.Warn("signal", "sig", sig, "err", err)
	}
	if !s.stopping {
		s.stopping = true
		s.grace = time.After(s.limits.StopGrace.D())
	}
}

// terminate records v as the reason the job ends (the first one sets the
// outcome) and stops it: at once when data may be leaving, else with the
// stop grace.
func (s *supervisor) terminate(v violation.Violation) {
	if v.Time.IsZero() {
		v.Time = time.Now().UTC()
	}
	v.Job, v.Action = s.id, violation.Killed
	res := s.res
	res.Violations = append(res.Violations, v)
	if res.Outcome == "" {
		if v.Kind.IsPolicy() {
			res.Outcome, res.ExitCode = OutcomeViolation, ExitPolicy
		} else {
			res.Outcome, res.ExitCode = OutcomeLimit, ExitLimit
		}
		res.Reason = v.String()
	}
	s.log.Warn("terminating job", "violation", v.String())
	if v.Kind == violation.Network || v.Kind == violation.DNS || v.Kind == violation.EgressBytes {
		s.kill() // data may be leaving: no grace period
		return
	}
	s.stop("TERM")
}

// finish fills the result from runsc's exit status.
func (res *Result) finish(err error) {
	status := 0
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				status = 128 + int(ws.Signal())
			} else {
				status = ee.ExitCode()
			}
		} else {
			status = ExitRefused
		}
	}
	if status == 128 && res.sandboxKilled {
		// The job's container is not the sandbox's first, so its `runsc
		// run` does not see the SIGKILL: it loses its sandbox and exits
		// 128. The job died of our SIGKILL, as a cold start's does.
		status = 128 + int(syscall.SIGKILL)
	}
	res.JobStatus = status
	switch res.Outcome {
	case OutcomeViolation, OutcomeLimit:
		return // exit code already set
	case OutcomeStopped:
		res.ExitCode = status
		return
	}
	res.ExitCode = status
	switch {
	case status == 0:
		res.Outcome = OutcomeExited
	case status > 128 && status < 128+65:
		res.Outcome = OutcomeSignaled
		res.Reason = "killed by signal " + sigName(syscall.Signal(status-128))
	default:
		res.Outcome = OutcomeFailed
	}
}

// sigName names a signal, real-time ones (which have no name) by number.
func sigName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return fmt.Sprintf("%d", int(s))
}

func signalName(s os.Signal) string {
	if ss, ok := s.(syscall.Signal); ok {
		return strings.TrimPrefix(unix.SignalName(ss), "SIG")
	}
	return "TERM"
}

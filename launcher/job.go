package launcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/secrets"
)

// job is one job's life. The plan is what preparation decided and is never
// changed after it; every other field is what one step of the life made,
// filled in the order of run's steps.
type job struct {
	l    *Launcher
	id   string
	pl   *plan
	h    *Handle
	undo cleanup
	log  *slog.Logger

	staged staging // the user-named sources as opened (stage), the code directory's snapshot in its place (code)

	jlog  *cappedLog // data: the job's log under its data directory
	guard *netguard.Guard
	env   []string // the plan's, with the network's variables

	grant   *secrets.Grant
	args    []string        // the plan's, through the secrets entry point when it delivers variables
	secrets []sandbox.Mount // the delivered files and the entry point

	code *provenance.CodeSnapshot // attested jobs: what the job runs

	etcView  func() (string, error) // the shared /etc view, made beside the steps before bundle
	bundle   string
	hostname string
	mounts   []sandbox.Mount // the sandbox's mounts by their names (audited); the spec has them staged
	audit    *audit.Log

	warm    *warmSandbox // a pooled sandbox the job runs in (warm.go); nil: runsc boots one
	rs      *sandbox.Runsc
	cmd     *exec.Cmd
	console *sandbox.ConsoleSocket // --tty
	output  *jobOutput             // without --tty
	acct    *accounting
	exited  chan error // runsc's exit
	res     *Result

	outputsSig *provenance.ModelSignature // integrity.sign_outputs: the bundle made at the end
}

// startJob prepares the request, creates the job's state and stages the
// sources the user named. Nothing is left behind when it fails.
func (l *Launcher) startJob(ctx context.Context, req Request) (*job, error) {
	t0 := time.Now()
	pl, err := l.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	j := l.newJob(req.ID, pl)
	j.log.Debug("prepared", "took", time.Since(t0))
	j.h, err = l.Store().Create(JobState{
		ID: j.id, User: pl.user.Name, UID: int(pl.user.UID), GID: int(pl.user.GID),
		Command: req.Command, Profile: pl.prof.Source, ProfileDigest: pl.prof.Digest,
		CodeDir: pl.codeDir, Created: time.Now().UTC(), LauncherPID: os.Getpid(), Status: StatusPreparing,
		Extra: maps.Clone(req.Extra),
	})
	if err != nil {
		return nil, err
	}
	j.startAheadOfBundle() // a live job's: gc removes no view while a job lives
	if j.staged, err = l.stage(j.id, pl, j.h, &j.undo); err != nil {
		if tdErr := j.teardown(); tdErr != nil {
			j.log.Error("teardown after refused paths", "err", tdErr)
		}
		return nil, err
	}
	return j, nil
}

// newJob is the job of a prepared plan, before any step.
func (l *Launcher) newJob(id string, pl *plan) *job {
	if id == "" {
		id = NewID()
	}
	return &job{l: l, id: id, pl: pl, log: l.Log.With("job", id), env: pl.env, args: pl.args}
}

// run takes the job from its staged sources to its account. A nil Result
// means it never started; the caller tears down either way.
func (j *job) run(ctx context.Context, sigs <-chan os.Signal) (*Result, error) {
	for _, step := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"outputs", j.outputs}, {"data", j.data}, {"network", j.network}, {"credentials", j.credentials},
		{"code", j.snapshotCode}, {"bundle", j.writeBundle}, {"audit", j.auditStart}, {"start", j.start},
	} {
		t0 := time.Now()
		if err := step.do(ctx); err != nil {
			return nil, err
		}
		j.log.Debug("step done", "step", step.name, "took", time.Since(t0))
	}
	err := j.supervise(ctx, sigs)
	j.drainOutput()
	return j.res, errors.Join(err, j.account(ctx))
}

// outputs creates the outputs directory as the job's user, with the user's
// own permissions.
func (j *job) outputs(context.Context) error {
	pl := j.pl
	err := asUser(int(pl.user.UID), int(pl.user.GID), pl.req.Caller.Groups, func() error {
		if err := os.MkdirAll(pl.outputDir, 0o755); err != nil {
			return err
		}
		fi, err := os.Lstat(pl.outputDir)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("not a directory")
		}
		return unix.Access(pl.outputDir, unix.W_OK)
	})
	if err != nil {
		return fmt.Errorf("output %s: %w (the job's user %s must be able to create and write it)", pl.outputDir, unwrapFS(err), pl.user.Name)
	}
	return nil
}

// data makes the job's directory on the host for what outlives it, and its
// log there (capped). The job's HOME is not here: it is in memory, bounded
// by limits.home (homeMount).
func (j *job) data(context.Context) error {
	dir := j.l.JobData(j.id)
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "job.log")
	jlog, err := openLog(logPath, int(j.pl.user.UID), int(j.pl.user.GID), int64(j.pl.prof.Sandbox.LogLimit))
	if err != nil {
		return err
	}
	j.jlog = jlog
	j.undo.push(jlog.Close)
	return j.h.Update(func(s *JobState) {
		s.Log = logPath
		s.ResultPath = filepath.Join(dir, "result.json")
	})
}

// network sets up the job's namespace, veth, allowlist and DNS proxy, or
// takes a warm sandbox (warm.go) whose network is ready. It fails closed:
// no job starts without every rule in place.
func (j *job) network(ctx context.Context) error {
	if j.warm = j.takeWarm(); j.warm != nil {
		// Its network (the same configuration) came up with it; it goes
		// with it.
		j.undo.push(j.warm.retire)
		j.guard = j.warm.guard
		j.log.Debug("warm sandbox", "sandbox", j.warm.id)
		if (j.guard == nil) != (j.pl.net == nil) { // warmKey has the network: never
			return fmt.Errorf("network: warm sandbox %s does not have the job's network", j.warm.id)
		}
	}
	if j.pl.net == nil {
		return nil
	}
	if j.guard == nil {
		cfg := *j.pl.net
		cfg.JobID = j.id
		cfg.Logger = j.l.Log // netguard adds job=ID itself
		n := j.h.recorded()
		guard, err := netguard.Setup(ctx, cfg, j.h)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		j.guard = guard
		j.undo.pushRemoving(j.h.recordedSince(n), guard.Close)
	}
	guard := j.guard
	// The interface variables distributed training reads; a value the user
	// set wins, and no name appears twice.
	have := envMap(j.env)
	j.env = append([]string(nil), j.env...)
	for _, k := range sortedKeysOf(guard.Env()) {
		if _, ok := have[k]; !ok {
			j.env = append(j.env, k+"="+guard.Env()[k])
		}
	}
	j.log.Debug("network ready", "netns", guard.NetnsPath(), "addr", guard.JobAddr())
	return nil
}

// credentials issues the job's orphan token and delivers the secrets read
// with it as files on a private tmpfs; the job's command goes through the
// entry point that turns mapped files into environment variables.
func (j *job) credentials(ctx context.Context) error {
	if len(j.pl.prof.Secrets) == 0 {
		return nil
	}
	if err := j.issueSecrets(ctx); err != nil {
		return err
	}
	j.log.Debug("credentials issued", "accessor", j.grant.Accessor())
	return nil
}

// start starts runsc with the job's bundle, in the job's cgroup, with its
// accounting running, and attaches its terminal or its output.
func (j *job) start(ctx context.Context) error {
	if err := j.startRunsc(ctx); err != nil {
		return err
	}
	pl, pid := j.pl, j.cmd.Process.Pid
	if j.output != nil {
		j.output.start(pl.req.Stdout, pl.req.Stderr, j.jlog)
	}
	_ = j.h.Update(func(s *JobState) {
		s.Status = StatusRunning
		s.RunscPID = pid
		if j.guard != nil {
			// Where the job is on the network, for ps/debugging of
			// distributed jobs (which rank holds the allocation's address).
			s.NetAddr = j.guard.JobAddr().String()
			s.Allocation = pl.net.Allocation
		}
	})
	j.log.Info("job started", "pid", pid, "user", pl.user.Name, "profile", pl.prof.Name)
	j.res = &Result{
		ID: j.id, User: pl.user.Name, UID: int(pl.user.UID), Command: pl.req.Command,
		Profile: pl.prof.Name, ProfileDigest: pl.prof.Digest, Log: j.jlog.f.Name(), Output: pl.outputDir,
		runscPID: pid,
	}
	if j.warm != nil {
		j.res.WarmSandbox, j.res.sandboxPID = j.warm.id, j.warm.pid
	}
	if pl.req.TTY {
		restore, err := j.l.attachTTY(ctx, j.console, pl.req, j.jlog)
		if err != nil {
			j.rs.Kill(context.Background(), j.id, "KILL", true)
			<-j.exited
			j.acct.finish(ctx, time.Now(), 128+9, true)
			j.res = nil
			return err
		}
		j.undo.push(func() error { restore(); return nil })
	}
	return nil
}

// drainOutput gives the job's output OutputDrain after its end: the job is
// dead, and nothing of its (slot, GPUs, address) waits for a consumer that
// does not read.
func (j *job) drainOutput() {
	if j.output == nil || j.output.drain(OutputDrain) {
		return
	}
	n := fmt.Sprintf("output cut: the job's stdout/stderr were not read within %s of its end; the rest was dropped (securetrain logs %s has what was read)", OutputDrain, j.id)
	j.log.Warn("output cut", "after", OutputDrain)
	j.jlog.note("%s", n)
	j.res.Notes = append(j.res.Notes, n)
}

// cgroup is the name of the job's cgroup (jobCgroup): its own, or its warm
// sandbox's.
func (j *job) cgroup() string {
	if j.warm != nil {
		return j.warm.id
	}
	return j.id
}

// teardown runs the cleanup stack, then removes the job's state. Every step
// runs, each with its own deadline (a cancelled job context must not skip
// cleanup); a step that finds its resource gone counts as done. When any step
// failed, the state stays for gc with what remains (*LeftoverError).
func (j *job) teardown() error {
	return j.l.teardown(j.h, &j.undo)
}

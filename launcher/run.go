package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/secrets"
	"github.com/securetrain/securetrain/usage"
	"github.com/securetrain/securetrain/violation"
)

// Run runs one job to its end. Signals on sigs (SIGINT, SIGTERM, SIGHUP) are
// forwarded to the job; a second one, or the stop grace running out, kills
// it. A non-nil error with a nil Result means the job never started
// (*JobRefusedError); teardown errors come back joined with a Result.
func (l *Launcher) Run(ctx context.Context, req Request, sigs <-chan os.Signal) (*Result, error) {
	t0 := time.Now()
	pl, err := l.prepare(ctx, req)
	if err != nil {
		return nil, &JobRefusedError{err}
	}
	id := req.ID
	if id == "" {
		id = NewID()
	}
	log := l.Log.With("job", id)
	log.Debug("prepared", "took", time.Since(t0))
	store := l.Store()
	h, err := store.Create(JobState{
		ID: id, User: pl.user.Name, UID: int(pl.user.UID), GID: int(pl.user.GID),
		Command: req.Command, Profile: pl.prof.Source, ProfileDigest: pl.prof.Digest,
		CodeDir: pl.codeDir, Created: time.Now().UTC(), LauncherPID: os.Getpid(), Status: StatusPreparing,
		Extra: maps.Clone(req.Extra),
	})
	if err != nil {
		return nil, &JobRefusedError{err}
	}
	var undo cleanup
	if err := l.stage(id, pl, h, &undo); err != nil {
		if tdErr := l.teardown(h, &undo); tdErr != nil {
			log.Error("teardown after refused paths", "err", tdErr)
		}
		return nil, &JobRefusedError{err}
	}
	started := time.Now()
	res, runErr := l.setupAndRun(ctx, id, pl, h, &undo, sigs)
	tdErr := l.teardown(h, &undo)
	if res == nil {
		if tdErr != nil {
			log.Error("teardown after failed setup", "err", tdErr)
		}
		return nil, &JobRefusedError{runErr}
	}
	res.Started, res.Ended = started.UTC(), time.Now().UTC()
	res.WallSeconds = res.Ended.Sub(res.Started).Seconds()
	var left *LeftoverError
	if errors.As(tdErr, &left) {
		res.Leftover = left.Remaining
	}
	if err := l.writeResult(pl, res); err != nil {
		log.Warn("result record", "err", err)
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

func (l *Launcher) setupAndRun(ctx context.Context, id string, pl *plan, h *Handle, undo *cleanup, sigs <-chan os.Signal) (*Result, error) {
	req, prof := pl.req, pl.prof
	log := l.Log.With("job", id)
	uid, gid := int(pl.user.UID), int(pl.user.GID)

	// Outputs: created as the job's user, with the user's own permissions.
	if err := asUser(uid, gid, pl.req.Caller.Groups, func() error {
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
	}); err != nil {
		return nil, fmt.Errorf("output %s: %w (the job's user %s must be able to create and write it)", pl.outputDir, unwrapFS(err), pl.user.Name)
	}

	// Per-job data on the host: the log (capped) and the result. The job's
	// HOME is not here: it is in memory, bounded by limits.home (homeMount).
	jobData := filepath.Join(l.Host.DataDir, "jobs", id)
	if err := os.MkdirAll(filepath.Dir(jobData), 0o711); err != nil {
		return nil, err
	}
	if err := os.Mkdir(jobData, 0o711); err != nil {
		return nil, err
	}
	logPath := filepath.Join(jobData, "job.log")
	jlog, err := openLog(logPath, uid, gid, int64(prof.Sandbox.LogLimit))
	if err != nil {
		return nil, err
	}
	undo.push(jlog.Close)
	_ = h.Update(func(s *JobState) {
		s.Log = logPath
		s.ResultPath = filepath.Join(jobData, "result.json")
	})

	// Network: the job's namespace, veth, allowlist and DNS proxy. Fails
	// closed: no job starts without every rule in place.
	var guard *netguard.Guard
	netnsPath, resolv, hosts := "", []byte{}, []byte(nil)
	env := pl.env
	if pl.net != nil {
		cfg := *pl.net
		cfg.JobID = id
		cfg.Logger = l.Log // netguard adds job=ID itself
		n := h.recorded()
		guard, err = netguard.Setup(ctx, cfg, h)
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		undo.pushRemoving(h.recordedSince(n), guard.Close)
		netnsPath, resolv = guard.NetnsPath(), guard.ResolvConf()
		// The interface variables distributed training reads; a value the
		// user set wins, and no name appears twice.
		have := envMap(env)
		env = append([]string(nil), env...)
		for _, k := range sortedKeysOf(guard.Env()) {
			if _, ok := have[k]; !ok {
				env = append(env, k+"="+guard.Env()[k])
			}
		}
		log.Debug("network ready", "netns", netnsPath, "addr", guard.JobAddr())
	}

	// Credentials: an orphan job token, the secrets read with it, delivered
	// as files on a private tmpfs; the job's command goes through the entry
	// point that turns mapped files into environment variables.
	var grant *secrets.Grant
	args := pl.args
	var secretMounts []sandbox.Mount
	if len(prof.Secrets) > 0 {
		grant, secretMounts, args, err = l.issueSecrets(ctx, id, pl, h, undo)
		if err != nil {
			return nil, err
		}
		log.Debug("credentials issued", "accessor", grant.Accessor())
	}

	// Code: an attested job runs a snapshot of it, digested before it starts.
	if err := l.snapshotCode(ctx, pl, h, undo, jobData, secretMounts); err != nil {
		return nil, err
	}

	// Bundle: root skeleton, generated /etc, masks, spec.
	bundle := filepath.Join(h.Dir(), "bundle")
	if err := os.Mkdir(bundle, 0o711); err != nil {
		return nil, err
	}
	hostname := "st-" + id
	if guard != nil {
		// The host name is the job's own address, answered locally: torch
		// (torchrun's agent, Gloo without an interface name) resolves it
		// and advertises the result to the other ranks. The job holding its
		// allocation's address on this node is this node's name, which the
		// other nodes' jobs resolve to that address: torchrun's rendezvous
		// host recognises itself by it, and rank 0's agent advertises it.
		if self := l.nodeName(); self != "" && pl.net.Allocation != "" && pl.net.HostNames[self] == guard.JobAddr() {
			hostname = self
		}
		hosts = guard.Hosts(hostname)
	}
	etc, err := sandbox.EtcFiles(filepath.Join(bundle, "etc"), pl.user, hostname, resolv, hosts)
	if err != nil {
		return nil, err
	}
	mounts := append([]sandbox.Mount(nil), pl.mounts...)
	mounts = append(mounts, etc...)
	mounts = append(mounts,
		homeMount(pl),
		sandbox.Mount{Kind: sandbox.Bind, Source: pl.codeDir, Target: pl.codeDir, ReadOnly: true},
		sandbox.Mount{Kind: sandbox.Tmpfs, Target: "/tmp", Size: uint64(prof.Limits.Scratch), Mode: 0o1777},
	)
	empty := filepath.Join(bundle, "empty")
	if err := os.WriteFile(empty, nil, 0o400); err != nil {
		return nil, err
	}
	for _, m := range pl.masks {
		fi, err := os.Lstat(m)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			mounts = append(mounts, sandbox.Mount{Kind: sandbox.Tmpfs, Target: m, ReadOnly: true, Size: 4096, Mode: 0o500})
		} else {
			mounts = append(mounts, sandbox.Mount{Kind: sandbox.Bind, Source: empty, Target: m, ReadOnly: true})
		}
	}
	mounts = append(mounts, sandbox.Mount{Kind: sandbox.Bind, Source: pl.outputDir, Target: pl.outputDir})
	mounts = append(mounts, pl.integrity.mounts...)
	mounts = append(mounts, pl.integrity.hideMounts(empty)...)
	mounts = append(mounts, secretMounts...)
	sandbox.SortMounts(mounts)
	// Privilege boundary: runsc mounts what was checked (the audit record
	// keeps the names).
	specMounts := pl.req.stagedSources(mounts)
	root := pl.rootfs
	if root == "" {
		root = filepath.Join(bundle, "rootfs")
		if err := sandbox.PrepareRoot(root, pl.links, specMounts); err != nil {
			return nil, err
		}
	}
	spec, err := sandbox.BuildSpec(sandbox.Spec{
		ID: id, Args: args, Env: env, Cwd: pl.codeDir,
		UID: pl.user.UID, GID: pl.user.GID, AdditionalGIDs: pl.user.Groups,
		Hostname: hostname, Terminal: req.TTY, Root: root, Mounts: specMounts,
		Shm:         uint64(prof.Limits.Shm),
		Resources:   sandbox.Resources{CPUs: prof.Limits.CPUs, Memory: int64(prof.Limits.Memory), Pids: prof.Limits.Pids},
		CgroupsPath: sandboxCgroup(id), Devices: pl.devices, NetnsPath: netnsPath,
	})
	if err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(bundle, "config.json"), spec); err != nil {
		return nil, err
	}
	log.Debug("bundle written", "bundle", bundle, "mounts", len(spec.Mounts))

	// The audit record of the start: the job does not start without it.
	alog, err := l.OpenAudit(ctx)
	if err != nil {
		return nil, err
	}
	undo.push(func() error { return alog.Close(context.Background()) })
	if err := l.auditStart(ctx, alog, id, pl, mounts, grant); err != nil {
		return nil, err
	}
	pl.audit = alog

	// Start.
	rs := l.runsc()
	if err := os.MkdirAll(rs.Root, 0o700); err != nil {
		return nil, err
	}
	if err := l.record(h, undo, jobstate.Resource{Kind: KindCgroup, Name: jobCgroup(id)}); err != nil {
		return nil, err
	}
	if err := makeCgroup(jobCgroup(id)); err != nil {
		return nil, err
	}
	if err := l.record(h, undo, jobstate.Resource{Kind: KindRunsc, Name: id, Attrs: map[string]string{"root": rs.Root}}); err != nil {
		return nil, err
	}
	opts := sandbox.RunOptions{OverlaySize: uint64(prof.Limits.Scratch), Network: guard != nil}
	if len(pl.devices) > 0 {
		opts.GPUCaps = prof.GPU.Capabilities
	}
	var console *sandbox.ConsoleSocket
	if req.TTY {
		console, err = sandbox.NewConsoleSocket(filepath.Join(h.Dir(), "console.sock"))
		if err != nil {
			return nil, err
		}
		undo.push(console.Close)
		opts.ConsoleSocket = console.Path
	}
	cmd := exec.Command(rs.Path, rs.RunArgs(id, bundle, opts)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var output *jobOutput
	if !req.TTY {
		cmd.Stdin = req.Stdin
		if f, ok := req.Stdin.(*os.File); !ok || f == nil {
			cmd.Stdin = nil
		}
		output, cmd.Stdout, cmd.Stderr, err = newJobOutput()
		if err != nil {
			return nil, err
		}
		undo.push(func() error { output.close(); return nil })
	} else {
		cmd.Stdout, cmd.Stderr = req.Stderr, req.Stderr
	}
	if err := l.recheckMountedInputs(ctx, pl); err != nil {
		return nil, err
	}
	started := time.Now()
	acct, err := l.startAccounting(ctx, id, pl, rs, started)
	if err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	startErr := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits
		// (Go issue 27505): keep this goroutine on its thread for the
		// child's whole life.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		// The job's end is runsc's exit, never its consumer's reading.
		exited <- cmd.Wait()
	}()
	if err := <-startErr; err != nil {
		acct.finish(ctx, id, started, time.Now(), ExitRefused, true)
		return nil, fmt.Errorf("starting runsc: %w", err)
	}
	if output != nil {
		output.start(req.Stdout, req.Stderr, jlog)
	}
	_ = h.Update(func(s *JobState) {
		s.Status = StatusRunning
		if s.Extra == nil {
			s.Extra = map[string]string{}
		}
		s.Extra["runsc_pid"] = fmt.Sprint(cmd.Process.Pid)
		if guard != nil {
			// Where the job is on the network, for ps/debugging of
			// distributed jobs (which rank holds the allocation's address).
			s.Extra["net_addr"] = guard.JobAddr().String()
			if pl.net.Allocation != "" {
				s.Extra["allocation"] = pl.net.Allocation
			}
		}
	})
	log.Info("job started", "pid", cmd.Process.Pid, "user", pl.user.Name, "profile", prof.Name)
	if req.TTY {
		restore, err := l.attachTTY(ctx, console, req, jlog)
		if err != nil {
			rs.Kill(context.Background(), id, "KILL", true)
			<-exited
			acct.finish(ctx, id, started, time.Now(), 128+9, true)
			return nil, err
		}
		undo.push(func() error { restore(); return nil })
	}

	res := &Result{
		ID: id, User: pl.user.Name, UID: uid, Command: req.Command,
		Profile: prof.Name, ProfileDigest: prof.Digest, Log: logPath, Output: pl.outputDir,
		runscPID: cmd.Process.Pid,
	}
	var netViol <-chan violation.Violation
	if guard != nil {
		netViol = guard.Violations()
	}
	var renewals <-chan secrets.Event
	if grant != nil {
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		renewals = grant.Watch(wctx)
	}
	waitErr := l.supervise(ctx, id, pl, rs, exited, sigs, netViol, acct.viol, renewals, res)
	if output != nil && !output.drain(OutputDrain) {
		// The job is dead; its consumer does not read. Nothing of the
		// job's (slot, GPUs, address) waits for it.
		n := fmt.Sprintf("output cut: the job's stdout/stderr were not read within %s of its end; the rest was dropped (securetrain logs %s has what was read)", OutputDrain, id)
		log.Warn("output cut", "after", OutputDrain)
		jlog.note("%s", n)
		res.Notes = append(res.Notes, n)
	}
	// After the job's own (a kill names the violation that caused it).
	for _, v := range pl.req.Recorded {
		v.Job = id
		res.Violations = append(res.Violations, v)
	}

	// The account: final counters, OOM and pids verdicts, egress.
	rec := acct.finish(ctx, id, started, time.Now(), res.JobStatus, res.killedByUs)
	if guard != nil {
		rec.EgressBytes = guard.EgressBytes()
		if req.Learn {
			res.Suggested = netguard.SuggestAllowlist(guard.Contacted())
		}
	}
	for _, v := range rec.Violations {
		if res.Outcome != OutcomeViolation && res.Outcome != OutcomeLimit {
			res.Outcome, res.ExitCode, res.Reason = OutcomeLimit, ExitLimit, v.String()
		}
	}
	rec.Violations = append(rec.Violations, res.Violations...)
	res.Violations = rec.Violations
	rec.Exit = usage.ExitStatus{Code: res.JobStatus, Reason: res.Reason}
	if res.JobStatus > 128 && res.JobStatus < 128+65 {
		rec.Exit.Signal = unix.SignalName(syscall.Signal(res.JobStatus - 128))
	}
	res.Usage = &rec
	res.Summary = rec.Summary()
	if err := l.finishInputs(ctx, pl, res); err != nil {
		waitErr = errors.Join(waitErr, err)
	}
	if err := l.auditEnd(ctx, pl.audit, res); err != nil {
		waitErr = errors.Join(waitErr, err)
	}
	return res, waitErr
}

// homeMount is the job's $HOME: a fresh, empty directory owned by the job's
// user, in the sandbox's memory and bounded by limits.home, so that filling
// it (~/.cache, HF_HOME) is ENOSPC for the job and never fills the host's
// disk. What it holds counts against limits.memory, as /tmp does.
func homeMount(pl *plan) sandbox.Mount {
	return sandbox.Mount{Kind: sandbox.Tmpfs, Target: pl.user.Home, Size: uint64(pl.prof.Limits.Home),
		Mode: 0o700, UID: int(pl.user.UID), GID: int(pl.user.GID)}
}

// supervise is the job's one select loop: its exit, signals, the wall clock
// and (as the subsystems arrive) violations and renewal failures.
func (l *Launcher) supervise(ctx context.Context, id string, pl *plan, rs *sandbox.Runsc, exited <-chan error, sigs <-chan os.Signal, netViol, usageViol <-chan violation.Violation, renewals <-chan secrets.Event, res *Result) error {
	log := l.Log.With("job", id)
	prof := pl.prof
	wall := time.NewTimer(prof.Limits.WallTime.D())
	defer wall.Stop()
	var grace <-chan time.Time
	stopping, killed := false, false
	kill := func() {
		if killed {
			return // SIGKILL was delivered; more violations while it dies need no second one
		}
		res.killedByUs = true
		// Straight to the sandbox process first (fastkill_linux.go), then
		// runsc kill, which fails once the sandbox is gone.
		direct := killSandbox(res.runscPID, id)
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rs.Kill(kctx, id, "KILL", true); err != nil && !errors.Is(err, sandbox.ErrNotFound) && direct != nil {
			log.Warn("kill", "err", err, "direct", direct)
			return // a later call tries again
		}
		killed = true
	}
	stop := func(sig string) {
		res.killedByUs = true
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rs.Kill(kctx, id, sig, true); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
			log.Warn("signal", "sig", sig, "err", err)
		}
		if !stopping {
			stopping = true
			grace = time.After(prof.Limits.StopGrace.D())
		}
	}
	terminate := func(v violation.Violation) {
		if v.Time.IsZero() {
			v.Time = time.Now().UTC()
		}
		v.Job, v.Action = id, violation.Killed
		res.Violations = append(res.Violations, v)
		if res.Outcome == "" {
			if v.Kind.IsPolicy() {
				res.Outcome, res.ExitCode = OutcomeViolation, ExitPolicy
			} else {
				res.Outcome, res.ExitCode = OutcomeLimit, ExitLimit
			}
			res.Reason = v.String()
		}
		log.Warn("terminating job", "violation", v.String())
		if v.Kind == violation.Network || v.Kind == violation.DNS || v.Kind == violation.EgressBytes {
			// Data may be leaving: no grace period.
			kill()
			return
		}
		stop("TERM")
	}
	done := ctx.Done()
	for {
		select {
		case err := <-exited:
			l.finish(res, err)
			return nil
		case s := <-sigs:
			name := signalName(s)
			if stopping {
				log.Info("second signal: killing job", "sig", name)
				kill()
				continue
			}
			if res.Outcome == "" {
				res.Outcome, res.Reason = OutcomeStopped, "stopped by "+name
			}
			stop(name)
		case <-done:
			done = nil
			if res.Outcome == "" {
				res.Outcome, res.Reason = OutcomeStopped, "stopped: "+context.Cause(ctx).Error()
			}
			stop("TERM")
		case <-wall.C:
			w := prof.Limits.WallTime.D()
			terminate(violation.Violation{Kind: violation.WallTime, Limit: "limits.wall_time",
				Measured: w.Seconds(), Threshold: w.Seconds(), Unit: "s",
				Detail: fmt.Sprintf("ran for %s; raise limits.wall_time or pass --wall-time", w)})
		case v := <-netViol:
			if v.Action == violation.Killed {
				terminate(v)
			} else {
				v.Job = id
				res.Violations = append(res.Violations, v)
			}
		case v, ok := <-usageViol:
			if !ok {
				usageViol = nil
				continue
			}
			terminate(v)
		case ev, ok := <-renewals:
			if !ok {
				renewals = nil
				continue
			}
			switch ev.Kind {
			case secrets.Failed:
				v := ev.Violation(id)
				if ev.Stop {
					terminate(v)
				} else {
					res.Violations = append(res.Violations, v)
				}
			default:
				log.Debug("credential renewal", "what", ev.What, "kind", ev.Kind, "ttl", ev.TTL)
			}
		case <-grace:
			log.Info("stop grace over: killing job", "grace", prof.Limits.StopGrace.D())
			kill()
			grace = nil
		}
	}
}

// finish fills the result from runsc's exit status.
func (l *Launcher) finish(res *Result, err error) {
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
	go tee(req.Stdout, jlog, pty, &wg)
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

func (l *Launcher) writeResult(pl *plan, res *Result) error {
	dir := filepath.Join(l.Host.DataDir, "jobs", res.ID)
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	p := filepath.Join(dir, "result.json")
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
		if err := writeReport(rp, b, int(pl.user.UID), int(pl.user.GID), pl.req.Caller.Groups, OutputDrain); err != nil {
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
func writeReport(p string, b []byte, uid, gid int, groups []int, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		done <- asUser(uid, gid, groups, func() error {
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

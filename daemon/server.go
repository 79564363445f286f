package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/metrics"
	"github.com/securetrain/securetrain/sdnotify"
	"github.com/securetrain/securetrain/slurm"
)

// Server is the daemon. Fill the fields, then call Serve.
type Server struct {
	Launcher *launcher.Launcher
	Log      *slog.Logger
	Audit    *audit.Log         // nil: no audit events
	Metrics  *metrics.Metrics   // nil: no metrics
	Notify   *sdnotify.Notifier // nil: no sd_notify
	// GPUs lists the host's GPU indices; default: /dev/nvidiaN.
	GPUs func() ([]int, error)
	// Slurm, when set (host slurm.enabled), establishes every caller's
	// Slurm job from its process and bounds the run by the allocation
	// (slurm.go).
	Slurm SlurmJobs

	alloc *GPUAllocator
	holds *allocLedger
	// refusals rate-limits what refused requests write (refusals.go).
	refusals *refusalLimiter
	// gate bounds each uid's connections that are not running jobs (gate.go).
	gate *connGate
	mu   sync.Mutex
	jobs map[string]*liveJob
	wg   sync.WaitGroup
}

type liveJob struct {
	uid  int
	user string
	sigs chan os.Signal
}

// Serve runs gc, listens on the host's daemon socket, tells the service
// manager it is ready, and serves until ctx ends; then it stops every job
// and waits for their teardown.
func (s *Server) Serve(ctx context.Context) error {
	h := s.Launcher.Host
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.GPUs == nil {
		s.GPUs = launcher.HostGPUs
	}
	s.alloc = NewGPUAllocator()
	s.holds = newAllocLedger(s.Launcher.Store().List)
	s.refusals = newRefusalLimiter(time.Now)
	s.gate = newConnGate()
	s.jobs = map[string]*liveJob{}

	// Whatever a previous daemon left (it was SIGKILLed, or the node
	// crashed) goes before any new work is accepted.
	_ = s.Notify.Status("garbage-collecting jobs of a previous run")
	rep, gcErr := s.Launcher.GC(ctx) // the launcher writes the gc events
	if len(rep.Jobs) > 0 || len(rep.Orphans) > 0 {
		s.Log.Info("gc", "jobs", len(rep.Jobs), "orphans", len(rep.Orphans))
	}
	if gcErr != nil {
		s.Log.Warn("gc left state behind; it is retried every daemon.gc_interval, or by securetrain gc", "err", gcErr)
	}

	waitWarm, err := s.startWarm(ctx)
	if err != nil {
		return err
	}
	defer waitWarm()
	ln, err := listen(h.Daemon.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(h.Daemon.Socket)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.retryLeftovers(ctx, h.Daemon.GCInterval.D())
	}()
	if h.Daemon.MetricsAddr != "" && s.Metrics != nil {
		// Listen here, so that a bad address fails the start.
		mln, err := net.Listen("tcp", h.Daemon.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("daemon.metrics_addr %s: %w", h.Daemon.MetricsAddr, err)
		}
		// Served until every job is torn down, not only until ctx ends.
		mctx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
		defer stopMetrics()
		go func() {
			if err := s.Metrics.Serve(mctx, mln, s.Log); err != nil {
				s.Log.Warn("metrics", "err", err)
			}
		}()
		go s.publishUsage(ctx, 2*time.Second)
	}
	if err := s.Notify.Ready("accepting jobs on " + h.Daemon.Socket); err != nil {
		s.Log.Warn("sd_notify", "err", err)
	}
	// With WatchdogSec, systemd restarts a daemon that stops answering:
	// each ping follows a request answered through its own socket.
	go s.Notify.RunWatchdog(ctx, func() bool { return s.answers(h.Daemon.Socket) == nil })
	go s.summarizeRefusalsEvery(ctx, refusalSummaryEvery)
	s.Log.Info("listening", "socket", h.Daemon.Socket)
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.Log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		uid, err := peerUID(c)
		if err == nil {
			err = s.gate.enter(uid)
		}
		if err != nil {
			// Answered and closed at once: no goroutine waits on it.
			s.refused(ctx, Identity{UID: uid, Name: strconv.Itoa(uid)}, &Request{Op: "connect"}, err.Error(), s.Log.With("uid", uid, "op", "connect"))
			c.SetWriteDeadline(time.Now().Add(time.Second))
			send(c, Reply{Error: err.Error()})
			c.Close()
			continue
		}
		release := s.gate.slot(uid)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			defer release()
			s.handle(ctx, c, release)
		}()
	}
	_ = s.Notify.Stopping("stopping jobs")
	s.wg.Wait()
	s.summarizeRefusals(context.WithoutCancel(ctx)) // nothing counted goes unrecorded
	return nil
}

// startWarm starts the pool of sandboxes booted ahead of jobs
// (daemon.warm); the returned function waits, after ctx ended, until the
// pool's unused sandboxes are deleted.
func (s *Server) startWarm(ctx context.Context) (func(), error) {
	h := s.Launcher.Host
	if h.Daemon.Warm.Size == 0 {
		return func() {}, nil
	}
	var profs []*configs.Profile
	for _, name := range h.Daemon.Warm.Profiles {
		p, err := configs.LoadProfile(name, h.ProfileDir)
		if err != nil {
			return nil, fmt.Errorf("daemon.warm.profiles: %w", err)
		}
		profs = append(profs, p)
	}
	wctx, cancel := context.WithCancel(ctx)
	wait, err := s.Launcher.StartWarm(wctx, profs, h.Daemon.Warm.Size)
	if err != nil {
		cancel()
		return nil, err
	}
	s.Log.Info("warm sandboxes", "profiles", h.Daemon.Warm.Profiles, "size", h.Daemon.Warm.Size)
	return func() { cancel(); wait() }, nil
}

// retryLeftovers collects, every interval (host daemon.gc_interval), what
// its jobs' teardowns could not remove: a job that ended while Vault was
// unreachable keeps its token's accessor and lease ids in its state, and they
// are revoked at the first pass after Vault is back.
func (s *Server) retryLeftovers(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = configs.DefaultGCInterval.D()
	}
	everyTick(ctx, every, func(ctx context.Context) {
		rep, err := s.Launcher.GCLeftovers(ctx) // the launcher writes the gc events
		if len(rep.Jobs) > 0 {
			s.Log.Info("leftovers collected", "jobs", rep.Jobs, "resources", len(rep.Resources))
		}
		if err != nil && ctx.Err() == nil {
			s.Log.Warn("leftovers remain; retried every daemon.gc_interval", "interval", every, "err", oneLine(err.Error()))
		}
	})
}

// listen creates the socket, mode 0666: anyone may connect, and what they
// may do is decided from their peer credentials.
func listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("daemon socket: %w", err)
	}
	// Every user must reach the socket: a root-owned directory gets the
	// search bit for others (not read: nobody lists it); any other
	// directory must already allow it.
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("daemon socket: %w", err)
	}
	if fi.Mode().Perm()&0o001 == 0 {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
			return nil, fmt.Errorf("daemon socket directory %s must be searchable by every user (mode 0755; systemd: RuntimeDirectoryMode=0755)", dir)
		}
		if err := os.Chmod(dir, fi.Mode().Perm()|0o011); err != nil {
			return nil, fmt.Errorf("daemon socket: %w", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("daemon socket %s exists and is not a socket", path)
		}
		if c, err := net.Dial("unixpacket", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("daemon socket %s: another daemon is listening", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("daemon socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon socket: %w", err)
	}
	return ln, nil
}

// Identify returns the peer's identity: uid, gid and pid from SO_PEERCRED
// (the kernel's word, fixed at connect), name, home and supplementary
// groups from NSS.
func Identify(c *net.UnixConn, adminGroups []string) (Identity, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Identity{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Identity{}, err
	}
	if cerr != nil {
		return Identity{}, fmt.Errorf("peer credentials: %w", cerr)
	}
	id := Identity{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
	u, err := user.LookupId(strconv.Itoa(id.UID))
	if err != nil {
		return Identity{}, fmt.Errorf("uid %d has no user entry (NSS): %w", id.UID, ErrDenied)
	}
	id.Name, id.Home = u.Username, u.HomeDir
	gids := []string{strconv.Itoa(id.GID)}
	if gs, err := u.GroupIds(); err == nil {
		for _, g := range gs {
			n, err := strconv.Atoi(g)
			if err != nil || n == id.GID {
				continue
			}
			id.Groups = append(id.Groups, n)
			gids = append(gids, g)
		}
	}
	for _, g := range gids {
		if gr, err := user.LookupGroupId(g); err == nil {
			id.GroupNames = append(id.GroupNames, gr.Name)
		}
	}
	id.Admin = isAdmin(id.UID, id.GroupNames, adminGroups)
	return id, nil
}

// handle answers one connection. admitted releases the connection's place
// among its uid's pending ones (gate.go); run calls it once the job runs.
func (s *Server) handle(ctx context.Context, c *net.UnixConn, admitted func()) {
	h := s.Launcher.Host
	var req Request
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	files, err := recv(c, &req)
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{}) // a running job's connection stays open
	defer closeAll(files)
	id, err := Identify(c, h.Daemon.AdminGroups)
	if err != nil {
		send(c, Reply{Error: err.Error()})
		return
	}
	log := s.Log.With("user", id.Name, "uid", id.UID, "pid", id.PID, "op", req.Op)
	var rep Reply
	switch req.Op {
	case OpRun:
		if req.Run == nil || len(files) != 3 {
			rep.Error = "run: want the run arguments and three file descriptors (stdin, stdout, stderr)"
			break
		}
		rep = s.run(ctx, c, id, req.Run, files, admitted, log)
	case OpPs:
		rep = s.ps(id, req.All)
	case OpKill:
		rep = s.kill(ctx, id, req.ID, req.Force)
	case OpLogs:
		if len(files) != 1 {
			rep.Error = "logs: want one file descriptor (stdout)"
			break
		}
		rep = s.logs(id, req.ID, files[0])
	default:
		rep.Error = fmt.Sprintf("unknown operation %q: want run, ps, kill or logs", req.Op)
	}
	if rep.Error != "" {
		s.refused(ctx, id, &req, rep.Error, log)
	}
	if err := send(c, rep); err != nil && !errors.Is(err, syscall.EPIPE) {
		log.Debug("reply", "err", err)
	}
}

func (s *Server) run(ctx context.Context, c *net.UnixConn, id Identity, args *RunArgs, files []*os.File, admitted func(), log *slog.Logger) Reply {
	t0 := time.Now()
	l := s.Launcher
	var avail []int
	if g := args.GPUs; g != "" && g != "none" && g != "0" {
		avail, _ = s.GPUs()
	}
	dec, err := Authorize(l.Host, id, args, avail, func(id Identity, p string) ([]byte, error) {
		if id.Root() {
			return os.ReadFile(p)
		}
		return launcher.ReadFileAs(id.UID, id.GID, id.Groups, p)
	})
	if err != nil {
		return Reply{Error: err.Error()}
	}
	prof := dec.Profile
	// A signed model adds an input (more checks, nothing more allowed);
	// its files are read as the caller, like the profile's inputs.
	if prof, err = launcher.WithModel(prof, args.Model, args.Dir); err != nil {
		return Reply{Error: err.Error()}
	}
	jobID := launcher.NewID()
	sj, err := s.slurmCaller(ctx, id, args, time.Now().UTC())
	if err != nil {
		return Reply{Error: err.Error()}
	}
	if sj != nil {
		var alloc []int
		if prof, alloc, err = capToJob(prof, sj.job, taskShare(args.CallerEnv)); err != nil {
			return Reply{Error: err.Error()}
		}
		if !prof.Limits.GPUs.None() {
			host, _ := s.GPUs()
			avail = slurmAvail(alloc, host)
		}
	}
	if !prof.Limits.GPUs.None() {
		if avail == nil {
			avail, _ = s.GPUs()
		}
		got, err := s.alloc.Acquire(jobID, prof.Limits.GPUs, avail)
		if err != nil {
			return Reply{Error: err.Error()}
		}
		defer s.alloc.Release(jobID)
		q := *prof
		q.Limits.GPUs = configs.GPUSet{Indices: got}
		prof = &q
	}
	var held map[string]string
	if sj != nil {
		// The allocation bounds all its runs together, not each alone.
		h := holdFor(sj.job, prof)
		if err := s.holds.reserve(jobID, sj.job, h); err != nil {
			return Reply{Error: err.Error()}
		}
		defer s.holds.release(jobID)
		held = h.extra()
	}

	caller := launcher.Caller{UID: id.UID, GID: id.GID, Groups: id.Groups, Name: id.Name, Home: id.Home}
	if args.User != "" || id.Root() {
		// Admins only (Authorize): the named user, as root would run it.
		env := map[string]string{}
		if id.Root() && args.User == "" {
			return Reply{Error: "running as root: jobs never run as root; pass --user NAME|UID"}
		}
		if caller, err = launcher.CallerFromEnv(env, args.User); err != nil {
			return Reply{Error: err.Error()}
		}
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(args.Dir, p)
	}
	if !filepath.IsAbs(args.Dir) {
		return Reply{Error: "run: the caller's working directory must be absolute"}
	}
	code := abs(args.Code)
	if code == "" {
		code = args.Dir
	}
	var data []launcher.DataMount
	for _, d := range args.Data {
		dm, err := launcher.ParseData(d)
		if err != nil {
			return Reply{Error: err.Error()}
		}
		dm.Source = abs(dm.Source)
		data = append(data, dm)
	}
	if caller.UID != 0 && !id.Root() {
		if err := precheck(caller, code, data, abs(args.Python), args.Command, args.CallerEnv); err != nil {
			return Reply{Error: err.Error()}
		}
	}
	sigs := make(chan os.Signal, 8)
	req := launcher.Request{
		Command: args.Command, Profile: prof, Caller: caller, CodeDir: code,
		Output: args.Output, Data: data, Python: abs(args.Python), Env: args.Env, CallerEnv: args.CallerEnv,
		Stdin: files[0], Stdout: files[1], Stderr: files[2], TTY: args.TTY,
		ReportPath: args.Report, ID: jobID, Confine: !id.Root(),
		Allow: args.Allow, Peers: args.Peers, Learn: args.Learn, NetworkOff: launcher.Overrides{Network: args.Network}.NetworkOff(),
	}
	if req.Allocation, err = daemonAllocation(id, sj, args.Allocation); err != nil {
		return Reply{Error: err.Error()}
	}
	var notes []string
	if sj != nil {
		// The epilog finds (and stops) the job by its Slurm job.
		req.Extra = launcher.SlurmJobExtra(sj.job.ID)
		req.Extra["slurm_gpus"] = gpuMapString(sj.job)
		maps.Copy(req.Extra, held)
		req.Recorded = sj.forged
		if !req.NetworkOff && len(prof.Network.PeerPorts) > 0 {
			// The Slurm job is the allocation; its other nodes are peers
			// (at the allocation's address there).
			req.Allocation = strconv.FormatUint(sj.job.ID, 10)
			req.Peers = append(slices.Clone(req.Peers), launcher.SlurmPeers(s.Launcher.Host.Network, prof, sj.job.Node, sj.job.Nodes)...)
		}
		if len(sj.forged) > 0 {
			var names []string
			for _, v := range sj.forged {
				names = append(names, slurm.ForgedName(v))
			}
			notes = append(notes, fmt.Sprintf("job %s: recorded as forged (%s): %s; it got only Slurm job %d's allocation: %g CPU(s), %s memory, GPUs %s",
				jobID, slurm.ForgedEnv, strings.Join(names, ", "), sj.job.ID, prof.Limits.CPUs, prof.Limits.Memory, prof.Limits.GPUs))
		}
		s.audit(ctx, jobID, caller.Name, audit.Custom{Type: "slurm_job", Fields: map[string]any{
			"slurm_job": sj.job.ID, "uid": sj.job.UID, "node": sj.job.Node, "cpus": prof.Limits.CPUs,
			"memory_bytes": int64(prof.Limits.Memory), "gpus": prof.Limits.GPUs.String(), "gpu_map": gpuMapString(sj.job),
			"forged": len(sj.forged),
		}})
	}
	log = log.With("job", jobID)
	s.mu.Lock()
	s.jobs[jobID] = &liveJob{uid: caller.UID, user: caller.Name, sigs: sigs}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.jobs, jobID)
		s.mu.Unlock()
	}()

	// The client's messages: forwarded signals; its hang-up stops the job.
	go func() {
		for {
			var m Signal
			fs, err := recv(c, &m)
			closeAll(fs)
			if err != nil {
				forward(sigs, syscall.SIGTERM)
				return
			}
			if sig, ok := signals[m.Signal]; ok {
				forward(sigs, sig)
			}
		}
	}()

	admitted() // the connection is the job's now
	s.Metrics.JobState(jobID, caller.Name, metrics.Starting)
	// The launcher writes the job's audit events (start, violations, kill,
	// exit); the daemon adds who killed a job and refused requests.
	log.Info("job accepted", "profile", prof.Name, "command", strings.Join(args.Command, " "))
	s.Metrics.ObserveLaunch(time.Since(t0))
	s.Metrics.JobStarted(jobID, caller.Name)
	// The job's own context: what the launcher starts for it (terminal
	// watchers) ends with it, not with the daemon.
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res, err := l.Run(jctx, req, sigs)
	if res == nil {
		s.Metrics.JobEnded(jobID, metrics.SetupFail)
		if sj != nil { // no result carries them: record them here
			for _, v := range sj.forged {
				v.Job = jobID
				s.audit(ctx, jobID, caller.Name, audit.Violation{Violation: v})
			}
		}
		msg := "job refused"
		if err != nil {
			msg = err.Error()
		}
		return Reply{Error: msg}
	}
	if err != nil {
		notes = append(notes, fmt.Sprintf("job %s: teardown: %s", res.ID, oneLine(err.Error())))
		log.Warn("teardown", "err", oneLine(err.Error()))
	}
	for _, n := range res.Notes {
		notes = append(notes, fmt.Sprintf("job %s: %s", res.ID, n))
	}
	switch res.Outcome {
	case launcher.OutcomeViolation, launcher.OutcomeLimit:
		notes = append(notes, fmt.Sprintf("job %s killed: %s", res.ID, res.Reason))
	case launcher.OutcomeStopped:
		notes = append(notes, fmt.Sprintf("job %s %s", res.ID, res.Reason))
	}
	for _, v := range res.Violations {
		s.Metrics.Violation(v.Kind)
	}
	log.Info("job ended", "outcome", res.Outcome, "exit", res.ExitCode)
	s.reportToSlurm(ctx, sj, res.Summary)
	s.Metrics.RanIn(res.WarmSandbox != "")
	s.Metrics.JobEnded(jobID, outcome(res.Outcome))
	code2 := res.ExitCode
	return Reply{ID: res.ID, Exit: &code2, Notes: notes, Summary: res.Summary, Suggested: res.Suggested}
}

// precheck checks, as the caller, every path the request names before the
// launcher resolves them as root: a path the caller cannot reach is refused
// the same way whether or not it exists. The launcher checks again, and
// mounts only what it checked (Request.Confine).
func precheck(c launcher.Caller, code string, data []launcher.DataMount, python string, argv, env []string) error {
	if err := launcher.CheckPathAs(c, "code directory", code, false); err != nil {
		return err
	}
	for _, d := range data {
		if err := launcher.CheckPathAs(c, "--data", d.Source, false); err != nil {
			return err
		}
	}
	if python != "" {
		if err := launcher.CheckPathAs(c, "--python", python, false); err != nil {
			return err
		}
	}
	if len(argv) > 0 && strings.ContainsRune(argv[0], '/') {
		p := argv[0]
		if !filepath.IsAbs(p) {
			p = filepath.Join(code, p)
		}
		if err := launcher.CheckPathAs(c, "command", p, false); err != nil {
			return err
		}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if (k == "VIRTUAL_ENV" || k == "CONDA_PREFIX") && filepath.IsAbs(v) {
			if err := launcher.CheckPathAs(c, k, v, false); err != nil {
				return err
			}
		}
	}
	return nil
}

var signals = map[string]os.Signal{"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT}

func forward(ch chan os.Signal, s os.Signal) {
	select {
	case ch <- s:
	default:
	}
}

func outcome(o string) metrics.Outcome {
	switch o {
	case launcher.OutcomeExited:
		return metrics.Success
	case launcher.OutcomeFailed, launcher.OutcomeSignaled:
		return metrics.Failed
	case launcher.OutcomeViolation, launcher.OutcomeLimit:
		return metrics.Violated
	case launcher.OutcomeStopped:
		return metrics.Killed
	}
	return metrics.Other
}

// visible reports whether the caller may see a job of uid.
func visible(id Identity, uid int) bool { return id.viewer().Sees(uid) }

func (s *Server) ps(id Identity, all bool) Reply {
	rows, err := s.Launcher.Jobs(id.viewer(), all)
	if err != nil {
		return Reply{Error: err.Error()}
	}
	return Reply{Jobs: rows}
}

func (s *Server) kill(ctx context.Context, id Identity, jobID string, force bool) Reply {
	noJob := Reply{Error: fmt.Sprintf("kill: job %s: %s", jobID, launcher.ErrNoJob)}
	s.mu.Lock()
	j := s.jobs[jobID]
	s.mu.Unlock()
	sig := "SIGTERM"
	if force {
		sig = "SIGKILL"
	}
	switch {
	case j != nil:
		if !visible(id, j.uid) {
			return noJob // another user's job does not exist for this caller
		}
		if force {
			if err := s.Launcher.Kill(ctx, launcher.Viewer{Admin: true}, jobID, true); err != nil {
				return Reply{Error: "kill: " + err.Error()}
			}
		} else {
			forward(j.sigs, syscall.SIGTERM)
		}
		s.audit(ctx, jobID, j.user, audit.Kill{Signal: sig, Reason: "user", By: id.Name})
		return Reply{}
	default:
		// A job the daemon does not run (sudo securetrain run).
		st, err := s.Launcher.Store().Load(jobID)
		if err != nil || !visible(id, st.UID) || launcher.CheckJobID(jobID) != nil {
			return noJob
		}
		if st.LauncherPID == os.Getpid() {
			return Reply{Error: fmt.Sprintf("kill: job %s is not running", jobID)}
		}
		if err := s.Launcher.Kill(ctx, id.viewer(), jobID, force); err != nil {
			return Reply{Error: "kill: " + err.Error()}
		}
		s.audit(ctx, jobID, st.User, audit.Kill{Signal: sig, Reason: "user", By: id.Name})
		return Reply{}
	}
}

func (s *Server) logs(id Identity, jobID string, out *os.File) Reply {
	f, err := s.Launcher.OpenLog(id.viewer(), jobID)
	if err != nil {
		return Reply{Error: "logs: " + err.Error()}
	}
	defer f.Close()
	if _, err := io.Copy(out, f); err != nil {
		return Reply{Error: "logs: " + err.Error()}
	}
	return Reply{}
}

func (s *Server) audit(ctx context.Context, job, user string, p audit.Payload) {
	if s.Audit == nil {
		return
	}
	if _, err := s.Audit.Append(ctx, job, user, p); err != nil {
		s.Log.Error("audit", "job", job, "err", err)
	}
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

// daemonAllocation is the allocation a caller's --allocation names. Inside
// a Slurm job it may name only that job (which a profile with peer_ports
// gets anyway); elsewhere the name is the caller's own (prefixed with the
// uid), so no one joins another user's allocation and gets its peer ports.
func daemonAllocation(id Identity, sj *slurmBinding, asked string) (string, error) {
	switch {
	case asked == "":
		return "", nil
	case sj != nil:
		if asked != strconv.FormatUint(sj.job.ID, 10) {
			return "", fmt.Errorf("--allocation %s: inside Slurm job %d the allocation is that job", asked, sj.job.ID)
		}
		return asked, nil
	case id.Root():
		return asked, nil
	default:
		return fmt.Sprintf("u%d-%s", id.UID, asked), nil
	}
}

// answers checks the daemon end to end, as a client would reach it: a ps
// request through the socket, answered within a few seconds (the accept
// loop, a handler, the job store).
func (s *Server) answers(socket string) error {
	cl, err := Dial(socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	_, err = cl.Ps(false)
	return err
}

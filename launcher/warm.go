package launcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/sandbox"
)

// A warm start (daemon.warm) runs a job in a sandbox that was booted before
// the job was asked for: the daemon keeps, per profile, sandboxes whose
// gVisor kernel, cgroup and limits are ready, each holding only an idle
// process of its own (the holder, a `sleep` as nobody). A job that fits one
// is started in it as a second container: its own root, mounts, process
// tree and host name, served by a gofer of its own, with everything of the
// job (its files, its credentials, its user) made for it at its start, as
// in a cold start. What a pooled sandbox must not carry from one job to the
// next, it cannot: each one serves one job and is deleted with it, and a
// new one is booted in the background. The cgroup's counters, which count
// the sandbox's boot, are reset when a job takes it.

// StatusWarm is the state of a sandbox waiting in the pool (never shown by
// ps; gc removes it once its daemon is gone).
const StatusWarm = "warm"

// holderArgs is the holder container's process: it only keeps the sandbox
// alive until a job's container joins it.
var holderArgs = []string{"/bin/sleep", "infinity"}

// warmRetry is how long the pool waits after a boot failed.
var warmRetry = 5 * time.Second

// warmRetire is how long after a job's teardown its sandbox is deleted:
// after the job's caller has its answer.
var warmRetire = 200 * time.Millisecond

// warmRefill is how long after a job took a sandbox its replacement starts
// booting: a boot is ~0.3 CPU-seconds of runsc, which the job's own start
// should not compete with.
var warmRefill = time.Second

// warmPool keeps Size booted sandboxes ready for each sandbox shape (warmKey)
// of the profiles it serves.
type warmPool struct {
	l      *Launcher
	size   int
	shapes map[string]warmShape

	mu      sync.Mutex
	ready   map[string][]*warmSandbox
	closed  bool
	kick    chan struct{}
	retired sync.WaitGroup // deletions of the sandboxes jobs used
}

// warmSandbox is one pooled sandbox: its state (recorded like a job's, so
// that gc removes it after the daemon's death) and its cleanup.
type warmSandbox struct {
	id    string // runsc's container and sandbox id, its state's and cgroup's name
	key   string
	pid   int             // the sandbox process (runsc-sandbox boot)
	guard *netguard.Guard // the sandbox's network (namespace, veth, table, DNS proxy), for a profile with one
	h     *Handle
	undo  cleanup
	l     *Launcher
	pool  *warmPool
}

// warmShape is what a pooled sandbox is booted with: the cgroup limits and
// root overlay size, and the network (nil: none).
type warmShape struct {
	lim configs.Limits
	net *netguard.Config
}

// warmKey is what a sandbox is booted with that a job cannot change after
// the boot: its cgroup limits, the size of its root overlay, the gVisor
// kernel's view of them (CPU count, total memory), and its network: the
// whole netguard configuration (allowlist, mode, budget, resolvers, pool)
// but the job id and logger. A job whose flags change any of it (--allow,
// --peers, --allocation, --learn, --cpus, ...) starts cold.
func warmKey(lim configs.Limits, net *netguard.Config) string {
	k := fmt.Sprintf("cpus=%g memory=%d pids=%d scratch=%d", lim.CPUs, lim.Memory, lim.Pids, lim.Scratch)
	if net != nil {
		c := *net
		c.JobID, c.Logger = "", nil
		k += fmt.Sprintf(" net=%+v", c)
	}
	return k
}

// WarmEligible reports why a profile's jobs can never start warm, or nil:
// a warm sandbox has no GPUs (they are given per job) and the host-minimal
// root.
func WarmEligible(p *configs.Profile) error {
	switch {
	case !p.Limits.GPUs.None():
		return fmt.Errorf("profile %s: limits.gpus is %s; warm sandboxes have no GPUs", p.Name, p.Limits.GPUs)
	case p.Sandbox.Rootfs != "host":
		return fmt.Errorf("profile %s: sandbox.rootfs is %s; warm sandboxes have the host-minimal root (rootfs: host)", p.Name, p.Sandbox.Rootfs)
	}
	return nil
}

// StartWarm starts keeping size sandboxes booted for the profiles' jobs,
// until ctx ends; the returned function waits for the pool's sandboxes to
// be deleted. Only cgroup v1 hosts: cgroup v2 cannot reset a cgroup's
// counters, and a job must not be charged for its sandbox's boot.
func (l *Launcher) StartWarm(ctx context.Context, profiles []*configs.Profile, size int) (wait func(), err error) {
	if cgroupV2() {
		return nil, errors.New("daemon.warm: warm sandboxes need cgroup v1 (a cgroup v2 counter cannot be reset for the job that takes the sandbox)")
	}
	p := &warmPool{l: l, size: size, shapes: map[string]warmShape{}, ready: map[string][]*warmSandbox{}, kick: make(chan struct{}, 1)}
	for _, prof := range profiles {
		if err := WarmEligible(prof); err != nil {
			return nil, fmt.Errorf("daemon.warm.profiles: %w", err)
		}
		// The network of the profile's job without flags.
		net, err := l.netConfig(prof, Request{})
		if err != nil {
			return nil, fmt.Errorf("daemon.warm.profiles: profile %s: %w", prof.Name, err)
		}
		p.shapes[warmKey(prof.Limits, net)] = warmShape{lim: prof.Limits, net: net}
	}
	l.warm = p
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fill(ctx)
	}()
	return func() { <-done; p.retired.Wait() }, nil
}

// fill boots sandboxes until every shape has size of them, then waits for a
// job to take one; when ctx ends it deletes the ones left.
func (p *warmPool) fill(ctx context.Context) {
	defer p.drain()
	for {
		for key, shape := range p.shapes {
			for p.count(key) < p.size && ctx.Err() == nil {
				w, err := p.l.bootWarm(ctx, key, shape)
				if err != nil {
					p.l.Log.Warn("warm sandbox", "err", err)
					select {
					case <-ctx.Done():
					case <-time.After(warmRetry):
					}
					continue
				}
				p.mu.Lock()
				p.ready[key] = append(p.ready[key], w)
				p.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
	}
}

func (p *warmPool) count(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready[key])
}

// drain deletes the sandboxes no job took.
func (p *warmPool) drain() {
	p.mu.Lock()
	p.closed = true
	var all []*warmSandbox
	for _, ws := range p.ready {
		all = append(all, ws...)
	}
	p.ready = nil
	p.mu.Unlock()
	for _, w := range all {
		if err := w.release(); err != nil {
			p.l.Log.Warn("warm sandbox", "id", w.id, "err", err)
		}
	}
}

// take hands a ready sandbox of key to a job, or nil, and has the pool boot
// its replacement once the job is under way (warmRefill).
func (p *warmPool) take(key string) *warmSandbox {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.ready[key]
	if p.closed || len(ws) == 0 {
		return nil
	}
	w := ws[0]
	p.ready[key] = ws[1:]
	time.AfterFunc(warmRefill, func() {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	})
	return w
}

// takeWarm is the job's warm sandbox, or nil for a cold start: the job must
// fit one (no GPUs, the host-minimal root, no terminal, the limits and the
// network of a pooled shape). A sandbox that died while it waited (killed,
// out of memory) is deleted and the next one tried. Its counters are reset
// before the job's accounting starts; one whose counters cannot be reset
// is deleted too.
func (j *job) takeWarm() *warmSandbox {
	for {
		w := j.l.warm.takeFor(j.pl)
		if w == nil {
			return nil
		}
		var err error
		if !sandboxAlive(w.pid, w.id) {
			err = errors.New("its sandbox process is gone")
		} else if err = resetCounters(jobCgroup(w.id)); err == nil {
			return w
		}
		j.log.Warn("warm sandbox not taken", "sandbox", w.id, "err", err)
		if err := w.release(); err != nil {
			j.log.Warn("warm sandbox", "id", w.id, "err", err)
		}
	}
}

// takeFor takes a sandbox the plan's job fits, or nil.
func (p *warmPool) takeFor(pl *plan) *warmSandbox {
	if p == nil || len(pl.devices) > 0 || pl.rootfs != "" || pl.req.TTY {
		return nil
	}
	return p.take(warmKey(pl.prof.Limits, pl.net))
}

// bootWarm boots one sandbox of shape lim: its state and cgroup recorded
// first, then its holder's bundle, then `runsc create` and `runsc start`.
func (l *Launcher) bootWarm(ctx context.Context, key string, shape warmShape) (*warmSandbox, error) {
	id := "warm-" + NewID()
	h, err := l.Store().Create(JobState{ID: id, User: "nobody", UID: -1, GID: -1, Command: holderArgs,
		Created: time.Now().UTC(), LauncherPID: os.Getpid(), Status: StatusWarm})
	if err != nil {
		return nil, err
	}
	w := &warmSandbox{id: id, key: key, h: h, l: l, pool: l.warm}
	if err := w.boot(ctx, shape); err != nil {
		if rerr := w.release(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	return w, nil
}

func (w *warmSandbox) boot(ctx context.Context, shape warmShape) error {
	l, rs, lim := w.l, w.l.runsc(), shape.lim
	if err := os.MkdirAll(rs.Root, 0o700); err != nil {
		return err
	}
	if err := l.record(w.h, &w.undo, jobstate.Resource{Kind: KindCgroup, Name: jobCgroup(w.id)}); err != nil {
		return err
	}
	if err := makeCgroup(jobCgroup(w.id)); err != nil {
		return err
	}
	netns := ""
	if shape.net != nil {
		// The network is the job's from the start: its own namespace,
		// veth, address and table, and a DNS proxy that answers no one
		// but the sandbox (netguard). It fails closed as a job's does.
		cfg := *shape.net
		cfg.JobID, cfg.Logger = w.id, l.Log
		n := w.h.recorded()
		guard, err := netguard.Setup(ctx, cfg, w.h)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		w.guard = guard
		w.undo.pushRemoving(w.h.recordedSince(n), guard.Close)
		netns = guard.NetnsPath()
	}
	bundle := filepath.Join(w.h.Dir(), "bundle")
	if err := os.Mkdir(bundle, 0o711); err != nil {
		return err
	}
	mounts, links, err := sandbox.HostRoot("/")
	if err != nil {
		return err
	}
	root := filepath.Join(bundle, "rootfs")
	if err := sandbox.PrepareRoot(root, links, mounts); err != nil {
		return err
	}
	spec, err := sandbox.BuildSpec(sandbox.Spec{
		ID: w.id, Args: holderArgs, Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/",
		UID: nobodyID, GID: nobodyID, Hostname: "st-" + w.id, Root: root, Mounts: mounts,
		Shm:         4096,
		Resources:   sandbox.Resources{CPUs: lim.CPUs, Memory: int64(lim.Memory), Pids: lim.Pids},
		CgroupsPath: sandboxCgroup(w.id), Pod: sandbox.Pod{Holder: true}, NetnsPath: netns,
	})
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(bundle, "config.json"), spec); err != nil {
		return err
	}
	if err := l.record(w.h, &w.undo, jobstate.Resource{Kind: KindRunsc, Name: w.id, Attrs: map[string]string{"root": rs.Root}}); err != nil {
		return err
	}
	w.pid, err = rs.Boot(ctx, w.id, bundle, filepath.Join(w.h.Dir(), "runsc.err"), sandbox.RunOptions{OverlaySize: uint64(lim.Scratch), Network: w.guard != nil})
	return err
}

// retire ends a job's use of its sandbox, as the last step of the job's
// teardown. By then nothing of the job runs in it: runsc destroyed the
// job's container (every process of it) when its process ended, and the
// teardown's earlier step deleted the container if runsc had not. What is
// left is the holder, in a kernel no other job will use; so the sandbox is
// killed and deleted (runsc's record, the cgroup, the pool's state) in the
// background, warmRetire later, and the job's caller does not wait for the
// process exits and the runsc process that takes. The pool's state keeps
// the sandbox for gc until then; the daemon waits for these deletions
// before it exits.
func (w *warmSandbox) retire() error {
	w.pool.retired.Add(1)
	time.AfterFunc(warmRetire, func() {
		defer w.pool.retired.Done()
		if err := killSandboxPID(w.pid, w.id); err != nil && !errors.Is(err, errNoSandbox) {
			w.l.Log.Warn("warm sandbox: kill", "id", w.id, "err", err) // runsc delete --force kills it
		}
		if err := w.release(); err != nil {
			w.l.Log.Warn("warm sandbox", "id", w.id, "err", err)
		}
	})
	return nil
}

// nobodyID is the holder's uid and gid (the overflow id).
const nobodyID = 65534

// release deletes the sandbox (with whatever still runs in it), its cgroup
// and its state.
func (w *warmSandbox) release() error {
	return w.l.teardown(w.h, &w.undo)
}

// resetCounters zeroes the accounting counters of a cgroup v1 job cgroup
// and of its sandbox child: CPU time, peak memory, memory limit hits and
// block I/O (the boot's, which the job did not use).
func resetCounters(rel string) error {
	var errs []error
	for _, dir := range []string{rel + "/sandbox", rel} {
		for _, f := range []struct{ ctrl, file, value string }{
			{"cpuacct", "cpuacct.usage", "0"},
			{"memory", "memory.max_usage_in_bytes", "0"},
			{"memory", "memory.failcnt", "0"},
			{"blkio", "blkio.reset_stats", "1"},
		} {
			p := filepath.Join(cgroupRoot, f.ctrl, dir, f.file)
			if _, err := os.Stat(filepath.Dir(p)); err != nil {
				continue // controller not mounted on this host, or not used by the sandbox
			}
			if err := os.WriteFile(p, []byte(f.value), 0); err != nil {
				errs = append(errs, fmt.Errorf("cgroup %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

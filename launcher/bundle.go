package launcher

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/securetrain/securetrain/sandbox"
)

// writeBundle writes the job's OCI bundle: the root skeleton, the generated
// /etc, the mounts (credential masks and hidden files included) and the spec.
func (j *job) writeBundle(context.Context) error {
	pl := j.pl
	j.bundle = filepath.Join(j.h.Dir(), "bundle")
	if err := os.Mkdir(j.bundle, 0o711); err != nil {
		return err
	}
	resolv, hosts := []byte{}, []byte(nil)
	j.hostname = j.hostName()
	if j.guard != nil {
		resolv, hosts = j.guard.ResolvConf(), j.guard.Hosts(j.hostname)
	}
	etc, err := j.etc(resolv, hosts)
	if err != nil {
		return err
	}
	if j.mounts, err = j.sandboxMounts(etc); err != nil {
		return err
	}
	// Privilege boundary: runsc mounts what was checked (the audit record
	// keeps the names).
	specMounts := j.staged.sources(j.mounts)
	root := pl.rootfs
	if root == "" {
		root = filepath.Join(j.bundle, "rootfs")
		if err := sandbox.PrepareRoot(root, pl.links, specMounts); err != nil {
			return err
		}
	}
	spec, err := sandbox.BuildSpec(j.spec(root, specMounts))
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(j.bundle, "config.json"), spec); err != nil {
		return err
	}
	j.log.Debug("bundle written", "bundle", j.bundle, "mounts", len(spec.Mounts))
	return nil
}

// etc is the job's /etc: its own files (passwd, group, hosts, hostname,
// resolv.conf) over, for a host-minimal root, the host's allowlisted
// entries, shown by one read-only mount of a shared copy (HostEtcView), or
// each by its own mount when another mount lies under /etc (the shared copy
// has no mount point for it); in a root file system of its own, over the
// image's /etc.
func (j *job) etc(resolv, hosts []byte) ([]sandbox.Mount, error) {
	pl := j.pl
	files, err := sandbox.EtcFiles(filepath.Join(j.bundle, "etc"), pl.user, j.hostname, resolv, hosts)
	if err != nil || pl.rootfs != "" {
		return files, err
	}
	under := func(m sandbox.Mount) bool { return strings.HasPrefix(m.Target, "/etc/") }
	if slices.ContainsFunc(pl.mounts, under) || slices.ContainsFunc(pl.integrity.mounts, under) || slices.ContainsFunc(j.secrets, under) {
		var host []sandbox.Mount
		for _, e := range pl.hostEtc {
			host = append(host, sandbox.Mount{Kind: sandbox.Bind, Source: e, Target: "/etc/" + filepath.Base(e), ReadOnly: true})
		}
		return append(host, files...), nil
	}
	view, err := j.etcView()
	if err != nil {
		return nil, err
	}
	return append([]sandbox.Mount{{Kind: sandbox.Bind, Source: view, Target: "/etc", ReadOnly: true}}, files...), nil
}

// startAheadOfBundle starts what the bundle step needs and nothing before it
// does, to run beside the steps before it (on the other core): listing
// (and, when the host's /etc changed, copying) the host-minimal root's
// shared /etc view, ~1.5 ms of lstat calls, and encoding/json's first look
// at the OCI spec's types, ~2.5 ms. A job that ends up with per-entry /etc
// mounts (etc) never asks for the view; it still waits for it, so that
// nothing runs on after the job.
func (j *job) startAheadOfBundle() {
	type made struct {
		dir string
		err error
	}
	go func() { _ = json.NewEncoder(io.Discard).Encode(sandbox.EmptySpec()) }()
	ch := make(chan made, 1)
	go func() {
		if j.pl.rootfs != "" {
			ch <- made{}
			return
		}
		dir, err := sandbox.HostEtcView(filepath.Join(j.l.Host.StateDir, "etc"), j.pl.hostEtc)
		ch <- made{dir, err}
	}()
	j.etcView = sync.OnceValues(func() (string, error) {
		m := <-ch
		return m.dir, m.err
	})
	j.undo.push(func() error { _, _ = j.etcView(); return nil })
}

// hostName is the job's host name: "st-ID", or, in a warm sandbox, the
// sandbox's own (a gVisor kernel has one host name for all its
// containers), or, for the job holding its
// allocation's address on this node, this node's name. The host name is the
// job's own address, answered locally: torch (torchrun's agent, Gloo without
// an interface name) resolves it and advertises the result to the other
// ranks; the other nodes' jobs resolve this node's name to that address, so
// torchrun's rendezvous host recognises itself by it.
func (j *job) hostName() string {
	if j.warm != nil {
		return "st-" + j.warm.id
	}
	if j.guard != nil && j.pl.net.Allocation != "" {
		if self := j.l.nodeName(); self != "" && j.pl.net.HostNames[self] == j.guard.JobAddr() {
			return self
		}
	}
	return "st-" + j.id
}

// sandboxMounts is every mount of the sandbox, by the names the user gave,
// sorted for mounting.
func (j *job) sandboxMounts(etc []sandbox.Mount) ([]sandbox.Mount, error) {
	pl := j.pl
	mounts := append([]sandbox.Mount(nil), pl.mounts...)
	mounts = append(mounts, etc...)
	mounts = append(mounts,
		homeMount(pl),
		sandbox.Mount{Kind: sandbox.Bind, Source: pl.codeDir, Target: pl.codeDir, ReadOnly: true},
		sandbox.Mount{Kind: sandbox.Tmpfs, Target: "/tmp", Size: uint64(pl.prof.Limits.Scratch), Mode: 0o1777},
	)
	empty := filepath.Join(j.bundle, "empty")
	if err := os.WriteFile(empty, nil, 0o400); err != nil {
		return nil, err
	}
	mounts = append(mounts, maskMounts(j.masks(), empty)...)
	mounts = append(mounts, sandbox.Mount{Kind: sandbox.Bind, Source: pl.outputDir, Target: pl.outputDir})
	mounts = append(mounts, pl.integrity.mounts...)
	mounts = append(mounts, pl.integrity.hideMounts(empty)...)
	mounts = append(mounts, j.secrets...)
	sandbox.SortMounts(mounts)
	return mounts, nil
}

// masks are the credential paths to cover in the code directory: none
// when the job runs a snapshot of it, which never copied them.
func (j *job) masks() []string {
	if j.code != nil {
		return nil
	}
	return j.pl.masks
}

// maskMounts covers each credential path that exists: a directory with an
// empty read-only tmpfs, a file with the empty file.
func maskMounts(masks []string, empty string) []sandbox.Mount {
	var out []sandbox.Mount
	for _, m := range masks {
		fi, err := os.Lstat(m)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			out = append(out, sandbox.Mount{Kind: sandbox.Tmpfs, Target: m, ReadOnly: true, Size: 4096, Mode: 0o500})
		} else {
			out = append(out, sandbox.Mount{Kind: sandbox.Bind, Source: empty, Target: m, ReadOnly: true})
		}
	}
	return out
}

// spec is what the OCI spec is built from.
func (j *job) spec(root string, mounts []sandbox.Mount) sandbox.Spec {
	pl, lim := j.pl, j.pl.prof.Limits
	netns := ""
	if j.guard != nil {
		netns = j.guard.NetnsPath()
	}
	var pod sandbox.Pod
	if j.warm != nil {
		pod.Join = j.warm.id
	}
	return sandbox.Spec{
		ID: j.id, Args: j.args, Env: j.env, Cwd: pl.codeDir,
		UID: pl.user.UID, GID: pl.user.GID, AdditionalGIDs: pl.user.Groups,
		Hostname: j.hostname, Terminal: pl.req.TTY, Root: root, Mounts: mounts,
		Shm:         uint64(lim.Shm),
		Resources:   sandbox.Resources{CPUs: lim.CPUs, Memory: int64(lim.Memory), Pids: lim.Pids},
		CgroupsPath: sandboxCgroup(j.cgroup()), Devices: pl.devices, NetnsPath: netns, Pod: pod,
	}
}

// homeMount is the job's $HOME: a fresh, empty directory owned by the job's
// user, in the sandbox's memory and bounded by limits.home, so that filling
// it (~/.cache, HF_HOME) is ENOSPC for the job and never fills the host's
// disk. What it holds counts against limits.memory, as /tmp does.
func homeMount(pl *plan) sandbox.Mount {
	return sandbox.Mount{Kind: sandbox.Tmpfs, Target: pl.user.Home, Size: uint64(pl.prof.Limits.Home),
		Mode: 0o700, UID: int(pl.user.UID), GID: int(pl.user.GID)}
}

package launcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/sandbox"
)

// Exit codes the launcher itself uses; anything else is the job's own
// (128+N when a signal ended it).
const (
	ExitPolicy  = 123 // killed for a security-policy violation (network, DNS, input changed)
	ExitLimit   = 124 // killed for a resource limit (wall time, memory, budgets)
	ExitRefused = 125 // refused or failed before the job started
)

// ErrNeedRoot is returned when the launcher runs without root.
var ErrNeedRoot = errors.New("securetrain run needs root for namespaces, cgroups and runsc: run it with sudo, or through the securetrain daemon (see README)")

// CredentialNames are hidden inside the code directory: running from a home
// directory must not hand the job the user's keys.
var CredentialNames = []string{
	".ssh", ".aws", ".gnupg", ".netrc", ".docker", ".config/gcloud", ".kube", ".azure",
	".git-credentials", ".pypirc", ".npmrc", ".vault-token", ".config/gh", ".password-store",
	".s3cfg", ".boto", ".config/rclone", ".terraform.d", ".databrickscfg", ".kaggle",
	".huggingface/token", ".cache/huggingface/token", ".netrc.gpg", ".bash_history", ".zsh_history",
	".python_history", ".psql_history", ".pgpass", ".my.cnf",
}

// plan is a fully checked job, before any side effect.
type plan struct {
	req       Request
	prof      *configs.Profile
	user      sandbox.User
	codeDir   string
	outputDir string
	args      []string
	env       []string
	mounts    []sandbox.Mount
	links     []sandbox.Link
	rootfs    string // "" = host-minimal skeleton in the bundle
	gpus      []int
	devices   []sandbox.Device
	gpuLibs   []string
	masks     []string // sandbox paths of credential files/dirs to cover (shown from the same host path)
	net       *netguard.Config
	integrity integrityPlan
	self      string // the securetrain binary, bound in as the entry point when secrets are used
	audit     *audit.Log
}

// prepare checks everything the job needs and computes its sandbox without
// creating anything.
func (l *Launcher) prepare(ctx context.Context, req Request) (*plan, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNeedRoot
	}
	if len(req.Command) == 0 {
		return nil, errors.New("no command: use securetrain run [flags] -- COMMAND [ARGS...]")
	}
	p := req.Profile
	if p == nil {
		return nil, errors.New("no profile")
	}
	if req.Caller.UID <= 0 {
		return nil, errors.New("jobs never run as root: give an unprivileged user")
	}
	if _, err := os.Stat(l.Runsc); err != nil {
		return nil, fmt.Errorf("runsc not found at %s: run `make runsc` or set runsc: in %s", l.Runsc, configs.DefaultHostConfig)
	}
	pl := &plan{req: req, prof: p}
	code := req.CodeDir
	if code == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		code = wd
	}
	code, err := resolveDir(code, "code directory")
	if err != nil {
		return nil, err
	}
	if code == "/" {
		return nil, errors.New("code directory is /: run from your project directory or pass --code DIR")
	}
	pl.codeDir = code
	out := req.Output
	if out == "" {
		out = p.Sandbox.Output
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join(code, out)
	}
	out = filepath.Clean(out)
	if fi, err := os.Lstat(out); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("output %s exists and is not a directory (a symlink is not accepted)", out)
	}
	pl.outputDir = out

	u := req.Caller
	pl.user = sandbox.User{Name: u.Name, UID: uint32(u.UID), GID: uint32(u.GID), Home: u.Home}
	for _, g := range u.Groups {
		pl.user.Groups = append(pl.user.Groups, uint32(g))
	}
	// The job's HOME is a fresh writable directory at the user's home path,
	// unless the code directory is the home (or above it).
	if u.Home == code || strings.HasPrefix(u.Home, code+"/") || u.Home == "" {
		pl.user.Home = "/var/tmp/home"
	}

	// Root file system.
	if p.Sandbox.Rootfs == "host" {
		mounts, links, err := sandbox.HostRoot("/")
		if err != nil {
			return nil, err
		}
		pl.mounts, pl.links = append(pl.mounts, mounts...), links
	} else {
		rf, err := resolveDir(p.Sandbox.Rootfs, "sandbox.rootfs")
		if err != nil {
			return nil, err
		}
		pl.rootfs = rf
	}

	// Interpreter environment.
	caller := envMap(req.CallerEnv)
	python := req.Python
	if python == "" {
		python = p.Sandbox.Python
	}
	if python != "" {
		if _, err := os.Stat(python); err != nil {
			return nil, fmt.Errorf("--python %s: %w", python, unwrapFS(err))
		}
		// --python venv/bin/python is relative to where the user typed it;
		// inside the sandbox the job starts in the code directory.
		abs, err := filepath.Abs(python)
		if err != nil {
			return nil, fmt.Errorf("--python %s: %w", python, err)
		}
		python = abs
	}
	py := detectPython(python, req.Command, code, caller)
	for _, pref := range py.Prefixes {
		if pref == code {
			continue // the code directory: already mounted
		}
		// One inside the code directory is mounted on its own too: the
		// code snapshot of an attested job leaves it out.
		pl.mounts = append(pl.mounts, sandbox.Mount{Kind: sandbox.Bind, Source: pref, Target: pref, ReadOnly: true})
	}
	path := strings.Join(append(py.Bins, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"), ":")
	args := append([]string(nil), req.Command...)
	if python != "" && (args[0] == "python" || args[0] == "python3") {
		args[0] = python
	}
	pl.args = args

	// GPUs.
	var gpuCaps, gpuLibDirs []string
	if !p.Limits.GPUs.None() {
		if err := l.prepareGPUs(ctx, pl); err != nil {
			return nil, err
		}
		gpuCaps = p.GPU.Capabilities
		gpuLibDirs = libDirs(pl.gpuLibs)
		if p.Sandbox.Rootfs != "host" {
			gpuLibDirs = []string{"/usr/local/securetrain-nvidia/lib"}
		}
	}

	// Data.
	for _, d := range req.Data {
		src, err := resolveDir(d.Source, "--data")
		if err != nil {
			return nil, err
		}
		pl.mounts = append(pl.mounts, sandbox.Mount{Kind: sandbox.Bind, Source: src, Target: d.Target, ReadOnly: true})
	}

	// Credential masks inside the code directory.
	pl.masks = credentialMasks(code, append(append([]string(nil), CredentialNames...), p.Sandbox.Mask...))

	env, err := buildEnv(envInput{
		caller: caller, profile: p.Env, flags: req.Env, path: path,
		home: pl.user.Home, user: pl.user.Name, cpus: p.Limits.CPUs, memory: uint64(p.Limits.Memory),
		gpuCaps: gpuCaps, gpuLibDir: gpuLibDirs,
	})
	if err != nil {
		return nil, err
	}
	if req.TTY {
		if _, ok := caller["TERM"]; !ok {
			env = append(env, "TERM=xterm-256color")
		}
	}
	pl.env = env
	if !req.NetworkOff {
		nc, err := l.netConfig(p, req)
		if err != nil {
			return nil, err
		}
		pl.net = nc
	} else if len(req.Allow) > 0 || len(req.Peers) > 0 || req.Learn || req.Allocation != "" {
		return nil, errors.New("--network none cannot be combined with --allow, --peers, --allocation or --learn")
	}
	if err := l.prepareSecrets(pl); err != nil {
		return nil, err
	}
	if err := l.prepareInputs(ctx, pl); err != nil {
		return nil, err
	}
	return pl, nil
}

// credentialMasks returns the paths to cover for names inside the code
// directory (code is resolved). A name that is a symlink (~/.aws ->
// dotfiles/aws, as GNU stow and dotfile managers make them) cannot be
// covered itself (a mount follows it): what it resolves to is covered
// instead when that lies inside the code directory, the only user directory
// the sandbox shows at its own path. A link that leads outside it points,
// inside the sandbox, at the fresh $HOME, the host's read-only system
// directories or nothing; one to the code directory itself is not covered
// (the job's code is there).
func credentialMasks(code string, names []string) []string {
	var masks []string
	for _, name := range names {
		// Resolved, so that a link anywhere on the way (.config ->
		// dotfiles/config) is followed too.
		real, err := filepath.EvalSymlinks(filepath.Join(code, name))
		if err != nil || !strings.HasPrefix(real, code+"/") {
			continue
		}
		if !slices.Contains(masks, real) {
			masks = append(masks, real)
		}
	}
	return masks
}

func (l *Launcher) prepareGPUs(ctx context.Context, pl *plan) error {
	h := sandbox.GPUHost{}
	g := pl.prof.Limits.GPUs
	avail, err := h.Indices()
	if err != nil || len(avail) == 0 {
		return fmt.Errorf("--gpus %s: %w (no /dev/nvidiaN); use --gpus none or a CPU profile", g, sandbox.ErrNoGPU)
	}
	idx, err := sandbox.Select(sandbox.GPURequest{All: g.All, Count: g.Count, Indices: g.Indices}, avail)
	if err != nil {
		return fmt.Errorf("--gpus %s: %w", g, err)
	}
	driver, err := h.DriverVersion()
	if err != nil {
		return err
	}
	rs := &sandbox.Runsc{Path: l.Runsc}
	supported, err := rs.SupportedDrivers(ctx)
	if err != nil {
		return fmt.Errorf("checking GPU driver support: %w", err)
	}
	if err := sandbox.CheckDriver(driver, supported); err != nil {
		return err
	}
	devs, err := h.Devices(idx)
	if err != nil {
		return err
	}
	ldc, _ := exec.CommandContext(ctx, "ldconfig", "-p").Output()
	libs := h.FindDriverLibs(ldc, driver)
	if !hasLib(libs, "libcuda.so") {
		return fmt.Errorf("NVIDIA driver %s: libcuda.so not found in the loader cache or %s", driver, strings.Join(sandbox.VendorLibDirs, ", "))
	}
	pl.gpus, pl.devices, pl.gpuLibs = idx, devs, libs
	if pl.prof.Sandbox.Rootfs != "host" {
		for _, lib := range libs {
			pl.mounts = append(pl.mounts, sandbox.Mount{Kind: sandbox.Bind, Source: lib, Target: "/usr/local/securetrain-nvidia/lib/" + filepath.Base(lib), ReadOnly: true})
		}
	}
	return nil
}

func hasLib(libs []string, name string) bool {
	for _, l := range libs {
		if strings.HasPrefix(filepath.Base(l), name) {
			return true
		}
	}
	return false
}

func libDirs(libs []string) []string {
	var dirs []string
	seen := map[string]bool{}
	for _, l := range libs {
		d := filepath.Dir(l)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// resolveDir makes p absolute, resolves symlinks, and checks it is a directory.
func resolveDir(p, what string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, unwrapFS(err))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, p, unwrapFS(err))
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s %s: not a directory", what, p)
	}
	return real, nil
}

func unwrapFS(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

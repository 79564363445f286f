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
	hostEtc   []string // the host's /etc entries a host-minimal root shows (its /etc is made per job)
	rootfs    string   // "" = host-minimal skeleton in the bundle
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
	if err := l.checkRequest(req); err != nil {
		return nil, err
	}
	pl := &plan{req: req, prof: req.Profile}
	if err := pl.resolveDirs(); err != nil {
		return nil, err
	}
	pl.setUser()
	if err := pl.setRoot(); err != nil {
		return nil, err
	}
	path, err := pl.setInterpreter()
	if err != nil {
		return nil, err
	}
	if !pl.prof.Limits.GPUs.None() {
		if err := l.prepareGPUs(ctx, pl); err != nil {
			return nil, err
		}
	}
	for _, d := range req.Data {
		src, err := resolveDir(d.Source, "--data")
		if err != nil {
			return nil, err
		}
		pl.mounts = append(pl.mounts, sandbox.Mount{Kind: sandbox.Bind, Source: src, Target: d.Target, ReadOnly: true})
	}
	// Credential masks inside the code directory.
	pl.masks = credentialMasks(pl.codeDir, append(append([]string(nil), CredentialNames...), pl.prof.Sandbox.Mask...))
	if err := pl.setEnv(path); err != nil {
		return nil, err
	}
	if err := l.prepareNetwork(pl); err != nil {
		return nil, err
	}
	if err := l.prepareSecrets(pl); err != nil {
		return nil, err
	}
	if err := l.prepareInputs(ctx, pl); err != nil {
		return nil, err
	}
	return pl, nil
}

// checkRequest refuses what no plan can come of.
func (l *Launcher) checkRequest(req Request) error {
	if os.Geteuid() != 0 {
		return ErrNeedRoot
	}
	if len(req.Command) == 0 {
		return errors.New("no command: use securetrain run [flags] -- COMMAND [ARGS...]")
	}
	if req.Profile == nil {
		return errors.New("no profile")
	}
	if req.Caller.UID <= 0 {
		return errors.New("jobs never run as root: give an unprivileged user")
	}
	if _, err := os.Stat(l.Runsc); err != nil {
		return fmt.Errorf("runsc not found at %s: run `make runsc` or set runsc: in %s", l.Runsc, configs.DefaultHostConfig)
	}
	return nil
}

// resolveDirs resolves the code directory (the working directory unless
// given) and the outputs directory (relative to the code directory).
func (pl *plan) resolveDirs() error {
	code := pl.req.CodeDir
	if code == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		code = wd
	}
	code, err := resolveDir(code, "code directory")
	if err != nil {
		return err
	}
	if code == "/" {
		return errors.New("code directory is /: run from your project directory or pass --code DIR")
	}
	pl.codeDir = code
	out := pl.req.Output
	if out == "" {
		out = pl.prof.Sandbox.Output
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join(code, out)
	}
	out = filepath.Clean(out)
	if fi, err := os.Lstat(out); err == nil && !fi.IsDir() {
		return fmt.Errorf("output %s exists and is not a directory (a symlink is not accepted)", out)
	}
	pl.outputDir = out
	return nil
}

// setUser is the job's identity. Its HOME is a fresh writable directory at
// the user's home path, unless the code directory is the home (or above it).
func (pl *plan) setUser() {
	u := pl.req.Caller
	pl.user = sandbox.User{Name: u.Name, UID: uint32(u.UID), GID: uint32(u.GID), Home: u.Home}
	for _, g := range u.Groups {
		pl.user.Groups = append(pl.user.Groups, uint32(g))
	}
	if u.Home == pl.codeDir || strings.HasPrefix(u.Home, pl.codeDir+"/") || u.Home == "" {
		pl.user.Home = "/var/tmp/home"
	}
}

// setRoot is the sandbox's root file system: the host-minimal skeleton, or
// the profile's rootfs directory.
func (pl *plan) setRoot() error {
	if pl.prof.Sandbox.Rootfs == "host" {
		mounts, links, err := sandbox.HostRoot("/")
		if err != nil {
			return err
		}
		pl.mounts, pl.links = append(pl.mounts, mounts...), links
		pl.hostEtc = sandbox.HostEtcEntries("/")
		return nil
	}
	rf, err := resolveDir(pl.prof.Sandbox.Rootfs, "sandbox.rootfs")
	if err != nil {
		return err
	}
	pl.rootfs = rf
	return nil
}

// setInterpreter finds the job's Python environment (--python, the
// profile's, or the one the command names), mounts its prefixes and
// returns the job's PATH.
func (pl *plan) setInterpreter() (string, error) {
	req := pl.req
	python := req.Python
	if python == "" {
		python = pl.prof.Sandbox.Python
	}
	if python != "" {
		if _, err := os.Stat(python); err != nil {
			return "", fmt.Errorf("--python %s: %w", python, unwrapFS(err))
		}
		// --python venv/bin/python is relative to where the user typed it;
		// inside the sandbox the job starts in the code directory.
		abs, err := filepath.Abs(python)
		if err != nil {
			return "", fmt.Errorf("--python %s: %w", python, err)
		}
		python = abs
	}
	py := detectPython(python, req.Command, pl.codeDir, envMap(req.CallerEnv))
	for _, pref := range py.Prefixes {
		if pref == pl.codeDir {
			continue // the code directory: already mounted
		}
		// One inside the code directory is mounted on its own too: the
		// code snapshot of an attested job leaves it out.
		pl.mounts = append(pl.mounts, sandbox.Mount{Kind: sandbox.Bind, Source: pref, Target: pref, ReadOnly: true})
	}
	args := append([]string(nil), req.Command...)
	if python != "" && (args[0] == "python" || args[0] == "python3") {
		args[0] = python
	}
	pl.args = args
	return strings.Join(append(py.Bins, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"), ":"), nil
}

// setEnv is the job's environment: the caller's, the profile's and the
// flags', with PATH, the thread counts and the GPU variables.
func (pl *plan) setEnv(path string) error {
	p, caller := pl.prof, envMap(pl.req.CallerEnv)
	var gpuCaps, gpuLibDirs []string
	if !p.Limits.GPUs.None() {
		gpuCaps = p.GPU.Capabilities
		gpuLibDirs = libDirs(pl.gpuLibs)
		if p.Sandbox.Rootfs != "host" {
			gpuLibDirs = []string{"/usr/local/securetrain-nvidia/lib"}
		}
	}
	env, err := buildEnv(envInput{
		caller: caller, profile: p.Env, flags: pl.req.Env, path: path,
		home: pl.user.Home, user: pl.user.Name, cpus: p.Limits.CPUs, memory: uint64(p.Limits.Memory),
		gpuCaps: gpuCaps, gpuLibDir: gpuLibDirs,
	})
	if err != nil {
		return err
	}
	if _, ok := caller["TERM"]; pl.req.TTY && !ok {
		env = append(env, "TERM=xterm-256color")
	}
	pl.env = env
	return nil
}

// prepareNetwork is the job's network: none with --network none, else what
// netConfig makes of the profile and the flags.
func (l *Launcher) prepareNetwork(pl *plan) error {
	req := pl.req
	if req.NetworkOff {
		if len(req.Allow) > 0 || len(req.Peers) > 0 || req.Learn || req.Allocation != "" {
			return errors.New("--network none cannot be combined with --allow, --peers, --allocation or --learn")
		}
		return nil
	}
	nc, err := l.netConfig(pl.prof, req)
	if err != nil {
		return err
	}
	pl.net = nc
	return nil
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

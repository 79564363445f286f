package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotFound is returned when runsc does not know the container; callers
// cleaning up treat it as already clean.
var ErrNotFound = errors.New("container not found")

// Runsc drives one pinned runsc binary with its own state directory (--root),
// never the system-wide default, so gc sees only securetrain's sandboxes.
type Runsc struct {
	Path     string // the static runsc binary
	Root     string // runsc --root
	Platform string // systrap (default), ptrace, kvm
	// DebugLogDir, when set, receives runsc's debug logs (for support).
	DebugLogDir string
}

// RunOptions are the per-job runsc flags.
type RunOptions struct {
	// Network: true joins the network namespace named in the spec with
	// gVisor's netstack; false gives the job no network at all.
	Network bool
	// OverlaySize bounds the in-memory overlay over the root (scratch).
	OverlaySize uint64
	// GPUCaps are the driver capabilities nvproxy may grant (compute,utility).
	GPUCaps []string
	// ConsoleSocket receives the job's pty master when the spec asks for a
	// terminal.
	ConsoleSocket string
}

// globalFlags are the flags every runsc call of a job gets. Security-relevant
// defaults are spelled out so that a changed upstream default cannot loosen
// them: no raw sockets, no host Unix sockets or FIFOs, no packet-socket writes.
func (r *Runsc) globalFlags() []string {
	f := []string{"--root", r.Root}
	if r.DebugLogDir != "" {
		f = append(f, "--debug", "--debug-log", strings.TrimSuffix(r.DebugLogDir, "/")+"/")
	}
	return f
}

// RunArgs returns the arguments of `runsc run` for a job.
func (r *Runsc) RunArgs(id, bundle string, o RunOptions) []string {
	a := append(r.sandboxFlags(o), "run", "--bundle", bundle)
	if o.ConsoleSocket != "" {
		a = append(a, "--console-socket", o.ConsoleSocket)
	}
	return append(a, id)
}

// sandboxFlags are the global flags of a command that makes a container:
// the platform, the network and the hardening spelled out.
func (r *Runsc) sandboxFlags(o RunOptions) []string {
	a := r.globalFlags()
	platform := r.Platform
	if platform == "" {
		platform = "systrap"
	}
	network := "none"
	if o.Network {
		network = "sandbox"
	}
	overlay := "root:memory"
	if o.OverlaySize > 0 {
		overlay += ",size=" + strconv.FormatUint(o.OverlaySize, 10)
	}
	a = append(a,
		"--platform="+platform,
		"--network="+network,
		"--net-raw=false",
		"--host-uds=none",
		"--host-fifo=none",
		"--allow-packet-socket-write=false",
		"--overlay2="+overlay,
	)
	if len(o.GPUCaps) > 0 {
		a = append(a, "--nvproxy-allowed-driver-capabilities="+strings.Join(o.GPUCaps, ","))
	}
	return a
}

// Boot creates the sandbox of bundle (its holder container, Pod.Holder)
// and starts it: `runsc create`, then `runsc start`. It returns the pid of
// the sandbox process (runsc-sandbox boot). The holder's stdio is
// /dev/null; runsc's own complaints go to errFile, which the sandbox keeps
// open (a pipe would keep the caller waiting for as long as it lives).
func (r *Runsc) Boot(ctx context.Context, id, bundle, errFile string, o RunOptions) (int, error) {
	ef, err := os.OpenFile(errFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, err
	}
	defer ef.Close()
	pidFile := filepath.Join(bundle, "sandbox.pid")
	create := exec.CommandContext(ctx, r.Path, append(r.sandboxFlags(o), "create", "--bundle", bundle, "--pid-file", pidFile, id)...)
	create.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	create.Stderr = ef
	if err := create.Run(); err != nil {
		return 0, fmt.Errorf("runsc create %s: %s", id, lastLine(errFile, err))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("runsc create %s: %w", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("runsc create %s: pid file %q", id, b)
	}
	if _, err := r.run(ctx, append(r.globalFlags(), "start", id)...); err != nil {
		return pid, err
	}
	return pid, nil
}

// lastLine is the last line runsc wrote to errFile, or err's text.
func lastLine(errFile string, err error) string {
	b, _ := os.ReadFile(errFile)
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		return err.Error()
	}
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		msg = msg[i+1:]
	}
	return msg
}

// Kill sends sig to the container's processes (all of them with all).
func (r *Runsc) Kill(ctx context.Context, id, sig string, all bool) error {
	args := append(r.globalFlags(), "kill")
	if all {
		args = append(args, "--all")
	}
	_, err := r.run(ctx, append(args, id, sig)...)
	return err
}

// Delete removes the container and its sandbox, killing what still runs.
// A container runsc does not know is already clean. `runsc run` removes its
// container itself when the job ends, so after a normal end there is nothing
// left for runsc to find: Delete then does not start a runsc process just to
// hear "does not exist" (a runsc start is tens of milliseconds of a
// launch).
func (r *Runsc) Delete(ctx context.Context, id string) error {
	if known, err := r.hasState(id); err == nil && !known {
		return nil
	}
	_, err := r.run(ctx, append(r.globalFlags(), "delete", "--force", id)...)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// hasState reports whether runsc's root holds anything of container id:
// its state file (SANDBOX_sandbox:ID.state, runsc's container.buildPath),
// the lock beside it or its sandbox's control socket (runsc-ID.sock). runsc
// finds containers through the state file alone, so without any of them
// `runsc delete` could only answer "does not exist".
func (r *Runsc) hasState(id string) (bool, error) {
	ents, err := os.ReadDir(r.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		n := e.Name()
		if n == "runsc-"+id+".sock" || strings.HasPrefix(n, id+"_sandbox:") ||
			strings.HasSuffix(n, "_sandbox:"+id+".state") || strings.HasSuffix(n, "_sandbox:"+id+".lock") {
			return true, nil
		}
	}
	return false, nil
}

// State is the part of `runsc state` securetrain reads.
type State struct {
	ID      string `json:"id"`
	Pid     int    `json:"pid"`
	Status  string `json:"status"`
	Bundle  string `json:"bundle"`
	Created string `json:"created"`
}

// State returns the container's state.
func (r *Runsc) State(ctx context.Context, id string) (State, error) {
	out, err := r.run(ctx, append(r.globalFlags(), "state", id)...)
	if err != nil {
		return State{}, err
	}
	var s State
	if err := json.Unmarshal(out, &s); err != nil {
		return State{}, fmt.Errorf("runsc state %s: %w", id, err)
	}
	return s, nil
}

// List returns every container under this runsc root.
func (r *Runsc) List(ctx context.Context) ([]State, error) {
	out, err := r.run(ctx, append(r.globalFlags(), "list", "--format=json")...)
	if err != nil {
		return nil, err
	}
	var ss []State
	if len(bytes.TrimSpace(out)) == 0 || bytes.Equal(bytes.TrimSpace(out), []byte("null")) {
		return nil, nil
	}
	if err := json.Unmarshal(out, &ss); err != nil {
		return nil, fmt.Errorf("runsc list: %w", err)
	}
	return ss, nil
}

// Version returns the first line of `runsc --version`.
func (r *Runsc) Version(ctx context.Context) (string, error) {
	out, err := r.run(ctx, "--version")
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// SupportedDrivers lists the NVIDIA driver versions this runsc's nvproxy supports.
func (r *Runsc) SupportedDrivers(ctx context.Context) ([]string, error) {
	out, err := r.run(ctx, "nvproxy", "list-supported-drivers")
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

func (r *Runsc) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.Path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "not found") {
			return nil, fmt.Errorf("runsc %s: %w", args[len(args)-1], ErrNotFound)
		}
		if msg == "" {
			msg = err.Error()
		}
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		return nil, fmt.Errorf("runsc %s: %s", strings.Join(subcommand(args), " "), msg)
	}
	return out, nil
}

// subcommand drops the global flags (and the values of --root and
// --debug-log) so that errors name what runsc was asked to do.
func subcommand(args []string) []string {
	for i, a := range args {
		if !strings.HasPrefix(a, "-") && (i == 0 || (args[i-1] != "--root" && args[i-1] != "--debug-log")) {
			return args[i:]
		}
	}
	return args
}

// NullNetNS is the file under a runsc root where runsc pins the empty network
// namespace its gofers share (runsc's specutils.NullNetNSFilename).
const NullNetNS = "null-netns"

package launcher

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/user"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/violation"
)

// Request is one job to run, as the CLI, the daemon or a Slurm hook asks for it.
type Request struct {
	Command []string
	Profile *configs.Profile
	Caller  Caller
	// CodeDir is the code directory (default: the caller's working directory),
	// mounted read-only at the same path; the job starts there.
	CodeDir string
	// Output overrides sandbox.output (relative to CodeDir, or absolute).
	Output string
	// Data are read-only dataset mounts (--data SRC[:DST]).
	Data []DataMount
	// Python names the interpreter whose environment the job uses.
	Python string
	// Env are KEY=VALUE settings for this run (--env).
	Env []string
	// CallerEnv is the caller's environment; only allowlisted names are read.
	CallerEnv []string
	// Stdio. TTY asks for a terminal (the launcher's own stdin is one).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	TTY            bool
	// ReportPath, when set, receives a copy of the result record.
	ReportPath string
	// ID is the job's id; empty means a fresh one (NewID). The daemon sets
	// it to name the job before it starts.
	ID string
	// Confine puts the privilege boundary in place for a caller who is not
	// root (the daemon sets it): every path the request names is opened and
	// checked with the caller's own credentials, and what was checked is
	// what gets mounted (privilege_linux.go).
	Confine bool

	// Allow adds allowlist entries for this run (--allow); Peers adds
	// distributed-training peers (--peers); Learn runs in audit mode and
	// suggests an allowlist (--learn). NetworkOff is --network none.
	Allow      []string
	Peers      []string
	Learn      bool
	NetworkOff bool
	// Allocation is the distributed job this run belongs to (--allocation;
	// the daemon sets the caller's Slurm job id). Its jobs on this node reach
	// each other on the profile's peer_ports, node names resolve to its
	// address on each node, and other nodes are peers at that address only.
	Allocation string
	// AllocationIndex is this run's local task within its allocation on
	// this node (SLURM_LOCALID): it takes that address of the allocation's
	// block (host network.allocation_block).
	AllocationIndex int
	// Extra is recorded in the job's state (JobState.Extra), e.g.
	// ExtraSlurmJob, so hooks such as the Slurm epilog can find the job.
	Extra map[string]string
	// Recorded are violations established before the job started (the
	// daemon's forged Slurm variables): they go into the result and the
	// audit log with the job's own, and stop nothing.
	Recorded []violation.Violation
}

// Caller is the user a job runs as. Never root.
type Caller struct {
	UID, GID int
	Groups   []int
	Name     string
	Home     string
}

// DataMount is one --data SRC[:DST].
type DataMount struct {
	Source, Target string
}

// ParseData parses --data SRC[:DST]; DST defaults to /data/<base of SRC>.
func ParseData(s string) (DataMount, error) {
	src, dst, _ := strings.Cut(s, ":")
	if src == "" {
		return DataMount{}, fmt.Errorf("--data %q: want SRC[:DST], e.g. /datasets/cifar or /datasets/cifar:/data/cifar", s)
	}
	if dst == "" {
		dst = path.Join("/data", path.Base(path.Clean(src)))
	}
	if !path.IsAbs(dst) || path.Clean(dst) != dst || dst == "/" {
		return DataMount{}, fmt.Errorf("--data %q: the target %q must be a clean absolute path other than /", s, dst)
	}
	return DataMount{Source: src, Target: dst}, nil
}

// Overrides are command-line changes to a profile's limits for one run.
type Overrides struct {
	CPUs     float64
	Memory   string
	Pids     int64
	WallTime time.Duration
	GPUs     string
	Network  string // none turns networking off
	// Rootfs replaces sandbox.rootfs (--rootfs), Unrestricted sets
	// network.unrestricted (--unrestricted); the daemon lets only admins
	// use them.
	Rootfs       string
	Unrestricted bool
}

// NetworkOff reports whether the overrides turn the job's network off
// (--network none): ApplyOverrides makes the profile's mode none, and the
// request says so (Request.NetworkOff).
func (o Overrides) NetworkOff() bool { return o.Network == "none" }

// ApplyOverrides applies flag overrides to a copy of p and validates it again.
func ApplyOverrides(p *configs.Profile, o Overrides) (*configs.Profile, error) {
	q := *p
	if o.CPUs != 0 {
		q.Limits.CPUs = o.CPUs
	}
	if o.Memory != "" {
		m, err := configs.ParseByteSize(o.Memory)
		if err != nil {
			return nil, fmt.Errorf("--memory: %w", err)
		}
		q.Limits.Memory = m
		if q.Limits.Shm > m {
			q.Limits.Shm = m / 2
		}
	}
	if o.Pids != 0 {
		q.Limits.Pids = o.Pids
	}
	if o.WallTime != 0 {
		q.Limits.WallTime = configs.Duration(o.WallTime)
	}
	if o.GPUs != "" {
		g, err := configs.ParseGPUSet(o.GPUs)
		if err != nil {
			return nil, fmt.Errorf("--gpus: %w", err)
		}
		q.Limits.GPUs = g
	}
	switch o.Network {
	case "":
	case "none":
		q.Network.Mode = "none"
		q.Network.Allow, q.Network.Peers = nil, nil
	default:
		return nil, fmt.Errorf("--network: want none, got %q", o.Network)
	}
	if o.Rootfs != "" {
		q.Sandbox.Rootfs = o.Rootfs
	}
	if o.Unrestricted {
		q.Network.Unrestricted = true
	}
	if err := q.Validate(); err != nil {
		return nil, overrideError(err)
	}
	return &q, nil
}

// flagFields names the flag that changes a profile field (or, for
// vault.ttl and limits.shm, the field checked against it).
var flagFields = map[string]string{
	"limits.cpus": "--cpus", "limits.memory": "--memory", "limits.shm": "--memory",
	"limits.pids": "--pids", "limits.wall_time": "--wall-time", "vault.ttl": "--wall-time",
	"network.mode": "--network",
}

// overrideError turns the validation of an overridden profile into one line
// that names the flag: Validate joins its failures with newlines.
func overrideError(err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	parts := make([]string, 0, len(errs))
	args := make([]any, 0, len(errs))
	for _, e := range errs {
		var fe *configs.FieldError
		if errors.As(e, &fe) && flagFields[fe.Field] != "" {
			parts = append(parts, flagFields[fe.Field]+": %w")
		} else {
			parts = append(parts, "%w")
		}
		args = append(args, e)
	}
	return fmt.Errorf("with command-line overrides: "+strings.Join(parts, "; "), args...)
}

// CallerFromEnv finds the user a job started by root runs as: SUDO_UID and
// SUDO_GID (sudo), or SLURM_JOB_UID/GID when called by slurmd as root, or the
// explicit userSpec (--user NAME|UID). A non-root caller is itself.
func CallerFromEnv(env map[string]string, userSpec string) (Caller, error) {
	spec, gid, err := callerSpec(os.Geteuid(), os.Getuid(), os.Getgid(), env, userSpec)
	if err != nil {
		return Caller{}, err
	}
	return lookupCaller(spec, gid)
}

// ErrRootCaller is returned when nothing names the unprivileged user a job
// started by root should run as.
var ErrRootCaller = errors.New("running as root without sudo: jobs never run as root; pass --user NAME|UID (or use sudo, which sets SUDO_UID)")

// callerSpec decides, from the launcher's own ids and its environment, which
// user (name or uid) the job runs as and with which primary gid (-1: the
// user's own). It reads nothing else, so the choice is testable without root.
func callerSpec(euid, uid, gid int, env map[string]string, userSpec string) (string, int, error) {
	if euid != 0 {
		return strconv.Itoa(uid), gid, nil
	}
	if userSpec != "" {
		return userSpec, -1, nil
	}
	for _, pair := range [][2]string{{"SUDO_UID", "SUDO_GID"}, {"SLURM_JOB_UID", "SLURM_JOB_GID"}} {
		if u := env[pair[0]]; u != "" && u != "0" {
			g := -1
			if n, err := strconv.Atoi(env[pair[1]]); err == nil && n >= 0 {
				g = n
			}
			return u, g, nil
		}
	}
	return "", -1, ErrRootCaller
}

func lookupCaller(spec string, gid int) (Caller, error) {
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(spec); nerr == nil {
		u, err = user.LookupId(spec)
	} else {
		u, err = user.Lookup(spec)
	}
	c := Caller{UID: -1, GID: gid}
	if err != nil {
		// A numeric uid without a passwd entry still runs (as in containers).
		n, nerr := strconv.Atoi(spec)
		if nerr != nil {
			return Caller{}, fmt.Errorf("--user %q: no such user", spec)
		}
		if n < 0 {
			return Caller{}, fmt.Errorf("--user %q: want a user name or a uid of 1 or more", spec)
		}
		c.UID, c.Name, c.Home = n, "user"+spec, "/home/user"+spec
		if c.GID < 0 {
			c.GID = n
		}
	} else {
		c.UID, _ = strconv.Atoi(u.Uid)
		c.Name, c.Home = u.Username, u.HomeDir
		if c.GID < 0 {
			c.GID, _ = strconv.Atoi(u.Gid)
		}
		if gs, err := u.GroupIds(); err == nil {
			for _, g := range gs {
				if n, err := strconv.Atoi(g); err == nil && n != c.GID {
					c.Groups = append(c.Groups, n)
				}
			}
		}
	}
	if c.UID == 0 {
		return Caller{}, fmt.Errorf("user %q is root: jobs never run as root; pass --user with an unprivileged user", spec)
	}
	if c.Home == "" || c.Home == "/" || c.Home == "/nonexistent" {
		c.Home = "/home/" + c.Name
	}
	return c, nil
}

// threadCount is the thread count the thread variables get: the CPU limit
// rounded up. gVisor runs PyTorch several times slower when it starts more
// threads than it has cores (gVisor issue 10205).
func threadCount(cpus float64) int {
	return max(1, int(math.Ceil(cpus)))
}

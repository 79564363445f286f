package launcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/versions"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/netguard"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/secrets"
	"github.com/securetrain/securetrain/usage"
	"github.com/securetrain/securetrain/violation"
)

// Launcher runs jobs on this host. One value serves many jobs.
type Launcher struct {
	Host  *configs.Host
	Runsc string // path of the pinned static runsc
	Log   *slog.Logger
	// SampleInterval is how often usage is sampled and soft limits checked
	// (default 1s).
	SampleInterval time.Duration

	gcVault struct {
		sync.Mutex
		c *secrets.Client
	}
	warm *warmPool // daemon.warm (StartWarm): sandboxes booted ahead of jobs
}

// New returns a launcher for the host configuration. It sets the process's
// umask to 022: what the launcher makes for a sandbox (the root skeleton,
// /etc, mount points) must be readable by the job whatever umask the
// caller's shell had (with a hardened 027 or 077 the job could not enter
// its own working directory). What must stay private is created with
// explicit modes (0600, 0700).
func New(h *configs.Host, log *slog.Logger) *Launcher {
	unix.Umask(0o022)
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := h.Runsc
	if r == "" {
		r = DefaultRunsc()
	}
	return &Launcher{Host: h, Runsc: r, Log: log, SampleInterval: time.Second}
}

// DefaultRunsc is the runsc used when the host configuration names none:
// $SECURETRAIN_RUNSC, /usr/local/bin/runsc, then the pinned build cache.
func DefaultRunsc() string {
	if p := os.Getenv("SECURETRAIN_RUNSC"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/local/bin/runsc", "/usr/local/sbin/runsc"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/var/cache/securetrain/tools/" + versions.RunscTool
}

// PinnedGVisor is the gVisor version securetrain is built and tested against
// (internal/versions/versions.env).
var PinnedGVisor = versions.GVisor

// Store returns the job state store.
func (l *Launcher) Store() *Store { return &Store{Dir: filepath.Join(l.Host.StateDir, "jobs")} }

// JobData is the job's directory on the host for what outlives it: its log,
// its result, its attestation and signatures (<data_dir>/jobs/ID).
func (l *Launcher) JobData(id string) string { return filepath.Join(l.Host.DataDir, "jobs", id) }

func (l *Launcher) runsc() *sandbox.Runsc {
	return &sandbox.Runsc{Path: l.Runsc, Root: filepath.Join(l.Host.StateDir, "runsc")}
}

// Result is the record of one finished job.
type Result struct {
	ID            string                `json:"id"`
	User          string                `json:"user"`
	UID           int                   `json:"uid"`
	Command       []string              `json:"command"`
	Profile       string                `json:"profile"`
	ProfileDigest string                `json:"profile_digest"`
	Started       time.Time             `json:"started"`
	Ended         time.Time             `json:"ended"`
	WallSeconds   float64               `json:"wall_seconds"`
	ExitCode      int                   `json:"exit_code"` // what securetrain exits with
	JobStatus     int                   `json:"job_status"`
	Outcome       string                `json:"outcome"` // exited, failed, signaled, violation, limit, stopped
	Reason        string                `json:"reason,omitempty"`
	Violations    []violation.Violation `json:"violations,omitempty"`
	Log           string                `json:"log,omitempty"`
	Output        string                `json:"output,omitempty"`
	Usage         *usage.Record         `json:"usage,omitempty"`
	// Suggested is the allowlist --learn suggests from what the job contacted.
	Suggested []string `json:"suggested_allowlist,omitempty"`
	// Attestation is the signed provenance of the run (DSSE envelope).
	Attestation string `json:"attestation,omitempty"`
	// OutputsSignature is the OMS bundle of the outputs directory
	// (profile integrity.sign_outputs).
	OutputsSignature string `json:"outputs_signature,omitempty"`
	// Notes are what securetrain itself has to say about the run (output
	// cut, report not written), printed on stderr.
	Notes []string `json:"notes,omitempty"`
	// Leftover names what the teardown could not remove: the job's state
	// stays for gc, which removes them (latest record of each).
	Leftover []jobstate.Resource `json:"leftover,omitempty"`
	// Summary is the short human account printed on stderr.
	Summary string `json:"-"`

	// WarmSandbox names the pooled sandbox the job ran in (daemon.warm);
	// empty for a sandbox booted for the job.
	WarmSandbox string `json:"warm_sandbox,omitempty"`

	killedByUs    bool
	sandboxKilled bool // a warm sandbox's process got our SIGKILL (its `runsc run` then exits 128)
	runscPID      int  // the `runsc run` process, parent of the sandbox (cold starts)
	sandboxPID    int  // the warm sandbox's process
}

// Outcomes.
const (
	OutcomeExited    = "exited"    // status 0
	OutcomeFailed    = "failed"    // non-zero status of its own
	OutcomeSignaled  = "signaled"  // ended by a signal it did not get from us
	OutcomeViolation = "violation" // killed for a policy violation
	OutcomeLimit     = "limit"     // killed for a resource limit
	OutcomeStopped   = "stopped"   // stopped on request (Ctrl-C, securetrain kill)
)

// NewID returns a fresh job id: 12 hex digits, short enough for interface
// names and unique enough for one host.
func NewID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// JobRefusedError is a job that did not start. Its message is one line.
type JobRefusedError struct{ Err error }

func (e *JobRefusedError) Error() string { return e.Err.Error() }
func (e *JobRefusedError) Unwrap() error { return e.Err }

// cleanup is a stack of undo steps; every step runs, errors are joined. A
// step may name the recorded resources it removes: run returns those of the
// steps that succeeded, so that a teardown that failed part-way keeps only
// the others for gc.
type cleanup struct{ steps []undoStep }

type undoStep struct {
	fn      func() error
	removes []jobstate.Resource
}

func (c *cleanup) push(f func() error) { c.steps = append(c.steps, undoStep{fn: f}) }

// pushRemoving pushes a step that removes the recorded resources rs.
func (c *cleanup) pushRemoving(rs []jobstate.Resource, f func() error) {
	c.steps = append(c.steps, undoStep{fn: f, removes: rs})
}

// run runs every step, newest first; removed lists the resources of the
// steps that succeeded.
func (c *cleanup) run() (removed []jobstate.Resource, err error) {
	var errs []error
	for i := len(c.steps) - 1; i >= 0; i-- {
		if err := c.steps[i].fn(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, c.steps[i].removes...)
	}
	c.steps = nil
	return removed, errors.Join(errs...)
}

// Cleaners remove one kind of recorded resource; gc and teardown use them.
func (l *Launcher) cleaners() map[string]func(context.Context, jobstate.Resource) error {
	m := map[string]func(context.Context, jobstate.Resource) error{
		KindRunsc: func(ctx context.Context, r jobstate.Resource) error {
			rs := l.runsc()
			if root := r.Attrs["root"]; root != "" {
				rs.Root = root
			}
			return rs.Delete(ctx, r.Name)
		},
		KindDir: func(_ context.Context, r jobstate.Resource) error {
			return os.RemoveAll(r.Name)
		},
		KindCgroup: func(_ context.Context, r jobstate.Resource) error {
			return removeCgroup(r.Name)
		},
		KindMount:    cleanMount,    // privilege_linux.go
		KindEmptyDir: cleanEmptyDir, // privilege_linux.go
	}
	for _, k := range netguardKinds {
		m[k] = netguard.GC
	}
	vgc := l.vaultGC()
	m[secrets.KindToken], m[secrets.KindMount] = vgc, vgc
	return m
}

// Resource kinds the launcher itself records.
const (
	KindRunsc  = "runsc"
	KindDir    = "dir"
	KindCgroup = "cgroup"
)

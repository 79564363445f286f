// Package slurmtest starts a real one-node Slurm cluster (Debian's slurm-wlm
// and munge) for a test, with scripts/slurm-test-cluster.sh, and submits jobs
// to it as unprivileged users the test creates. Everything it starts is
// stopped, and everything it creates removed, in the test's cleanup.
package slurmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/testenv"
)

// Options configure the cluster.
type Options struct {
	// Prolog and Epilog are argv that slurmd runs as root through a two-line
	// wrapper script (slurm.conf takes a program path, not a command line).
	Prolog, Epilog []string
	// Proctrack is slurm.conf's ProctrackType (default proctrack/linuxproc;
	// proctrack/cgroup works on cgroup v1 and v2 hosts).
	Proctrack string
	// TaskProlog is the path of slurm.conf's TaskProlog (run as the job's user).
	TaskProlog string
}

// Cluster is a running test cluster.
type Cluster struct {
	Dir  string // everything of the cluster lives here
	Conf string // its slurm.conf
	Node string // its one node's Slurm name, unique per cluster
}

// Require ends the test unless it can run a cluster here (root, slurm-wlm,
// munge): a skip on a developer machine, a failure in CI.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, b := range []string{"slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue"} {
		if _, err := exec.LookPath(b); err != nil {
			testenv.Missing(t, "%s not found (apt-get install slurm-wlm munge)", b)
		}
	}
}

// Start starts a cluster and waits for its node to be idle.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	Require(t)
	script, err := repoFile("scripts/slurm-test-cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "st-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	// A node name of its own: slurmd's cgroups are named after it, so
	// clusters of tests running at once never share one.
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "slurm.conf"), Node: "st" + strings.ToLower(strings.TrimPrefix(filepath.Base(dir), "st-slurm-"))}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C", "NODENAME=" + c.Node}
	if o.Proctrack != "" {
		env = append(env, "PROCTRACK="+o.Proctrack)
	}
	for _, h := range []struct {
		name string
		argv []string
	}{{"prolog", o.Prolog}, {"epilog", o.Epilog}} {
		if len(h.argv) == 0 {
			continue
		}
		p := filepath.Join(dir, h.name)
		body := "#!/bin/sh\nexec " + shellJoin(h.argv) + "\n"
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		env = append(env, strings.ToUpper(h.name)+"="+p)
	}
	if o.TaskProlog != "" {
		env = append(env, "TASKPROLOG="+o.TaskProlog)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stopping the Slurm cluster: %v: %s", err, out)
		}
		if t.Failed() {
			c.dumpLogs(t)
		}
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "start", dir)
	cmd.Env = env
	// The daemons run on after the script exits: give them files, not our pipes.
	logf, err := os.Create(filepath.Join(dir, "start.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(logf.Name())
		c.dumpLogs(t)
		t.Fatalf("starting the Slurm cluster: %v: %s", err, b)
	}
	return c
}

func (c *Cluster) dumpLogs(t testing.TB) {
	for _, f := range []string{"log/slurmctld.log", "log/slurmd.log"} {
		b, err := os.ReadFile(filepath.Join(c.Dir, f))
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("%s (tail):\n%s", f, b)
	}
}

// User is an unprivileged account a test creates.
type User struct {
	Name     string
	UID, GID int
}

// NewUser creates an unprivileged user (removed in cleanup) with a work
// directory it owns.
func NewUser(t testing.TB, name string) (User, string) {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		// Other tests may hold /etc/passwd's lock for a moment: retry.
		var out []byte
		var err error
		for i := 0; i < 50; i++ {
			out, err = exec.Command("useradd", "--no-create-home", "--shell", "/bin/sh", name).CombinedOutput()
			if err == nil || !bytes.Contains(out, []byte("lock")) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", name).Run() })
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	work, err := os.MkdirTemp("", "st-slurm-work-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	if err := os.Chown(work, uid, gid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o755)
	return User{Name: name, UID: uid, GID: gid}, work
}

// Root is the root user, for jobs that must be submitted as root.
var Root = User{Name: "root"}

// Cmd runs a Slurm client as u from dir with a clean environment.
func (c *Cluster) Cmd(ctx context.Context, u User, dir string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C", "SLURM_CONF=" + c.Conf, "USER=" + u.Name}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), NoSetGroups: u.UID == 0}}
	if u.UID != 0 {
		cmd.SysProcAttr.Credential.Groups = []uint32{}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs a Slurm client as u and returns its stdout, failing the test on error.
func (c *Cluster) Run(t testing.TB, u User, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.Cmd(ctx, u, dir, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s as %s: %v: %s%s", name, strings.Join(args, " "), u.Name, err, out.String(), errb.String())
	}
	return out.String()
}

// Sbatch submits a batch script as u from dir and returns the job id.
func (c *Cluster) Sbatch(t testing.TB, u User, dir, script string, args ...string) uint64 {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("job-%d.sh", time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(p, u.UID, u.GID)
	out := c.Run(t, u, dir, "sbatch", append(append([]string{"--parsable"}, args...), p)...)
	id, err := strconv.ParseUint(strings.TrimSpace(strings.Split(strings.TrimSpace(out), ";")[0]), 10, 64)
	if err != nil {
		t.Fatalf("sbatch: job id %q: %v", out, err)
	}
	return id
}

// JobState is the job's state as scontrol shows it (RUNNING, COMPLETED,
// CANCELLED, ...; COMPLETING while its epilog runs).
func (c *Cluster) JobState(t testing.TB, id uint64) string {
	t.Helper()
	out := c.Run(t, Root, c.Dir, "scontrol", "-o", "show", "job", strconv.FormatUint(id, 10))
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "JobState="); ok {
			return v
		}
	}
	t.Fatalf("scontrol show job %d: no JobState in %q", id, out)
	return ""
}

// WaitFor polls cond every 100ms until it is true, failing the test after
// limit (a bound on a hang, not an assertion on speed).
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitState waits until the job is in one of states.
func (c *Cluster) WaitState(t testing.TB, id uint64, states ...string) string {
	t.Helper()
	var st string
	WaitFor(t, 2*time.Minute, fmt.Sprintf("job %d to be %v", id, states), func() bool {
		st = c.JobState(t, id)
		for _, s := range states {
			if st == s {
				return true
			}
		}
		return false
	})
	return st
}

// WaitIdle waits until the node runs nothing, epilogs included.
func (c *Cluster) WaitIdle(t testing.TB) {
	t.Helper()
	WaitFor(t, 2*time.Minute, "the node to be idle", func() bool {
		return strings.TrimSpace(c.Run(t, Root, c.Dir, "sinfo", "-h", "-n", c.Node, "-o", "%T")) == "idle"
	})
}

// WaitFile waits until path exists and returns its contents.
func WaitFile(t testing.TB, path string) string {
	t.Helper()
	var b []byte
	WaitFor(t, 2*time.Minute, path, func() bool {
		var err error
		b, err = os.ReadFile(path)
		return err == nil && len(b) > 0 && bytes.HasSuffix(b, []byte("\n"))
	})
	return string(b)
}

func repoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("slurmtest: go.mod not found above the working directory")
		}
		dir = parent
	}
}

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

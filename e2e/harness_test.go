// Package e2e runs the built securetrain binary end to end, as root, with the
// pinned runsc: real sandboxes, real users, real PyTorch. Each test leaves
// the machine as it found it, and checks that nothing leaked.
package e2e

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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/testenv"
)

// suffix (SECURETRAIN_E2E_SUFFIX, [a-z0-9]) keeps concurrent runs of this
// suite on one machine apart: users, state and data directories. Job
// cgroups (securetrain/<id>) are shared; another run's live jobs show there.
var suffix = os.Getenv("SECURETRAIN_E2E_SUFFIX")

var (
	jobUser   = "st-e2e" + suffix
	otherUser = "st-e2e-other" + suffix
	stateDir  = "/run/securetrain-e2e" + suffix
	dataDir   = "/var/lib/securetrain-e2e" + suffix
)

var (
	once     sync.Once
	shared   *env
	setupErr string
	created  []string
)

// env is the shared test environment: the binary, the runsc, the host config
// and the unprivileged users jobs run as.
type env struct {
	bin, runsc, config string
	auditLog           string
	uid, gid           int
	home               string
	otherHome          string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		exec.Command(shared.bin, "--config", shared.config, "gc").Run()
	}
	for _, u := range created {
		exec.Command("userdel", "-r", u).Run()
	}
	if shared != nil {
		os.RemoveAll(filepath.Dir(shared.config))
	}
	os.Exit(code)
}

// setup returns the shared environment, ending the test if a component is
// missing (a skip outside CI, a failure in CI).
func setup(t *testing.T) *env {
	t.Helper()
	e := baseSetup(t)
	t.Cleanup(func() { assertClean(t, e) })
	return e
}

// baseSetup is setup without the leak check of the shared state directory,
// for tests with a host configuration (and leak check) of their own.
func baseSetup(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test (-short)")
	}
	testenv.RequireRoot(t)
	runsc := testenv.Runsc(t)
	once.Do(func() { shared, setupErr = build(runsc) })
	if shared == nil {
		t.Fatalf("e2e setup: %s", setupErr)
	}
	if err := ensureUsers(); err != "" {
		t.Fatalf("e2e setup: %s", err)
	}
	return shared
}

func build(runsc string) (*env, string) {
	bin := os.Getenv("SECURETRAIN_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "st-e2e-bin-")
		if err != nil {
			return nil, err.Error()
		}
		// Unprivileged users run the binary too (the not-root refusal, the
		// daemon's clients).
		os.Chmod(dir, 0o755)
		bin = filepath.Join(dir, "securetrain")
		out, err := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", bin, "../cmd/securetrain").CombinedOutput()
		if err != nil {
			return nil, fmt.Sprintf("go build: %v: %s", err, out)
		}
	}
	if err := ensureUsers(); err != "" {
		return nil, err
	}
	u, err := user.Lookup(jobUser)
	if err != nil {
		return nil, err.Error()
	}
	o, _ := user.Lookup(otherUser)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cfgDir, err := os.MkdirTemp("", "st-e2e-config-")
	if err != nil {
		return nil, err.Error()
	}
	// The test users read the host configuration too (as non-root clients).
	os.Chmod(cfgDir, 0o755)
	cfg := filepath.Join(cfgDir, "securetrain.yaml")
	body := fmt.Sprintf("version: 1\nrunsc: %s\nstate_dir: %s\ndata_dir: %s\nprofile_dir: %s\naudit:\n  path: %s\ndaemon:\n  socket: /nonexistent-st-e2e/securetrain.sock\n", runsc, stateDir, dataDir, filepath.Join(cfgDir, "profiles"), filepath.Join(cfgDir, "audit.jsonl"))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, err.Error()
	}
	return &env{bin: bin, runsc: runsc, config: cfg, auditLog: filepath.Join(cfgDir, "audit.jsonl"), uid: uid, gid: gid, home: u.HomeDir, otherHome: o.HomeDir}, ""
}

// ensureUsers creates the test users if they are missing (again, should
// another test process on the machine have removed them).
func ensureUsers() string {
	for _, u := range []string{jobUser, otherUser} {
		if _, err := user.Lookup(u); err != nil {
			if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", u).CombinedOutput(); err != nil {
				return fmt.Sprintf("useradd %s: %v: %s", u, err, out)
			}
			created = append(created, u)
		}
	}
	return ""
}

// tempTree makes a world-readable directory under /tmp holding files,
// removed at the end of the test.
func tempTree(t *testing.T, prefix string, files map[string]string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// project makes a code directory owned by the job's user, with files.
func (e *env) project(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := tempTree(t, "st-e2e-proj-", files)
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, e.uid, e.gid) })
	return dir
}

// result of one securetrain invocation.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cmd prepares securetrain with the test host config, run from dir, with a
// clean environment plus extra.
func (e *env) cmd(ctx context.Context, dir string, extra []string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, e.bin, append([]string{"--config", e.config}, args...)...)
	c.Dir = dir
	c.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"}, extra...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	return c
}

// run runs securetrain to its end.
func (e *env) run(t *testing.T, dir string, extra []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.cmd(ctx, dir, extra, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	code, err := exitCode(c.Run())
	if err != nil {
		t.Fatalf("securetrain %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// exitCode is the exit status of a command that ran (err nil), or err when
// it could not run at all.
func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// job runs COMMAND under `securetrain run --user st-e2e` with flags.
func (e *env) job(t *testing.T, dir string, flags []string, command ...string) result {
	t.Helper()
	args := append([]string{"run", "--user", jobUser}, flags...)
	args = append(args, "--")
	return e.run(t, dir, nil, append(args, command...)...)
}

// assertClean fails the test if anything a job creates is still there:
// job state, runsc containers, runsc processes, mounts, cgroups, job homes.
func assertClean(t *testing.T, e *env) {
	t.Helper()
	assertCleanMode(t, e, false)
}

// assertCleanMode with strict also requires runsc's shared null network
// namespace to be gone, which gc releases once no job lives.
func assertCleanMode(t *testing.T, e *env, strict bool) {
	t.Helper()
	left := append(leftovers(e.runsc, stateDir, dataDir, strict), netLeaks()...)
	if len(left) > 0 {
		t.Errorf("leaked after test:\n  %s", strings.Join(left, "\n  "))
	}
}

// leftovers lists what the jobs of a host configuration with these state
// and data directories left behind: job state, runsc containers and
// processes, mounts (staging ones included), cgroups, homes. Only the jobs
// of this data directory count, so test runs beside this one are not
// reported. strict also counts runsc's shared null network namespace.
func leftovers(runsc, state, data string, strict bool) []string {
	var left []string
	ents, _ := os.ReadDir(filepath.Join(state, "jobs"))
	for _, x := range ents {
		left = append(left, "state "+x.Name())
	}
	out, _ := exec.Command(runsc, "--root", filepath.Join(state, "runsc"), "list", "-quiet").Output()
	for _, id := range strings.Fields(string(out)) {
		left = append(left, "runsc container "+id)
	}
	ps, _ := exec.Command("pgrep", "-af", state+"/runsc ").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(ps)), "\n") {
		if l != "" {
			left = append(left, "process "+l)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if !strict && strings.Contains(l, "/runsc/null-netns") {
			continue
		}
		if strings.Contains(l, state+"/") || strings.Contains(l, data+"/") {
			left = append(left, "mount "+l)
		}
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/securetrain/*")
	cgs2, _ := filepath.Glob("/sys/fs/cgroup/securetrain/*")
	for _, c := range append(cgs, cgs2...) {
		if !isJobID(filepath.Base(c)) {
			continue // other packages' tests use their own names
		}
		if _, err := os.Stat(filepath.Join(data, "jobs", filepath.Base(c))); err != nil {
			continue // not a job of this data dir: another run's
		}
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			left = append(left, "cgroup "+c)
		}
	}
	homes, _ := filepath.Glob(filepath.Join(data, "jobs", "*", "home"))
	for _, h := range homes {
		left = append(left, "home "+h)
	}
	return left
}

func isJobID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

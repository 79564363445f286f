package usage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/testenv"
	"golang.org/x/sys/unix"
)

// testSandbox is one real runsc sandbox, made from a minimal OCI bundle
// written by hand: the host's / read only, uid 65534, no network, hard
// limits in linux.resources and cgroupsPath /securetrain/test-<rand>.
type testSandbox struct {
	t       testing.TB
	runsc   string
	root    string // runsc --root
	id      string
	cgPath  string
	out     string // the job's stdout and stderr
	deleted bool
	waited  chan struct{}
	code    int
	waitErr error
}

type sandboxOpts struct {
	args   []string
	memory int64 // bytes; 0: none
	cpus   float64
	pids   int64
}

func randID(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "test-" + hex.EncodeToString(b)
}

// startSandbox creates and starts the sandbox (runsc run --detach) and
// registers its deletion and a check that its cgroup is gone.
func startSandbox(t testing.TB, o sandboxOpts) *testSandbox {
	t.Helper()
	testenv.RequireRoot(t)
	runsc := testenv.Runsc(t)
	id := randID(t)
	s := &testSandbox{t: t, runsc: runsc, root: t.TempDir(), id: id, cgPath: "/securetrain/" + id}
	bundle := t.TempDir()
	if err := os.Chmod(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	res := map[string]any{}
	if o.memory > 0 {
		res["memory"] = map[string]any{"limit": o.memory}
	}
	if o.cpus > 0 {
		res["cpu"] = map[string]any{"quota": int64(o.cpus * 100000), "period": 100000}
	}
	if o.pids > 0 {
		res["pids"] = map[string]any{"limit": o.pids}
	}
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"user": map[string]any{"uid": 65534, "gid": 65534},
			"args": o.args,
			"env":  []string{"PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"},
			"cwd":  "/",
		},
		"root":     map[string]any{"path": "/", "readonly": true},
		"hostname": "usage-test",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc"},
			{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
		},
		"linux": map[string]any{
			"cgroupsPath": s.cgPath,
			"resources":   res,
			"namespaces": []map[string]string{
				{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"},
			},
		},
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s.out = filepath.Join(t.TempDir(), "out")
	f, err := os.Create(s.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Cleanup(s.cleanup)
	// runsc run --detach, then at once runsc wait. (runsc wait on a
	// created, unstarted container fails; a foreground runsc run deletes
	// the container, cgroup included, before it returns, so Final could
	// not read it.) The container keeps f as its stdout after runsc
	// returns: a file, not a pipe, so that Run does not wait for the job.
	cmd := exec.Command(runsc, "--root", s.root, "--network=none", "run", "--detach", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		t.Fatalf("runsc run: %v: %s", err, s.output())
	}
	s.waited = make(chan struct{})
	var werr bytes.Buffer
	w := exec.Command(runsc, "--root", s.root, "wait", id)
	w.Stderr = &werr
	var wout bytes.Buffer
	w.Stdout = &wout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.waited)
		s.code, s.waitErr = -1, w.Wait()
		if s.waitErr != nil {
			s.waitErr = fmt.Errorf("runsc wait: %w: %s", s.waitErr, bytes.TrimSpace(werr.Bytes()))
			return
		}
		var st struct {
			ExitStatus int `json:"exitStatus"`
		}
		if s.waitErr = json.Unmarshal(bytes.TrimSpace(wout.Bytes()), &st); s.waitErr == nil {
			s.code = st.ExitStatus
		}
	}()
	return s
}

func (s *testSandbox) runscCmd(args ...string) ([]byte, error) {
	return exec.Command(s.runsc, append([]string{"--root", s.root}, args...)...).CombinedOutput()
}

func (s *testSandbox) output() string {
	b, _ := os.ReadFile(s.out)
	return string(b)
}

// wait returns the job's exit status as runsc wait reports it, or an error
// when runsc cannot tell (the sandbox died).
func (s *testSandbox) wait() (int, error) {
	select {
	case <-s.waited:
	case <-time.After(2 * time.Minute):
		s.t.Fatalf("job %s did not end", s.id)
	}
	return s.code, s.waitErr
}

func (s *testSandbox) kill() {
	if out, err := s.runscCmd("kill", "--all", s.id, "KILL"); err != nil {
		s.t.Logf("runsc kill: %v: %s", err, out)
	}
}

func (s *testSandbox) sampler(t testing.TB, gpus ...int) *Sampler {
	sm, err := NewSampler(Config{CgroupPath: s.cgPath, Runsc: s.runsc, RunscRoot: s.root, ContainerID: s.id, EventsInterval: time.Second, GPUs: gpus, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sm.Close() })
	return sm
}

func (s *testSandbox) delete() {
	if s.deleted {
		return
	}
	s.deleted = true
	if out, err := s.runscCmd("delete", "--force", s.id); err != nil {
		s.t.Errorf("runsc delete --force %s: %v: %s", s.id, err, out)
	}
	if s.waited != nil {
		<-s.waited
	}
	// runsc --network=none leaves its root's null-netns bind mount behind.
	if nn := filepath.Join(s.root, "null-netns"); exists(nn) {
		if err := unix.Unmount(nn, unix.MNT_DETACH); err != nil {
			s.t.Logf("umount %s: %v", nn, err)
		}
	}
}

// cleanup deletes the sandbox and checks that runsc removed its cgroup in
// every hierarchy; what is left is an error, and is removed.
func (s *testSandbox) cleanup() {
	s.delete()
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + s.cgPath)
	if d := "/sys/fs/cgroup" + s.cgPath; exists(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		s.t.Errorf("cgroup %s left after runsc delete", d)
		if err := os.Remove(d); err != nil {
			s.t.Logf("rmdir %s: %v", d, err)
		}
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func python(args string) []string { return []string{"/usr/bin/python3", "-c", args} }

// burn burns CPU in n processes for secs CPU seconds each (measured inside
// with time.process_time), prints "burned <total>" and sleeps.
func burn(n int, secs float64) []string {
	return python(`
import os, sys, time
n, secs = ` + fmt.Sprint(n) + `, ` + fmt.Sprint(secs) + `
def spin():
    # Reading the clock is a syscall under gVisor: look at it rarely, so
    # that the burn is computation, not syscalls.
    t = time.process_time()
    while time.process_time() - t < secs:
        for _ in range(20000):
            pass
kids = []
for i in range(n - 1):
    r, w = os.pipe()
    p = os.fork()
    if p == 0:
        os.close(r); spin(); os.write(w, repr(time.process_time()).encode()); os._exit(0)
    os.close(w); kids.append(r)
spin()
total = time.process_time()
for r in kids:
    total += float(os.read(r, 100))
print("burned", total, flush=True)
time.sleep(60)
`)
}

var bg = context.Background()

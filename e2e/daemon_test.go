package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/internal/testenv"
)

// The daemon tests' own users (other packages' tests on a shared machine
// create and delete the harness's users).
const (
	daemonUser  = "st-e2e-d1"
	daemonUser2 = "st-e2e-d2"
	// daemonGroup grants daemonUser2 through the policy (a group found
	// through NSS) and must reach daemonUser2's jobs as a supplementary group.
	daemonGroup = "st-e2e-dgrp"
)

var daemonUsersOnce sync.Once

func daemonUsers(t *testing.T) {
	t.Helper()
	var err error
	daemonUsersOnce.Do(func() {
		for _, u := range []string{daemonUser, daemonUser2} {
			if _, lerr := user.Lookup(u); lerr != nil {
				if out, cerr := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", u).CombinedOutput(); cerr != nil {
					err = fmt.Errorf("useradd %s: %v: %s", u, cerr, out)
					return
				}
				created = append(created, u)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{daemonUser, daemonUser2} {
		if _, err := user.Lookup(u); err != nil {
			t.Fatalf("test user %s: %v", u, err)
		}
	}
}

// The daemon tests keep their jobs' state and data apart from the other
// end-to-end tests', so that tests of other packages running at the same
// time on a shared machine neither see nor disturb them.
const (
	daemonStateDir = "/run/securetrain-e2e-daemon"
	daemonDataDir  = "/var/lib/securetrain-e2e-daemon"
)

// daemonSetup is setup without the harness's leak check of its own state
// directory: daemonConfig registers one for the daemon's directories.
func daemonSetup(t *testing.T) *env {
	t.Helper()
	return baseSetup(t)
}

// assertClean fails the test if anything of a job the daemon ran is left
// (see leftovers), then runs gc.
func (d *daemonEnv) assertClean(t *testing.T) {
	t.Helper()
	if left := leftovers(d.runsc, daemonStateDir, daemonDataDir, false); len(left) > 0 {
		t.Errorf("leaked after test:\n  %s", strings.Join(left, "\n  "))
	}
	// With no job left, gc releases what runsc keeps for all sandboxes
	// (its null network namespace).
	if out, err := exec.Command(d.bin, "--config", d.config, "gc").CombinedOutput(); err != nil {
		t.Errorf("gc after the test: %v: %s", err, out)
	}
}

// daemonEnv is a host configuration with a daemon socket and a policy, and
// the running daemon.
type daemonEnv struct {
	*env
	bin                             string // a copy of the binary the job users can execute
	config, socket, audit, profiles string
	cmd                             *exec.Cmd
	log                             *syncBuffer
}

// daemonConfig writes a host config (readable by the job users, who read it
// to find the socket) with a policy: daemonUser and daemonUser2 may run the
// default profile with --cpus up to 1; the admin profile dir holds one
// extra profile nobody is granted.
func daemonConfig(t *testing.T, e *env) *daemonEnv {
	t.Helper()
	daemonUsers(t)
	if _, err := user.LookupGroup(daemonGroup); err != nil {
		if out, err := exec.Command("groupadd", daemonGroup).CombinedOutput(); err != nil {
			t.Fatalf("groupadd: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("groupdel", daemonGroup).Run() })
	}
	if out, err := exec.Command("usermod", "-a", "-G", daemonGroup, daemonUser2).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "st-e2e-daemon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	profiles := filepath.Join(dir, "profiles")
	os.Mkdir(profiles, 0o755)
	if err := os.WriteFile(filepath.Join(profiles, "restricted.yaml"), []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(e.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "securetrain"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &daemonEnv{env: e, bin: filepath.Join(dir, "securetrain"), config: filepath.Join(dir, "securetrain.yaml"), socket: filepath.Join(dir, "run", "securetrain.sock"),
		audit: filepath.Join(dir, "audit.jsonl"), profiles: profiles}
	body := fmt.Sprintf(`version: 1
runsc: %s
state_dir: %s
data_dir: %s
profile_dir: %s
audit:
  path: %s
daemon:
  socket: %s
  metrics_addr: 127.0.0.1:0
policy:
  rules:
    - users: [%s]
      groups: [%s]
      profiles: [default]
      max_cpus: 1
`, e.runsc, daemonStateDir, daemonDataDir, profiles, d.audit, d.socket, daemonUser, daemonGroup)
	if err := os.WriteFile(d.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.assertClean(t) }) // after the daemon's stop (cleanups run last first)
	return d
}

// start starts the daemon as a real process; with notify, NOTIFY_SOCKET
// points at a socket the test reads, and start returns once READY=1 came.
func (d *daemonEnv) start(t *testing.T, notify bool) {
	t.Helper()
	c := exec.Command(d.bin, "--config", d.config, "daemon")
	c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.log = &syncBuffer{}
	c.Stdout, c.Stderr = d.log, d.log
	var ready chan string
	if notify {
		ns := filepath.Join(t.TempDir(), "notify.sock")
		pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c.Env = append(c.Env, "NOTIFY_SOCKET="+ns)
		ready = make(chan string, 1)
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := pc.Read(buf)
				if err != nil {
					close(ready)
					return
				}
				if strings.Contains(string(buf[:n]), "READY=1") {
					ready <- string(buf[:n])
					return
				}
			}
		}()
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = c
	t.Cleanup(func() { d.stop(t) })
	if notify {
		select {
		case msg, ok := <-ready:
			if !ok {
				t.Fatal("notify socket closed before READY=1")
			}
			t.Logf("sd_notify: %q", msg)
		case <-time.After(2 * time.Minute):
			t.Fatalf("no READY=1 from the daemon; its log:\n%s", d.log)
		}
		return
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(d.log.String(), "msg=listening") {
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start listening:\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the daemon with SIGTERM (its jobs are stopped with it).
func (d *daemonEnv) stop(t *testing.T) {
	if d.cmd == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
}

// userCmd runs securetrain as name (uid, gid and groups of the user) in dir.
func (d *daemonEnv) userCmd(t *testing.T, name, dir string, args ...string) *exec.Cmd {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	c := exec.Command(d.bin, append([]string{"--config", d.config}, args...)...)
	c.Dir = dir
	c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + u.HomeDir, "USER=" + name}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	c.WaitDelay = 5 * time.Second
	return c
}

func (d *daemonEnv) userRun(t *testing.T, name, dir string, args ...string) result {
	t.Helper()
	c := d.userCmd(t, name, dir, args...)
	out, errb := &syncBuffer{}, &syncBuffer{}
	c.Stdout, c.Stderr = out, errb
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errorsAs(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("securetrain %v as %s: %v", args, name, err)
	}
	return result{out.String(), errb.String(), code}
}

// userProject makes a code directory owned by name.
func userProject(t *testing.T, name string) string {
	t.Helper()
	return userTempDir(t, name, "/tmp", "st-e2e-dproj-")
}

// userTempDir makes a directory under parent owned by name, removed at the
// end of the test.
func userTempDir(t *testing.T, name, parent, prefix string) string {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.Chown(dir, uid, gid)
	return dir
}

// liveJob is a job waiting on its stdin.
type liveJob struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer
}

func (d *daemonEnv) startWaitingJob(t *testing.T, name, dir string) *liveJob {
	t.Helper()
	c := d.userCmd(t, name, dir, "run", "--", "/bin/sh", "-c", "echo ready-$(id -un) groups $(id -G); read line; echo got-$line")
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	j := &liveJob{cmd: c, stdin: in, out: &syncBuffer{}}
	c.Stdout, c.Stderr = j.out, j.out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); c.Process.Signal(syscall.SIGTERM); c.Wait() })
	return j
}

// psIDs returns the job ids and users that ps shows.
func psRows(t *testing.T, r result) map[string]string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("ps: %s", r)
	}
	rows := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] != "ID" {
			rows[f[0]] = f[1]
		}
	}
	return rows
}

// TestDaemonTwoUsers: two unprivileged users run jobs at the same time
// through the daemon's socket; each job runs as its caller, each user sees
// only their own job in ps (root sees both), stdin/stdout pass through and
// the exit code comes back.
func TestDaemonTwoUsers(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dirA, dirB := userProject(t, daemonUser), userProject(t, daemonUser2)
	a := d.startWaitingJob(t, daemonUser, dirA)
	b := d.startWaitingJob(t, daemonUser2, dirB)
	waitFor(t, a.out, "ready-"+daemonUser)
	waitFor(t, b.out, "ready-"+daemonUser2)
	g, err := user.LookupGroup(daemonGroup)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(b.out.String()), g.Gid) {
		t.Errorf("%s's job lacks the supplementary group %s (%s): %s", daemonUser2, daemonGroup, g.Gid, b.out)
	}

	psA := psRows(t, d.userRun(t, daemonUser, dirA, "ps"))
	psB := psRows(t, d.userRun(t, daemonUser2, dirB, "ps"))
	psRoot := psRows(t, e.run(t, dirA, nil, "--config", d.config, "ps"))
	if len(psA) != 1 || len(psB) != 1 || len(psRoot) != 2 {
		t.Fatalf("ps: %s sees %v, %s sees %v, root sees %v; want one job each, root both", daemonUser, psA, daemonUser2, psB, psRoot)
	}
	var idA, idB string
	for id, u := range psA {
		idA = id
		if u != daemonUser {
			t.Errorf("%s's ps shows a job of %s", daemonUser, u)
		}
	}
	for id, u := range psB {
		idB = id
		if u != daemonUser2 {
			t.Errorf("%s's ps shows a job of %s", daemonUser2, u)
		}
	}
	// Another user's kill and logs: TestAttackCallerOtherUsersJob.
	if r := d.userRun(t, daemonUser, dirA, "logs", idA); r.code != 0 || !strings.Contains(r.stdout, "ready-"+daemonUser) {
		t.Errorf("%s reading own log: %s", daemonUser, r)
	}

	// Root stops job A with `securetrain kill`: through the daemon, so that
	// only A stops (a daemon job's launcher is the daemon itself).
	if r := e.run(t, dirA, nil, "--config", d.config, "kill", idA); r.code != 0 {
		t.Errorf("root kill: %s", r)
	}
	err = a.cmd.Wait()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 128+15 || !strings.Contains(a.out.String(), "job "+idA+" stopped by TERM") {
		t.Errorf("job A killed by root: %v\n%s", err, a.out)
	}
	// Job B goes on (a kill of the daemon would have stopped it too).
	fmt.Fprintln(b.stdin, "b")
	b.stdin.Close()
	if err := b.cmd.Wait(); err != nil || !strings.Contains(b.out.String(), "got-b") {
		t.Errorf("job B: %v\n%s", err, b.out)
	}
	// Metrics: the daemon logs the address it got for metrics_addr :0.
	if i := strings.Index(d.log.String(), "msg=\"metrics listening\" addr="); i < 0 {
		t.Errorf("no metrics address in the daemon's log:\n%s", d.log)
	} else {
		addr := strings.Fields(d.log.String()[i+len("msg=\"metrics listening\" addr="):])[0]
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`securetrain_jobs_ended_total{outcome="success"} 1`, `securetrain_jobs_ended_total{outcome="killed"} 1`, "securetrain_launch_duration_seconds_count 2"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q:\n%s", want, body)
			}
		}
	}
	// Exit codes come back.
	if r := d.userRun(t, daemonUser, dirA, "run", "--", "/bin/sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exit code through the daemon: %s", r)
	}
	d.stop(t)
	audit, _ := os.ReadFile(d.audit)
	for _, want := range []string{`"type":"job_start","job":"` + idA + `","user":"` + daemonUser, `"type":"exit","job":"` + idB + `","user":"` + daemonUser2,
		`"type":"kill","job":"` + idA + `","user":"` + daemonUser + `","data":{"signal":"SIGTERM","reason":"user","by":"root"}`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}
	if r := e.run(t, dirA, nil, "--config", d.config, "audit", "verify", d.audit); r.code != 0 {
		t.Errorf("audit verify: %s", r)
	}
}

// TestDaemonRefusals: each refusal at the policy and the privilege boundary
// is one line, exit 125, and leaves nothing.
func TestDaemonRefusals(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	secret, err := os.MkdirTemp("/root", "st-e2e-secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secret) })
	os.Chmod(secret, 0o700)
	if err := os.Symlink("/root", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	other := userProject(t, daemonUser2)
	os.Chmod(other, 0o700)
	prof := filepath.Join(dir, "mine.yaml")
	os.WriteFile(prof, []byte("version: 1\n"), 0o644)
	cases := []struct {
		flags []string
		want  string
	}{
		{[]string{"--profile", "restricted"}, `securetrain: run: profile "restricted" is not allowed for user ` + daemonUser + ` (allowed: default): refused by the host policy`},
		{[]string{"--profile", "mine.yaml"}, "securetrain: run: profile file mine.yaml is outside the admin's profile directory " + d.profiles},
		{[]string{"--cpus", "2"}, "securetrain: run: --cpus 2: above the bound 1 the host policy sets for user " + daemonUser + " (policy.rules[0].max_cpus)"},
		{[]string{"--memory", "1GiB"}, "securetrain: run: --memory: not allowed for user " + daemonUser + ": the host policy sets no policy.rules[0].max_memory"},
		{[]string{"--user", daemonUser2}, "securetrain: run: --user " + daemonUser2 + ": only root and members of the admin groups (daemon.admin_groups) may use it"},
		{[]string{"--data", secret}, "securetrain: run: --data " + secret + ": user " + daemonUser + " cannot reach it (permission denied)"},
		{[]string{"--data", "/root/st-e2e-no-such-dir"}, "securetrain: run: --data /root/st-e2e-no-such-dir: user " + daemonUser + " cannot reach it (permission denied)"},
		{[]string{"--python", "/root/venv/bin/python"}, "securetrain: run: --python /root/venv/bin/python: user " + daemonUser + " cannot reach it (permission denied)"},
		{[]string{"--data", other}, "securetrain: run: --data " + other + ": user " + daemonUser + " cannot read it: permission denied"},
		{[]string{"--data", "escape"}, "securetrain: run: --data " + filepath.Join(dir, "escape") + ": user " + daemonUser + " cannot read it (it resolves to /root): permission denied"},
		{[]string{"--output", "/etc"}, "securetrain: run: output /etc: user " + daemonUser + " cannot write it: permission denied"},
		{[]string{"--output", "escape/out"}, "securetrain: run: output " + filepath.Join(dir, "escape/out") + ": user " + daemonUser + " cannot create it"},
		{[]string{"--code", other}, "securetrain: run: code directory " + other + ": user " + daemonUser + " cannot read it: permission denied"},
		{[]string{"--report", "/root/r.json"}, "securetrain: run: --report /root/r.json: user " + daemonUser + " cannot write it: permission denied (its directory)"},
	}
	for _, c := range cases {
		args := append(append([]string{"run"}, c.flags...), "--", "/bin/true")
		r := d.userRun(t, daemonUser, dir, args...)
		if r.code != 125 || !strings.HasPrefix(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("flags %v: want exit 125 and one line starting\n%q\ngot %s", c.flags, c.want, r)
		}
	}
	if _, err := os.Stat(filepath.Join("/root", "out")); err == nil {
		t.Error("a refused --output created /root/out")
	}
	// Each refusal is in the audit log, who tried what: on its own line
	// within the rate (10 at once), counted in a summary past it (written
	// at the latest when the daemon stops).
	d.stop(t)
	audit, _ := os.ReadFile(d.audit)
	n := strings.Count(string(audit), `"type":"refused","user":"`+daemonUser+`"`)
	for _, ev := range auditEvents(t, d.audit, "refused_summary") {
		if data, _ := ev["data"].(map[string]any); ev["user"] == daemonUser {
			n += int(data["count"].(float64))
		}
	}
	if n != len(cases) {
		t.Errorf("audit log holds %d refusals of %s, want %d:\n%s", n, daemonUser, len(cases), audit)
	}
	// Without a daemon socket the one-line needs-root refusal stays.
	r := d.userRun(t, daemonUser, dir, "run", "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "needs root") {
		t.Errorf("no daemon: %s", r)
	}
}

// TestDaemonKilledThenRestarted: a SIGKILLed daemon leaves its job's state
// behind; the restarted daemon runs gc before it reports READY=1 on the
// notify socket, so by then no runsc container, process or state is left.
func TestDaemonKilledThenRestarted(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	j := d.startWaitingJob(t, daemonUser, dir)
	waitFor(t, j.out, "ready-"+daemonUser)
	ents, _ := os.ReadDir(filepath.Join(daemonStateDir, "jobs"))
	if len(ents) != 1 {
		t.Fatalf("want one job's state, got %d", len(ents))
	}
	killed := ents[0].Name()
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	if err := j.cmd.Wait(); err == nil {
		t.Error("the client of a job whose daemon died must fail")
	}
	if ents, _ := os.ReadDir(filepath.Join(daemonStateDir, "jobs")); len(ents) != 1 {
		t.Fatalf("a SIGKILLed daemon leaves its job's state for gc; found %d", len(ents))
	}

	d.start(t, true) // returns at READY=1
	if ents, _ := os.ReadDir(filepath.Join(daemonStateDir, "jobs")); len(ents) != 0 {
		t.Errorf("READY=1 came before gc removed the dead job's state (%d left)", len(ents))
	}
	out, _ := exec.Command(e.runsc, "--root", filepath.Join(daemonStateDir, "runsc"), "list", "-quiet").Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("READY=1 came with runsc containers left: %s", s)
	}
	if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/securetrain/" + killed); len(cgs) > 0 {
		t.Errorf("READY=1 came with the killed job's cgroups left: %v", cgs)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), filepath.Join(daemonStateDir, "stage", killed)) {
		t.Errorf("READY=1 came with the killed job's staging mounts left")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, _ := exec.Command("pgrep", "-af", daemonStateDir+"/runsc").Output()
		if len(ps) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphaned sandbox processes after restart:\n%s", ps)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The restarted daemon serves.
	if r := d.userRun(t, daemonUser, dir, "run", "--", "/bin/true"); r.code != 0 {
		t.Errorf("job after restart: %s", r)
	}
	d.stop(t)
	if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/securetrain/" + killed); len(cgs) > 0 {
		t.Errorf("the killed job's cgroups came back: %v", cgs)
	}
	if audit, _ := os.ReadFile(d.audit); !strings.Contains(string(audit), `"type":"gc"`) {
		t.Errorf("the restart's gc is not in the audit log")
	}
}

// TestDaemonTTY: on a terminal, a job through the daemon gets a terminal of
// the caller's size, its output (colours included) streams back, and its
// exit code returns.
func TestDaemonTTY(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		testenv.Missing(t, "no /dev/ptmx: %v", err)
	}
	master := os.NewFile(uintptr(mfd), "ptmx")
	defer master.Close()
	unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0)
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 22, Col: 77})
	u, _ := user.Lookup(daemonUser)
	uid, _ := strconv.Atoi(u.Uid)
	os.Chown(slave.Name(), uid, -1)
	c := d.userCmd(t, daemonUser, dir, "run", "--", "/bin/sh", "-c", `test -t 0 && echo stdin-is-tty; stty size; printf '\033[31mred\033[0m\n'; exit 4`)
	c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
	c.SysProcAttr.Setpgid = false
	c.SysProcAttr.Setsid, c.SysProcAttr.Setctty = true, true
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := &syncBuffer{}
	go io.Copy(out, master)
	err = c.Wait()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("exit: %v, want 4\n%s", err, out)
	}
	waitFor(t, out, "\x1b[31mred\x1b[0m")
	for _, want := range []string{"stdin-is-tty", "22 77"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
}

// TestDaemonSignalsAndHangup: SIGINT to the client reaches the job, whose
// exit code comes back; a client that dies (SIGKILL) stops its job.
func TestDaemonSignalsAndHangup(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	c := d.userCmd(t, daemonUser, dir, "run", "--", "/bin/sh", "-c", `trap 'echo got-int; exit 9' INT; echo ready; sleep 100 & wait`)
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	c.Process.Signal(syscall.SIGINT)
	err := c.Wait()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 9 || !strings.Contains(out.String(), "got-int") {
		t.Errorf("SIGINT forwarded: %v\n%s", err, out)
	}

	c = d.userCmd(t, daemonUser, dir, "run", "--", "/bin/sh", "-c", "echo ready; exec sleep 1000")
	out = &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	deadline := time.Now().Add(time.Minute)
	for {
		ents, _ := os.ReadDir(filepath.Join(daemonStateDir, "jobs"))
		if len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job of a client that died is still there:\n%s", d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDaemonWatchdog: under a service manager's watchdog (WATCHDOG_USEC),
// the daemon pings at half the interval while it answers through its
// socket, and stops pinging once it cannot be reached there (its socket
// removed), so systemd would restart it.
func TestDaemonWatchdog(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	ns := filepath.Join(t.TempDir(), "notify.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := exec.Command(d.bin, "--config", d.config, "daemon")
	c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "NOTIFY_SOCKET=" + ns, "WATCHDOG_USEC=1000000"}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.log = &syncBuffer{}
	c.Stdout, c.Stderr = d.log, d.log
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = c
	t.Cleanup(func() { d.stop(t) })
	// pings counts WATCHDOG=1 datagrams until the deadline or the enough-th.
	pings := func(until time.Time, enough int) (n int, ready bool) {
		buf := make([]byte, 4096)
		for n < enough {
			pc.SetReadDeadline(until)
			m, err := pc.Read(buf)
			if err != nil {
				break
			}
			msg := string(buf[:m])
			ready = ready || strings.Contains(msg, "READY=1")
			if strings.Contains(msg, "WATCHDOG=1") {
				n++
			}
		}
		return n, ready
	}
	if n, ready := pings(time.Now().Add(20*time.Second), 5); !ready || n < 5 {
		t.Fatalf("READY=1 %v and %d watchdog pings in 20 s; want ready and pings every 0.5 s\n%s", ready, n, d.log)
	}
	if err := os.Remove(d.socket); err != nil {
		t.Fatal(err)
	}
	pings(time.Now().Add(1500*time.Millisecond), 1<<30) // one may be on its way
	if n, _ := pings(time.Now().Add(3*time.Second), 1<<30); n != 0 {
		t.Errorf("%d watchdog pings from a daemon nobody can reach; want none", n)
	}
	if !strings.Contains(d.log.String(), "not pinging the watchdog") {
		t.Errorf("the daemon did not say why it stopped pinging:\n%s", d.log)
	}
}

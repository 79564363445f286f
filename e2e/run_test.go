package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStdioAndExitCodes(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	r := e.job(t, dir, nil, "/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
	if r.code != 3 || strings.TrimSpace(r.stdout) != "to-stdout" || !strings.Contains(r.stderr, "to-stderr") {
		t.Fatalf("want exit 3 with the job's stdout and stderr passed through, got %s", r)
	}
	r = e.job(t, dir, nil, "/bin/sh", "-c", "kill -KILL $$")
	if r.code != 128+9 {
		t.Fatalf("a job killed by SIGKILL must exit 137, got %s", r)
	}
	r = e.job(t, dir, nil, "/bin/true")
	if r.code != 0 {
		t.Fatalf("/bin/true: %s", r)
	}
}

// TestClosedStdout: `securetrain run -- JOB | head -1`. The reader going
// away stops the job as closing its terminal would (SIGTERM, then SIGKILL
// after the stop grace), and the launcher lives to tear it down: it is not
// killed by SIGPIPE, and nothing is left for gc. (Inside gVisor the job's
// write to the closed pipe fails with EIO, not SIGPIPE: a job that ignores
// write errors would otherwise run on with nobody reading.)
func TestClosedStdout(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, dir, nil, "run", "--user", jobUser, "--", "/bin/sh", "-c", "while :; do echo line; done")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "line\n" {
		t.Fatalf("first line %q: %v", line, err)
	}
	out.Close()
	code, err := exitCode(c.Wait())
	if err != nil {
		t.Fatal(err)
	}
	if ws := c.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("the launcher died of %v; stderr: %.500s", ws.Signal(), errb.String())
	}
	if code != 128+15 && code != 128+9 {
		t.Errorf("exit %d, want the job stopped (143, or 137 after the grace); stderr: %.500s", code, errb.String())
	}
	assertClean(t, e)
}

// TestStrictUmask: an admin's root shell with a hardened umask (027, 077)
// runs `sudo securetrain run`. What the launcher makes for the sandbox (the
// root skeleton, /etc, mount points) must still be readable by the job: the
// job starts in its code directory and reads /etc/passwd and the loader
// cache as it does with umask 022.
func TestStrictUmask(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	for _, mask := range []string{"027", "077"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c := e.cmd(ctx, dir, nil, "run", "--user", jobUser, "--", "/bin/sh", "-c", "pwd; id -un; cat /etc/ld.so.cache /etc/hostname >/dev/null && echo readable")
		c.Path, c.Args = "/bin/sh", append([]string{"sh", "-c", "umask " + mask + "; exec \"$0\" \"$@\""}, c.Args...)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		code, err := exitCode(c.Run())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if want := dir + "\n" + jobUser + "\nreadable\n"; code != 0 || out.String() != want {
			t.Errorf("umask %s: exit %d, stdout %q (want %q); stderr: %.400s", mask, code, out.String(), want, errb.String())
		}
	}
	assertClean(t, e)
}

func TestRefusalsAreOneLineAndLeaveNothing(t *testing.T) {
	e := setup(t)
	dir := e.project(t, map[string]string{"bad.yaml": "version: 1\nlimits:\n  cpus: lots\n"})
	cases := []struct {
		flags []string
		want  string
	}{
		{[]string{"--profile", "bad.yaml"}, "securetrain: run: bad.yaml:3: limits.cpus: want a number, got \"lots\"\n"},
		{[]string{"--profile", "nosuch"}, "securetrain: run: profile \"nosuch\": no such profile; available: default, distributed, gpu (or give a file path)\n"},
		{[]string{"--memory", "lots"}, "securetrain: run: --memory: want a size such as 512MiB or 8GiB, got \"lots\"\n"},
		{[]string{"--data", "/nonexistent-dataset"}, "securetrain: run: --data /nonexistent-dataset: no such file or directory\n"},
		{[]string{"--gpus", "1"}, "securetrain: run: --gpus 1: no NVIDIA GPU on this host (no /dev/nvidiaN); use --gpus none or a CPU profile\n"},
		{[]string{"--env", "LD_PRELOAD=/x.so"}, "securetrain: run: --env LD_PRELOAD: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)\n"},
	}
	for _, c := range cases {
		r := e.job(t, dir, c.flags, "/bin/true")
		if r.code != 125 || r.stderr != c.want {
			t.Errorf("flags %v: want exit 125 and\n%q\ngot exit %d and\n%q", c.flags, c.want, r.code, r.stderr)
		}
	}
	r := e.run(t, dir, nil, "run", "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "jobs never run as root; pass --user") {
		t.Errorf("root without sudo or --user must be refused: %s", r)
	}
}

func TestNotRootSaysWhatItNeeds(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	c := e.cmd(context.Background(), dir, nil, "run", "--", "/bin/true")
	c.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(e.uid), Gid: uint32(e.gid)}
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 125 || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), "needs root") {
		t.Fatalf("a non-root run must be refused in one line saying what it needs; got %v: %q", err, out)
	}
}

func TestFilesystemView(t *testing.T) {
	e := setup(t)
	// Canaries the job must not see: root's home, another user's home, the
	// caller's keys inside the code directory, the host's shadow file.
	canaryRoot := "/root/st-e2e-canary"
	os.WriteFile(canaryRoot, []byte("root secret"), 0o600)
	t.Cleanup(func() { os.Remove(canaryRoot) })
	canaryOther := filepath.Join(e.otherHome, "canary")
	os.WriteFile(canaryOther, []byte("other secret"), 0o644)
	t.Cleanup(func() { os.Remove(canaryOther) })
	dir := e.project(t, map[string]string{
		".ssh/id_ed25519":  "PRIVATE KEY",
		".aws/credentials": "[default]\naws_secret_access_key=x",
		".netrc":           "machine example.com password hunter2",
		"train.py":         "code",
	})
	script := strings.Join([]string{
		"test -e " + canaryRoot + " && echo LEAK-root",
		"test -e " + canaryOther + " && echo LEAK-other",
		"test -e /etc/shadow && echo LEAK-shadow",
		"ls -A .ssh .aws | grep -q . && echo LEAK-keys",
		"test -s .netrc && echo LEAK-netrc",
		"touch code-dir-write 2>/dev/null && echo LEAK-writable",
		"echo hi > outputs/out.txt && echo outputs-ok",
		"echo cache > $HOME/.cache-test && echo home-ok",
		"echo t > /tmp/t && echo tmp-ok",
		"test -f train.py && echo code-visible",
		"id -u; pwd",
	}, "; ")
	r := e.job(t, dir, nil, "/bin/sh", "-c", script)
	if r.code != 0 {
		t.Fatalf("job failed: %s", r)
	}
	if strings.Contains(r.stdout, "LEAK") {
		t.Fatalf("the job saw what it must not:\n%s", r.stdout)
	}
	for _, want := range []string{"outputs-ok", "home-ok", "tmp-ok", "code-visible", "\n" + dir + "\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("want %q in the job's output: %s", want, r)
		}
	}
	if !strings.HasPrefix(strings.Split(r.stdout, "code-visible\n")[1], strings.TrimSpace(itoa(e.uid))) {
		t.Errorf("job must run as uid %d: %s", e.uid, r.stdout)
	}
	fi, err := os.Stat(filepath.Join(dir, "outputs", "out.txt"))
	if err != nil {
		t.Fatalf("output file not on the host: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != e.uid {
		t.Errorf("output file owned by uid %d, want the job's user %d", st.Uid, e.uid)
	}
	if _, err := os.Stat(filepath.Join(dir, "code-dir-write")); err == nil {
		t.Error("the job wrote into the read-only code directory")
	}
}

func TestEnvironmentIsAllowlisted(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	r := e.run(t, dir, []string{"VAULT_TOKEN=hvs.launcher-secret", "LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6", "AWS_SECRET_ACCESS_KEY=k", "https_proxy=http://proxy:3128", "LC_ALL=C.UTF-8"},
		"run", "--user", jobUser, "--cpus", "3", "--env", "MY_SETTING=1", "--", "/usr/bin/env")
	if r.code != 0 {
		t.Fatalf("env: %s", r)
	}
	for _, bad := range []string{"VAULT_TOKEN", "LD_PRELOAD", "AWS_SECRET_ACCESS_KEY", "https_proxy", "hvs.launcher-secret"} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("%s reached the job:\n%s", bad, r.stdout)
		}
	}
	for _, want := range []string{"LC_ALL=C.UTF-8", "MY_SETTING=1", "OMP_NUM_THREADS=3", "MKL_NUM_THREADS=3", "TF_NUM_INTRAOP_THREADS=3", "USER=" + jobUser,
		"MALLOC_TRIM_THRESHOLD_=536870912", "MALLOC_MMAP_THRESHOLD_=33554432"} { // the default profile's 8 GiB / 16
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("want %s in the job's environment:\n%s", want, r.stdout)
		}
	}
	// The user's own thread setting wins.
	r = e.run(t, dir, []string{"OMP_NUM_THREADS=1"}, "run", "--user", jobUser, "--", "/usr/bin/env")
	if !strings.Contains(r.stdout, "OMP_NUM_THREADS=1\n") {
		t.Errorf("the caller's OMP_NUM_THREADS must win: %s", r.stdout)
	}
}

func TestRunsUnderGVisor(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	r := e.job(t, dir, nil, "/bin/sh", "-c", "dmesg; uname -r")
	host, _ := exec.Command("uname", "-r").Output()
	if r.code != 0 || !strings.Contains(r.stdout, "gVisor") || strings.Contains(r.stdout, strings.TrimSpace(string(host))) {
		t.Fatalf("the job's kernel must be gVisor's (host kernel %s): %s", host, r)
	}
}

func TestPyTorchTrainingWritesCheckpoint(t *testing.T) {
	e := setup(t)
	src, err := os.ReadFile("../examples/train.py")
	if err != nil {
		t.Fatal(err)
	}
	py := pythonWithTorch(t)
	dir := e.project(t, map[string]string{"train.py": string(src)})
	report := filepath.Join(dir, "outputs", "result.json")
	r := e.job(t, dir, []string{"--cpus", "2", "--report", "outputs/result.json"}, py, "train.py", "--steps", "100")
	if r.code != 0 || !strings.Contains(r.stdout, "checkpoint outputs/model.pt") {
		t.Fatalf("training failed: %s", r)
	}
	if fi, err := os.Stat(filepath.Join(dir, "outputs", "model.pt")); err != nil || fi.Size() < 1000 {
		t.Fatalf("checkpoint missing: %v", err)
	}
	var res struct {
		ExitCode int    `json:"exit_code"`
		Outcome  string `json:"outcome"`
		Log      string `json:"log"`
	}
	b, err := os.ReadFile(report)
	if err != nil || json.Unmarshal(b, &res) != nil || res.Outcome != "exited" || res.ExitCode != 0 {
		t.Fatalf("report %s: %v %s", report, err, b)
	}
	// The per-job log holds the job's output and belongs to the job's user.
	logb, err := os.ReadFile(res.Log)
	if err != nil || !strings.Contains(string(logb), "steps/s") {
		t.Fatalf("job log %s: %v", res.Log, err)
	}
	r2 := e.run(t, dir, nil, "logs", filepath.Base(filepath.Dir(res.Log)))
	if !strings.Contains(r2.stdout, "steps/s") {
		t.Fatalf("securetrain logs: %s", r2)
	}
}

func TestWallTimeKills(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	start := time.Now()
	r := e.job(t, dir, []string{"--wall-time", "2s"}, "/bin/sleep", "60")
	if r.code != 124 || !strings.Contains(r.stderr, "limits.wall_time exceeded") {
		t.Fatalf("want exit 124 and a wall-time message, got %s", r)
	}
	if time.Since(start) > 45*time.Second {
		t.Fatalf("the wall-time kill took %s", time.Since(start))
	}
}

func TestSignalsAreForwarded(t *testing.T) {
	e := setup(t)
	dir := e.project(t, map[string]string{"trap.sh": "trap 'echo got-TERM; exit 7' TERM\necho ready\nwhile :; do sleep 0.1; done\n"})
	c := e.cmd(context.Background(), dir, nil, "run", "--user", jobUser, "--", "/bin/sh", "trap.sh")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	c.Process.Signal(syscall.SIGTERM)
	err := c.Wait()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(out.String(), "got-TERM") {
		t.Fatalf("SIGTERM must reach the job, whose exit code comes back: %v\n%s", err, out)
	}

	// A job that ignores SIGINT: the second Ctrl-C kills it.
	dir2 := e.project(t, map[string]string{"ignore.sh": "trap '' INT TERM\necho ready\nwhile :; do sleep 0.1; done\n"})
	c = e.cmd(context.Background(), dir2, nil, "run", "--user", jobUser, "--", "/bin/sh", "ignore.sh")
	out = &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	c.Process.Signal(syscall.SIGINT)
	time.Sleep(300 * time.Millisecond)
	c.Process.Signal(syscall.SIGINT)
	err = c.Wait()
	if !errorsAs(err, &ee) || ee.ExitCode() != 137 {
		t.Fatalf("a second SIGINT must kill the job (137): %v\n%s", err, out)
	}
}

func TestTerminal(t *testing.T) {
	e := setup(t)
	script := testenvLook(t, "script")
	dir := e.project(t, nil)
	cmdline := e.bin + " --config " + e.config + " run --user " + jobUser + " -- /bin/sh -c 'test -t 0 && test -t 1 && echo is-a-tty; stty size'"
	c := exec.Command(script, "-qec", cmdline, "/dev/null")
	c.Dir = dir
	c.Env = []string{"PATH=/usr/bin:/bin", "TERM=xterm"}
	out, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is-a-tty") {
		t.Fatalf("with a terminal the job must get one: %v\n%s", err, out)
	}
}

func TestPsAndKill(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	c := e.cmd(context.Background(), dir, nil, "run", "--user", jobUser, "--", "/bin/sh", "-c", "echo ready; exec sleep 60")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	ps := e.run(t, dir, nil, "ps")
	lines := strings.Split(strings.TrimSpace(ps.stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "sleep 60") || !strings.Contains(lines[1], "running") {
		t.Fatalf("ps must list the running job: %s", ps)
	}
	id := strings.Fields(lines[1])[0]
	if k := e.run(t, dir, nil, "kill", id); k.code != 0 {
		t.Fatalf("kill: %s", k)
	}
	err := c.Wait()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 128+15 || !strings.Contains(out.String(), "stopped by TERM") {
		t.Fatalf("a killed job ends with 143 and says it was stopped: %v\n%s", err, out)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The job's resources and teardown, attacked from inside the job (a
// trojaned package) and by what its caller wires it to: the host's disk,
// the job's slot after its death, the read-only code directory, the
// caller's credentials in it.

// diskUsage is the bytes the files under dir take on disk (allocated
// blocks, so sparse files count what they really hold).
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return n
}

// fillLine matches what the fill script prints for one place.
var fillLine = regexp.MustCompile(`(?m)^fill (\S+) rc=(\d+) bytes=(\d+) enospc=(\S*)$`)

// TestAttackJobFillsWritablePlaces: the job writes past the bound of every
// place it may write besides its outputs directory: $HOME (once a bind
// mount of the host's disk), /tmp, /dev/shm, and its stdout (the job log
// on the host's disk). Each write ends in ENOSPC at the profile's bound, and
// the host's disk under data_dir grows by at most the log's cap.
func TestAttackJobFillsWritablePlaces(t *testing.T) {
	e := setup(t)
	const bound = 64 << 20
	prof := "version: 1\nname: fill\nlimits: {memory: 1GiB, scratch: 64MiB, home: 64MiB, shm: 64MiB}\nsandbox: {log_limit: 1MiB}\n"
	script := `fill() { out=$(dd if=/dev/zero of="$2" bs=1M count=96 2>&1); rc=$?
  n=$(stat -c %s "$2"); case "$out" in *"No space left"*) sp=yes;; *) sp=no;; esac
  echo "fill $1 rc=$rc bytes=$n enospc=$sp"; }
fill home "$HOME/fill"
echo filled; sleep 3; rm -f "$HOME/fill"
fill tmp /tmp/fill; rm -f /tmp/fill
fill shm /dev/shm/fill; rm -f /dev/shm/fill
head -c 20000000 /dev/zero | tr '\0' x
`
	dir := e.project(t, map[string]string{"fill.yaml": prof, "fill.sh": script})
	before := diskUsage(dataDir)
	c := e.cmd(context.Background(), dir, nil, "run", "--user", jobUser, "--profile", "fill.yaml", "--", "/bin/sh", "fill.sh")
	out, errb := &syncBuffer{}, &syncBuffer{}
	c.Stdout, c.Stderr = out, errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "filled")
	// $HOME is full now: what of it is on the host's disk?
	during := diskUsage(dataDir) - before
	code, err := exitCode(c.Wait())
	if err != nil || code != 0 {
		t.Fatalf("the job must survive filling its scratch (exit %d, %v): %s", code, err, errb)
	}
	got := map[string][]string{}
	for _, m := range fillLine.FindAllStringSubmatch(out.String(), -1) {
		got[m[1]] = m[2:]
	}
	for _, place := range []string{"home", "tmp", "shm"} {
		t.Run(place, func(t *testing.T) {
			g := got[place]
			if g == nil {
				t.Fatalf("no fill line for %s: %.2000s", place, out)
			}
			n, _ := strconv.ParseInt(g[1], 10, 64)
			attackFigure(t, "bytes_written=%d bound=%d enospc=%s", n, bound, g[2])
			if g[0] == "0" || g[2] != "yes" || n > bound {
				t.Errorf("writing 96MiB into %s under a 64MiB bound must end in ENOSPC at the bound: rc %s, %d bytes, ENOSPC %s", place, g[0], n, g[2])
			}
		})
	}
	t.Run("host_disk", func(t *testing.T) {
		after := diskUsage(dataDir) - before
		attackFigure(t, "host_disk_bytes_during_full_home=%d after_20MB_of_stdout=%d log_limit=%d", during, after, 1<<20)
		if during > bound/4 || after > 2<<20 {
			t.Errorf("the host's disk under %s grew by %d bytes with $HOME full and %d after 20MB of output (log cap 1MiB)", dataDir, during, after)
		}
	})
}

// stateGone waits (at most limit) until no job is left in the state
// directory state, and returns when that was.
func stateGone(t *testing.T, state string, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if ents, _ := os.ReadDir(filepath.Join(state, "jobs")); len(ents) == 0 {
			return time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the job's state is still in %s %s later", state, limit)
	return time.Time{}
}

// stalledRun starts c (a `securetrain run` of a job that floods its
// stdout) with a stdout that nobody reads, waits for the job's end (death
// in deathLog), and returns how long after it the job's state in state was
// gone and c had exited, and c's exit code.
func stalledRun(t *testing.T, c *exec.Cmd, deathLog *syncBuffer, death, state string) (held, exit time.Duration, code int) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close() // never read: the stalled consumer
	c.Stdout = pw
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	waitFor(t, deathLog, death)
	killed := time.Now()
	gone := stateGone(t, state, 60*time.Second)
	select {
	case err := <-exited:
		code, _ = exitCode(err)
	case <-time.After(30 * time.Second):
		c.Process.Kill()
		t.Fatalf("securetrain still runs 30s after the job's state was gone:\n%s", deathLog)
	}
	return gone.Sub(killed), time.Since(killed), code
}

// TestAttackHostStallsStdout: `securetrain run --wall-time 3s -- yes |
// sleep`: the consumer never reads. The job is killed at its wall time, and
// its slot (state, and with it GPUs, address and allocation) must be gone
// within the output deadline, not when the consumer goes away.
func TestAttackHostStallsStdout(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := e.cmd(ctx, dir, nil, "run", "--user", jobUser, "--wall-time", "3s", "--", "/usr/bin/yes")
	errb := &syncBuffer{}
	c.Stderr = errb
	held, exit, code := stalledRun(t, c, errb, "terminating job", stateDir)
	attackFigure(t, "slot_held_after_kill_ms=%d launcher_exit_after_kill_ms=%d", held.Milliseconds(), exit.Milliseconds())
	if code != 124 || !strings.Contains(errb.String(), "output cut") {
		t.Errorf("want exit 124 and the cut said on stderr: exit %d\n%s", code, errb)
	}
	if ps := e.run(t, dir, nil, "ps"); strings.Count(strings.TrimSpace(ps.stdout), "\n") != 0 {
		t.Errorf("ps still lists the job: %s", ps)
	}
}

// TestAttackDaemonStallsStdout: the same through the daemon, as an
// unprivileged caller whose stdout (passed to the daemon) nobody reads, and
// a job that floods it and ends (its shell, the sandbox's first process,
// exits): the daemon's run of the job, and what it releases only after it
// (GPUs), must end within the output deadline of the job's end.
func TestAttackDaemonStallsStdout(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	c := d.userCmd(t, daemonUser, dir, "run", "--", "/bin/sh", "-c", "yes & sleep 2; echo ending >&2")
	errb := &syncBuffer{}
	c.Stderr = errb
	held, exit, code := stalledRun(t, c, errb, "ending", daemonStateDir)
	attackFigure(t, "slot_held_after_end_ms=%d daemon_reply_after_end_ms=%d", held.Milliseconds(), exit.Milliseconds())
	if code != 0 || !strings.Contains(errb.String(), "output cut") {
		t.Errorf("want exit 0 and the cut said on the caller's stderr: exit %d\n%s", code, errb)
	}
}

// TestAttackHostReportFIFO: --report names a FIFO nobody reads. The launcher
// must not hang in open(2) (a daemon would hold the job's GPUs meanwhile):
// it says the report was not written and exits.
func TestAttackHostReportFIFO(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	fifo := filepath.Join(dir, "report.fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Lchown(fifo, e.uid, e.gid)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := e.cmd(ctx, dir, nil, "run", "--user", jobUser, "--report", "report.fifo", "--", "/bin/true")
	errb := &syncBuffer{}
	c.Stderr = errb
	err := c.Run()
	end := time.Now()
	if ctx.Err() != nil {
		t.Fatalf("securetrain hung on a --report FIFO without a reader:\n%s", errb)
	}
	m := regexp.MustCompile(`job ([0-9a-f]{12}): --report`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("stderr must say the report was not written: %v\n%s", err, errb)
	}
	b, rerr := os.ReadFile(filepath.Join(dataDir, "jobs", m[1], "result.json"))
	var res struct {
		Ended time.Time `json:"ended"`
	}
	if rerr != nil || json.Unmarshal(b, &res) != nil {
		t.Fatalf("result.json: %v", rerr)
	}
	attackFigure(t, "launcher_exit_after_job_end_ms=%d", end.Sub(res.Ended).Milliseconds())
	if code, _ := exitCode(err); code != 0 {
		t.Errorf("the job succeeded: its exit code must stay 0, got %d", code)
	}
}

// TestAttackJobForkBomb: a shell fork bomb under --pids 128 ends badly for
// the job alone: the pids limit is hit, and the next job on the node runs.
func TestAttackJobForkBomb(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	start := time.Now()
	r := e.job(t, dir, []string{"--pids", "128", "--wall-time", "60s", "--report", "outputs/report.json"},
		"/bin/sh", "-c", "b() { b | b & }; b; sleep 50")
	if r.code == 0 {
		t.Fatalf("a fork bomb must not end well: %s", r)
	}
	rep := readOutputsReport(t, dir)
	// Either the pids limit ends the sandbox (exit 124) or the shell, out
	// of processes, gives up (exit 2): the bomb never outlives its limit.
	attackFigure(t, "exit=%d pids_max_hit=%d ended_after_ms=%d", r.code, rep.Usage.PidsMaxHit, time.Since(start).Milliseconds())
	// The node stays usable: the next job runs.
	if r2 := e.job(t, dir, nil, "/bin/echo", "still-usable"); r2.code != 0 || !strings.Contains(r2.stdout, "still-usable") {
		t.Fatalf("after a fork bomb the next job must run: %s", r2)
	}
}

// TestAttackJobMemoryBalloon: a job allocating three times its memory
// limit ends as an OOM kill reported as such, at the limit.
func TestAttackJobMemoryBalloon(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	r := e.job(t, dir, []string{"--memory", "200MiB", "--report", "outputs/report.json"},
		"/usr/bin/python3", "-c", "x = bytearray(600 << 20); print('survived')")
	rep := readOutputsReport(t, dir)
	attackFigure(t, "mem_peak=%d limit=%d exit=%d", rep.Usage.MemPeak, 200<<20, r.code)
	if r.code != 124 || strings.Contains(r.stdout, "survived") || !rep.Usage.OOMKilled || rep.Outcome != "limit" {
		t.Fatalf("a memory bomb must end as an OOM kill (exit 124, oom_killed): %s\n%+v", r, rep)
	}
	if len(rep.Violations) == 0 || rep.Violations[0].Limit != "limits.memory" || !strings.Contains(r.stderr, "limits.memory exceeded") {
		t.Fatalf("the violation must name limits.memory: %+v\n%s", rep.Violations, r.stderr)
	}
}

// TestAttackJobSymlinkedCredentials: the caller's keys reach the code
// directory through links, as dotfile managers (GNU stow) make them:
// .aws -> dotfiles/aws and .netrc -> dotfiles/netrc inside it, .ssh -> the
// caller's real ~/.ssh-real outside it. A job reading every name gets none
// of the keys.
func TestAttackJobSymlinkedCredentials(t *testing.T) {
	e := setup(t)
	dir := e.project(t, map[string]string{
		"dotfiles/aws/credentials": "aws_secret_access_key=LINKED-SECRET-1",
		"dotfiles/netrc":           "machine x password LINKED-SECRET-2",
		"train.py":                 "code",
	})
	real := filepath.Join(e.home, ".ssh-real")
	os.MkdirAll(real, 0o700)
	os.WriteFile(filepath.Join(real, "id_ed25519"), []byte("LINKED-SECRET-3"), 0o600)
	os.Chown(real, e.uid, e.gid)
	t.Cleanup(func() { os.RemoveAll(real) })
	for name, target := range map[string]string{".aws": "dotfiles/aws", ".netrc": "dotfiles/netrc", ".ssh": real} {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		os.Lchown(p, e.uid, e.gid)
	}
	r := e.job(t, dir, nil, "/bin/sh", "-c",
		"cat .aws/credentials .netrc .ssh/id_ed25519 dotfiles/aws/credentials dotfiles/netrc "+real+"/id_ed25519 2>/dev/null; test -f train.py && echo code-visible")
	n := 0
	for i := 1; i <= 3; i++ {
		if strings.Contains(r.stdout, "LINKED-SECRET-"+strconv.Itoa(i)) {
			n++
		}
	}
	attackFigure(t, "secrets_read=%d of 3", n)
	if n != 0 || !strings.Contains(r.stdout, "code-visible") {
		t.Fatalf("the job read linked credentials (or lost its code): %s", r)
	}
}

// TestAttackJobWritesCodeDir: the job tries to change its read-only code
// directory by every path that leads there: directly, through the outputs
// directory's "..", /proc/self/root, /proc/self/cwd, and by chmod.
func TestAttackJobWritesCodeDir(t *testing.T) {
	e := setup(t)
	dir := e.project(t, map[string]string{"train.py": "code"})
	paths := []string{dir + "/w1", "outputs/../w2", "/proc/self/root" + dir + "/w3", "/proc/self/cwd/w4", "/proc/1/root" + dir + "/w5"}
	script := "mkdir -p outputs; for p in " + strings.Join(paths, " ") + "; do echo x > $p 2>/dev/null && echo wrote-$p; done; " +
		"chmod 777 train.py 2>/dev/null && echo chmod-ok; echo pwned >> train.py 2>/dev/null && echo append-ok; echo done"
	r := e.job(t, dir, nil, "/bin/sh", "-c", script)
	landed := 0
	for i := range paths {
		if _, err := os.Stat(filepath.Join(dir, "w"+strconv.Itoa(i+1))); err == nil {
			landed++
		}
	}
	fi, _ := os.Stat(filepath.Join(dir, "train.py"))
	b, _ := os.ReadFile(filepath.Join(dir, "train.py"))
	attackFigure(t, "files_landed=%d of %d train_py_mode=%o train_py_bytes=%d", landed, len(paths), fi.Mode().Perm(), len(b))
	if r.code != 0 || !strings.Contains(r.stdout, "done") || landed != 0 || fi.Mode().Perm() != 0o644 || string(b) != "code" {
		t.Fatalf("the code directory must stay read-only: %s", r)
	}
}

// TestAttackCallerOutputEscapes: --output is how the job gets a writable
// directory on the host; the caller points it at /root through "..", and
// through /proc/self/root. Both are refused, as the job's user could not
// create them, and nothing is created.
func TestAttackCallerOutputEscapes(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	targets := []string{"/root/st-e2e-escape-dotdot" + suffix, "/root/st-e2e-escape-proc" + suffix}
	for _, p := range targets {
		t.Cleanup(func() { os.RemoveAll(p) })
	}
	up := strings.Repeat("../", strings.Count(dir, "/"))
	created := 0
	for i, out := range []string{up + targets[0][1:], "/proc/self/root" + targets[1]} {
		r := e.job(t, dir, []string{"--output", out}, "/bin/sh", "-c", "echo x > "+targets[i]+"/f && echo wrote")
		if _, err := os.Stat(targets[i]); err == nil {
			created++
		}
		if r.code != 125 || !strings.Contains(r.stderr, "must be able to create and write it") {
			t.Errorf("--output %s must be refused: %s", out, r)
		}
	}
	attackFigure(t, "dirs_created=%d of %d", created, len(targets))
	if created != 0 {
		t.Fatalf("an --output escape created a directory in /root")
	}
}

// TestAttackControlTraining: real PyTorch training with DataLoader workers
// (two processes sharing batches through /dev/shm) and a cache in $HOME,
// under the default profile with its scratch, home and shm bounds: it must
// finish, exit 0, and never be killed.
func TestAttackControlTraining(t *testing.T) {
	e := setup(t)
	py := pythonWithTorch(t)
	train := `import os, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0)
x = torch.randn(2048, 32); y = (x @ torch.randn(32, 4)).argmax(1)
dl = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, num_workers=2)
m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
opt = torch.optim.SGD(m.parameters(), lr=0.1)
first = last = None
for epoch in range(2):
    for xb, yb in dl:
        loss = nn.functional.cross_entropy(m(xb), yb)
        opt.zero_grad(); loss.backward(); opt.step()
        first = first if first is not None else loss.item()
        last = loss.item()
cache = os.path.join(os.environ["HOME"], ".cache", "st")
os.makedirs(cache, exist_ok=True)
torch.save(m.state_dict(), os.path.join(cache, "m.pt"))
torch.save(m.state_dict(), "outputs/model.pt")
print(f"loss {first:.3f} -> {last:.3f} shm {len(os.listdir('/dev/shm'))} ok", flush=True)
assert last < first
`
	dir := e.project(t, map[string]string{"train.py": train})
	start := time.Now()
	r := e.job(t, dir, []string{"--report", "outputs/report.json"}, py, "train.py")
	rep := readOutputsReport(t, dir)
	attackFigure(t, "exit=%d outcome=%s wall_ms=%d violations=%d", r.code, rep.Outcome, time.Since(start).Milliseconds(), len(rep.Violations))
	if r.code != 0 || rep.Outcome != "exited" || len(rep.Violations) != 0 || !strings.Contains(r.stdout, " ok") {
		t.Fatalf("benign training must finish untouched: %s\n%+v", r, rep)
	}
	if _, err := os.Stat(filepath.Join(dir, "outputs", "model.pt")); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
}

// TestAttackDaemonDataUnderOpt: an unprivileged daemon caller names a
// --data source under /opt, a host system directory, in a place they may
// write (a conda install of theirs). The source is staged like any other:
// what runsc mounts is the staging point of the checked directory, never
// the name again (which the caller could swap for a link to /root).
func TestAttackDaemonDataUnderOpt(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	// The caller's own directory in /opt (a conda install of theirs).
	base := userTempDir(t, daemonUser, "/opt", "st-e2e-opt-")
	ds := userTempDir(t, daemonUser, base, "ds-")
	if err := os.WriteFile(filepath.Join(ds, "sample"), []byte("dataset"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := userProject(t, daemonUser)
	c := d.userCmd(t, daemonUser, dir, "run", "--data", ds+":/data/x", "--", "/bin/sh", "-c", "cat /data/x/sample; echo; echo ready; sleep 30")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Signal(syscall.SIGTERM); c.Wait() })
	waitFor(t, out, "ready")
	specs, _ := filepath.Glob(filepath.Join(daemonStateDir, "jobs", "*", "bundle", "config.json"))
	unstaged, found := 0, 0
	for _, p := range specs {
		b, _ := os.ReadFile(p)
		var sp struct {
			Mounts []struct{ Destination, Source string }
		}
		json.Unmarshal(b, &sp)
		for _, m := range sp.Mounts {
			if m.Destination != "/data/x" {
				continue
			}
			found++
			if !strings.HasPrefix(m.Source, filepath.Join(daemonStateDir, "stage")+"/") {
				unstaged++
				t.Errorf("runsc mounts /data/x from %s, not from a staging point", m.Source)
			}
		}
	}
	attackFigure(t, "unstaged_user_sources=%d of %d", unstaged, found)
	if found == 0 || !strings.Contains(out.String(), "dataset") {
		t.Fatalf("the job's spec has no /data/x mount (%d specs): %s", len(specs), out)
	}
}

// TestAttackJobWritesSharedEtc: the job's /etc is a copy of the host's
// allowlisted entries that every job shares (sandbox.HostEtcView). A
// trojaned package in job A tries to change it for job B (a CA certificate
// added, the loader cache or nsswitch.conf replaced, a file planted): every
// write fails, job B sees the view as it was, and on the host the copy is
// root's and writable by no one else.
func TestAttackJobWritesSharedEtc(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	attack := `n=0
for f in /etc/ssl/certs/evil.pem /etc/ld.so.cache /etc/nsswitch.conf /etc/planted; do
  if (echo evil >> "$f") 2>/dev/null; then n=$((n+1)); fi
done
if mkdir /etc/ssl/evil 2>/dev/null; then n=$((n+1)); fi
if ln -s /tmp /etc/evil 2>/dev/null; then n=$((n+1)); fi
echo "writes=$n"
cat /etc/nsswitch.conf | md5sum`
	a := e.job(t, dir, nil, "/bin/sh", "-c", attack)
	if a.code != 0 || !strings.Contains(a.stdout, "writes=0\n") {
		t.Fatalf("job A changed its /etc: %s", a)
	}
	b := e.job(t, dir, nil, "/bin/sh", "-c", "ls /etc/planted /etc/ssl/certs/evil.pem 2>&1; cat /etc/nsswitch.conf | md5sum")
	if strings.Count(b.stdout, "No such file") != 2 {
		t.Errorf("job B sees what job A tried to plant: %s", b)
	}
	if sumA, sumB := lastLine(a.stdout), lastLine(b.stdout); sumA != sumB {
		t.Errorf("nsswitch.conf differs between the jobs: %q %q", sumA, sumB)
	}
	writable := 0
	filepath.WalkDir(filepath.Join(stateDir, "etc"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) == nil && d.Type()&fs.ModeSymlink == 0 && (st.Uid != 0 || st.Mode&0o022 != 0) {
			writable++
			t.Errorf("%s: uid %d mode %o: the shared copy must be root's and writable by no one else", p, st.Uid, st.Mode&0o777)
		}
		return nil
	})
	attackFigure(t, "writes_by_job=%s host_entries_writable_by_others=%d", strings.TrimPrefix(strings.SplitN(a.stdout, "\n", 2)[0], "writes="), writable)
	assertClean(t, e)
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/slurmtest"
)

// Attacks against the daemon: an unprivileged local user talks to its
// socket, with the securetrain client or with a client of its own
// (attackerPy, which speaks the protocol directly and sends what the
// client never would).

// attackerPy is a raw client of the daemon's protocol (one JSON object per
// SOCK_SEQPACKET message, stdin/stdout/stderr as SCM_RIGHTS), run as an
// unprivileged user:
//
//	flood N SIZE     N run requests, each with a SIZE-byte argument
//	raw JSON         one request; prints the reply
//	idle N           N connections that send nothing; prints how many the
//	                 daemon holds open after 1s, and again on each stdin line
//	frames N         N connections that each send a 1 MiB + 1 byte frame,
//	                 then N that send 1 MiB of garbage; prints the replies
const attackerPy = `import json, socket, sys, time
path, mode = sys.argv[1], sys.argv[2]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(path)
    return s
def ask(req):
    s = conn()
    socket.send_fds(s, [json.dumps(req).encode()], [0, 1, 2])
    s.settimeout(60)
    rep = s.recv(1 << 21)
    s.close()
    return json.loads(rep) if rep else {}
if mode == "flood":
    n, big = int(sys.argv[3]), "A" * int(sys.argv[4])
    refused, last = 0, ""
    for i in range(n):
        r = ask({"op": "run", "run": {"command": ["python3", big], "dir": "/tmp"}})
        if r.get("error"):
            refused, last = refused + 1, r["error"]
    print(json.dumps({"sent": n, "refused": refused, "last": last[:400]}))
elif mode == "raw":
    print(json.dumps(ask(json.loads(sys.argv[3]))))
elif mode == "idle":
    cs = []
    for i in range(int(sys.argv[3])):
        try:
            cs.append(conn())
        except OSError as e:
            print("connect", i, e, flush=True)
            break
    def held():
        k = 0
        for c in cs:
            c.setblocking(False)
            try:
                c.recv(1 << 16, socket.MSG_PEEK)
            except BlockingIOError:
                k += 1
            except OSError:
                pass
        return k
    time.sleep(1)
    print("held", held(), "of", len(cs), flush=True)
    for line in sys.stdin:
        print("held", held(), "of", len(cs), flush=True)
elif mode == "frames":
    n, answers = int(sys.argv[3]), {}
    for body in (b"{" + b" " * (1 << 20), b"\xff" * (1 << 20)):
        cs = []
        for i in range(n):
            try:
                s = conn()
                s.send(body)
                cs.append(s)
            except OSError as e:
                k = "send:" + type(e).__name__
                answers[k] = answers.get(k, 0) + 1
        for s in cs:
            s.settimeout(30)
            try:
                r = s.recv(1 << 16)
                k = "reply" if r else "closed"
            except OSError as e:
                k = type(e).__name__
            answers[k] = answers.get(k, 0) + 1
            s.close()
    print(json.dumps(answers))
`

// attacker starts attackerPy as name against the daemon's socket.
func (d *daemonEnv) attacker(t *testing.T, name string, args ...string) *attackerProc {
	t.Helper()
	script := filepath.Join(tempTree(t, "st-e2e-attacker-", map[string]string{"attacker.py": attackerPy}), "attacker.py")
	c := d.userCmd(t, name, "/tmp", "run")
	c.Path, c.Args = "/usr/bin/python3", append([]string{"python3", "-I", script, d.socket}, args...)
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errb := &syncBuffer{}
	c.Stderr = errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	p := &attackerProc{in: in, out: bufio.NewScanner(out), errb: errb}
	p.wait = func() error { in.Close(); return c.Wait() }
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return p
}

type attackerProc struct {
	in   interface{ Write([]byte) (int, error) }
	out  *bufio.Scanner
	errb *syncBuffer
	wait func() error
}

// line is the attacker's next output line.
func (p *attackerProc) line(t *testing.T) string {
	t.Helper()
	if !p.out.Scan() {
		t.Fatalf("attacker ended: %s", p.errb)
	}
	return p.out.Text()
}

// auditSize is the audit log's size now.
func (d *daemonEnv) auditSize() int64 {
	fi, err := os.Stat(d.audit)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// jobStates counts the daemon's job state directories.
func jobStates() int {
	ents, _ := os.ReadDir(filepath.Join(daemonStateDir, "jobs"))
	return len(ents)
}

// timed runs securetrain as name and returns the result and how long it took.
func (d *daemonEnv) timed(t *testing.T, name, dir string, args ...string) (result, time.Duration) {
	t.Helper()
	t0 := time.Now()
	r := d.userRun(t, name, dir, args...)
	return r, time.Since(t0)
}

// A user no policy rule names asks for a job with a 100 KB command: one
// refusal line, nothing started, and the audit log records who tried what
// in a bounded line (the command cut, with its size and digest).
func TestAttackCallerUnnamedUser(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	before := d.auditSize()
	r := d.userRun(t, otherUser, "/tmp", "run", "--", "/usr/bin/python3", strings.Repeat("A", 100_000))
	grew := d.auditSize() - before
	attackFigure(t, "audit_bytes=%d jobs_started=%d", grew, jobStates())
	if r.code != 125 || !strings.Contains(r.stderr, "user "+otherUser+" may not run jobs through the daemon: no rule under policy.rules") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("a user no rule names: want exit 125 and one refusal line, got exit %d: %.300s", r.code, r.stderr)
	}
	if grew <= 0 || grew > 4<<10 {
		t.Errorf("one refused 100 KB request grew the audit log by %d bytes; want a record of at most 4 KiB", grew)
	}
	ev := auditEvents(t, d.audit, "refused")
	if len(ev) != 1 || !strings.Contains(fmt.Sprint(ev[0]["data"]), "…[command cut: 2 arguments, 100016 bytes, sha256:") {
		t.Errorf("the refusal's record: %s", strings.ReplaceAll(fmt.Sprint(ev), strings.Repeat("A", 200), ""))
	}
}

// The same user floods the socket with 200 refused run requests of 100 KB
// each through a client of its own. Every one is refused; the audit log
// grows by the rate limit's few lines and one summary line that counts the
// rest, not by 20 MB.
func TestAttackCallerRefusalFlood(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	before := d.auditSize()
	const n = 200
	a := d.attacker(t, otherUser, "flood", strconv.Itoa(n), "100000")
	var got struct {
		Sent, Refused int
		Last          string
	}
	if err := json.Unmarshal([]byte(a.line(t)), &got); err != nil {
		t.Fatal(err)
	}
	a.wait()
	d.stop(t) // writes the summary of what was counted
	grew := d.auditSize() - before
	var counted float64
	for _, ev := range auditEvents(t, d.audit, "refused_summary") {
		data, _ := ev["data"].(map[string]any)
		counted += data["count"].(float64)
	}
	lines := len(auditEvents(t, d.audit, "refused"))
	attackFigure(t, "requests=%d refused=%d audit_bytes=%d lines=%d counted=%v", got.Sent, got.Refused, grew, lines, counted)
	if got.Refused != n || !strings.Contains(got.Last, "may not run jobs through the daemon") {
		t.Errorf("%d of %d flood requests refused (last: %s)", got.Refused, n, got.Last)
	}
	if grew > 64<<10 {
		t.Errorf("%d refused 100 KB requests grew the audit log by %d bytes; want at most 64 KiB", n, grew)
	}
	if lines+int(counted) != n {
		t.Errorf("%d refusals on their own line + %v counted in summaries != %d refused: a refusal vanished from the record", lines, counted, n)
	}
}

// A caller asks for a profile outside the admin's profile directory in every
// spelling: another user's readable profile file, a path that climbs into
// the admin directory to a profile the caller is not granted, and a
// symlink to one. None is loaded.
func TestAttackCallerProfileOutsideProfileDir(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	other := userProject(t, daemonUser2)
	theirs := filepath.Join(other, "theirs.yaml")
	os.WriteFile(theirs, []byte("version: 1\nlimits:\n  cpus: 2\n"), 0o644)
	os.Symlink(filepath.Join(d.profiles, "restricted.yaml"), filepath.Join(dir, "link.yaml"))
	climb, _ := filepath.Rel(dir, filepath.Join(d.profiles, "restricted.yaml"))
	cases := []struct{ profile, want string }{
		{theirs, "is outside the admin's profile directory"},
		{"link.yaml", "is outside the admin's profile directory"},
		{climb, `profile "restricted" is not allowed for user ` + daemonUser},
		{filepath.Join(d.profiles, "..", filepath.Base(d.profiles), "restricted.yaml"), `profile "restricted" is not allowed for user ` + daemonUser},
		{"../../../../../../etc/passwd", "is outside the admin's profile directory"},
	}
	loaded := 0
	for _, c := range cases {
		r := d.userRun(t, daemonUser, dir, "run", "--profile", c.profile, "--", "/bin/true")
		if r.code == 0 {
			loaded++
		}
		if r.code != 125 || !strings.Contains(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("--profile %s: want exit 125 and one line with %q, got %s", c.profile, c.want, r)
		}
	}
	attackFigure(t, "profiles_loaded=%d/%d", loaded, len(cases))
}

// A caller asks to run as root or as another user, with the client's flag
// and with fields only a hand-made request carries (unrestricted network,
// another root filesystem, --learn, a relative working directory). Nothing
// runs.
func TestAttackCallerOtherIdentity(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	u2, _ := user.Lookup(daemonUser2)
	started := 0
	for _, who := range []string{"root", "0", daemonUser2, u2.Uid} {
		r := d.userRun(t, daemonUser, dir, "run", "--user", who, "--", "/usr/bin/id", "-u")
		if r.code != 125 || !strings.Contains(r.stderr, "--user "+who+": only root and members of the admin groups") {
			t.Errorf("--user %s: %s", who, r)
		}
		if r.code == 0 {
			started++
		}
	}
	adminOnly := "only root and members of the admin groups"
	for _, c := range []struct{ fields, want string }{
		{`"user":"root"`, adminOnly}, {`"unrestricted":true`, adminOnly}, {`"rootfs":"/"`, adminOnly}, {`"learn":true`, adminOnly},
	} {
		req := fmt.Sprintf(`{"op":"run","run":{"command":["/usr/bin/id","-u"],"dir":%q,%s}}`, dir, c.fields)
		a := d.attacker(t, daemonUser, "raw", req)
		rep := a.line(t)
		a.wait()
		if !strings.Contains(rep, c.want) {
			t.Errorf("raw request with %s: %s", c.fields, rep)
		}
		if strings.Contains(rep, `"exit"`) {
			started++
		}
	}
	r := d.userRun(t, daemonUser, dir, "run", "--", "/usr/bin/id", "-u")
	attackFigure(t, "runs_as_other_identity=%d", started)
	if u, _ := user.Lookup(daemonUser); r.code != 0 || strings.TrimSpace(r.stdout) != u.Uid {
		t.Errorf("control: the caller's own run: %s", r)
	}
}

// A caller asks to mount what only root can read: a root-only file, and a
// directory it can read that holds a root-only file and a symlink to
// /etc/shadow. The file is refused; inside the directory the job reads
// nothing of either.
func TestAttackCallerDataRootOnly(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	data := tempTree(t, "st-e2e-rootdata-", map[string]string{"public.txt": "public\n"})
	secret := filepath.Join(data, "secret.txt")
	os.WriteFile(secret, []byte("root-only-secret\n"), 0o600)
	os.Symlink("/etc/shadow", filepath.Join(data, "shadow"))
	for _, src := range []string{"/etc/shadow", secret} {
		r := d.userRun(t, daemonUser, dir, "run", "--data", src, "--", "/bin/true")
		if r.code != 125 || !strings.Contains(r.stderr, "--data "+src+": user "+daemonUser+" cannot read it") {
			t.Errorf("--data %s: %s", src, r)
		}
	}
	r := d.userRun(t, daemonUser, dir, "run", "--data", data+":/data/in", "--", "/bin/sh", "-c",
		"cat /data/in/public.txt; cat /data/in/secret.txt /data/in/shadow 2>/dev/null | wc -c | sed s/^/leaked=/")
	leaked := -1
	for _, l := range strings.Split(r.stdout, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "leaked="); ok {
			leaked, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	attackFigure(t, "root_only_bytes_read=%d", leaked)
	if r.code != 0 || !strings.Contains(r.stdout, "public") || leaked != 0 {
		t.Errorf("the readable directory: want public read and 0 bytes of the root-only files, got %s", r)
	}
}

// Another user goes after a running job: ps, kill (plain and --force),
// logs by its id and by ids that climb out of the job directory. The job
// neither dies nor shows, and no byte of its log leaks.
func TestAttackCallerOtherUsersJob(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dirA, dirB := userProject(t, daemonUser), userProject(t, daemonUser2)
	a := d.startWaitingJob(t, daemonUser, dirA)
	waitFor(t, a.out, "ready-"+daemonUser)
	var id string
	for k := range psRows(t, d.userRun(t, daemonUser, dirA, "ps")) {
		id = k
	}
	if rows := psRows(t, d.userRun(t, daemonUser2, dirB, "ps", "--all")); len(rows) != 0 {
		t.Errorf("%s's ps --all shows %v", daemonUser2, rows)
	}
	leaked := 0
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"kill", id}, "no such job"}, {[]string{"kill", "--force", id}, "no such job"}, {[]string{"logs", id}, "no log for job"},
		{[]string{"logs", "../" + id}, ""}, {[]string{"logs", "../jobs/" + id}, ""}, {[]string{"kill", "../" + id}, ""},
	} {
		r := d.userRun(t, daemonUser2, dirB, c.args...)
		leaked += strings.Count(r.stdout, "ready-")
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s %v on %s's job: %s", daemonUser2, c.args, daemonUser, r)
		}
	}
	fmt.Fprintln(a.stdin, "still-here")
	a.stdin.Close()
	err := a.cmd.Wait()
	attackFigure(t, "victim_killed=%t log_bytes_leaked=%d", err != nil, leaked)
	if err != nil || !strings.Contains(a.out.String(), "got-still-here") {
		t.Errorf("the victim's job after the attempts: %v\n%s", err, a.out)
	}
}

// A caller asks for egress the host policy does not grant it (its rule has
// no allow entries): a name, a wildcard, every address, and peers.
func TestAttackCallerAllowBeyondPolicy(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	granted := 0
	for _, flags := range [][]string{{"--allow", "evil.example.com:443"}, {"--allow", "*.example.com"}, {"--allow", "0.0.0.0/0"}, {"--peers", "10.0.0.0/8"}} {
		r := d.userRun(t, daemonUser, dir, append(append([]string{"run"}, flags...), "--", "/bin/true")...)
		if r.code == 0 {
			granted++
		}
		if r.code != 125 || !strings.Contains(r.stderr, flags[0]+" "+flags[1]+": not permitted for user "+daemonUser+" by the host policy") {
			t.Errorf("%v: %s", flags, r)
		}
	}
	attackFigure(t, "entries_granted=%d/4 jobs_started=%d", granted, jobStates())
}

// One user holds connections to the socket without a word (slowloris), a
// second sends oversized and garbage frames; a third user's ps still
// answers, the daemon holds at most 64 of the idle connections, and drops
// them after the request timeout.
func TestAttackCallerSlowloris(t *testing.T) {
	e := daemonSetup(t)
	d := daemonConfig(t, e)
	d.start(t, false)
	dir := userProject(t, daemonUser)
	const n = 300
	idle := d.attacker(t, otherUser, "idle", strconv.Itoa(n))
	first := idle.line(t)
	r, took := d.timed(t, daemonUser, dir, "ps")
	if r.code != 0 {
		t.Errorf("ps beside %d idle connections: %s", n, r)
	}
	frames := d.attacker(t, daemonUser2, "frames", "8") // another uid: otherUser's places are taken
	r2, took2 := d.timed(t, daemonUser, dir, "ps")
	answers := frames.line(t)
	frames.wait()
	if r2.code != 0 {
		t.Errorf("ps beside oversized frames: %s", r2)
	}
	time.Sleep(11 * time.Second) // the request timeout (10s) passes
	fmt.Fprintln(idle.in, "again")
	later := idle.line(t)
	idle.wait()
	var held, heldLater int
	fmt.Sscanf(first, "held %d", &held)
	fmt.Sscanf(later, "held %d", &heldLater)
	attackFigure(t, "idle_held=%d/%d held_after_timeout=%d victim_ps_ms=%d victim_ps_frames_ms=%d frames=%s", held, n, heldLater, took.Milliseconds(), took2.Milliseconds(), answers)
	if held > 64 || heldLater != 0 {
		t.Errorf("the daemon held %d of %d idle connections (want at most 64), and %d after the request timeout (want 0)", held, n, heldLater)
	}
	if took > 10*time.Second || took2 > 10*time.Second {
		t.Errorf("another user's ps took %v and %v beside the attack", took, took2)
	}
}

// Slurm: a caller inside a one-CPU allocation starts four one-CPU runs at
// once; a caller asks for GPUs its allocation lacks; a caller claims
// another user's running job through SLURM_* and --allocation; a daemon
// SIGKILLed under a running job leaves nothing held once it is back.
func TestAttackCallerSlurm(t *testing.T) {
	e, cl, d, u, dir := slurmDaemon(t)
	st := fmt.Sprintf("%s --config %s", e.bin, e.config)

	t.Run("AllocationOvercommit", func(t *testing.T) {
		script := fmt.Sprintf(`for i in 1 2 3 4; do %s run --cpus 1 -- /bin/sh -c "echo ran-$i; sleep 8" >o.$i 2>&1 & done; wait
for i in 1 2 3 4; do cat o.$i; done
%s run --cpus 1 -- /bin/echo after-end`, st, st)
		got := cl.Run(t, u, dir, "srun", "-c", "1", "--mem", "300M", "sh", "-c", script)
		ran, full := strings.Count(got, "ran-"), strings.Count(got, "the Slurm allocation is fully held by its running jobs")
		attackFigure(t, "concurrent_runs=%d/4 refused=%d", ran, full)
		if ran != 1 || full != 3 || !strings.Contains(got, "after-end") {
			t.Errorf("four one-CPU runs in one one-CPU allocation: want 1 run, 3 refused with the allocation full, then a run after the first ended:\n%s", got)
		}
	})

	t.Run("GPUsOutsideAllocation", func(t *testing.T) {
		script := fmt.Sprintf(`exec 2>&1; export SLURM_JOB_GPUS=0 SLURM_STEP_GPUS=0 CUDA_VISIBLE_DEVICES=0
for g in 1 0,1; do %s run --gpus $g -- /bin/true; echo "gpus=$g exit=$?"; done`, st)
		got := cl.Run(t, u, dir, "srun", "-c", "1", "--mem", "200M", "sh", "-c", script)
		granted := strings.Count(got, "exit=0")
		attackFigure(t, "gpu_runs_granted=%d/2", granted)
		if granted != 0 || strings.Count(got, "GPU(s) on this node") != 2 {
			t.Errorf("--gpus in an allocation without GPUs: want both refused naming the allocation's GPUs:\n%s", got)
		}
	})

	t.Run("ForgedOtherUsersJob", func(t *testing.T) {
		v, vdir := slurmtest.NewUser(t, slurmDaemonUser+"v")
		victim := cl.Sbatch(t, v, vdir, "exec sleep 300", "-c", "1", "--mem", "100M", "-o", "/dev/null")
		cl.WaitState(t, victim, "RUNNING")
		defer cl.Run(t, slurmtest.Root, cl.Dir, "scancel", strconv.FormatUint(victim, 10))
		forge := fmt.Sprintf("SLURM_JOB_ID=%d SLURM_JOBID=%d SLURM_JOB_UID=%d SLURM_CPUS_ON_NODE=2", victim, victim, v.UID)
		script := fmt.Sprintf(`exec 2>&1; export %s
%s run --allocation %d -- /bin/true; echo "alloc-exit=$?"
%s run -- /bin/true; echo "own-exit=$?"`, forge, st, victim, st)
		got := cl.Run(t, u, dir, "srun", "-c", "1", "--mem", "200M", "sh", "-c", script)
		var own uint64
		for _, ev := range auditEvents(t, d.audit, "slurm_job") {
			data, _ := ev["data"].(map[string]any)
			if fmt.Sprint(data["uid"]) == strconv.Itoa(u.UID) {
				own, _ = strconv.ParseUint(fmt.Sprint(data["slurm_job"]), 10, 64)
			}
			if fmt.Sprint(data["slurm_job"]) == strconv.FormatUint(victim, 10) {
				t.Errorf("a run was recorded in the victim's Slurm job %d: %v", victim, ev)
			}
		}
		attackFigure(t, "runs_in_victims_job=%d own_job=%d victim=%d", strings.Count(got, "alloc-exit=0"), own, victim)
		if !strings.Contains(got, fmt.Sprintf("--allocation %d: inside Slurm job", victim)) || !strings.Contains(got, "alloc-exit=125") ||
			!strings.Contains(got, "recorded as forged (slurm_env): SLURM_JOB_ID, SLURM_JOBID, SLURM_JOB_UID, SLURM_CPUS_ON_NODE") || !strings.Contains(got, "own-exit=0") || own == 0 || own == victim {
			t.Errorf("claiming Slurm job %d of %s: want --allocation refused, and the run in the caller's own job, recorded as forged:\n%s", victim, v.Name, got)
		}
	})

	t.Run("DaemonRestartReleases", func(t *testing.T) {
		out := filepath.Join(dir, "restart.out")
		script := fmt.Sprintf(`%s run --cpus 1 -- /bin/sh -c 'echo ready; exec sleep 300'
for i in $(seq 120); do
  if %s run --cpus 1 -- /bin/echo after-restart 2>err; then exit 0; fi
  cat err; sleep 0.5
done`, st, st)
		id := cl.Sbatch(t, u, dir, script, "-c", "1", "--mem", "200M", "-o", out)
		slurmtest.WaitFor(t, 2*time.Minute, "the sandboxed job to print ready", func() bool {
			b, _ := os.ReadFile(out)
			return strings.Contains(string(b), "ready")
		})
		d.cmd.Process.Signal(syscall.SIGKILL)
		d.cmd.Wait()
		d.start(t, true)
		got := waitJob(t, cl, id, out)
		full := strings.Count(got, "fully held")
		attackFigure(t, "refused_after_restart=%d", full)
		if !strings.Contains(got, "after-restart") || full != 0 {
			t.Errorf("a run in the same allocation after the daemon's restart: want it admitted:\n%s", got)
		}
		assertSlurmClean(t, e)
	})
}

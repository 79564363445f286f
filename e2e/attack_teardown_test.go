package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/securetrain/securetrain/internal/testenv"
)

// daemon runs a daemon on h (a copy of the binary its callers can execute).
func (h *tdHost) daemon(t *testing.T, e *env) *daemonEnv {
	t.Helper()
	bin, err := os.ReadFile(e.bin)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemonEnv{env: e, bin: filepath.Join(h.dir, "securetrain"), config: h.config, socket: h.socket, audit: h.audit, profiles: h.profiles}
	if err := os.WriteFile(d.bin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	d.start(t, false)
	return d
}

// pgLogin reports whether user/password still log in to pg.
func pgLogin(pg *testenv.PG, user, password string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.DSN(user, password))
	if err != nil {
		return false
	}
	c.Close(context.Background())
	return true
}

// TestAttackInsiderCutsVaultAtTeardown: a user's job leaks its leased
// database credentials, and Vault is cut (a reject rule on its port) just
// before the job ends, so that the revocation at teardown fails and the
// credentials would live to their lease TTL (1h). The daemon keeps the job's
// state and retries it every daemon.gc_interval (1s here): once Vault is
// back, the leaked login must die within a few seconds. The job's user
// cannot touch the kept state. Figure: seconds the leaked login still works
// after Vault is back.
func TestAttackInsiderCutsVaultAtTeardown(t *testing.T) {
	e := daemonSetup(t)
	daemonUsers(t)
	v, pg, f := vaultWithDatabase(t)
	h := newTDHost(t, e, f, "tdd", fmt.Sprintf("  gc_interval: 1s\npolicy:\n  rules:\n    - users: [%s]\n      profiles: [leftover]\n", daemonUser))
	d := h.daemon(t, e)
	dir := userProject(t, daemonUser)
	if err := os.WriteFile(filepath.Join(dir, "job.sh"), []byte(leftoverJob), 0o644); err != nil {
		t.Fatal(err)
	}
	c := d.userCmd(t, daemonUser, dir, "run", "--profile", "leftover", "--", "/bin/sh", "job.sh")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "outputs", "ready"), 2*time.Minute)
	dbUser, dbPass := readOut(dir, "dbuser"), readOut(dir, "dbpass")
	if !pgLogin(pg, dbUser, dbPass) {
		t.Fatal("the leaked login must work while the job runs")
	}

	lift := cutVault(t, v.Addr)
	os.WriteFile(filepath.Join(dir, "outputs", "go"), nil, 0o644)
	code, err := exitCode(c.Wait())
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || !strings.Contains(out.String(), "teardown: left ") {
		t.Errorf("the client must get the job's own code 3 and a note naming what remains: exit %d\n%s", code, out)
	}
	ents, _ := os.ReadDir(filepath.Join(h.state, "jobs"))
	if len(ents) != 1 {
		t.Fatalf("want the job's state kept for the retry, got %d states", len(ents))
	}
	acc := keptToken(t, h.state, ents[0].Name())
	// The job's user cannot make the daemon forget: the state is root's.
	if r := d.userRun(t, daemonUser, dir, "gc"); r.code == 0 {
		t.Errorf("gc by the job's user must be refused: %s", r)
	}
	// While Vault is cut the retries fail (each after the Vault client's
	// own retries) and the state stays.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.log.String(), "leftovers remain"); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's retry must report what remains while Vault is cut; its log:\n%s", d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(h.state, "jobs", ents[0].Name(), "state.json")); err != nil {
		t.Fatalf("a failed retry dropped the job's state: %v", err)
	}
	if !pgLogin(pg, dbUser, dbPass) {
		t.Fatal("the leaked login died while Vault was cut; the test proves nothing")
	}

	alive := revokedAfterVaultBack(t, lift, func() bool { return pgLogin(pg, dbUser, dbPass) }, d.log)
	attackFigure(t, "seconds_valid_after_vault_back=%.1f (gc_interval 1s; lease TTL otherwise 3600)", alive.Seconds())
	if _, err := v.Root.Auth().Token().LookupAccessor(acc); err == nil {
		t.Errorf("the job token (accessor %s) outlived the retry", acc)
	}
	waitStateGone(t, h.state)
}

// revokedAfterVaultBack lifts the cut to Vault and returns how long the
// leaked database login still works; the daemon's periodic retry must
// revoke it within 30 s.
func revokedAfterVaultBack(t *testing.T, lift func(), loginWorks func() bool, daemonLog fmt.Stringer) time.Duration {
	t.Helper()
	lift()
	back := time.Now()
	for loginWorks() {
		if time.Since(back) > 30*time.Second {
			t.Fatalf("the leaked login still works 30s after Vault is back: the daemon did not revoke the lease; its log:\n%s", daemonLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(back)
}

// waitStateGone waits up to 10 s for the kept job state under state to go
// once the retry revoked what it held.
func waitStateGone(t *testing.T, state string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if ents, _ := os.ReadDir(filepath.Join(state, "jobs")); len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon's retry revoked the token but kept the job's state")
		}
	}
}

// huntProfile reads one KV secret: the launcher logs in to Vault for it.
var huntProfile = vaultProfile("hunt", `  - path: secret/securetrain/app
    files: {api_key: /run/secrets/app/api_key}
`)

// huntJob looks for the launcher's Vault tokens (probes: their last 16
// characters) everywhere a job can read: environment, every process's
// environ and cmdline, the secrets mount, /etc, /run, /tmp, /var, homes; and
// reads the token file at its host path. It writes the bytes it matched.
const huntJob = `cd "$(dirname "$0")"
here=$(basename "$PWD")
{
  env
  cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n'
  timeout 60 grep -rhaF --exclude-dir="$here" --exclude-dir=proc --exclude-dir=sys -f probes /etc /run /tmp /var /home /root /opt /srv /mnt /dev/shm /.securetrain "$HOME" 2>/dev/null
  cat "$(cat tokpath)" 2>/dev/null
} | grep -oaF -f probes | tr -d '\n' | wc -c > outputs/found
grep -oaF -f probes probes | tr -d '\n' | wc -c > outputs/control
ls /run/secrets/app > outputs/delivered
`

// TestAttackJobReadsLauncherVaultToken: a trojaned job looks for the
// launcher's own Vault identity — the token in the host configuration's
// token_file and a VAULT_TOKEN in the launcher's environment — in its
// environment, /proc, the secrets mount and every file it can read. Figure:
// bytes of either token found (want 0).
func TestAttackJobReadsLauncherVaultToken(t *testing.T) {
	e := setup(t)
	v := testenv.StartVault(t)
	f := testenv.SetupVault(t, v, nil)
	h := newTDHost(t, e, f, "tdh", "")
	fileTok, _ := os.ReadFile(h.tokenFile)
	envTok := f.LauncherToken(t)
	ft := strings.TrimSpace(string(fileTok))
	probes := ft[len(ft)-16:] + "\n" + envTok[len(envTok)-16:] + "\n"
	dir := e.project(t, map[string]string{"hunt.yaml": huntProfile, "job.sh": huntJob, "probes": probes, "tokpath": h.tokenFile})
	r := e.withConfig(h.config).run(t, dir, []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + envTok},
		"run", "--user", jobUser, "--profile", "hunt.yaml", "--", "/bin/sh", "job.sh")
	if r.code != 0 || readOut(dir, "delivered") != "api_key" {
		t.Fatalf("the hunting job must run with its secret delivered: %s", r)
	}
	found, err := strconv.Atoi(readOut(dir, "found"))
	if err != nil || readOut(dir, "control") != "32" {
		t.Fatalf("the job's count %q (%v), control %q: the hunt must count the probes it sees (32 bytes in its own file)", readOut(dir, "found"), err, readOut(dir, "control"))
	}
	attackFigure(t, "bytes_found=%d", found)
	if found != 0 {
		t.Errorf("the job found %d bytes of the launcher's Vault tokens", found)
	}
}

// TestAttackHostKillsLauncherDuringVaultOutage: the launcher is SIGKILLed
// mid-run while Vault is cut, so nothing is revoked and the daemon's gc at
// its start fails too; the leaked login must still die soon after Vault is
// back (the daemon's periodic retry), not at the next daemon start. Figure:
// seconds the leaked login works after Vault is back.
func TestAttackHostKillsLauncherDuringVaultOutage(t *testing.T) {
	e := setup(t)
	v, pg, f := vaultWithDatabase(t)
	h := newTDHost(t, e, f, "tdk", "  gc_interval: 1s\n")
	dir := e.project(t, map[string]string{"job.sh": leftoverJob})
	c := e.withConfig(h.config).cmd(context.Background(), dir, nil, "run", "--user", jobUser, "--profile", "leftover", "--", "/bin/sh", "job.sh")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "outputs", "ready"), 2*time.Minute)
	dbUser, dbPass := readOut(dir, "dbuser"), readOut(dir, "dbpass")
	lift := cutVault(t, v.Addr)
	c.Process.Kill()
	c.Wait()

	d := h.daemon(t, e) // its gc at start cannot reach Vault
	if !strings.Contains(d.log.String(), "gc left state behind") || !pgLogin(pg, dbUser, dbPass) {
		t.Fatalf("with Vault cut the daemon's first gc must fail and the login live on; its log:\n%s", d.log)
	}
	attackFigure(t, "seconds_valid_after_vault_back=%.1f (gc_interval 1s)", revokedAfterVaultBack(t, lift, func() bool { return pgLogin(pg, dbUser, dbPass) }, d.log).Seconds())
	waitStateGone(t, h.state)
}

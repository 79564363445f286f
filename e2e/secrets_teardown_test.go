package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/internal/testenv"
)

// Teardown with Vault unreachable: the job's state, naming its token's
// accessor and lease ids, must outlive the launcher until gc (by hand, or the
// daemon's periodic retry) has revoked them.

// leftoverProfile leases a database role; the job hands its credentials to
// the test (as a job that leaks them would), then ends with its own code 3
// when told to.
var leftoverProfile = vaultProfile("leftover", `  - path: database/creds/dataset-reader
    files: {username: /run/secrets/db/username}
    env: {PGPASSWORD: password}
`)

// vaultProfile is a profile named name with the test Vault's job token role
// and the given secrets entries.
func vaultProfile(name, secrets string) string {
	return "version: 1\nname: " + name + `
limits: {wall_time: 10m}
vault:
  token_role: securetrain-job
  policies: [securetrain-job]
  ttl: 5m
secrets:
` + secrets
}

const leftoverJob = `cat /run/secrets/db/username > outputs/dbuser
printf %s "$PGPASSWORD" > outputs/dbpass
echo ready > outputs/ready
while [ ! -e outputs/go ]; do sleep 0.1; done
exit 3
`

// tdHost is a host configuration of its own (state and data directories
// apart from the harness's) whose Vault identity is a launcher token in a
// root-only file, as a site configures it: gc and the daemon find it there
// after the launcher is gone.
type tdHost struct {
	dir, config, state, data, profiles, socket, audit, tokenFile string
}

func newTDHost(t *testing.T, e *env, f *testenv.VaultFixture, name, extra string) *tdHost {
	t.Helper()
	dir, err := os.MkdirTemp("", "st-e2e-td-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the daemon's callers read the config
	h := &tdHost{dir: dir, config: filepath.Join(dir, "securetrain.yaml"), tokenFile: filepath.Join(dir, "vault-token"), profiles: filepath.Join(dir, "profiles"),
		state: "/run/securetrain-e2e-" + name + suffix, data: "/var/lib/securetrain-e2e-" + name + suffix,
		socket: filepath.Join(dir, "run", "securetrain.sock"), audit: filepath.Join(dir, "audit.jsonl")}
	os.Mkdir(h.profiles, 0o755)
	if err := os.WriteFile(filepath.Join(h.profiles, "leftover.yaml"), []byte(leftoverProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.tokenFile, []byte(f.LauncherToken(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`version: 1
runsc: %s
state_dir: %s
data_dir: %s
profile_dir: %s
audit:
  path: %s
vault:
  address: %s
  auth: {method: token, token_file: %s}
daemon:
  socket: %s
%s`, e.runsc, h.state, h.data, h.profiles, h.audit, f.Addr, h.tokenFile, h.socket, extra)
	if err := os.WriteFile(h.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if left := leftovers(e.runsc, h.state, h.data, false); len(left) > 0 {
			t.Errorf("leaked after test:\n  %s", strings.Join(left, "\n  "))
		}
		// Whatever a failed test left (Vault is back by now).
		exec.Command(e.bin, "--config", h.config, "gc").Run()
		os.RemoveAll(h.data)
	})
	return h
}

// cutVault rejects every TCP packet to Vault's port on loopback (a table of
// its own, scoped to that port only), as a firewall or an outage would; the
// returned lift removes it, and t.Cleanup always does.
func cutVault(t *testing.T, addr string) (lift func()) {
	t.Helper()
	u, err := url.Parse(addr)
	if err != nil || u.Port() == "" || u.Hostname() != "127.0.0.1" {
		t.Fatalf("vault address %q: want http://127.0.0.1:PORT", addr)
	}
	table := "st-e2e-vaultcut-" + u.Port()
	rules := fmt.Sprintf(`table inet %s {
	chain out {
		type filter hook output priority -10; policy accept;
		oifname "lo" ip daddr 127.0.0.1 tcp dport %s reject with tcp reset
	}
}
`, table, u.Port())
	c := exec.Command("nft", "-f", "-")
	c.Stdin = strings.NewReader(rules)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	lifted := false
	lift = func() {
		if lifted {
			return
		}
		if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
			t.Errorf("lift the Vault cut: %v: %s", err, out)
		}
		lifted = true
	}
	t.Cleanup(lift)
	return lift
}

// withConfig is e with another host configuration.
func (e *env) withConfig(config string) *env {
	c := *e
	c.config = config
	return &c
}

// waitFile waits until p exists.
func waitFile(t *testing.T, p string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s", p, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readOut reads a job's output file, trimmed.
func readOut(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "outputs", name))
	return strings.TrimSpace(string(b))
}

// record is a resource as the job's state and result name it.
type record struct {
	Kind  string
	Attrs map[string]string
}

// keptToken checks that the job's state stayed, unlocked, with status
// leftover, and returns the accessor of its Vault token.
func keptToken(t *testing.T, state, id string) string {
	t.Helper()
	dir := filepath.Join(state, "jobs", id)
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatalf("the job's state must stay for gc after a failed teardown: %v", err)
	}
	var st struct {
		Status    string
		Resources []record
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	acc := ""
	for _, r := range st.Resources {
		if r.Kind == "vault-token" && r.Attrs["accessor"] != "" && r.Attrs["leases"] != "" {
			acc = r.Attrs["accessor"]
		}
	}
	if st.Status != "leftover" || acc == "" {
		t.Fatalf("kept state: status %q, token accessor %q; want leftover and the accessor with its leases:\n%s", st.Status, acc, b)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("the kept state's lock is still held after the launcher ended: %v", err)
	}
	unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	return acc
}

// TestTeardownWithVaultUnreachableKeepsStateForGC: Vault is cut (a reject
// rule on its port) from just before the job ends until after the launcher
// exited. The launcher exits with the job's own code, names what remains in
// one stderr line and in the result record, and keeps the job's state
// (unlocked); gc with Vault still cut keeps it; once Vault is back, gc
// revokes the token by accessor, the database role is dropped, and the
// state goes.
func TestTeardownWithVaultUnreachableKeepsStateForGC(t *testing.T) {
	e := setup(t)
	v, pg, f := vaultWithDatabase(t)
	h := newTDHost(t, e, f, "td", "")
	dir := e.project(t, map[string]string{"job.sh": leftoverJob})

	he := e.withConfig(h.config)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := he.cmd(ctx, dir, nil, "run", "--user", jobUser, "--profile", "leftover",
		"--report", "outputs/report.json", "--", "/bin/sh", "job.sh")
	stderr := &syncBuffer{}
	c.Stdout, c.Stderr = stderr, stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "outputs", "ready"), 2*time.Minute)
	dbUser := readOut(dir, "dbuser")
	if dbUser == "" || !pg.RoleExists(t, dbUser) {
		t.Fatalf("the job's database role %q must exist while it runs", dbUser)
	}
	lift := cutVault(t, v.Addr)
	if err := os.WriteFile(filepath.Join(dir, "outputs", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, err := exitCode(c.Wait())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("launcher: exit %d, stderr:\n%s", code, stderr)
	if code != 3 {
		t.Errorf("the launcher must exit with the job's own code 3, got %d", code)
	}
	var res struct {
		ID       string
		Leftover []record
	}
	b, _ := os.ReadFile(filepath.Join(dir, "outputs", "report.json"))
	if err := json.Unmarshal(b, &res); err != nil || res.ID == "" {
		t.Fatalf("result record: %v: %s", err, b)
	}
	var warn []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "teardown: left ") {
			warn = append(warn, l)
		}
	}
	if len(warn) != 1 || !strings.Contains(warn[0], `vault-token "`+res.ID+`" accessor=`) {
		t.Errorf("want one stderr line naming the job's token that remains, got %q", warn)
	}
	acc := keptToken(t, h.state, res.ID)
	if len(res.Leftover) == 0 || !strings.Contains(string(b), acc) {
		t.Errorf("the result record must name what remains (the token %s): %s", acc, b)
	}
	if !pg.RoleExists(t, dbUser) {
		t.Fatal("the role is gone although Vault was cut; the test proves nothing")
	}

	// gc while Vault is still cut: nothing revoked, the state stays.
	if g := he.run(t, dir, nil, "gc"); g.code == 0 {
		t.Errorf("gc with Vault unreachable must fail: %s", g)
	}
	keptToken(t, h.state, res.ID)

	// Vault is back: gc revokes by accessor with the host's identity.
	lift()
	g := he.run(t, dir, nil, "gc")
	if g.code != 0 {
		t.Fatalf("gc after Vault is back: %s", g)
	}
	if pg.RoleExists(t, dbUser) {
		t.Errorf("gc left the job's Postgres role %s", dbUser)
	}
	if _, err := v.Root.Auth().Token().LookupAccessor(acc); err == nil {
		t.Errorf("the job token (accessor %s) is still alive after gc", acc)
	}
	if _, err := os.Stat(filepath.Join(h.state, "jobs", res.ID)); !os.IsNotExist(err) {
		t.Errorf("gc kept the state of a job it finished: %v", err)
	}
}

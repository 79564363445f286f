package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/securetrain/securetrain/internal/testenv"
)

const secretsProfile = `version: 1
name: secrets-e2e
limits: {wall_time: 10m}
vault:
  token_role: securetrain-job
  policies: [securetrain-job]
  ttl: 5m
secrets:
  - path: secret/securetrain/app
    files: {username: /run/secrets/app/username}
    env: {API_KEY: api_key}
  - path: database/creds/dataset-reader
    files: {username: /run/secrets/db/username, password: /run/secrets/db/password}
    env: {PGUSER: username, PGPASSWORD: password}
`

// secretsJob writes what the test needs to check into outputs: the file
// modes, the DB credentials (so the test can look the role up and use it)
// and whether anything of Vault's is visible.
const secretsJob = `set -e
stat -c '%a %U' /run/secrets/app/username > outputs/mode
cat /run/secrets/db/username > outputs/dbuser
printf %s "$PGPASSWORD" > outputs/dbpass
printf %s "$API_KEY" > outputs/apikey
env | grep -c '^VAULT_' > outputs/vaultvars || true
probe=$(cat probe)
grep -rl "$probe" /proc/self/environ /run/secrets 2>/dev/null > outputs/tokenseen || true
echo ready
if [ -n "$HOLD" ]; then while [ ! -e outputs/go ]; do sleep 0.1; done; fi
`

func TestSecretsEndToEnd(t *testing.T) {
	e := setup(t)
	v, pg, f := vaultWithDatabase(t)
	launcherToken := f.LauncherToken(t)
	vaultEnv := []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + launcherToken}

	dir := e.project(t, map[string]string{"secrets.yaml": secretsProfile, "job.sh": secretsJob, "probe": launcherToken[len(launcherToken)-12:]})
	report := filepath.Join(dir, "outputs", "report.json")
	r := e.run(t, dir, vaultEnv, "run", "--user", jobUser, "--profile", "secrets.yaml", "--report", "outputs/report.json", "--", "/bin/sh", "job.sh")
	if r.code != 0 {
		t.Fatalf("secrets job: %s", r)
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, "outputs", name))
		return strings.TrimSpace(string(b))
	}
	if got := read("mode"); got != "400 "+jobUser {
		t.Errorf("secret files must be mode 0400 and owned by the job's user, got %q", got)
	}
	if read("apikey") != f.KVData["api_key"] {
		t.Errorf("API_KEY must carry the KV value")
	}
	if read("vaultvars") != "0" || read("tokenseen") != "" {
		t.Errorf("Vault variables or the launcher's token reached the job: vars=%q seen=%q", read("vaultvars"), read("tokenseen"))
	}
	dbUser, dbPass := read("dbuser"), read("dbpass")
	if dbUser == "" || dbPass == "" {
		t.Fatal("no database credentials delivered")
	}
	// After the job: the Postgres role is gone and the job token is revoked.
	if pg.RoleExists(t, dbUser) {
		t.Errorf("Postgres role %s outlived the job", dbUser)
	}
	var res struct{ ID string }
	b, _ := os.ReadFile(report)
	json.Unmarshal(b, &res)
	if res.ID == "" {
		t.Fatalf("no job id in report: %s", b)
	}
	if acc := f.TokensWithMeta(t, "securetrain_job", res.ID); len(acc) != 0 {
		t.Errorf("job token still alive after the job: %v", acc)
	}
	// No secret value in the logs, state, results or the audit of the job.
	for _, root := range []string{stateDir, dataDir} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() || fi.Size() > 8<<20 {
				return nil
			}
			body, _ := os.ReadFile(p)
			for _, secret := range []string{dbPass, f.KVData["api_key"], launcherToken} {
				if strings.Contains(string(body), secret) {
					t.Errorf("a secret value is written in %s", p)
				}
			}
			return nil
		})
	}
}

func TestSecretsSurviveLauncherTokenRevocationAndGCRevokesAfterCrash(t *testing.T) {
	e := setup(t)
	v, pg, f := vaultWithDatabase(t)
	launcherToken := f.LauncherToken(t)
	vaultEnv := []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + launcherToken}
	dir := e.project(t, map[string]string{"secrets.yaml": secretsProfile, "job.sh": secretsJob, "probe": "no-such-probe"})

	c := e.cmd(context.Background(), dir, vaultEnv, "run", "--user", jobUser, "--profile", "secrets.yaml",
		"--env", "HOLD=1", "--", "/bin/sh", "job.sh")
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "ready")
	dbUser, _ := os.ReadFile(filepath.Join(dir, "outputs", "dbuser"))
	dbPass, _ := os.ReadFile(filepath.Join(dir, "outputs", "dbpass"))

	// Revoking the launcher's own token does not cut the job off: its
	// token is an orphan, and its database login still works.
	if err := v.Root.Auth().Token().RevokeTree(launcherToken); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), pg.DSN(strings.TrimSpace(string(dbUser)), strings.TrimSpace(string(dbPass))))
	if err != nil {
		t.Fatalf("the job's database login died with the launcher's token: %v", err)
	}
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM dataset").Scan(&n); err != nil || n == 0 {
		t.Fatalf("read dataset rows with the job's credentials: %v (%d rows)", err, n)
	}
	conn.Close(context.Background())

	// The launcher dies (SIGKILL): the credentials stay until gc.
	syscall.Kill(c.Process.Pid, syscall.SIGKILL)
	c.Wait()
	if !pg.RoleExists(t, strings.TrimSpace(string(dbUser))) {
		t.Fatal("the role vanished before gc; the test proves nothing")
	}
	gcToken := f.LauncherToken(t)
	g := e.run(t, dir, []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + gcToken}, "gc")
	if g.code != 0 {
		t.Fatalf("gc: %s", g)
	}
	if pg.RoleExists(t, strings.TrimSpace(string(dbUser))) {
		t.Errorf("gc left the job's Postgres role alive")
	}
	assertCleanMode(t, e, true)
}

func TestSecretsFailClosed(t *testing.T) {
	e := setup(t)
	v, _, f := vaultWithDatabase(t)
	vaultEnv := []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + f.LauncherToken(t)}
	denied := strings.Replace(secretsProfile, "secret/securetrain/app", "secret/other/app", 1)
	dir := e.project(t, map[string]string{"denied.yaml": denied})
	r := e.run(t, dir, vaultEnv, "run", "--user", jobUser, "--profile", "denied.yaml", "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, `secret "secret/other/app": permission denied`) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("a denied secret must refuse the job in one line naming the path: %s", r)
	}
	r = e.run(t, dir, []string{"VAULT_ADDR=http://127.0.0.1:1", "VAULT_TOKEN=x"}, "run", "--user", jobUser, "--profile", "denied.yaml", "--", "/bin/true")
	if r.code != 125 || !strings.Contains(r.stderr, "vault") {
		t.Fatalf("an unreachable Vault must refuse the job: %s", r)
	}
}

// vaultWithDatabase starts a dev Vault and a PostgreSQL behind its database
// engine, set up for the secrets tests (AppRole, KV, a dynamic role).
func vaultWithDatabase(t *testing.T) (*testenv.Vault, *testenv.PG, *testenv.VaultFixture) {
	t.Helper()
	v := testenv.StartVault(t)
	pg := testenv.Postgres(t)
	return v, pg, testenv.SetupVault(t, v, pg)
}

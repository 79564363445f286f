package e2e

import (
	"fmt"
	"math/rand"
	"os/exec"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// dbHost puts a test host in its own network namespace behind a veth pair,
// as a dataset database would be on another machine: the host's own
// services are always denied to jobs.
type dbHost struct {
	ns, hostIf   string
	addr, hostIP string
}

func newDBHost(t *testing.T) *dbHost {
	t.Helper()
	n := rand.Intn(200) + 20
	tag := fmt.Sprintf("%04x", rand.Intn(0xffff))
	h := &dbHost{ns: "st-e2e-db-" + tag, hostIf: "stdbh" + tag,
		addr: fmt.Sprintf("10.215.%d.2", n), hostIP: fmt.Sprintf("10.215.%d.1", n)}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", h.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", h.ns).Run() })
	ip("link", "add", h.hostIf, "type", "veth", "peer", "name", "stdbn"+tag)
	t.Cleanup(func() { exec.Command("ip", "link", "del", h.hostIf).Run() })
	ip("link", "set", "stdbn"+tag, "netns", h.ns)
	ip("addr", "add", h.hostIP+"/30", "dev", h.hostIf)
	ip("link", "set", h.hostIf, "up")
	ip("-n", h.ns, "addr", "add", h.addr+"/30", "dev", "stdbn"+tag)
	ip("-n", h.ns, "link", "set", "stdbn"+tag, "up")
	ip("-n", h.ns, "link", "set", "lo", "up")
	return h
}

// TestJobReadsDatasetWithDynamicCredentials: a job gets dynamic Postgres
// credentials from Vault, reaches the database through its allowlist, reads
// the dataset table; afterwards the role is gone.
func TestJobReadsDatasetWithDynamicCredentials(t *testing.T) {
	e := setup(t)
	db := newDBHost(t)
	pg := testenv.PostgresWith(t, testenv.PGOptions{Listen: db.addr, NetNS: "/run/netns/" + db.ns})
	v := testenv.StartVault(t)
	f := testenv.SetupVault(t, v, pg)
	prof := fmt.Sprintf(`version: 1
name: dataset-reader
limits: {wall_time: 10m}
network:
  mode: sandbox
  allow: ["tcp:%s/32:%d"]
vault:
  token_role: securetrain-job
  policies: [securetrain-job]
  ttl: 5m
secrets:
  - path: database/creds/dataset-reader
    files: {username: /run/secrets/db/username}
    env: {PGUSER: username, PGPASSWORD: password}
`, db.addr, pg.Port)
	dir := e.project(t, map[string]string{"db.yaml": prof})
	query := fmt.Sprintf("/usr/lib/postgresql/15/bin/psql -h %s -p %d -d postgres -tAc 'select count(*) from dataset' && cat /run/secrets/db/username > outputs/user", db.addr, pg.Port)
	r := e.run(t, dir, []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + f.LauncherToken(t)},
		"run", "--user", jobUser, "--profile", "db.yaml", "--", "/bin/sh", "-c", query)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "5" {
		t.Fatalf("the job must read the 5 dataset rows with its own credentials: %s", r)
	}
	user, _ := exec.Command("cat", dir+"/outputs/user").Output()
	if u := strings.TrimSpace(string(user)); u == "" || pg.RoleExists(t, u) {
		t.Fatalf("the job's database role %q must be gone after the job", u)
	}
}

package secrets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/jobstate"
)

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is what the Vault tests share: one Vault, one Postgres, and everything
// the leak check greps at the end.
type env struct {
	f       *testenv.VaultFixture
	logs    *syncBuf
	log     *slog.Logger
	mu      sync.Mutex
	values  []string // secret values seen (must never leak)
	texts   []string // error strings and records to grep
	shmRoot string
}

func (e *env) secret(v ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range v {
		if s != "" {
			e.values = append(e.values, s)
		}
	}
}

func (e *env) text(v ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.texts = append(e.texts, v...)
}

func (e *env) records(rec *jobstate.MemRecorder) {
	b, _ := json.Marshal(rec.Snapshot())
	e.text(string(b))
}

// launcherToken writes a launcher token to a file and returns a ClientConfig using it.
func (e *env) tokenConfig(t *testing.T) ClientConfig {
	tok := e.f.LauncherToken(t)
	e.secret(tok)
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ClientConfig{Address: e.f.Addr, Auth: Auth{Method: MethodToken, TokenFile: p}}
}

func (e *env) appRoleConfig(t *testing.T) ClientConfig {
	sid := e.f.SecretID(t)
	e.secret(sid)
	p := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(p, []byte(sid), 0o600); err != nil {
		t.Fatal(err)
	}
	return ClientConfig{Address: e.f.Addr, Auth: Auth{Method: MethodAppRole, RoleID: e.f.RoleID, SecretIDFile: p}}
}

func (e *env) client(t *testing.T, cc ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(context.Background(), cc, e.log)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	e.secret(c.api.Token())
	return c
}

// spec returns a job spec with a fresh host dir under /dev/shm's sibling
// test root and the given secrets.
func (e *env) spec(t *testing.T, secrets ...Secret) JobSpec {
	id := "job-" + testenv.RandomID(4)
	return JobSpec{
		JobID: id, Policies: []string{testenv.JobPolicy}, TokenRole: testenv.JobTokenRole,
		TTL: time.Hour, MaxTTL: 2 * time.Hour, Secrets: secrets,
		UID: 4242, GID: 4243, HostDir: filepath.Join(e.shmRoot, id),
	}
}

func dbSecret(role string) Secret {
	return Secret{
		Path:  "database/creds/" + role,
		Files: map[string]string{"username": "/run/secrets/db/username", "password": "/run/secrets/db/password"},
		Env:   map[string]string{"PGUSER": "username", "PGPASSWORD": "password"},
	}
}

func kvSecret() Secret {
	return Secret{
		Path:  testenv.KVPath,
		Files: map[string]string{"api_key": "/run/secrets/app/api_key"},
		Env:   map[string]string{"APP_USER": "username", "APP_KEY": "api_key"},
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

// assertNoToken checks no live token carries the job's id and its dir is gone.
func (e *env) assertNothingLeft(t *testing.T, spec JobSpec) {
	t.Helper()
	if accs := e.f.TokensWithMeta(t, "securetrain_job", spec.JobID); len(accs) != 0 {
		t.Errorf("job %s left live tokens: %v", spec.JobID, accs)
	}
	if _, err := os.Lstat(spec.HostDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("job %s left its secrets dir %s (lstat: %v)", spec.JobID, spec.HostDir, err)
	}
}

func TestVault(t *testing.T) {
	testenv.RequireRoot(t) // tmpfs mounts, chown, postgres as user postgres
	v := testenv.StartVault(t)
	pg := testenv.Postgres(t)
	e := &env{f: testenv.SetupVault(t, v, pg), logs: &syncBuf{}}
	e.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.secret(v.RootToken, pg.Password)
	for _, val := range e.f.KVData {
		e.secret(val)
	}
	root, err := os.MkdirTemp("", "securetrain-secrets-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	e.shmRoot = root
	ctx := context.Background()

	t.Run("DynamicPostgresAndKV", func(t *testing.T) {
		c := e.client(t, e.appRoleConfig(t))
		rec := &jobstate.MemRecorder{}
		spec := e.spec(t, dbSecret(testenv.DBRole), kvSecret())
		g, err := c.Issue(ctx, spec, rec)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		e.secret(g.job.Token())
		user := readFile(t, filepath.Join(spec.HostDir, "db/username"))
		pass := readFile(t, filepath.Join(spec.HostDir, "db/password"))
		e.secret(pass)
		for _, rel := range []string{"db/username", "db/password", "app/api_key", ".securetrain/env/APP_USER", ".securetrain/env.json"} {
			fi, err := os.Lstat(filepath.Join(spec.HostDir, rel))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode() != 0o400 || st.Uid != 4242 || st.Gid != 4243 {
				t.Errorf("%s: mode %v owner %d:%d, want -r-------- 4242:4243", rel, fi.Mode(), st.Uid, st.Gid)
			}
		}
		if got := readFile(t, filepath.Join(spec.HostDir, "app/api_key")); got != e.f.KVData["api_key"] {
			t.Errorf("KV v2 api_key file differs from the value in Vault")
		}
		if got := readFile(t, filepath.Join(spec.HostDir, ".securetrain/env/APP_USER")); got != e.f.KVData["username"] {
			t.Errorf("env-only KV field APP_USER differs from the value in Vault")
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(spec.HostDir, ".securetrain/env.json"))), &m); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"PGUSER": "/run/secrets/db/username", "PGPASSWORD": "/run/secrets/db/password",
			"APP_KEY": "/run/secrets/app/api_key", "APP_USER": "/run/secrets/.securetrain/env/APP_USER"}
		if fmt.Sprint(m) != fmt.Sprint(want) {
			t.Errorf("env map = %v, want %v", m, want)
		}
		if g.EnvMapFile() != "/run/secrets/.securetrain/env.json" {
			t.Errorf("EnvMapFile = %q", g.EnvMapFile())
		}
		if ms := g.Mounts(); len(ms) != 1 || ms[0] != (Mount{Source: spec.HostDir, Destination: "/run/secrets", ReadOnly: true}) {
			t.Errorf("Mounts = %+v", ms)
		}
		// The credentials work.
		conn, err := pgx.Connect(ctx, pg.DSN(user, pass))
		if err != nil {
			t.Fatalf("connect with issued credentials: %v", errors.New(strings.ReplaceAll(err.Error(), pass, "***")))
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM dataset").Scan(&n); err != nil || n != 5 {
			t.Errorf("dataset rows = %d, %v; want 5", n, err)
		}
		conn.Close(ctx)
		// Records: accessor and lease id, nothing else.
		recs := Records(rec.Snapshot())
		if len(recs) != 2 || recs[0].Kind != KindToken || recs[0].Attrs["accessor"] != g.Accessor() ||
			!strings.HasPrefix(recs[0].Attrs["leases"], "database/creds/"+testenv.DBRole+"/") || recs[1].Kind != KindMount {
			t.Errorf("records = %+v", recs)
		}
		e.records(rec)
		if !pg.RoleExists(t, user) {
			t.Fatalf("role %s not in pg_roles while the job runs", user)
		}
		if err := g.Revoke(ctx); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if pg.RoleExists(t, user) {
			t.Errorf("role %s still in pg_roles after Revoke", user)
		}
		if _, err := v.Root.Auth().Token().LookupAccessor(g.Accessor()); err == nil {
			t.Errorf("job token accessor %s still valid after Revoke", g.Accessor())
		}
		if _, err := g.job.Auth().Token().LookupSelf(); err == nil {
			t.Errorf("job token lookup-self succeeds after Revoke")
		}
		e.assertNothingLeft(t, spec)
		if err := g.Revoke(ctx); err != nil {
			t.Errorf("second Revoke: %v", err)
		}
	})

	t.Run("OrphanOutlivesLauncherToken", func(t *testing.T) {
		c := e.client(t, e.appRoleConfig(t))
		spec := e.spec(t, dbSecret(testenv.DBRole))
		rec := &jobstate.MemRecorder{}
		g, err := c.Issue(ctx, spec, rec)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		e.secret(g.job.Token())
		e.records(rec)
		user := readFile(t, filepath.Join(spec.HostDir, "db/username"))
		pass := readFile(t, filepath.Join(spec.HostDir, "db/password"))
		e.secret(pass)
		launcherAcc := c.TokenAccessor()
		if err := v.Root.Auth().Token().RevokeAccessor(launcherAcc); err != nil {
			t.Fatalf("revoke launcher token: %v", err)
		}
		if _, err := v.Root.Auth().Token().LookupAccessor(launcherAcc); err == nil {
			t.Fatalf("launcher token still valid after revocation")
		}
		if _, err := v.Root.Auth().Token().LookupAccessor(g.Accessor()); err != nil {
			t.Errorf("job token died with the launcher token: %v", err)
		}
		if _, err := g.job.Auth().Token().RenewSelf(0); err != nil {
			t.Errorf("job token cannot renew after the launcher token was revoked: %v", err)
		}
		if !pg.RoleExists(t, user) {
			t.Errorf("database role %s revoked with the launcher token", user)
		}
		conn, err := pgx.Connect(ctx, pg.DSN(user, pass))
		if err != nil {
			t.Errorf("job credentials unusable after the launcher token was revoked")
		} else {
			conn.Close(ctx)
		}
		// Revoke still works: the launcher logs in again for what it needs.
		if err := g.Revoke(ctx); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if pg.RoleExists(t, user) {
			t.Errorf("role %s still in pg_roles after Revoke", user)
		}
		e.assertNothingLeft(t, spec)
	})

	t.Run("GCAfterCrash", func(t *testing.T) {
		c := e.client(t, e.tokenConfig(t))
		spec := e.spec(t, dbSecret(testenv.DBRole))
		rec := &jobstate.MemRecorder{}
		g, err := c.Issue(ctx, spec, rec)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		e.secret(g.job.Token())
		user := readFile(t, filepath.Join(spec.HostDir, "db/username"))
		e.records(rec)
		// The launcher "crashes": its Grant is lost; a new launcher process
		// (a new client) runs gc over the recorded state.
		g = nil
		c2 := e.client(t, e.tokenConfig(t))
		recs := Records(rec.Snapshot())
		for _, r := range recs {
			if err := GC(ctx, c2, r); err != nil {
				t.Errorf("GC(%s): %v", r, err)
			}
		}
		if pg.RoleExists(t, user) {
			t.Errorf("role %s still in pg_roles after gc", user)
		}
		e.assertNothingLeft(t, spec)
		for _, r := range recs { // gc twice: not found is clean
			if err := GC(ctx, c2, r); err != nil {
				t.Errorf("second GC(%s): %v", r, err)
			}
		}
		if err := GC(ctx, c2, jobstate.Resource{Kind: "netns", Name: "x"}); !errors.Is(err, ErrNotOurs) {
			t.Errorf("GC of another kind: %v, want ErrNotOurs", err)
		}
	})

	t.Run("AppRoleWrappedSecretIDOnce", func(t *testing.T) {
		wrap := e.f.WrappedSecretID(t)
		e.secret(wrap)
		p := filepath.Join(t.TempDir(), "wrapped-secret-id")
		if err := os.WriteFile(p, []byte(wrap), 0o600); err != nil {
			t.Fatal(err)
		}
		cc := ClientConfig{Address: v.Addr, Auth: Auth{Method: MethodAppRole, RoleID: e.f.RoleID, SecretIDFile: p, SecretIDWrapped: true}}
		c := e.client(t, cc)
		if c.TokenAccessor() == "" {
			t.Errorf("no launcher token after wrapped AppRole login")
		}
		_, err := NewClient(ctx, cc, e.log)
		want := "approle: unwrap secret id from " + p + ": wrapping token already used: possible tampering"
		if err == nil || err.Error() != want || !errors.Is(err, ErrWrappingTokenUsed) {
			t.Errorf("second unwrap: err = %v, want %q", err, want)
		}
		if err != nil {
			e.text(err.Error())
		}
	})

	t.Run("LauncherTokenReauth", func(t *testing.T) {
		// A launcher AppRole whose tokens live 3s (max 5s): the client must
		// renew, then log in again, and keep working past the max TTL.
		if _, err := v.Root.Logical().Write("auth/approle/role/launcher-short", map[string]any{
			"token_policies": testenv.LauncherPolicy, "token_ttl": "3s", "token_max_ttl": "5s"}); err != nil {
			t.Fatal(err)
		}
		rid, err := v.Root.Logical().Read("auth/approle/role/launcher-short/role-id")
		if err != nil {
			t.Fatal(err)
		}
		sid, err := v.Root.Logical().Write("auth/approle/role/launcher-short/secret-id", nil)
		if err != nil {
			t.Fatal(err)
		}
		e.secret(sid.Data["secret_id"].(string))
		p := filepath.Join(t.TempDir(), "sid")
		os.WriteFile(p, []byte(sid.Data["secret_id"].(string)), 0o600)
		c := e.client(t, ClientConfig{Address: v.Addr, Auth: Auth{Method: MethodAppRole, RoleID: rid.Data["role_id"].(string), SecretIDFile: p}})
		first := c.TokenAccessor()
		deadline := time.Now().Add(time.Minute)
		for c.TokenAccessor() == first && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if c.TokenAccessor() == first {
			t.Fatalf("launcher token never replaced before its max TTL")
		}
		time.Sleep(6 * time.Second) // past the first token's max TTL
		if _, err := v.Root.Auth().Token().LookupAccessor(c.TokenAccessor()); err != nil {
			t.Errorf("current launcher token invalid: %v", err)
		}
		if _, err := c.api.Auth().Token().LookupSelf(); err != nil {
			t.Errorf("launcher client's own token invalid after its first token's max TTL: %v", err)
		}
		e.secret(c.api.Token())
	})

	t.Run("RecorderFailure", func(t *testing.T) {
		c := e.client(t, e.tokenConfig(t))
		for n := 1; n <= 4; n++ { // mount, token intent, accessor, lease
			spec := e.spec(t, dbSecret(testenv.DBRole))
			rec := &failingRecorder{failAt: n}
			_, err := c.Issue(ctx, spec, rec)
			if err == nil || !errors.Is(err, errDisk) {
				t.Fatalf("record %d fails: Issue err = %v, want errDisk", n, err)
			}
			e.text(err.Error())
			e.assertNothingLeft(t, spec)
		}
	})

	t.Run("JWTLogin", func(t *testing.T) {
		jwt := e.f.JWT(t, "slurm-job-42")
		e.secret(jwt)
		p := filepath.Join(t.TempDir(), "jwt")
		if err := os.WriteFile(p, []byte(jwt), 0o600); err != nil {
			t.Fatal(err)
		}
		c := e.client(t, ClientConfig{Address: v.Addr, Auth: Auth{Method: MethodJWT, JWTFile: p, Role: testenv.LauncherRole}})
		spec := e.spec(t, kvSecret())
		g, err := c.Issue(ctx, spec, &jobstate.MemRecorder{})
		if err != nil {
			t.Fatalf("Issue after JWT login: %v", err)
		}
		e.secret(g.job.Token())
		if err := g.Revoke(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = NewClient(ctx, ClientConfig{Address: v.Addr, Auth: Auth{Method: MethodJWT, JWTFile: p, Role: "nope"}}, e.log)
		want := `vault login (method jwt, auth/jwt/login): vault error: HTTP 400: role "nope" could not be found`
		if err == nil || err.Error() != want {
			t.Errorf("login with unknown role: %v, want %q", err, want)
		}
	})

	t.Run("FailClosed", func(t *testing.T) {
		c := e.client(t, e.tokenConfig(t))
		cases := []struct {
			name   string
			secret Secret
			want   string
			is     error
		}{
			{"denied", Secret{Path: "secret/other/x", Files: map[string]string{"a": "/run/secrets/a"}},
				`secret "secret/other/x": permission denied`, ErrPermissionDenied},
			{"denied-dynamic", Secret{Path: "database/creds/admin", Files: map[string]string{"password": "/run/secrets/p"}},
				`secret "database/creds/admin": permission denied`, ErrPermissionDenied},
			{"missing-field", Secret{Path: testenv.KVPath, Files: map[string]string{"nope": "/run/secrets/nope"}},
				`secret "secret/securetrain/app": field missing: "nope" (fields present: api_key, username)`, ErrFieldMissing},
			{"missing-env-field", Secret{Path: testenv.KVPath, Env: map[string]string{"X": "nope"}},
				`secret "secret/securetrain/app": field missing: "nope" (fields present: api_key, username)`, ErrFieldMissing},
			{"not-found", Secret{Path: "secret/securetrain/absent", Files: map[string]string{"a": "/run/secrets/a"}},
				`secret "secret/securetrain/absent": not found`, ErrNotFound},
			{"unmapped", Secret{Path: testenv.KVPath},
				`secret "secret/securetrain/app": secret maps no field to a file or env var`, ErrUnmapped},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				// A good secret first: its lease and files must be undone too.
				spec := e.spec(t, dbSecret(testenv.DBRole), tc.secret)
				rec := &jobstate.MemRecorder{}
				g, err := c.Issue(ctx, spec, rec)
				if err == nil {
					g.Revoke(ctx)
					t.Fatalf("Issue succeeded, want %q", tc.want)
				}
				e.text(err.Error())
				e.records(rec)
				if err.Error() != tc.want || !errors.Is(err, tc.is) {
					t.Errorf("err = %q, want %q (errors.Is %v)", err, tc.want, tc.is)
				}
				e.assertNothingLeft(t, spec)
				for _, r := range Records(rec.Snapshot()) {
					if l := r.Attrs["leases"]; l != "" {
						if _, err := v.Root.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": l}); err == nil {
							t.Errorf("lease %s outlived the failed Issue", l)
						}
					}
				}
			})
		}
		t.Run("non-orphan-role", func(t *testing.T) {
			if _, err := v.Root.Logical().Write("auth/token/roles/child-role", map[string]any{
				"orphan": false, "allowed_policies": testenv.JobPolicy}); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Root.Logical().Write("sys/policies/acl/launcher-child", map[string]any{
				"policy": `path "auth/token/create/child-role" { capabilities = ["update"] }`}); err != nil {
				t.Fatal(err)
			}
			tok, err := v.Root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"launcher-child"}, TTL: "1h"})
			if err != nil {
				t.Fatal(err)
			}
			c := e.client(t, ClientConfig{Address: v.Addr, Auth: Auth{Token: tok.Auth.ClientToken}})
			spec := e.spec(t, kvSecret())
			spec.TokenRole = "child-role"
			_, err = c.Issue(ctx, spec, &jobstate.MemRecorder{})
			want := `job token (token role "child-role"): invalid secrets configuration: token role must set orphan=true`
			if err == nil || err.Error() != want {
				t.Errorf("err = %v, want %q", err, want)
			}
			e.assertNothingLeft(t, spec)
		})
		t.Run("unreachable", func(t *testing.T) {
			px := startProxy(t, strings.TrimPrefix(v.Addr, "http://"))
			cc := e.tokenConfig(t)
			cc.Address = "http://" + px.addr
			c := e.client(t, cc)
			px.close()
			spec := e.spec(t, dbSecret(testenv.DBRole))
			_, err := c.Issue(ctx, spec, &jobstate.MemRecorder{})
			want := `job token (token role "securetrain-job"): vault unreachable at ` + px.addr + `: dial: connect: connection refused`
			if err == nil || err.Error() != want || !errors.Is(err, ErrUnreachable) {
				t.Errorf("err = %v, want %q", err, want)
			}
			if err != nil {
				e.text(err.Error())
			}
			e.assertNothingLeft(t, spec)
		})
	})

	t.Run("Renewal", func(t *testing.T) {
		c := e.client(t, e.tokenConfig(t))
		short := func(policy string) (*Grant, JobSpec) {
			spec := e.spec(t, dbSecret(testenv.DBRoleShort))
			spec.TTL, spec.MaxTTL, spec.OnRenewFailure = 6*time.Second, time.Minute, policy
			g, err := c.Issue(ctx, spec, &jobstate.MemRecorder{})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			e.secret(g.job.Token(), readFile(t, filepath.Join(spec.HostDir, "db/password")))
			t.Cleanup(func() { g.Revoke(ctx) })
			return g, spec
		}
		gStop, _ := short(OnFailureStop)
		gCont, _ := short(OnFailureContinue)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		evStop, evCont := gStop.Watch(wctx), gCont.Watch(wctx)
		if gStop.Watch(wctx) != evStop {
			t.Errorf("second Watch returned a new channel")
		}
		// Both the token and the lease get renewed.
		renewed := map[string]bool{}
		for len(renewed) < 2 {
			ev, ok := <-evStop
			if !ok {
				t.Fatalf("events closed before both renewed: %v", renewed)
			}
			e.text(ev.String())
			if ev.Kind == Renewed {
				renewed[ev.What] = true
				if ev.TTL <= 0 {
					t.Errorf("renewed event without TTL: %v", ev)
				}
			} else {
				t.Fatalf("unexpected event %v", ev)
			}
		}
		if !renewed["token"] || !renewed["database/creds/"+testenv.DBRoleShort] {
			t.Errorf("renewed = %v, want token and the lease", renewed)
		}
		// Renewal failure: the job tokens are revoked behind the launcher's back.
		for _, g := range []*Grant{gStop, gCont} {
			if err := v.Root.Auth().Token().RevokeAccessor(g.Accessor()); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			ch   <-chan Event
			stop bool
		}{{evStop, true}, {evCont, false}} {
			for ev := range tc.ch {
				e.text(ev.String())
				if ev.Kind != Failed {
					continue
				}
				if ev.Stop != tc.stop || !errors.Is(ev.Err, ErrPermissionDenied) && !errors.Is(ev.Err, ErrVault) {
					t.Errorf("failed event %v: stop %v, want %v", ev, ev.Stop, tc.stop)
				}
				vio := ev.Violation("j")
				if vio.Kind != "secrets" || (vio.Action == "killed") != tc.stop {
					t.Errorf("violation %+v", vio)
				}
				break
			}
		}
	})

	t.Run("RenewalCapped", func(t *testing.T) {
		c := e.client(t, e.tokenConfig(t))
		spec := e.spec(t, kvSecret())
		spec.TTL, spec.MaxTTL = 3*time.Second, 4*time.Second
		g, err := c.Issue(ctx, spec, &jobstate.MemRecorder{})
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		defer g.Revoke(ctx)
		var kinds []EventKind
		for ev := range g.Watch(ctx) {
			kinds = append(kinds, ev.Kind)
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != Capped {
			t.Errorf("token events %v, want ... capped, then the channel closed", kinds)
		}
	})

	// Last: no secret value in logs, records, errors or events.
	t.Run("NoSecretLeaks", func(t *testing.T) {
		// One full job of its own, so that the check stands alone too.
		c := e.client(t, e.appRoleConfig(t))
		spec := e.spec(t, dbSecret(testenv.DBRole), kvSecret())
		rec := &jobstate.MemRecorder{}
		g, err := c.Issue(ctx, spec, rec)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		e.secret(g.job.Token(), readFile(t, filepath.Join(spec.HostDir, "db/password")))
		for ev := range func() <-chan Event {
			wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			defer cancel()
			return g.Watch(wctx)
		}() {
			e.text(ev.String())
		}
		if err := g.Revoke(ctx); err != nil {
			t.Fatal(err)
		}
		e.records(rec)
		logs := e.logs.String()
		if !strings.Contains(logs, "job token created") {
			t.Fatalf("log capture empty; the check would prove nothing")
		}
		all := logs + strings.Join(e.texts, "\n")
		if len(e.values) < 7 {
			t.Fatalf("only %d secret values collected", len(e.values))
		}
		for _, s := range e.values {
			if strings.Contains(all, s) {
				t.Errorf("a secret value (len %d, prefix %.4s) appears in logs/records/errors", len(s), s)
			}
		}
	})
}

// TestVaultTLSCertAuth logs in with a TLS client certificate against a Vault
// that serves TLS with its own CA, and issues a KV secret.
func TestVaultTLSCertAuth(t *testing.T) {
	testenv.RequireRoot(t)
	v := testenv.StartVaultWith(t, testenv.VaultOptions{TLS: true})
	f := testenv.SetupVault(t, v, nil)
	certFile, keyFile := f.ClientCert(t)
	ctx := context.Background()
	c, err := NewClient(ctx, ClientConfig{Address: v.Addr, CACert: v.CACert, ClientCert: certFile, ClientKey: keyFile,
		Auth: Auth{Method: MethodCert, Role: testenv.LauncherRole}}, nil)
	if err != nil {
		t.Fatalf("cert login: %v", err)
	}
	defer c.Close()
	root := t.TempDir()
	spec := JobSpec{JobID: "tls-job", Policies: []string{testenv.JobPolicy}, TokenRole: testenv.JobTokenRole,
		TTL: time.Hour, MaxTTL: time.Hour, Secrets: []Secret{kvSecret()}, UID: 1000, GID: 1000, HostDir: filepath.Join(root, "s")}
	g, err := c.Issue(ctx, spec, &jobstate.MemRecorder{})
	if err != nil {
		t.Fatalf("Issue over TLS: %v", err)
	}
	if got := readFile(t, filepath.Join(spec.HostDir, "app/api_key")); got != f.KVData["api_key"] {
		t.Errorf("api_key file differs from Vault's value")
	}
	if err := g.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	// Without the CA the server is not trusted: fail closed, one line.
	_, err = NewClient(ctx, ClientConfig{Address: v.Addr, ClientCert: certFile, ClientKey: keyFile, Auth: Auth{Method: MethodCert}}, nil)
	if err == nil || !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("login without CA: %v", err)
	}
}

var errDisk = errors.New("disk full")

// failingRecorder fails its failAt-th Record.
type failingRecorder struct {
	n, failAt int
}

func (f *failingRecorder) Record(jobstate.Resource) error {
	f.n++
	if f.n == f.failAt {
		return errDisk
	}
	return nil
}

// proxy forwards TCP from a loopback port to Vault until closed.
type proxy struct {
	addr  string
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().String(), l: l}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

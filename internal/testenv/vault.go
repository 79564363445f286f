package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// Vault is a running Vault dev server (in memory, unsealed) started for one test.
type Vault struct {
	Addr      string // http://127.0.0.1:PORT (https with TLS)
	CACert    string // with TLS: the CA of the server certificate
	RootToken string // never starts with hvs.
	Root      *api.Client
	LogFile   string
}

// RandomID returns n random bytes in hex, for tokens and passwords in tests.
func RandomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// FreePort returns a TCP port on host that was free a moment ago.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// VaultOptions configures StartVaultWith.
type VaultOptions struct {
	// TLS starts the dev server with -dev-tls (a generated CA and server
	// certificate; client certificates are requested, so cert auth works).
	TLS bool
}

// StartVault starts the pinned Vault as a dev server on 127.0.0.1 and a free
// port, with a random root token id, and kills it in t.Cleanup.
func StartVault(t testing.TB) *Vault { t.Helper(); return StartVaultWith(t, VaultOptions{}) }

// StartVaultWith is StartVault with options.
func StartVaultWith(t testing.TB, o VaultOptions) *Vault {
	t.Helper()
	bin := VaultBin(t)
	port := FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	v := &Vault{
		Addr:      fmt.Sprintf("http://127.0.0.1:%d", port),
		RootToken: "root-" + RandomID(12),
		LogFile:   filepath.Join(dir, "vault.log"),
	}
	logf, err := os.Create(v.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-root-token-id="+v.RootToken,
		"-dev-listen-address="+fmt.Sprintf("127.0.0.1:%d", port),
		"-dev-no-store-token")
	hc := http.DefaultClient
	if o.TLS {
		v.Addr = strings.Replace(v.Addr, "http:", "https:", 1)
		v.CACert = filepath.Join(dir, "vault-ca.pem")
		cmd.Args = append(cmd.Args, "-dev-tls", "-dev-tls-cert-dir="+dir)
	}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "GODEBUG=x509negativeserial=1"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start vault: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if o.TLS && hc == http.DefaultClient {
			if ca, err := os.ReadFile(v.CACert); err == nil {
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(ca)
				hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			}
		}
		resp, err := hc.Get(v.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("vault exited at start; log:\n%s", tail(v.LogFile))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault not ready at %s after 60s; log:\n%s", v.Addr, tail(v.LogFile))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.AgentAddress = ""
	if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert}); err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(v.RootToken)
	c.ClearNamespace()
	v.Root = c
	return v
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// PG is a throwaway PostgreSQL 15 cluster.
type PG struct {
	Host      string // listen address
	Port      int
	User      string // superuser
	Password  string
	SocketDir string
	DataDir   string
}

// PGOptions configures Postgres. Listen is the listen address (default
// 127.0.0.1). NetNS, when set (e.g. /run/netns/st-test), is the network
// namespace the server runs in (the end-to-end test puts the dataset
// database behind netguard that way); setup still goes through the unix
// socket, so it works from the host.
type PGOptions struct {
	Listen string
	NetNS  string
}

const pgBin = "/usr/lib/postgresql/15/bin"

// Postgres starts a PostgreSQL 15 cluster listening on 127.0.0.1.
func Postgres(t testing.TB) *PG { t.Helper(); return PostgresWith(t, PGOptions{}) }

// PostgresWith starts a throwaway PostgreSQL 15 cluster (initdb, then the
// postgres server as a direct child that gets SIGQUIT if the test process
// dies; as user postgres when run as root) in a temp dir on a free port, with
// a "dataset" table of 5 rows in database postgres. It is stopped and removed
// in t.Cleanup.
func PostgresWith(t testing.TB, o PGOptions) *PG {
	t.Helper()
	if _, err := os.Stat(pgBin + "/initdb"); err != nil {
		Missing(t, "PostgreSQL 15 not installed at %s (apt-get install postgresql-15)", pgBin)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1"
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Missing(t, "user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	root, err := os.MkdirTemp("", "securetrain-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	pg := &PG{Host: o.Listen, User: "postgres", Password: RandomID(16),
		SocketDir: root, DataDir: filepath.Join(root, "data")}
	pw := filepath.Join(root, "pw")
	if err := os.WriteFile(pw, []byte(pg.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		_ = os.Chown(pw, int(cred.Uid), int(cred.Gid))
	}
	pgEnv := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "HOME=" + root}
	initdb := exec.Command(pgBin+"/initdb", "-D", pg.DataDir, "-U", pg.User, "--pwfile="+pw,
		"-A", "scram-sha-256", "--auth-local=trust", "-E", "UTF8", "-N")
	initdb.Env, initdb.Dir = pgEnv, root
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba, err := os.OpenFile(filepath.Join(pg.DataDir, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(hba, "host all all 0.0.0.0/0 scram-sha-256")
	hba.Close()
	logPath := filepath.Join(root, "log")
	for attempt := 0; ; attempt++ {
		pg.Port = FreePort(t, "127.0.0.1")
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pgBin+"/postgres", "-D", pg.DataDir, "-c", "listen_addresses="+o.Listen,
			"-p", strconv.Itoa(pg.Port), "-c", "unix_socket_directories="+root, "-c", "fsync=off")
		cmd.Env, cmd.Dir = pgEnv, root
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
		if err := startIn(o.NetNS, cmd); err != nil {
			logf.Close()
			t.Fatalf("start postgres: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGQUIT) // immediate shutdown
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		if waitPG(pg, exited) {
			t.Cleanup(stop)
			break
		}
		stop()
		if attempt == 2 {
			t.Fatalf("postgres did not start; log:\n%s", tail(logPath))
		}
	}
	conn := pg.Conn(t)
	if _, err := conn.Exec(context.Background(),
		`CREATE TABLE dataset (id int PRIMARY KEY, name text NOT NULL);
		 INSERT INTO dataset SELECT g, 'row-' || g FROM generate_series(1, 5) g`); err != nil {
		t.Fatalf("create dataset table: %v", err)
	}
	return pg
}

// waitPG waits until the server accepts connections on its unix socket.
func waitPG(pg *PG, exited <-chan struct{}) bool {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", pg.SocketDir, pg.Port, pg.User))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// startIn starts cmd in the network namespace at nsPath ("" = the current
// one): the child is forked from an OS thread moved into that namespace.
func startIn(nsPath string, cmd *exec.Cmd) error {
	if nsPath == "" {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", nsPath, err)
	}
	startErr := cmd.Start()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread is in the wrong netns: keep it locked so it dies with the goroutine.
		runtime.LockOSThread()
		return fmt.Errorf("setns back: %w", err)
	}
	return startErr
}

// Conn connects as the superuser over the unix socket (trust auth); closed in t.Cleanup.
func (pg *PG) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(),
		fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", pg.SocketDir, pg.Port, pg.User))
	if err != nil {
		t.Fatalf("connect postgres superuser: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// DSN is a TCP connection string for user/password on the listen address.
func (pg *PG) DSN(user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", user, password, net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
}

// RoleExists reports whether a Postgres role exists.
func (pg *PG) RoleExists(t testing.TB, role string) bool {
	t.Helper()
	var n int
	if err := pg.Conn(t).QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", role).Scan(&n); err != nil {
		t.Fatalf("query pg_roles: %v", err)
	}
	return n > 0
}

// Names configured by SetupVault.
const (
	JobTokenRole   = "securetrain-job"      // token role: orphan job tokens
	JobPolicy      = "securetrain-job"      // what a job token may read
	LauncherPolicy = "securetrain-launcher" // what the launcher may do
	LauncherRole   = "securetrain-launcher" // AppRole of the launcher
	DBRole         = "dataset-reader"       // database/creds/dataset-reader, TTL 1h
	DBRoleShort    = "dataset-reader-short" // TTL 6s, max 2m: renewal tests
	KVPath         = "secret/securetrain/app"
)

// VaultFixture is a Vault configured like a securetrain site: KV v2 at
// secret/, a database engine over pg, AppRole for the launcher, a token role
// for orphan job tokens and the policies.
type VaultFixture struct {
	*Vault
	PG     *PG
	KVData map[string]string // the values at KVPath
	RoleID string            // AppRole role id of LauncherRole
	jwtKey *ecdsa.PrivateKey // signs JWTs accepted by auth/jwt role LauncherRole
}

const jobPolicyHCL = `
path "database/creds/dataset-reader" { capabilities = ["read"] }
path "database/creds/dataset-reader-short" { capabilities = ["read"] }
path "secret/data/securetrain/*" { capabilities = ["read"] }
`

const launcherPolicyHCL = `
path "auth/token/create/securetrain-job" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
`

// SetupVault configures v as a securetrain site backed by pg (pg may be nil:
// no database engine).
func SetupVault(t testing.TB, v *Vault, pg *PG) *VaultFixture {
	t.Helper()
	f := &VaultFixture{Vault: v, PG: pg, KVData: map[string]string{
		"username": "kv-user-" + RandomID(4),
		"api_key":  "kv-secret-" + RandomID(16),
	}}
	c := v.Root
	must := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Fatalf("vault setup: %s: %v", what, err)
		}
	}
	write := func(path string, data map[string]any) {
		t.Helper()
		_, err := c.Logical().Write(path, data)
		must(err, path)
	}
	must(c.Sys().PutPolicy(JobPolicy, jobPolicyHCL), "policy "+JobPolicy)
	must(c.Sys().PutPolicy(LauncherPolicy, launcherPolicyHCL), "policy "+LauncherPolicy)
	kv := map[string]any{}
	for k, val := range f.KVData {
		kv[k] = val
	}
	_, err := c.KVv2("secret").Put(context.Background(), "securetrain/app", kv)
	must(err, "kv put")
	write("auth/token/roles/"+JobTokenRole, map[string]any{
		"orphan": true, "renewable": true, "allowed_policies": JobPolicy,
		"disallowed_policies": "root," + LauncherPolicy, "token_type": "service",
		"token_explicit_max_ttl": "24h", // server-side ceiling; Vault ignores a per-token explicit_max_ttl on renewal
	})
	must(c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}), "enable approle")
	write("auth/approle/role/"+LauncherRole, map[string]any{
		"token_policies": LauncherPolicy, "token_ttl": "1h", "token_max_ttl": "4h",
	})
	// JWT auth (e.g. Slurm job JWTs): ES256, audience "securetrain".
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err, "jwt key")
	f.jwtKey = key
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	must(err, "jwt public key")
	must(c.Sys().EnableAuthWithOptions("jwt", &api.EnableAuthOptions{Type: "jwt"}), "enable jwt")
	write("auth/jwt/config", map[string]any{
		"jwt_validation_pubkeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))},
	})
	write("auth/jwt/role/"+LauncherRole, map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_audiences": "securetrain",
		"token_policies": LauncherPolicy, "token_ttl": "1h",
	})
	if v.CACert != "" {
		must(c.Sys().EnableAuthWithOptions("cert", &api.EnableAuthOptions{Type: "cert"}), "enable cert")
	}
	s, err := c.Logical().Read("auth/approle/role/" + LauncherRole + "/role-id")
	must(err, "read role id")
	f.RoleID, _ = s.Data["role_id"].(string)
	if pg != nil {
		must(c.Sys().Mount("database", &api.MountInput{Type: "database"}), "enable database")
		write("database/config/pg", map[string]any{
			"plugin_name":    "postgresql-database-plugin",
			"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/postgres?sslmode=disable", net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port))),
			"username":       pg.User, "password": pg.Password,
			"allowed_roles": DBRole + "," + DBRoleShort,
		})
		create := `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON dataset TO "{{name}}";`
		write("database/roles/"+DBRole, map[string]any{"db_name": "pg", "creation_statements": create, "default_ttl": "1h", "max_ttl": "24h"})
		write("database/roles/"+DBRoleShort, map[string]any{"db_name": "pg", "creation_statements": create, "default_ttl": "6s", "max_ttl": "2m"})
	}
	return f
}

// JWT returns an ES256 JWT (sub, aud securetrain, valid 10 minutes) that
// auth/jwt role LauncherRole accepts.
func (f *VaultFixture) JWT(t testing.TB, sub string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now().Unix()
	msg := enc(map[string]string{"alg": "ES256", "typ": "JWT"}) + "." +
		enc(map[string]any{"sub": sub, "aud": "securetrain", "iat": now, "nbf": now - 5, "exp": now + 600})
	h := sha256.Sum256([]byte(msg))
	r, s, err := ecdsa.Sign(rand.Reader, f.jwtKey, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return msg + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// ClientCert writes a new self-signed client certificate and key into a temp
// dir, trusts it as auth/cert role LauncherRole (Vault must run with TLS),
// and returns the two file names.
func (f *VaultFixture) ClientCert(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "securetrain-launcher"},
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Root.Logical().Write("auth/cert/certs/"+LauncherRole, map[string]any{
		"certificate": string(certPEM), "token_policies": LauncherPolicy, "token_ttl": "1h",
	}); err != nil {
		t.Fatalf("trust client cert: %v", err)
	}
	return certFile, keyFile
}

// WrappedSecretID returns a response-wrapping token (TTL 2m) around a new
// secret id of LauncherRole.
func (f *VaultFixture) WrappedSecretID(t testing.TB) string {
	t.Helper()
	c, err := f.Root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(f.RootToken)
	c.SetWrappingLookupFunc(func(string, string) string { return "2m" })
	s, err := c.Logical().Write("auth/approle/role/"+LauncherRole+"/secret-id", nil)
	if err != nil || s == nil || s.WrapInfo == nil {
		t.Fatalf("wrapped secret id: %v", err)
	}
	return s.WrapInfo.Token
}

// SecretID returns a plain new secret id of LauncherRole.
func (f *VaultFixture) SecretID(t testing.TB) string {
	t.Helper()
	s, err := f.Root.Logical().Write("auth/approle/role/"+LauncherRole+"/secret-id", nil)
	if err != nil {
		t.Fatalf("secret id: %v", err)
	}
	return s.Data["secret_id"].(string)
}

// LauncherToken returns a token (TTL 1h) with only LauncherPolicy.
func (f *VaultFixture) LauncherToken(t testing.TB) string {
	t.Helper()
	s, err := f.Root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{LauncherPolicy}, TTL: "1h"})
	if err != nil {
		t.Fatalf("launcher token: %v", err)
	}
	return s.Auth.ClientToken
}

// TokensWithMeta returns the accessors of live tokens whose metadata has
// key=value (e.g. securetrain_job=<id>).
func (f *VaultFixture) TokensWithMeta(t testing.TB, key, value string) []string {
	t.Helper()
	s, err := f.Root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatalf("list accessors: %v", err)
	}
	var out []string
	keys, _ := s.Data["keys"].([]any)
	for _, k := range keys {
		acc, _ := k.(string)
		l, err := f.Root.Auth().Token().LookupAccessor(acc)
		if err != nil {
			continue // revoked meanwhile
		}
		if m, ok := l.Data["meta"].(map[string]any); ok && m[key] == value {
			out = append(out, acc)
		}
	}
	return out
}

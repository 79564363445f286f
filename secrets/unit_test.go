package secrets

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Re-exec mode for TestExecWithEnvMap: act as the sandbox entry point.
	if mf := os.Getenv("SECURETRAIN_TEST_ENVMAP"); mf != "" {
		err := ExecWithEnvMap(mf, []string{"env"})
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func TestClientConfigFromEnvAndMerge(t *testing.T) {
	t.Setenv("VAULT_ADDR", "https://env:8200")
	t.Setenv("VAULT_TOKEN", "env-token")
	t.Setenv("VAULT_CACERT", "/env/ca.pem")
	t.Setenv("VAULT_NAMESPACE", "ns1")
	t.Setenv("VAULT_CLIENT_CERT", "")
	t.Setenv("VAULT_CLIENT_KEY", "")
	env := ClientConfigFromEnv()
	want := ClientConfig{Address: "https://env:8200", CACert: "/env/ca.pem", Namespace: "ns1", Auth: Auth{Method: MethodToken, Token: "env-token"}}
	if fmt.Sprint(env) != fmt.Sprint(want) {
		t.Fatalf("FromEnv = %+v, want %+v", env, want)
	}
	file := ClientConfig{Address: "https://file:8200", Auth: Auth{Method: MethodAppRole, RoleID: "r", SecretIDFile: "/s"}}
	got := Merge(env, file)
	want = ClientConfig{Address: "https://file:8200", CACert: "/env/ca.pem", Namespace: "ns1", Auth: file.Auth}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Merge = %+v, want %+v", got, want)
	}
	if got := Merge(env, ClientConfig{CACert: "/file/ca.pem"}); got.Auth.Token != "env-token" || got.CACert != "/file/ca.pem" {
		t.Errorf("Merge without file auth = %+v", got)
	}
}

func TestClientConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cc   ClientConfig
		want string
	}{
		{ClientConfig{}, "vault.address: required (or set VAULT_ADDR)"},
		{ClientConfig{Address: "vault:8200", Auth: Auth{Token: "x"}}, `vault.address: "vault:8200" is not an http(s) URL`},
		{ClientConfig{Address: "http://v", Auth: Auth{Method: "ldap"}}, `vault.auth.method: "ldap" is not one of token, approle, jwt, cert`},
		{ClientConfig{Address: "http://v"}, "vault.auth.token_file: required for method token (or set VAULT_TOKEN)"},
		{ClientConfig{Address: "http://v", Auth: Auth{Method: MethodAppRole, RoleID: "r"}}, "vault.auth.secret_id_file: required for method approle"},
		{ClientConfig{Address: "http://v", Auth: Auth{Method: MethodJWT, JWTFile: "/j"}}, "vault.auth.role: required for method jwt"},
		{ClientConfig{Address: "http://v", Auth: Auth{Method: MethodCert}}, "vault.client_cert: required for method cert"},
		{ClientConfig{Address: "http://v", ClientCert: "/c", Auth: Auth{Method: MethodCert}}, "vault.client_cert: client_cert and client_key go together"},
	} {
		err := tc.cc.Validate()
		if err == nil || err.Error() != "invalid secrets configuration: "+tc.want || !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cc, err, tc.want)
		}
	}
	if err := (ClientConfig{Address: "https://v:8200", Auth: Auth{TokenFile: "/t"}}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestJobSpecValidate(t *testing.T) {
	ok := JobSpec{JobID: "j1", Policies: []string{"p"}, TokenRole: "r", TTL: time.Hour, MaxTTL: time.Hour,
		HostDir: "/run/securetrain/jobs/j1/secrets",
		Secrets: []Secret{{Path: "database/creds/r", Files: map[string]string{"password": "/run/secrets/db/password"}}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	mod := func(f func(*JobSpec)) JobSpec {
		s := ok
		s.Secrets = append([]Secret(nil), ok.Secrets...)
		f(&s)
		return s
	}
	for _, tc := range []struct {
		s    JobSpec
		want string
	}{
		{mod(func(s *JobSpec) { s.TTL = 0 }), "invalid secrets configuration: secrets.ttl: ttl and max_ttl are required (at least 1s; no longer than the wall-time limit)"},
		{mod(func(s *JobSpec) { s.TTL = 2 * time.Hour }), "invalid secrets configuration: secrets.ttl: ttl 2h0m0s exceeds max_ttl 1h0m0s"},
		{mod(func(s *JobSpec) { s.Policies = []string{"root"} }), `invalid secrets configuration: secrets.policies: "root" is not an allowed policy name`},
		{mod(func(s *JobSpec) { s.OnRenewFailure = "ignore" }), `invalid secrets configuration: secrets.on_renew_failure: "ignore" is not one of stop, continue`},
		{mod(func(s *JobSpec) { s.Secrets[0].Files = nil }), `secret "database/creds/r": secret maps no field to a file or env var`},
		{mod(func(s *JobSpec) { s.Secrets[0].Files = map[string]string{"p": "/etc/passwd"} }), `invalid secrets configuration: secrets[0].files.p: "/etc/passwd" must be a clean path under /run/secrets`},
		{mod(func(s *JobSpec) { s.Secrets[0].Files = map[string]string{"p": "/run/secrets/../x"} }), `invalid secrets configuration: secrets[0].files.p: "/run/secrets/../x" must be a clean path under /run/secrets`},
		{mod(func(s *JobSpec) { s.Secrets[0].Files = map[string]string{"p": "/run/secrets/.securetrain/env.json"} }), `invalid secrets configuration: secrets[0].files.p: "/run/secrets/.securetrain/env.json" is reserved`},
		{mod(func(s *JobSpec) { s.Secrets[0].Env = map[string]string{"1X": "p"} }), `invalid secrets configuration: secrets[0].env: "1X" is not a variable name`},
		{mod(func(s *JobSpec) { s.Secrets[0].Path = "../sys/x" }), `invalid secrets configuration: secrets[0].path: "../sys/x" is not a Vault path`},
		{mod(func(s *JobSpec) { s.HostDir = "rel" }), `invalid secrets configuration: secrets host dir: "rel" must be a clean absolute path`},
	} {
		err := tc.s.Validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("Validate = %v\n want %q", err, tc.want)
		}
	}
}

func TestExecWithEnvMap(t *testing.T) {
	dir := t.TempDir()
	user, pass := filepath.Join(dir, "user"), filepath.Join(dir, "pass")
	os.WriteFile(user, []byte("alice"), 0o400)
	os.WriteFile(pass, []byte("s3cret with spaces\nand a newline"), 0o400)
	mapFile := filepath.Join(dir, "env.json")
	b, _ := json.Marshal(map[string]string{"PGUSER": user, "PGPASSWORD": pass})
	os.WriteFile(mapFile, b, 0o400)

	run := func(mf string) (string, string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "SECURETRAIN_TEST_ENVMAP=" + mf, "VAULT_TOKEN=launcher-token"}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	out, stderr, err := run(mapFile)
	if err != nil {
		t.Fatalf("re-exec: %v: %s", err, stderr)
	}
	for _, want := range []string{"PGUSER=alice\n", "PGPASSWORD=s3cret with spaces\nand a newline\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("env output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "VAULT_TOKEN") {
		t.Errorf("VAULT_TOKEN reached the job:\n%s", out)
	}

	os.Remove(pass)
	_, stderr, err = run(mapFile)
	want := "env map: PGPASSWORD: read " + pass + ": no such file or directory\n"
	if err == nil || stderr != want {
		t.Errorf("missing file: err %v stderr %q, want %q", err, stderr, want)
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte("[1]"), 0o400)
	_, stderr, _ = run(filepath.Join(dir, "bad.json"))
	if want := "env map: " + filepath.Join(dir, "bad.json") + " is not a JSON object of variable to file\n"; stderr != want {
		t.Errorf("bad map: stderr %q, want %q", stderr, want)
	}
}

func TestRenewInterval(t *testing.T) {
	for i := 0; i < 1000; i++ {
		d := renewInterval(30 * time.Second)
		if d < 9*time.Second || d > 11*time.Second {
			t.Fatalf("renewInterval(30s) = %s, want 10s ±10%%", d)
		}
	}
	if d := renewInterval(time.Second); d != 500*time.Millisecond {
		t.Errorf("renewInterval(1s) = %s, want the 500ms floor", d)
	}
}

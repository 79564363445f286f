package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/configs"
)

func testHost(t *testing.T) *configs.Host {
	t.Helper()
	dir := t.TempDir()
	profiles := filepath.Join(dir, "profiles")
	if err := os.Mkdir(profiles, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"open.yaml":   "version: 1\nnetwork:\n  unrestricted: true\n",
		"secure.yaml": "version: 1\nlimits:\n  pids: 100\nnetwork:\n  mode: sandbox\n",
	} {
		if err := os.WriteFile(filepath.Join(profiles, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "securetrain.yaml")
	body := "version: 1\nprofile_dir: " + profiles + `
daemon:
  admin_groups: [st-admins]
network:
  allow_max: ["pypi.org:443"]
policy:
  rules:
    - users: [alice]
      groups: [ml]
      profiles: [default, secure, open]
      max_cpus: 4
      max_memory: 8GiB
      max_gpus: 1
      max_wall_time: 2h
      allow: ["*.example.com"]
    - users: [carol]
      profiles: [default]
`
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := configs.LoadHost(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

var alice = Identity{UID: 1001, GID: 1001, Name: "alice", GroupNames: []string{"alice"}}

func noRead(Identity, string) ([]byte, error) { return nil, errors.New("read called") }

func TestAuthorizeAllows(t *testing.T) {
	h := testHost(t)
	args := &RunArgs{Command: []string{"true"}, Dir: "/home/alice", CPUs: 4, Memory: "8GiB", WallTime: time.Hour,
		Allow: []string{"mlflow.example.com", "pypi.org:443"}, Profile: "secure", Pids: 50}
	d, err := Authorize(h, alice, args, nil, noRead)
	if err != nil {
		t.Fatal(err)
	}
	p := d.Profile
	if p.Limits.CPUs != 4 || p.Limits.Memory != 8<<30 || p.Limits.WallTime.D() != time.Hour || p.Limits.Pids != 50 || d.Rule != 0 {
		t.Errorf("profile limits = %+v (rule %d)", p.Limits, d.Rule)
	}
	// A group grants too; the profile file in the admin dir is the named profile.
	bob := Identity{UID: 1002, Name: "bob", GroupNames: []string{"bob", "ml"}}
	if _, err := Authorize(h, bob, &RunArgs{Command: []string{"true"}, Profile: filepath.Join(h.ProfileDir, "secure.yaml")}, nil, noRead); err != nil {
		t.Errorf("bob via group ml, profile file in the admin dir: %v", err)
	}
	// Admins are not bound; their profile file is read as them.
	admin := Identity{UID: 1003, Name: "dave", GroupNames: []string{"st-admins"}, Admin: true}
	read := func(id Identity, p string) ([]byte, error) { return []byte("version: 1\nlimits:\n  cpus: 3\n"), nil }
	d, err = Authorize(h, admin, &RunArgs{Command: []string{"true"}, Dir: "/x", Profile: "mine.yaml", CPUs: 64, Rootfs: "/srv/img"}, nil, read)
	if err != nil || d.Profile.Limits.CPUs != 64 || d.Profile.Sandbox.Rootfs != "/srv/img" {
		t.Errorf("admin: %v %+v", err, d)
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	h := testHost(t)
	run := func(mod func(*RunArgs)) *RunArgs {
		a := &RunArgs{Command: []string{"python", "train.py"}, Dir: "/home/alice"}
		mod(a)
		return a
	}
	cases := []struct {
		name string
		id   Identity
		args *RunArgs
		want string
	}{
		{"user not in policy", Identity{UID: 1005, Name: "eve", GroupNames: []string{"eve"}}, run(func(*RunArgs) {}),
			"user eve may not run jobs through the daemon: no rule under policy.rules in "},
		{"profile denied", Identity{UID: 1006, Name: "carol"}, run(func(a *RunArgs) { a.Profile = "gpu" }),
			`profile "gpu" is not allowed for user carol (allowed: default)`},
		{"profile file outside admin dir", alice, run(func(a *RunArgs) { a.Profile = "my.yaml" }),
			"profile file my.yaml is outside the admin's profile directory " + h.ProfileDir},
		{"unrestricted profile", alice, run(func(a *RunArgs) { a.Profile = "open" }),
			`profile "open" is unrestricted (no egress allowlist): only root and members of the admin groups`},
		{"--unrestricted", alice, run(func(a *RunArgs) { a.Unrestricted = true }), "--unrestricted: only root and members of the admin groups"},
		{"--rootfs", alice, run(func(a *RunArgs) { a.Rootfs = "/srv/image" }), "--rootfs /srv/image: only root and members of the admin groups"},
		{"--learn", alice, run(func(a *RunArgs) { a.Learn = true }), "--learn: only root and members of the admin groups"},
		{"--user", alice, run(func(a *RunArgs) { a.User = "bob" }), "--user bob: only root and members of the admin groups"},
		{"--cpus above", alice, run(func(a *RunArgs) { a.CPUs = 5 }), "--cpus 5: above the bound 4 the host policy sets for user alice (policy.rules[0].max_cpus)"},
		{"--memory above", alice, run(func(a *RunArgs) { a.Memory = "9GiB" }), "--memory 9GiB: above the bound 8GiB the host policy sets for user alice (policy.rules[0].max_memory)"},
		{"--wall-time above", alice, run(func(a *RunArgs) { a.WallTime = 3 * time.Hour }), "--wall-time 3h0m0s: above the bound 2h0m0s"},
		{"--gpus above", alice, run(func(a *RunArgs) { a.GPUs = "2" }), "--gpus 2: above the bound 1"},
		{"--gpus all above", alice, &RunArgs{Command: []string{"x"}, GPUs: "all"}, "--gpus all: above the bound 1"},
		{"--pids above profile", alice, run(func(a *RunArgs) { a.Profile = "secure"; a.Pids = 101 }), "--pids 101: above the profile's limits.pids 100"},
		{"--allow not listed", alice, run(func(a *RunArgs) { a.Allow = []string{"evil.com:443"} }),
			"--allow evil.com:443: not permitted for user alice by the host policy (policy.rules[0].allow: *.example.com, pypi.org:443)"},
		{"--peers not listed", alice, run(func(a *RunArgs) { a.Peers = []string{"10.213.0.5"} }),
			"--peers 10.213.0.5: not permitted for user alice by the host policy"},
		{"bound unset", Identity{UID: 1006, Name: "carol"}, run(func(a *RunArgs) { a.CPUs = 1 }),
			"--cpus: not allowed for user carol: the host policy sets no policy.rules[1].max_cpus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var avail []int
			if c.args.GPUs == "all" {
				avail = []int{0, 1}
			}
			_, err := Authorize(h, c.id, c.args, avail, noRead)
			if err == nil {
				t.Fatalf("want refusal %q, got none", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("refusal:\n got %q\nwant it to hold %q on one line", err, c.want)
			}
			if !errors.Is(err, ErrDenied) {
				t.Errorf("refusal %q does not wrap ErrDenied", err)
			}
		})
	}
}

func TestAuthorizeAdminMayLearn(t *testing.T) {
	h := testHost(t)
	root := Identity{UID: 0, Name: "root", Admin: true}
	if _, err := Authorize(h, root, &RunArgs{Command: []string{"x"}, Learn: true}, nil, noRead); err != nil {
		t.Errorf("admin --learn: %v", err)
	}
}

func TestIsAdmin(t *testing.T) {
	if !isAdmin(0, nil, nil) || !isAdmin(5, []string{"x", "wheel"}, []string{"wheel"}) || isAdmin(5, []string{"x"}, []string{"wheel"}) {
		t.Error("isAdmin")
	}
}

func TestExampleHostConfig(t *testing.T) {
	h, err := configs.LoadHost("../examples/securetrain-daemon.yaml", true)
	if err != nil {
		t.Fatal(err)
	}
	ml := Identity{UID: 2000, Name: "ana", GroupNames: []string{"ana", "ml"}}
	if _, err := Authorize(h, ml, &RunArgs{Command: []string{"x"}, Dir: "/", CPUs: 8, Allow: []string{"a.mlflow.internal.example.com:443"}, Network: ""}, nil, noRead); err != nil && !strings.Contains(err.Error(), "network.mode") {
		t.Errorf("ml member: %v", err)
	}
	if _, err := Authorize(h, Identity{UID: 2001, Name: "intern1"}, &RunArgs{Command: []string{"x"}, Profile: "gpu"}, nil, noRead); !errors.Is(err, ErrDenied) {
		t.Errorf("intern with gpu: %v", err)
	}
}

package configs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDefaultsFilled(t *testing.T) {
	p, err := ParseProfile("p.yaml", []byte("version: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	l, s, n, v := p.Limits, p.Sandbox, p.Network, p.Vault
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"limits.cpus", l.CPUs, float64(DefaultCPUs)},
		{"limits.memory", l.Memory, ByteSize(DefaultMemory)},
		{"limits.pids", l.Pids, int64(DefaultPids)},
		{"limits.wall_time", l.WallTime.D(), DefaultWallTime},
		{"limits.scratch", l.Scratch, ByteSize(DefaultScratch)},
		{"limits.home", l.Home, ByteSize(DefaultHome)},
		{"limits.shm", l.Shm, ByteSize(DefaultShm)},
		{"limits.stop_grace", l.StopGrace.D(), DefaultStopGrace},
		{"limits.grace.cpus", l.Grace.CPUs.D(), DefaultCPUGrace},
		{"limits.grace.gpu_memory", l.Grace.GPUMemory.D(), DefaultGPUGrace},
		{"limits.gpus", l.GPUs.None(), true},
		{"sandbox.rootfs", s.Rootfs, "host"},
		{"sandbox.output", s.Output, DefaultOutput},
		{"sandbox.log_limit", s.LogLimit, ByteSize(DefaultLogLimit)},
		{"sandbox.platform", s.Platform, DefaultPlatform},
		{"gpu.capabilities", p.GPU.Capabilities, []string{"compute", "utility"}},
		{"network.mode", n.Mode, "none"},
		{"network.policy", n.Policy, "enforce"},
		{"network.dns_min_ttl", n.DNSMinTTL.D(), DefaultDNSMinTTL},
		{"vault.on_renew_failure", v.OnRenewFailure, "stop"},
		{"vault.ttl (no secrets)", v.TTL.D(), time.Duration(0)},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
	if p.Source != "p.yaml" || !strings.HasPrefix(p.Digest, "sha256:") || len(p.Digest) != len("sha256:")+64 {
		t.Errorf("Source, Digest = %q, %q", p.Source, p.Digest)
	}
}

func TestDefaultsDependOnOtherFields(t *testing.T) {
	p, err := ParseProfile("p.yaml", []byte(`version: 1
limits: {wall_time: 30m}
network:
  allow: [pypi.org:443]
vault: {token_role: job, policies: [reader]}
secrets:
- {path: kv/data/x, files: {token: /run/secrets/token}}
inputs:
- {path: /data/set, manifest: /data/set.sha256}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Network.Mode != "sandbox" {
		t.Errorf("network.mode = %q, want sandbox when allow is set", p.Network.Mode)
	}
	if p.Vault.TTL.D() != 30*time.Minute {
		t.Errorf("vault.ttl = %v, want min(1h, wall_time) = 30m", p.Vault.TTL)
	}
	if p.Inputs[0].Kind != "dataset" {
		t.Errorf("inputs[0].kind = %q, want dataset", p.Inputs[0].Kind)
	}
	q, err := ParseProfile("p.yaml", []byte("version: 1\nvault: {token_role: j, policies: [r]}\nsecrets:\n- {path: a, env: {A: b}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Vault.TTL.D() != DefaultVaultTTL {
		t.Errorf("vault.ttl = %v, want %v", q.Vault.TTL, DefaultVaultTTL)
	}
}

func TestNullAndEmptySectionsMeanDefaults(t *testing.T) {
	for _, doc := range []string{
		"version: 1\nlimits:\nsandbox: ~\nsecrets:\nenv: {set: ~, pass: null}\n",
		"version: 1\nlimits: {cpus: ~, memory: null, gpus: ~}\nsandbox: {rootfs: ~}\n",
		"version: 1\nlimits: {}\nsandbox: {}\nsecrets: []\n",
	} {
		p, err := ParseProfile("p.yaml", []byte(doc))
		if err != nil {
			t.Errorf("%q: %v", doc, err)
			continue
		}
		if p.Limits.CPUs != DefaultCPUs || p.Limits.Memory != DefaultMemory || p.Sandbox.Rootfs != "host" || !p.Limits.GPUs.None() {
			t.Errorf("%q: defaults not filled: %+v %+v", doc, p.Limits, p.Sandbox)
		}
	}
}

func TestValidateReportsEveryFailureOnePerLine(t *testing.T) {
	_, err := ParseProfile("p.yaml", []byte("version: 1\nlimits:\n  cpus: 0\n  pids: 1\nsandbox:\n  platform: x\nenv:\n  set: {VAULT_TOKEN: a, LD_PRELOAD: b}\n"))
	want := `p.yaml:4: limits.pids: must be between 16 and 4194304, got 1
p.yaml:6: sandbox.platform: must be one of systrap, ptrace, kvm, got "x"
p.yaml:8: env.set.LD_PRELOAD: LD_PRELOAD may never be passed to a job (launcher credentials, loader injection or unsafe model loading)
p.yaml:8: env.set.VAULT_TOKEN: VAULT_TOKEN may never be passed to a job (launcher credentials, loader injection or unsafe model loading)`
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got: %v\nwant: %s", err, want)
	}
	// Validate itself, as the launcher calls it after applying flags, names
	// no file.
	p := &Profile{Version: 1}
	p.SetDefaults()
	p.Limits.CPUs = 2000
	if err := p.Validate(); err == nil || err.Error() != "limits.cpus: must be between 0.01 and 1024, got 2000" {
		t.Errorf("Validate() = %v", err)
	}
}

func TestAliasesResolvedAndBounded(t *testing.T) {
	p, err := ParseProfile("p.yaml", []byte(`version: 1
env:
  pass: &names [HOME, USER]
vault: {token_role: job, policies: *names}
secrets:
- {path: &p kv/a, env: {A: a}}
- {path: *p, env: {B: b}}
limits: {gpus: [0, &two 2], cpus: *two}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Vault.Policies, []string{"HOME", "USER"}) || len(p.Secrets) != 2 || p.Secrets[1].Path != "kv/a" ||
		p.Limits.CPUs != 2 || p.Limits.GPUs.String() != "0,2" {
		t.Errorf("aliases not resolved: %+v %+v %+v", p.Vault, p.Secrets, p.Limits)
	}

	// A billion-laughs file: 300 secrets, each aliasing a 300-entry map,
	// would decode to 90000 map entries from 30KB; it must be refused, not
	// allocated.
	var b strings.Builder
	b.WriteString("version: 1\nvault: {token_role: j, policies: [r]}\nenv:\n  set: &m {")
	for i := range 300 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("V" + strconv.Itoa(i) + ": f")
	}
	b.WriteString("}\nsecrets:\n")
	for range 300 {
		b.WriteString("- {path: kv/a, env: *m}\n")
	}
	_, err = ParseProfile("p.yaml", []byte(b.String()))
	want := "p.yaml:4: secrets[215].env.V79: file expands to more than 65536 values (anchors and aliases?); write a smaller file"
	if err == nil || err.Error() != want {
		t.Fatalf("billion-laughs profile: %v\nwant %s", err, want)
	}
}

func TestShippedProfiles(t *testing.T) {
	ents, err := fs.ReadDir(shipped, "profiles")
	if err != nil || len(ents) < 2 {
		t.Fatalf("shipped profiles: %v, %d", err, len(ents))
	}
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		p, err := LoadProfile(name, "")
		if err != nil {
			t.Errorf("shipped profile %s: %v", name, err)
			continue
		}
		if p.Name != name || p.Source != "builtin:"+name || p.Description == "" {
			t.Errorf("shipped profile %s: name %q, source %q, description %q", name, p.Name, p.Source, p.Description)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("shipped profile %s does not re-validate: %v", name, err)
		}
	}
	d, err := LoadProfile("default", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Limits.CPUs != 2 || d.Limits.Memory != 8<<30 || d.Network.Mode != "none" || !d.Limits.GPUs.None() || d.Limits.WallTime.D() != 24*time.Hour {
		t.Errorf("default profile: %+v %+v", d.Limits, d.Network)
	}
	g, err := LoadProfile("gpu", "")
	if err != nil {
		t.Fatal(err)
	}
	if !g.Limits.GPUs.All || g.Limits.Memory != 64<<30 || g.Network.Mode != "none" || !reflect.DeepEqual(g.GPU.Capabilities, []string{"compute", "utility"}) {
		t.Errorf("gpu profile: %+v %+v", g.Limits, g.GPU)
	}
	e, err := LoadProfile("", "")
	if err != nil || e.Source != "builtin:default" {
		t.Errorf(`LoadProfile("") = %v, %v; want the default profile`, e, err)
	}
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadProfileByPath(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "mine.yaml", "version: 1\nname: mine\nlimits: {cpus: 3}\n")
	p, err := LoadProfile(f, "")
	if err != nil || p.Limits.CPUs != 3 || p.Source != f {
		t.Fatalf("LoadProfile(%s) = %+v, %v", f, p, err)
	}
	bad := writeFile(t, dir, "bad.yml", "version: 1\nlimits: {cpus: 3000}\n")
	if _, err := LoadProfile(bad, ""); err == nil || err.Error() != bad+":2: limits.cpus: must be between 0.01 and 1024, got 3000" {
		t.Errorf("LoadProfile(bad) = %v", err)
	}
	missing := filepath.Join(dir, "nope.yaml")
	_, err = LoadProfile(missing, "")
	if err == nil || err.Error() != "profile "+missing+": no such file or directory" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadProfile(missing) = %v", err)
	}
}

func TestLoadProfileByName(t *testing.T) {
	admin := t.TempDir()
	writeFile(t, admin, "default.yaml", "version: 1\nname: default\ndescription: site default\nlimits: {cpus: 4}\n")
	writeFile(t, admin, "big.yaml", "version: 1\nname: big\ndescription: big jobs\nlimits: {cpus: 64, memory: 512GiB}\n")
	writeFile(t, admin, "notes.txt", "not a profile")

	p, err := LoadProfile("default", admin)
	if err != nil || p.Description != "site default" || p.Limits.CPUs != 4 || p.Source != filepath.Join(admin, "default.yaml") {
		t.Errorf("admin default = %+v, %v; want the admin's file to win", p, err)
	}
	if p, err := LoadProfile("gpu", admin); err != nil || p.Source != "builtin:gpu" {
		t.Errorf("gpu with admin dir = %v, %v; want the shipped one", p, err)
	}
	if p, err := LoadProfile("big", admin); err != nil || p.Limits.Memory != 512<<30 {
		t.Errorf("big = %v, %v", p, err)
	}

	_, err = LoadProfile("nope", admin)
	if err == nil || err.Error() != `profile "nope": no such profile; available: big, default, distributed, gpu (or give a file path)` || !errors.Is(err, ErrNoProfile) {
		t.Errorf("unknown name = %v", err)
	}
	_, err = LoadProfile("nope", "")
	if err == nil || err.Error() != `profile "nope": no such profile; available: default, distributed, gpu (or give a file path)` {
		t.Errorf("unknown name, no admin dir = %v", err)
	}
	_, err = LoadProfile("bad name", admin)
	if err == nil || err.Error() != `profile "bad name": a name may hold letters, digits, '-', '_' and '.' only (or give a file path)` {
		t.Errorf("bad name = %v", err)
	}
	_, err = LoadProfile(".hidden", admin)
	if err == nil || !strings.Contains(err.Error(), "a name may hold") {
		t.Errorf(".hidden = %v", err)
	}
}

func TestLoadProfileAdminInvalid(t *testing.T) {
	admin := t.TempDir()
	f := writeFile(t, admin, "default.yaml", "version: 1\nlimits: {cpu: 4}\n")
	// A broken admin profile is an error, never a silent fall-back to the
	// shipped one.
	_, err := LoadProfile("default", admin)
	if err == nil || err.Error() != f+":2: limits.cpu: unknown field; allowed: "+allowedLimits {
		t.Errorf("broken admin profile = %v", err)
	}
	if err := os.Chmod(f, 0); err == nil && os.Geteuid() != 0 {
		if _, err := LoadProfile("default", admin); err == nil || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("unreadable admin profile = %v", err)
		}
	}
}

func TestListProfiles(t *testing.T) {
	refs, err := ListProfiles("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.Name+"="+r.Source)
		if r.Description == "" || r.Admin {
			t.Errorf("shipped %+v", r)
		}
	}
	if got := strings.Join(names, " "); got != "default=builtin:default distributed=builtin:distributed gpu=builtin:gpu" {
		t.Errorf("ListProfiles() = %s", got)
	}

	admin := t.TempDir()
	writeFile(t, admin, "default.yaml", "version: 1\ndescription: site default\n")
	bad := writeFile(t, admin, "broken.yaml", "version: 2\n")
	refs, err = ListProfiles(admin)
	if err == nil || err.Error() != bad+":1: version: unsupported version 2; this build reads version: 1" {
		t.Errorf("ListProfiles(admin) error = %v", err)
	}
	got := map[string]ProfileRef{}
	for _, r := range refs {
		got[r.Name] = r
	}
	if len(refs) != 4 || !got["default"].Admin || got["default"].Description != "site default" ||
		got["gpu"].Admin || !got["broken"].Admin || !strings.HasPrefix(got["broken"].Description, "INVALID: ") {
		t.Errorf("ListProfiles(admin) = %+v", refs)
	}
}

func TestIsProfilePath(t *testing.T) {
	for arg, want := range map[string]bool{"default": false, "gpu": false, "my.profile": false, "x.yaml": true, "x.yml": true, "./x": true, "/etc/p": true} {
		if got := IsProfilePath(arg); got != want {
			t.Errorf("IsProfilePath(%q) = %v", arg, got)
		}
	}
}

func TestListProfilesAdminDirIsReadNotGlobbed(t *testing.T) {
	root := t.TempDir()
	admin := filepath.Join(root, "p[1]")
	other := filepath.Join(root, "p1") // what the pattern p[1] would match
	for _, d := range []string{admin, other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, admin, "mine.yaml", "version: 1\ndescription: mine\n")
	writeFile(t, other, "theirs.yaml", "version: 1\ndescription: theirs\n")
	writeFile(t, admin, "bad name.yaml", "version: 1\n")
	if err := os.Mkdir(filepath.Join(admin, "dir.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	refs, err := ListProfiles(admin)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, " "); got != "default distributed gpu mine" {
		t.Errorf("ListProfiles(%s) = %s, want default distributed gpu mine", admin, got)
	}
	if refs, err := ListProfiles(filepath.Join(root, "missing")); err != nil || len(refs) != 3 {
		t.Errorf("ListProfiles(missing dir) = %v, %v; want the shipped profiles and no error", refs, err)
	}
}

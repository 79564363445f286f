package configs

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadHostMissingDefaultFileMeansDefaults(t *testing.T) {
	f := filepath.Join(t.TempDir(), "securetrain.yaml")
	h, err := LoadHost(f, false)
	if err != nil {
		t.Fatal(err)
	}
	want := Host{
		Version: 1, StateDir: "/run/securetrain", DataDir: "/var/lib/securetrain", ProfileDir: DefaultProfileDir,
		Network: HostNetwork{Pool: "10.213.0.0/16"}, Audit: HostAudit{Path: "/var/log/securetrain/audit.jsonl"},
		Daemon: HostDaemon{Socket: "/run/securetrain/securetrain.sock"}, Integrity: HostIntegrity{TransitMount: "transit", CodeSnapshotMax: DefaultCodeSnapshotMax},
		Source: f,
	}
	if h.Version != want.Version || h.StateDir != want.StateDir || h.DataDir != want.DataDir || h.ProfileDir != want.ProfileDir ||
		h.Network.Pool != want.Network.Pool || h.Audit != want.Audit || h.Daemon.Socket != want.Daemon.Socket ||
		h.Integrity != want.Integrity || h.Source != want.Source {
		t.Errorf("defaults = %+v\nwant %+v", h, want)
	}
}

func TestLoadHostExplicitMissingIsError(t *testing.T) {
	f := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := LoadHost(f, true)
	if err == nil || err.Error() != "host config "+f+": no such file or directory" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadHost(explicit missing) = %v", err)
	}
}

func TestLoadHost(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "h.yaml", `version: 1
runsc: /usr/local/bin/runsc
state_dir: /run/st
vault:
  address: https://127.0.0.1:8200
  auth: {method: approle, role_id: abc, secret_id_file: /etc/securetrain/sid}
network:
  upstreams: [127.0.0.53]
daemon:
  admin_groups: [wheel]
`)
	h, err := LoadHost(f, true)
	if err != nil {
		t.Fatal(err)
	}
	if h.Runsc != "/usr/local/bin/runsc" || h.StateDir != "/run/st" || h.Daemon.Socket != "/run/st/securetrain.sock" ||
		h.Vault.Auth.Method != "approle" || h.Vault.Auth.RoleID != "abc" || len(h.Network.Upstreams) != 1 || h.Daemon.AdminGroups[0] != "wheel" ||
		h.Daemon.GCInterval.D() != 30*time.Second {
		t.Errorf("LoadHost = %+v", h)
	}
}

func TestLoadHostErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown field", "version: 1\nvault:\n  adress: x\n", "h.yaml:3: vault.adress: unknown field; allowed: address, auth, ca_cert, client_cert, client_key, namespace"},
		{"unknown top-level", "version: 1\nrunc: /x\n", "h.yaml:2: runc: unknown field; allowed: audit, daemon, data_dir, integrity, network, policy, profile_dir, runsc, slurm, state_dir, vault, version"},
		{"wrong type", "version: 1\nnetwork: {upstreams: 1.1.1.1}\n", `h.yaml:2: network.upstreams: want a list, got "1.1.1.1"`},
		{"duplicate", "version: 1\nrunsc: /a\nrunsc: /b\n", "h.yaml:3: runsc: appears twice"},
		{"empty", "", "h.yaml: file is empty; it needs at least version: 1"},
		{"two documents", "version: 1\n---\nversion: 1\n", "h.yaml:2: holds more than one YAML document (---); a file holds exactly one"},
		{"version missing", "runsc: /x\n", "h.yaml: version: missing; this build reads version: 1"},
		{"version unsupported", "version: 3\n", "h.yaml:1: version: unsupported version 3; this build reads version: 1"},
		{"relative state_dir", "version: 1\nstate_dir: run\n", `h.yaml:2: state_dir: must be an absolute path, got "run"`},
		{"relative audit path", "version: 1\naudit:\n  path: audit.jsonl\n", `h.yaml:3: audit.path: must be an absolute path, got "audit.jsonl"`},
		{"relative runsc", "version: 1\nrunsc: runsc\n", `h.yaml:2: runsc: must be an absolute path, got "runsc"`},
		{"auth method", "version: 1\nvault: {auth: {method: userpass}}\n", `h.yaml:2: vault.auth.method: must be token, approle, jwt or cert, got "userpass"`},
		{"bool for string", "version: 1\nvault: {auth: {method: true}}\n", "h.yaml:2: vault.auth.method: want a string, got true (quote it)"},
		{"pool", "version: 1\nnetwork:\n  pool: 100.127.0.0\n", `h.yaml:3: network.pool: must be an address range such as 10.213.0.0/16, got "100.127.0.0"`},
		{"internal range", "version: 1\nnetwork:\n  internal_ranges: [10.0.0.0/8, intranet]\n", `h.yaml:3: network.internal_ranges[1]: must be an address range such as 10.0.0.0/8, got "intranet"`},
		{"upstream", "version: 1\nnetwork:\n  upstreams:\n  - 127.0.0.53:53\n  - dns.example\n", `h.yaml:5: network.upstreams[1]: must be a resolver address such as 127.0.0.53 or 127.0.0.53:53, got "dns.example"`},
		{"slurm unknown field", "version: 1\nslurm:\n  enabled: true\n  partition: gpu\n", "h.yaml:4: slurm.partition: unknown field; allowed: conf, enabled, node_name, require_job"},
		{"slurm require_job without enabled", "version: 1\nslurm:\n  require_job: true\n", "h.yaml:2: slurm: require_job, conf and node_name need enabled: true"},
		{"slurm relative conf", "version: 1\nslurm:\n  enabled: true\n  conf: slurm.conf\n", `h.yaml:4: slurm.conf: must be an absolute path to slurm.conf, got "slurm.conf"`},
		{"allocation block not a power of two", "version: 1\nnetwork:\n  allocation_block: 3\n", "h.yaml:3: network.allocation_block: must be a power of two from 1 to 64, and at most the job subnet's 16384 /30 slots, got 3"},
		{"allocation block over the subnet", "version: 1\nnetwork:\n  node_subnet: 10.213.1.0/28\n  allocation_block: 8\n", "h.yaml:4: network.allocation_block: must be a power of two from 1 to 64, and at most the job subnet's 4 /30 slots, got 8"},
		{"slurm node list", "version: 1\nslurm: {enabled: true, node_name: \"n1,n2\"}\n", `h.yaml:2: slurm.node_name: must be one Slurm node name (no spaces, '/', ',', '=' or leading '-'), got "n1,n2"`},
		{"slurm enabled not bool", "version: 1\nslurm: {enabled: yes please}\n", "h.yaml:2: slurm.enabled: want true or false, got \"yes please\""},
		{"checkpoints unsigned", "version: 1\naudit:\n  checkpoints: /mnt/remote/cp.jsonl\n", "h.yaml:3: audit.checkpoints: checkpoints are signed: set integrity.signing_key or integrity.transit_key"},
		{"checkpoints relative", "version: 1\nintegrity: {signing_key: /etc/securetrain/k}\naudit:\n  checkpoints: cp.jsonl\n", `h.yaml:4: audit.checkpoints: must be an absolute path (storage the node cannot rewrite), got "cp.jsonl"`},
		{"checkpoints are the log", "version: 1\nintegrity: {signing_key: /etc/securetrain/k}\naudit: {path: /var/log/a.jsonl, checkpoints: /var/log/a.jsonl}\n", "h.yaml:3: audit.checkpoints: must not be the audit log itself (/var/log/a.jsonl)"},
		{"checkpoint_every without checkpoints", "version: 1\naudit:\n  checkpoint_every: 10\n", "h.yaml:3: audit.checkpoint_every: needs audit.checkpoints (where the checkpoints go)"},
		{"checkpoint_every negative", "version: 1\nintegrity: {signing_key: /etc/securetrain/k}\naudit: {checkpoints: /mnt/cp, checkpoint_every: -1}\n", "h.yaml:3: audit.checkpoint_every: must be 0 (at close only) or a positive number of appends, got -1"},
		{"gc interval too short", "version: 1\ndaemon:\n  gc_interval: 100ms\n", "h.yaml:3: daemon.gc_interval: must be between 1s and 1h0m0s, got 100ms"},
		{"gc interval negative", "version: 1\ndaemon: {gc_interval: -30s}\n", `h.yaml:2: daemon.gc_interval: want a duration such as 30s or 2h, got "-30s"`},
		{"gc interval too long", "version: 1\ndaemon: {gc_interval: 2h}\n", "h.yaml:2: daemon.gc_interval: must be between 1s and 1h0m0s, got 2h0m0s"},
		{"gc interval not a duration", "version: 1\ndaemon: {gc_interval: 30}\n", `h.yaml:2: daemon.gc_interval: want a duration such as 30s or 2h, got "30"`},
		{"warm size too large", "version: 1\ndaemon:\n  warm: {profiles: [default], size: 9}\n", "h.yaml:3: daemon.warm.size: must be between 1 and 8 sandboxes per profile, with daemon.warm.profiles naming the profiles, got 9"},
		{"warm size without profiles", "version: 1\ndaemon:\n  warm:\n    size: 2\n", "h.yaml:4: daemon.warm.size: must be between 1 and 8 sandboxes per profile, with daemon.warm.profiles naming the profiles, got 2"},
		{"two failures in order", "version: 1\ndata_dir: d\nstate_dir: s\n",
			"h.yaml:3: state_dir: must be an absolute path, got \"s\"\nh.yaml:2: data_dir: must be an absolute path, got \"d\""},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, dir, "h.yaml", tt.yaml)
			h, err := LoadHost(f, true)
			if err == nil {
				t.Fatalf("accepted: %+v", h)
			}
			if want := strings.ReplaceAll(tt.want, "h.yaml", f); err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
		})
	}
}

func TestLoadHostSlurmAndCheckpoints(t *testing.T) {
	f := writeFile(t, t.TempDir(), "h.yaml", `version: 1
integrity: {signing_key: /etc/securetrain/audit.key}
audit:
  checkpoints: /mnt/audit-remote/node1.jsonl
  checkpoint_every: 50
slurm:
  enabled: true
  require_job: true
  conf: /etc/slurm/slurm.conf
  node_name: gpu-07
`)
	h, err := LoadHost(f, true)
	if err != nil {
		t.Fatal(err)
	}
	want := HostSlurm{Enabled: true, RequireJob: true, Conf: "/etc/slurm/slurm.conf", NodeName: "gpu-07"}
	if h.Slurm != want || h.Audit.Checkpoints != "/mnt/audit-remote/node1.jsonl" || h.Audit.CheckpointEvery != 50 {
		t.Errorf("LoadHost = slurm %+v audit %+v", h.Slurm, h.Audit)
	}
}

func TestHostPolicy(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "h.yaml", `version: 1
policy:
  rules:
    - users: [alice]
      groups: [ml]
      profiles: [default, gpu]
      max_cpus: 4
      max_memory: 8GiB
      max_gpus: 1
      max_wall_time: 2h
      allow: ["*.example.com", "pypi.org:443"]
`)
	h, err := LoadHost(f, true)
	if err != nil {
		t.Fatal(err)
	}
	r := h.Policy.Rules[0]
	if r.MaxCPUs != 4 || r.MaxMemory != 8<<30 || r.MaxGPUs != 1 || r.MaxWallTime.D().Hours() != 2 {
		t.Errorf("rule = %+v", r)
	}
	if got, _, _ := h.Policy.Match("bob", []string{"ml"}, "gpu"); got == nil {
		t.Error("group ml must match")
	}
	if got, _, names := h.Policy.Match("bob", []string{"other"}, "default"); got != nil || names {
		t.Error("bob without group ml must not match")
	}
	if got, _, names := h.Policy.Match("alice", nil, "unrestricted"); got != nil || !names {
		t.Error("alice is named but not for profile unrestricted")
	}
	for a, want := range map[string]bool{"mlflow.example.com": true, "mlflow.example.com:443": true, "example.com": false, "pypi.org:443": true, "pypi.org": false, "evil.com": false} {
		if r.AllowsEntry(a) != want {
			t.Errorf("AllowsEntry(%q) = %v, want %v", a, !want, want)
		}
	}
}

func TestHostPolicyInvalid(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "h.yaml", `version: 1
policy:
  rules:
    - profiles: [default]
    - users: [alice]
      profiles: []
      max_cpus: -1
`)
	_, err := LoadHost(f, true)
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"policy.rules[0]: names no users and no groups", "policy.rules[1].profiles: lists no profiles", "policy.rules[1].max_cpus: must not be negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	f2 := writeFile(t, dir, "h2.yaml", "version: 1\npolicy:\n  rules:\n    - users: [a]\n      profiles: [x]\n      max_gpu: 1\n")
	if _, err := LoadHost(f2, true); err == nil || !strings.Contains(err.Error(), "max_gpu") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestHostIntegritySigner(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{"integrity:\n  signing_key: /etc/securetrain/provenance.key\n", ""},
		{"integrity:\n  transit_key: provenance\n", ""},
		{"integrity:\n  signing_key: provenance.key\n", `integrity.signing_key: must be an absolute path to an ed25519 private key file, got "provenance.key"`},
		{"integrity:\n  signing_key: /k\n  transit_key: provenance\n", "integrity: give signing_key (a key file) or transit_key (Vault transit), not both"},
	} {
		f := writeFile(t, dir, "h.yaml", "version: 1\n"+c.body)
		_, err := LoadHost(f, true)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.body, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: got %v, want an error containing %q", c.body, err, c.want)
		}
	}
}

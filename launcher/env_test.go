package launcher

import (
	"slices"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
)

// hostileCaller is a root shell's environment after sudo -E on a machine
// that runs Vault agents, proxies and cloud tooling.
var hostileCaller = map[string]string{
	"VAULT_TOKEN": "hvs.secret", "VAULT_ADDR": "https://vault:8200", "vault_token": "x",
	"LD_PRELOAD": "/tmp/evil.so", "LD_LIBRARY_PATH": "/home/alice/evil", "LD_AUDIT": "/x.so",
	"AWS_SECRET_ACCESS_KEY": "aws-secret", "AWS_ACCESS_KEY_ID": "AKIA", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
	"SSH_AUTH_SOCK": "/tmp/ssh-agent", "http_proxy": "http://proxy:3128", "HTTPS_PROXY": "http://proxy:3128",
	"no_proxy": "localhost", "SUDO_USER": "alice", "SECURETRAIN_RUNSC": "/x", "PYTHONSTARTUP": "/x.py",
	"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "BASH_ENV": "/x", "NVIDIA_DRIVER_CAPABILITIES": "all",
	"HOME": "/root", "PATH": "/root/bin:/usr/bin", "USER": "root",
	"LANG": "de_DE.UTF-8", "LC_ALL": "C.UTF-8", "LC_TIME": "en_GB.UTF-8", "TERM": "xterm", "TZ": "Europe/Berlin",
	"PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1",
}

func baseInput() envInput {
	return envInput{
		caller: hostileCaller,
		path:   "/home/alice/venv/bin:/usr/bin:/bin",
		home:   "/home/alice",
		user:   "alice",
		cpus:   4,
	}
}

func mustEnv(t *testing.T, in envInput) map[string]string {
	t.Helper()
	kv, err := buildEnv(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(kv) {
		t.Errorf("environment not sorted: %q", kv)
	}
	m := envMap(kv)
	if len(m) != len(kv) {
		t.Errorf("duplicate names in %q", kv)
	}
	return m
}

func TestBuildEnvAllowlist(t *testing.T) {
	env := mustEnv(t, baseInput())
	for _, k := range []string{"VAULT_TOKEN", "VAULT_ADDR", "vault_token", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",
		"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS", "SSH_AUTH_SOCK",
		"http_proxy", "HTTPS_PROXY", "no_proxy", "SUDO_USER", "SECURETRAIN_RUNSC", "PYTHONSTARTUP",
		"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "BASH_ENV", "NVIDIA_DRIVER_CAPABILITIES"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%q reached the job", k, v)
		}
	}
	for k, want := range map[string]string{
		"LANG": "de_DE.UTF-8", "LC_ALL": "C.UTF-8", "LC_TIME": "en_GB.UTF-8", "TERM": "xterm", "TZ": "Europe/Berlin",
		"PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1",
		"HOME": "/home/alice", "PATH": "/home/alice/venv/bin:/usr/bin:/bin", "USER": "alice", "LOGNAME": "alice",
		"SHELL": "/bin/sh", "PYTHONUNBUFFERED": "1",
	} {
		if env[k] != want {
			t.Errorf("%s=%q, want %q", k, env[k], want)
		}
	}
}

func TestBuildEnvProxyOnlyWhenDeclared(t *testing.T) {
	in := baseInput()
	in.profile = configs.Env{Pass: []string{"http_proxy", "HTTPS_PROXY", "NOT_SET"}}
	env := mustEnv(t, in)
	if env["http_proxy"] != "http://proxy:3128" || env["HTTPS_PROXY"] != "http://proxy:3128" {
		t.Errorf("declared proxies not passed: %v", env)
	}
	if _, ok := env["no_proxy"]; ok {
		t.Error("undeclared no_proxy passed")
	}
	if _, ok := env["NOT_SET"]; ok {
		t.Error("a declared name the caller lacks appeared")
	}
}

func TestBuildEnvThreads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cpus   float64
		caller map[string]string
		set    map[string]string
		flags  []string
		want   map[string]string
	}{
		{"from cpus", 4, nil, nil, nil, map[string]string{
			"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4", "NUMEXPR_NUM_THREADS": "4",
			"VECLIB_MAXIMUM_THREADS": "4", "BLIS_NUM_THREADS": "4", "TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "2"}},
		{"fraction rounds up", 2.5, nil, nil, nil, map[string]string{"OMP_NUM_THREADS": "3", "TF_NUM_INTRAOP_THREADS": "3", "TF_NUM_INTEROP_THREADS": "2"}},
		{"tiny", 0.25, nil, nil, nil, map[string]string{"OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}},
		{"caller wins", 8, map[string]string{"OMP_NUM_THREADS": "16", "TF_NUM_INTEROP_THREADS": "6"}, nil, nil,
			map[string]string{"OMP_NUM_THREADS": "16", "MKL_NUM_THREADS": "8", "TF_NUM_INTEROP_THREADS": "6"}},
		{"profile wins", 8, nil, map[string]string{"MKL_NUM_THREADS": "1"}, nil, map[string]string{"MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "8"}},
		{"flag wins", 8, map[string]string{"OMP_NUM_THREADS": "16"}, nil, []string{"OMP_NUM_THREADS=2", "TF_NUM_INTRAOP_THREADS=3"},
			map[string]string{"OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "3", "TF_NUM_INTEROP_THREADS": "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInput()
			in.caller, in.cpus, in.flags = tc.caller, tc.cpus, tc.flags
			in.profile = configs.Env{Set: tc.set}
			env := mustEnv(t, in)
			for k, want := range tc.want {
				if env[k] != want {
					t.Errorf("%s=%q, want %q", k, env[k], want)
				}
			}
		})
	}
}

func TestBuildEnvGPU(t *testing.T) {
	in := baseInput()
	in.flags = []string{"CUDA_LAUNCH_BLOCKING=1"}
	in.extra = map[string]string{"LD_LIBRARY_PATH": "/from/subsystem", "NVIDIA_DRIVER_CAPABILITIES": "all"}
	in.profile = configs.Env{Set: map[string]string{"NVIDIA_DRIVER_CAPABILITIES": "all"}, Pass: []string{"NVIDIA_DRIVER_CAPABILITIES"}}

	// No GPU: neither variable, whoever asked for it.
	env := mustEnv(t, in)
	for _, k := range []string{"NVIDIA_DRIVER_CAPABILITIES", "LD_LIBRARY_PATH"} {
		if v, ok := env[k]; ok {
			t.Errorf("CPU job has %s=%q", k, v)
		}
	}

	// GPU with libraries: both from the launcher.
	in.gpuCaps = []string{"compute", "utility"}
	in.gpuLibDir = []string{"/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64"}
	env = mustEnv(t, in)
	if env["NVIDIA_DRIVER_CAPABILITIES"] != "compute,utility" {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES=%q", env["NVIDIA_DRIVER_CAPABILITIES"])
	}
	if env["LD_LIBRARY_PATH"] != "/usr/lib/x86_64-linux-gnu:/usr/local/nvidia/lib64" {
		t.Errorf("LD_LIBRARY_PATH=%q", env["LD_LIBRARY_PATH"])
	}
	if env["CUDA_LAUNCH_BLOCKING"] != "1" {
		t.Errorf("--env CUDA_LAUNCH_BLOCKING lost")
	}

	// GPU without library directories: no LD_LIBRARY_PATH from anyone.
	in.gpuLibDir = nil
	env = mustEnv(t, in)
	if v, ok := env["LD_LIBRARY_PATH"]; ok {
		t.Errorf("LD_LIBRARY_PATH=%q without GPU libraries", v)
	}
}

func TestBuildEnvFlags(t *testing.T) {
	for _, tc := range []struct {
		flag, wantErr string
	}{
		{"FOO=bar", ""},
		{"EMPTY=", ""},
		{"WITH_EQ=a=b", ""},
		{"PATH=/evil", ""}, // accepted, but the launcher's PATH wins
		{"FOO", `--env "FOO": want NAME=VALUE`},
		{"=x", `--env "=x": want NAME=VALUE`},
		{"A B=1", `--env "A B=1": "A B" is not a valid variable name (letters, digits and _, not starting with a digit)`},
		{"1X=1", `--env "1X=1": "1X" is not a valid variable name (letters, digits and _, not starting with a digit)`},
		{"VAULT_TOKEN=x", "--env VAULT_TOKEN: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"vault_addr=x", "--env vault_addr: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"LD_PRELOAD=/x.so", "--env LD_PRELOAD: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"LD_LIBRARY_PATH=/x", "--env LD_LIBRARY_PATH: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"SECURETRAIN_X=1", "--env SECURETRAIN_X: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", "--env TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"PYTHONSTARTUP=/x.py", "--env PYTHONSTARTUP: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"NVIDIA_DRIVER_CAPABILITIES=all", "--env NVIDIA_DRIVER_CAPABILITIES: set by the launcher (from gpu.capabilities and the GPU libraries it mounts), not by the caller"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			in := baseInput()
			in.flags = []string{tc.flag}
			kv, err := buildEnv(in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v\nwant %s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Error("error is not one line")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			k, v, _ := strings.Cut(tc.flag, "=")
			env := envMap(kv)
			if k == "PATH" {
				if env["PATH"] != in.path {
					t.Errorf("--env PATH replaced the launcher's PATH: %q", env["PATH"])
				}
				return
			}
			if env[k] != v {
				t.Errorf("%s=%q, want %q", k, env[k], v)
			}
		})
	}
}

// The malloc defaults scale with the memory limit within their bounds, and
// any one malloc setting of the profile, --env or GLIBC_TUNABLES turns all
// of them off; the caller's own MALLOC_* never pass undeclared.
func TestBuildEnvMallocDefaults(t *testing.T) {
	for _, tc := range []struct {
		memory             uint64
		mmap, trim, topPad string
	}{
		{8 << 30, "33554432", "536870912", "33554432"},   // default profile: 512 MiB trim
		{64 << 30, "33554432", "1073741824", "67108864"}, // capped at 1 GiB
		{128 << 20, "16777216", "16777216", "1048576"},   // small limits: 16 MiB floor
		{0, "33554432", "1073741824", "67108864"},        // no limit known
	} {
		in := baseInput()
		in.memory = tc.memory
		env := mustEnv(t, in)
		if env["MALLOC_MMAP_THRESHOLD_"] != tc.mmap || env["MALLOC_TRIM_THRESHOLD_"] != tc.trim || env["MALLOC_TOP_PAD_"] != tc.topPad {
			t.Errorf("memory %d: mmap %s trim %s top pad %s, want %s %s %s", tc.memory,
				env["MALLOC_MMAP_THRESHOLD_"], env["MALLOC_TRIM_THRESHOLD_"], env["MALLOC_TOP_PAD_"], tc.mmap, tc.trim, tc.topPad)
		}
	}
	for name, in := range map[string]envInput{
		"profile": func() envInput {
			in := baseInput()
			in.profile = configs.Env{Set: map[string]string{"MALLOC_TRIM_THRESHOLD_": "131072"}}
			return in
		}(),
		"flag": func() envInput {
			in := baseInput()
			in.flags = []string{"MALLOC_TOP_PAD_=0"}
			return in
		}(),
		"tunables": func() envInput {
			in := baseInput()
			in.profile = configs.Env{Set: map[string]string{"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}}
			return in
		}(),
	} {
		env := mustEnv(t, in)
		set := 0
		for _, k := range MallocVars {
			if _, ok := env[k]; ok {
				set++
			}
		}
		if set > 1 || (name == "tunables" && set != 0) {
			t.Errorf("%s: the launcher still set malloc defaults beside the job's own: %v", name, env)
		}
	}
	in := baseInput()
	in.caller = map[string]string{"MALLOC_TRIM_THRESHOLD_": "1", "MALLOC_ARENA_MAX": "1"}
	env := mustEnv(t, in)
	if env["MALLOC_TRIM_THRESHOLD_"] == "1" || env["MALLOC_ARENA_MAX"] != "" {
		t.Errorf("the caller's undeclared malloc settings reached the job: %v", env)
	}
}

package launcher

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/sandbox"
)

// prepTree is a user's project under a fake home, with credentials in it.
type prepTree struct {
	l          *Launcher
	home, code string
	req        Request
}

func newPrepTree(t *testing.T) prepTree {
	t.Helper()
	testenv.RequireRoot(t) // prepare refuses non-root before anything else
	r := t.TempDir()
	home := filepath.Join(r, "home/alice")
	code := filepath.Join(home, "proj")
	write(t, filepath.Join(code, "train.py"), "print('hi')\n")
	write(t, filepath.Join(code, ".ssh/id_ed25519"), "KEY")
	write(t, filepath.Join(code, ".aws/credentials"), "KEY")
	write(t, filepath.Join(code, ".netrc"), "machine x password y")
	write(t, filepath.Join(code, ".config/gcloud/credentials.db"), "KEY")
	write(t, filepath.Join(code, "secret.pem"), "KEY")
	link(t, filepath.Join(home, ".docker"), filepath.Join(code, ".docker")) // outside the code dir: the sandbox does not show its target
	write(t, filepath.Join(code, "dotfiles/kube/config"), "KEY")
	link(t, "dotfiles/kube", filepath.Join(code, ".kube")) // a stow-style link: what it resolves to is masked
	write(t, filepath.Join(code, ".venv/pyvenv.cfg"), "home = /usr/bin\n")
	link(t, "/usr/bin/python3", filepath.Join(code, ".venv/bin/python"))
	data := filepath.Join(r, "datasets/cifar")
	os.MkdirAll(data, 0o755)
	runsc := filepath.Join(r, "runsc")
	write(t, runsc, "#!/bin/sh\n")
	l := &Launcher{Host: &configs.Host{StateDir: filepath.Join(r, "run"), DataDir: filepath.Join(r, "lib")}, Runsc: runsc,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p, err := configs.LoadProfile("default", "")
	if err != nil {
		t.Fatal(err)
	}
	p.Sandbox.Mask = []string{"secret.pem"}
	req := Request{
		Command: []string{".venv/bin/python", "train.py"},
		Profile: p,
		Caller:  Caller{UID: 1000, GID: 1000, Groups: []int{27}, Name: "alice", Home: home},
		CodeDir: code,
		Data:    []DataMount{{Source: data, Target: "/data/cifar"}},
		Env:     []string{"SEED=1"},
		CallerEnv: []string{"VAULT_TOKEN=hvs.x", "LD_PRELOAD=/x.so", "LANG=C.UTF-8", "PATH=/root/bin",
			"HOME=/root", "SUDO_UID=1000"},
	}
	return prepTree{l: l, home: home, code: code, req: req}
}

func TestPrepare(t *testing.T) {
	p := newPrepTree(t)
	pl, err := p.l.prepare(context.Background(), p.req)
	if err != nil {
		t.Fatal(err)
	}
	if pl.codeDir != p.code || pl.outputDir != filepath.Join(p.code, "outputs") {
		t.Errorf("code %s output %s", pl.codeDir, pl.outputDir)
	}
	if _, err := os.Stat(pl.outputDir); !os.IsNotExist(err) {
		t.Error("prepare created the output directory: it must have no side effect")
	}
	if pl.user.UID != 1000 || pl.user.Home != p.home || !slices.Equal(pl.user.Groups, []uint32{27}) {
		t.Errorf("user %+v", pl.user)
	}
	wantMasks := []string{filepath.Join(p.code, ".ssh"), filepath.Join(p.code, ".aws"), filepath.Join(p.code, ".netrc"),
		filepath.Join(p.code, ".config/gcloud"), filepath.Join(p.code, "dotfiles/kube"), filepath.Join(p.code, "secret.pem")}
	if !slices.Equal(pl.masks, wantMasks) {
		t.Errorf("masks\n got %q\nwant %q", pl.masks, wantMasks)
	}
	// Host root: system dirs read-only, nothing of the home.
	var targets []string
	for _, m := range pl.mounts {
		targets = append(targets, m.Target)
		if m.Kind == sandbox.Bind && !m.ReadOnly {
			t.Errorf("prepare plans a writable mount %s", m.Target)
		}
		// The venv inside the code dir is its own mount (a code snapshot
		// leaves it out); nothing else of the home is.
		if strings.HasPrefix(m.Source, p.home) && m.Source != filepath.Join(p.code, ".venv") {
			t.Errorf("mounts %s from the home", m.Source)
		}
	}
	if !slices.Contains(targets, "/usr") || !slices.Contains(targets, "/data/cifar") {
		t.Errorf("mounts %q lack /usr or the dataset", targets)
	}
	if pl.args[0] != ".venv/bin/python" {
		t.Errorf("args %q", pl.args)
	}
	env := envMap(pl.env)
	if !strings.HasPrefix(env["PATH"], filepath.Join(p.code, ".venv/bin")+":") {
		t.Errorf("PATH %q does not start with the venv", env["PATH"])
	}
	for k, want := range map[string]string{"HOME": p.home, "USER": "alice", "LANG": "C.UTF-8", "SEED": "1", "OMP_NUM_THREADS": "2"} {
		if env[k] != want {
			t.Errorf("%s=%q, want %q", k, env[k], want)
		}
	}
	for _, k := range []string{"VAULT_TOKEN", "LD_PRELOAD", "SUDO_UID"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s reached the job", k)
		}
	}
}

func TestPrepareHomeIsCodeDir(t *testing.T) {
	p := newPrepTree(t)
	p.req.Caller.Home = p.code
	pl, err := p.l.prepare(context.Background(), p.req)
	if err != nil {
		t.Fatal(err)
	}
	if pl.user.Home != "/var/tmp/home" {
		t.Errorf("home %s: the job's HOME must not be the read-only code dir", pl.user.Home)
	}
}

func TestPrepareRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(p *prepTree)
		want string
	}{
		{"no command", func(p *prepTree) { p.req.Command = nil }, "no command: use securetrain run [flags] -- COMMAND [ARGS...]"},
		{"root caller", func(p *prepTree) { p.req.Caller.UID = 0 }, "jobs never run as root: give an unprivileged user"},
		{"no runsc", func(p *prepTree) { p.l.Runsc = "/nonexistent/runsc" }, "runsc not found at /nonexistent/runsc: run `make runsc` or set runsc: in " + configs.DefaultHostConfig},
		{"code dir /", func(p *prepTree) { p.req.CodeDir = "/" }, "code directory is /: run from your project directory or pass --code DIR"},
		{"output is a file", func(p *prepTree) { write(t, filepath.Join(p.code, "outputs"), "") },
			"output " + "CODE/outputs exists and is not a directory (a symlink is not accepted)"},
		{"output is a link", func(p *prepTree) { link(t, "/etc", filepath.Join(p.code, "outputs")) },
			"output CODE/outputs exists and is not a directory (a symlink is not accepted)"},
		{"missing python", func(p *prepTree) { p.req.Python = "/nonexistent/python" }, "--python /nonexistent/python: no such file or directory"},
		{"missing data", func(p *prepTree) { p.req.Data = []DataMount{{Source: "/nonexistent/data", Target: "/data/x"}} },
			"--data /nonexistent/data: no such file or directory"},
		{"bad --env", func(p *prepTree) { p.req.Env = []string{"LD_PRELOAD=/x.so"} },
			"--env LD_PRELOAD: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPrepTree(t)
			tc.mod(&p)
			_, err := p.l.prepare(context.Background(), p.req)
			want := strings.ReplaceAll(tc.want, "CODE", p.code)
			if err == nil || err.Error() != want {
				t.Errorf("err %v\nwant %s", err, want)
			}
		})
	}
}

func TestPrepareRelativePython(t *testing.T) {
	p := newPrepTree(t)
	t.Chdir(p.code)
	p.req.Python = ".venv/bin/python"
	p.req.Command = []string{"python", "train.py"}
	pl, err := p.l.prepare(context.Background(), p.req)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(p.code, ".venv/bin/python"); pl.args[0] != want {
		t.Errorf("args[0] %q, want %q", pl.args[0], want)
	}
	for _, m := range pl.mounts {
		if !filepath.IsAbs(m.Source) {
			t.Errorf("relative mount source %q", m.Source)
		}
	}
	if env := envMap(pl.env); !strings.HasPrefix(env["PATH"], filepath.Join(p.code, ".venv/bin")+":") {
		t.Errorf("PATH %q", env["PATH"])
	}
}

package launcher

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// pyTree is a fake user's machine: a home with keys, a pyenv build, a venv
// on it, a venv on the system Python, a conda env, and a project that holds
// its own venv.
type pyTree struct {
	home, pyenv, venv, sysVenv, conda, code, codeVenv string
}

func newPyTree(t *testing.T) pyTree {
	t.Helper()
	r := t.TempDir()
	home := filepath.Join(r, "home/alice")
	p := pyTree{
		home:     home,
		pyenv:    filepath.Join(home, ".pyenv/versions/3.11.9"),
		venv:     filepath.Join(home, "venvs/torch"),
		sysVenv:  filepath.Join(home, "venvs/sys"),
		conda:    filepath.Join(home, "miniconda3/envs/tf"),
		code:     filepath.Join(home, "proj"),
		codeVenv: filepath.Join(home, "proj/.venv"),
	}
	write(t, filepath.Join(home, ".ssh/id_ed25519"), "KEY")
	write(t, filepath.Join(home, ".aws/credentials"), "KEY")
	write(t, filepath.Join(home, "run.sh"), "#!/bin/sh\n")
	write(t, filepath.Join(p.pyenv, "bin/python3.11"), "ELF")
	write(t, filepath.Join(p.pyenv, "lib/python3.11/os.py"), "")
	for _, v := range []string{p.venv, p.codeVenv} {
		write(t, filepath.Join(v, "pyvenv.cfg"), "home = "+filepath.Join(p.pyenv, "bin")+"\ninclude-system-site-packages = false\nversion = 3.11.9\n")
		link(t, filepath.Join(p.pyenv, "bin/python3.11"), filepath.Join(v, "bin/python"))
	}
	write(t, filepath.Join(p.sysVenv, "pyvenv.cfg"), "home = /usr/bin\n")
	link(t, "/usr/bin/python3", filepath.Join(p.sysVenv, "bin/python"))
	write(t, filepath.Join(p.conda, "conda-meta/history"), "")
	write(t, filepath.Join(p.conda, "bin/python3.10"), "ELF")
	link(t, "python3.10", filepath.Join(p.conda, "bin/python"))
	write(t, filepath.Join(p.conda, "lib/python3.10/os.py"), "")
	write(t, filepath.Join(p.code, "train.py"), "")
	write(t, filepath.Join(p.code, "scripts/train.sh"), "#!/bin/sh\n")
	return p
}

func TestDetectPython(t *testing.T) {
	p := newPyTree(t)
	for _, tc := range []struct {
		name     string
		explicit string
		argv     []string
		caller   map[string]string
		prefixes []string
		bins     []string
	}{
		{"nothing to go on", "", []string{"python", "train.py"}, nil, nil, nil},
		{"explicit venv python", filepath.Join(p.venv, "bin/python"), []string{"python", "train.py"}, nil,
			[]string{p.venv, p.pyenv}, []string{filepath.Join(p.venv, "bin")}},
		{"path in the command", "", []string{filepath.Join(p.venv, "bin/python"), "train.py"}, nil,
			[]string{p.venv, p.pyenv}, []string{filepath.Join(p.venv, "bin")}},
		{"relative path against the code dir", "", []string{".venv/bin/python", "train.py"}, nil,
			[]string{p.codeVenv, p.pyenv}, []string{filepath.Join(p.codeVenv, "bin")}},
		{"VIRTUAL_ENV from the caller", "", []string{"python", "train.py"}, map[string]string{"VIRTUAL_ENV": p.venv},
			[]string{p.venv, p.pyenv}, []string{filepath.Join(p.venv, "bin")}},
		{"relative VIRTUAL_ENV ignored", "", []string{"python"}, map[string]string{"VIRTUAL_ENV": "venvs/torch"}, nil, nil},
		{"VIRTUAL_ENV that is no venv", "", []string{"python"}, map[string]string{"VIRTUAL_ENV": p.home}, nil, nil},
		{"CONDA_PREFIX from the caller", "", []string{"python", "train.py"}, map[string]string{"CONDA_PREFIX": p.conda},
			[]string{p.conda}, []string{filepath.Join(p.conda, "bin")}},
		{"conda python in the command", "", []string{filepath.Join(p.conda, "bin/python")}, nil,
			[]string{p.conda}, []string{filepath.Join(p.conda, "bin")}},
		{"venv on the system python: base not mounted", "", []string{filepath.Join(p.sysVenv, "bin/python")}, nil,
			[]string{p.sysVenv}, []string{filepath.Join(p.sysVenv, "bin")}},
		{"system python", "/usr/bin/python3", []string{"python3", "x.py"}, nil, nil, nil},
		{"explicit and VIRTUAL_ENV", filepath.Join(p.venv, "bin/python"), []string{"python"}, map[string]string{"VIRTUAL_ENV": p.codeVenv},
			[]string{p.venv, p.pyenv, p.codeVenv}, []string{filepath.Join(p.venv, "bin"), filepath.Join(p.codeVenv, "bin")}},
		// A program that is no interpreter mounts nothing: its grandparent
		// would be the home directory with the user's keys.
		{"script in the home", "", []string{filepath.Join(p.home, "run.sh")}, nil, nil, nil},
		{"relative script in the code dir", "", []string{"scripts/train.sh"}, nil, nil, nil},
		{"script with ./", "", []string{"./train.py"}, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := detectPython(tc.explicit, tc.argv, p.code, tc.caller)
			if !slices.Equal(got.Prefixes, tc.prefixes) {
				t.Errorf("prefixes\n got %q\nwant %q", got.Prefixes, tc.prefixes)
			}
			if !slices.Equal(got.Bins, tc.bins) {
				t.Errorf("bins\n got %q\nwant %q", got.Bins, tc.bins)
			}
			for _, pre := range got.Prefixes {
				if pre == p.home || hostVisible(pre) {
					t.Errorf("mounts %s", pre)
				}
			}
		})
	}
}

func TestDetectPythonVenvClaimingHome(t *testing.T) {
	p := newPyTree(t)
	// A venv whose pyvenv.cfg points its base at the home directory (a
	// Python installed with --prefix=$HOME): the home is still not mounted.
	write(t, filepath.Join(p.home, "bin/python3"), "ELF")
	write(t, filepath.Join(p.home, "lib/python3.12/os.py"), "")
	v := filepath.Join(p.home, "venvs/homepy")
	write(t, filepath.Join(v, "pyvenv.cfg"), "home = "+filepath.Join(p.home, "bin")+"\n")
	link(t, filepath.Join(p.home, "bin/python3"), filepath.Join(v, "bin/python"))
	got := detectPython("", []string{filepath.Join(v, "bin/python")}, p.code, nil)
	if !slices.Equal(got.Prefixes, []string{v}) {
		t.Errorf("prefixes %q, want only %s", got.Prefixes, v)
	}
}

func TestHostVisible(t *testing.T) {
	for p, want := range map[string]bool{
		"/usr": true, "/usr/lib/python3/dist-packages": true, "/usr/local/lib": true, "/opt/conda": true,
		"/bin/python3": true, "/lib64": true, "/usrx": false, "/home/alice/venv": false, "/root/venv": false,
		"/var/lib/venv": false, "/": false, "/optional": false,
	} {
		if got := hostVisible(p); got != want {
			t.Errorf("hostVisible(%s) = %v, want %v", p, got, want)
		}
	}
}

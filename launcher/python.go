package launcher

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

	"github.com/securetrain/securetrain/sandbox"
)

// pyEnv is the interpreter environment a job uses: the prefixes to mount
// read-only and the bin directories to put first on PATH.
type pyEnv struct {
	Prefixes []string
	Bins     []string
}

// detectPython finds the job's interpreter environment. sudo resets PATH and
// drops VIRTUAL_ENV, so the order is: an explicit interpreter (--python or
// sandbox.python), a path in the command itself (venv/bin/python train.py),
// then VIRTUAL_ENV or CONDA_PREFIX when the caller's environment kept them
// (sudo -E, or a root shell).
func detectPython(explicit string, argv []string, codeDir string, caller map[string]string) pyEnv {
	var cands []string
	if explicit != "" {
		cands = append(cands, explicit)
	}
	if len(argv) > 0 && strings.ContainsRune(argv[0], '/') {
		p := argv[0]
		if !filepath.IsAbs(p) {
			p = filepath.Join(codeDir, p)
		}
		cands = append(cands, p)
	}
	var env pyEnv
	for _, c := range cands {
		env.addInterpreter(c)
	}
	for _, v := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if p := caller[v]; p != "" && filepath.IsAbs(p) {
			env.addPrefix(filepath.Clean(p))
		}
	}
	return env
}

// addInterpreter adds the environment an interpreter path belongs to: its
// venv or conda prefix, the base installation a venv points at, and the
// directory the interpreter's symlink finally resolves into.
func (e *pyEnv) addInterpreter(p string) {
	p = filepath.Clean(p)
	prefix := filepath.Dir(filepath.Dir(p))
	if isEnvPrefix(prefix) {
		e.addPrefix(prefix)
	}
	if real, err := filepath.EvalSymlinks(p); err == nil && !hostVisible(real) {
		// Only a Python installation (pyenv, a source build): the
		// command may be any program, and the grandparent of
		// /home/alice/proj/run.sh is the whole home directory.
		if rp := filepath.Dir(filepath.Dir(real)); pythonInstall(rp) {
			e.addMount(rp)
		}
	}
}

func (e *pyEnv) addPrefix(prefix string) {
	if !isEnvPrefix(prefix) {
		return
	}
	if !hostVisible(prefix) {
		e.addMount(prefix)
	}
	bin := filepath.Join(prefix, "bin")
	for _, b := range e.Bins {
		if b == bin {
			return
		}
	}
	e.Bins = append(e.Bins, bin)
	// A venv's base interpreter lives elsewhere (pyvenv.cfg "home = DIR").
	if home := venvHome(prefix); home != "" {
		if real, err := filepath.EvalSymlinks(home); err == nil {
			home = real
		}
		if base := filepath.Dir(home); !hostVisible(base) && pythonInstall(base) {
			e.addMount(base)
		}
	}
}

func (e *pyEnv) addMount(dir string) {
	if dir == "/" || holdsCredentials(dir) {
		// A home directory is never mounted, whatever a venv claims.
		return
	}
	for _, p := range e.Prefixes {
		if p == dir || strings.HasPrefix(dir, p+"/") {
			return
		}
	}
	e.Prefixes = append(e.Prefixes, dir)
}

// pythonInstall reports whether dir is a Python installation prefix: it has
// bin/python* and lib/python3.* (or python2.*).
func pythonInstall(dir string) bool {
	bins, _ := filepath.Glob(filepath.Join(dir, "bin", "python*"))
	libs, _ := filepath.Glob(filepath.Join(dir, "lib", "python[0-9]*"))
	return len(bins) > 0 && len(libs) > 0
}

// holdsCredentials reports whether dir directly holds one of the credential
// names masked in the code directory (.ssh, .aws, ...): a home directory.
func holdsCredentials(dir string) bool {
	for _, n := range CredentialNames {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// isEnvPrefix reports whether dir is a venv or conda environment.
func isEnvPrefix(dir string) bool {
	for _, marker := range []string{"pyvenv.cfg", "conda-meta"} {
		if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
			return true
		}
	}
	return false
}

func venvHome(prefix string) string {
	f, err := os.Open(filepath.Join(prefix, "pyvenv.cfg"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.TrimSpace(k) == "home" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// hostVisible reports whether a path lies in the host system directories a
// host-minimal root already shows.
func hostVisible(p string) bool {
	for _, d := range sandbox.HostSystemDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

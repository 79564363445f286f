package secrets

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
)

// ErrEnvMap marks a bad env map file or a value that cannot be exported.
var ErrEnvMap = errors.New("env map")

// ExecWithEnvMap runs inside the sandbox as the job's entry point: it reads
// mapFile (a JSON object ENV -> file path written by Issue), sets each
// variable to its file's content, and replaces the process with argv (looked
// up on PATH). The values thus live only in the job's memory, never in the
// OCI spec. VAULT_TOKEN is removed from the environment whatever happens.
// It returns only on error.
func ExecWithEnvMap(mapFile string, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("%w: no command to run", ErrEnvMap)
	}
	b, err := os.ReadFile(mapFile)
	if err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrEnvMap, mapFile, err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %s is not a JSON object of variable to file", ErrEnvMap, mapFile)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	os.Unsetenv("VAULT_TOKEN")
	for _, name := range names {
		if !envRe.MatchString(name) {
			return fmt.Errorf("%w: %s: %q is not a variable name", ErrEnvMap, mapFile, name)
		}
		v, err := os.ReadFile(m[name])
		if err != nil {
			return fmt.Errorf("%w: %s: read %s: %w", ErrEnvMap, name, m[name], errors.Unwrap(err))
		}
		if strings.IndexByte(string(v), 0) >= 0 {
			return fmt.Errorf("%w: %s: value from %s contains a NUL byte", ErrEnvMap, name, m[name])
		}
		if err := os.Setenv(name, string(v)); err != nil {
			return fmt.Errorf("%w: set %s failed", ErrEnvMap, name)
		}
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrEnvMap, argv[0], err)
	}
	err = syscall.Exec(prog, argv, os.Environ())
	return fmt.Errorf("%w: exec %s: %w", ErrEnvMap, prog, err)
}

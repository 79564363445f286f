// Package versions holds the pinned versions of the real components
// securetrain is built and tested against, read from versions.env: the same
// file the Makefile's scripts and the Dockerfile source, so that the version
// is written in one place.
package versions

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:embed versions.env
var file string

var (
	// GVisor is the gvisor.dev/gvisor module version of the pinned runsc.
	GVisor = mustGet("GVISOR_VERSION")
	// Vault is the Vault version the tests run (tools/vault builds it).
	Vault = mustGet("VAULT_VERSION")
	// RunscTool is the pinned runsc's name in the tools cache
	// (scripts/build-runsc.sh): the version and how it was built.
	RunscTool = "runsc-" + GVisor + "-" + mustGet("RUNSC_BUILD")
)

// parse reads NAME=value lines; blank lines and # comments are skipped.
// Anything else (quotes, expansions, spaces) is an error: the shell and
// Docker must read the same value as Go.
func parse(s string) (map[string]string, error) {
	vals := map[string]string{}
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok || name == "" || val == "" || strings.ContainsAny(line, " \t'\"$`\\") {
			return nil, fmt.Errorf("versions.env line %d: %q is not NAME=value", i+1, line)
		}
		vals[name] = val
	}
	return vals, nil
}

func mustGet(name string) string {
	vals, err := parse(file)
	if err != nil {
		panic(err)
	}
	v, ok := vals[name]
	if !ok {
		panic("versions.env has no " + name)
	}
	return v
}

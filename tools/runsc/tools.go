//go:build tools

// Package tools names runsc's own main package, so that go mod vendor
// copies it for scripts/build-runsc.sh's build.
package tools

import _ "gvisor.dev/gvisor/runsc"

// Command securetrain runs machine-learning training jobs inside a gVisor
// sandbox with an egress allowlist, short-lived credentials and resource
// accounting. See README.md.
package main

import (
	"os"

	"github.com/securetrain/securetrain/cmd/securetrain/app"
)

func main() {
	os.Exit(app.Main(os.Args))
}

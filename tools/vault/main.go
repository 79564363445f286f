// Command vault builds HashiCorp Vault v1.13.0 (MPL-2.0) from the module proxy
// for securetrain's tests. It is a separate module so that Vault's dependency
// tree never enters securetrain's own go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}

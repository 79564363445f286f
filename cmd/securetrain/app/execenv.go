package app

import (
	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/secrets"
)

// ExecEnvCommand is the sandbox entry point for jobs whose profile maps
// secrets to environment variables: it runs inside the sandbox as the job's
// user, reads the delivered files, sets the variables and execs the job.
// Hidden: users never call it.
var ExecEnvCommand = &cli.Command{
	Name:            launcher.ExecEnvVerb,
	Hidden:          true,
	SkipFlagParsing: true,
	ArgsUsage:       "ENVMAP -- COMMAND [ARGS...]",
	Action: func(c *cli.Context) error {
		args := c.Args().Slice()
		if len(args) < 3 || args[1] != "--" {
			return cli.Exit("exec-env: usage: exec-env ENVMAP -- COMMAND [ARGS...]", launcher.ExitRefused)
		}
		if err := secrets.ExecWithEnvMap(args[0], args[2:]); err != nil {
			return cli.Exit("exec-env: "+err.Error(), 127)
		}
		return nil
	},
}

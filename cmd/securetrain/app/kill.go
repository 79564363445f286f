package app

import (
	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/launcher"
)

// KillCommand stops a running job.
var KillCommand = &cli.Command{
	Name:      "kill",
	Usage:     "stop a running job (SIGTERM, then SIGKILL after the profile's stop grace)",
	ArgsUsage: "ID",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill the sandbox at once"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit("kill: usage: securetrain kill [--force] ID", 2)
		}
		if handled, err := killViaDaemon(c); handled {
			return err
		}
		l, err := newLauncher(c)
		if err != nil {
			return err
		}
		ctx, cancel := interruptible(c)
		defer cancel()
		return l.Kill(ctx, launcher.Viewer{UID: uidOf(), Admin: uidOf() == 0}, c.Args().First(), c.Bool("force"))
	},
}

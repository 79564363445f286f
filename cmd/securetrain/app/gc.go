package app

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// GCCommand removes what dead launchers left behind.
var GCCommand = &cli.Command{
	Name:  "gc",
	Usage: "remove sandboxes, network state, credentials and files left by launchers that died",
	Action: func(c *cli.Context) error {
		l, err := newLauncher(c)
		if err != nil {
			return err
		}
		ctx, cancel := interruptible(c)
		defer cancel()
		rep, err := l.GC(ctx)
		for _, r := range rep.Resources {
			fmt.Printf("removed %s\n", r)
		}
		for _, o := range rep.Orphans {
			fmt.Printf("removed orphan sandbox %s\n", o)
		}
		fmt.Printf("gc: %d job(s) cleaned, %d orphan sandbox(es)\n", len(rep.Jobs), len(rep.Orphans))
		return err
	},
}

package app

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// CheckCommand is the host preflight.
var CheckCommand = &cli.Command{
	Name:  "check",
	Usage: "check that this host can run sandboxed jobs (exits non-zero when a required check fails)",
	Action: func(c *cli.Context) error {
		l, err := newLauncher(c)
		if err != nil {
			return err
		}
		ctx, cancel := interruptible(c)
		defer cancel()
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CHECK\tRESULT\tDETAIL")
		failed := 0
		for _, ch := range l.Preflight(ctx) {
			r := "ok"
			switch {
			case !ch.OK && ch.Required:
				r, failed = "FAIL", failed+1
			case !ch.OK:
				r = "warn"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", ch.Name, r, ch.Detail)
		}
		w.Flush()
		if failed > 0 {
			return cli.Exit(fmt.Sprintf("check: %d required check(s) failed", failed), 1)
		}
		return nil
	},
}

package app

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// PsCommand lists jobs: a user sees their own, root sees all.
var PsCommand = &cli.Command{
	Name:  "ps",
	Usage: "list running jobs",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "also list jobs whose launcher died (gc removes them)"},
	},
	Action: func(c *cli.Context) error {
		if viaDaemon(c) {
			return psViaDaemon(c)
		}
		l, err := newLauncher(c)
		if err != nil {
			return err
		}
		jobs, err := l.Store().List()
		if err != nil {
			return err
		}
		uid := os.Getuid()
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tUSER\tSTATUS\tAGE\tPROFILE\tCOMMAND")
		for _, j := range jobs {
			if uid != 0 && j.UID != uid {
				continue
			}
			status := j.Status
			if !j.Live {
				if !c.Bool("all") {
					continue
				}
				status = "dead (gc)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.User, status,
				time.Since(j.Created).Round(time.Second), profileName(j.Profile), strings.Join(j.Command, " "))
		}
		return w.Flush()
	},
}

func profileName(src string) string {
	return strings.TrimPrefix(src, "builtin:")
}

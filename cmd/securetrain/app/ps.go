package app

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/launcher"
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
		uid := os.Getuid()
		rows, err := l.Jobs(launcher.Viewer{UID: uid, Admin: uid == 0}, c.Bool("all"))
		if err != nil {
			return err
		}
		return printJobs(os.Stdout, rows, time.Now())
	},
}

// printJobs prints ps's table, the same whether the rows come from the
// launcher or from the daemon.
func printJobs(out io.Writer, rows []launcher.JobRow, now time.Time) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tUSER\tSTATUS\tAGE\tCPU\tMEM\tGPU\tNET\tPROFILE\tCOMMAND")
	for _, r := range rows {
		cpu, mem, gpu := "-", "-", "-"
		if u := r.Usage; u != nil {
			cpu = fmt.Sprintf("%.1fs", u.CPUSeconds)
			mem = humanBytes(u.MemBytes)
			if u.GPUs >= 0 {
				gpu = fmt.Sprintf("%d:%s", u.GPUs, humanBytes(u.GPUMem))
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.User, r.Status,
			now.Sub(r.Created).Round(time.Second), cpu, mem, gpu, r.Net(), r.ProfileName(), r.CommandLine())
	}
	return w.Flush()
}

func humanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

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
		fmt.Fprintln(w, "ID\tUSER\tSTATUS\tAGE\tCPU\tMEM\tGPU\tNET\tPROFILE\tCOMMAND")
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
			cpu, mem, gpu := "-", "-", "-"
			if u, ok := l.Store().LiveUsage(j.ID); ok && j.Live {
				cpu = fmt.Sprintf("%.1fs", u.JobCPU())
				mem = humanBytes(u.MemUsage)
				if u.GPUs != nil {
					var used uint64
					for _, g := range u.GPUs {
						used += g.JobMem()
					}
					gpu = fmt.Sprintf("%d:%s", len(u.GPUs), humanBytes(used))
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.User, status,
				time.Since(j.Created).Round(time.Second), cpu, mem, gpu, netColumn(map[string]string{"net_addr": j.NetAddr, "allocation": j.Allocation}), profileName(j.Profile), strings.NewReplacer("\n", "\\n", "\t", " ").Replace(strings.Join(j.Command, " ")))
		}
		return w.Flush()
	},
}

// netColumn is a job's address and, for a job of an allocation, "@ID":
// "10.213.0.22@1234"; "-" without a network.
func netColumn(extra map[string]string) string {
	a := extra["net_addr"]
	if a == "" {
		return "-"
	}
	if al := extra["allocation"]; al != "" {
		a += "@" + al
	}
	return a
}

func profileName(src string) string {
	return strings.TrimPrefix(src, "builtin:")
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

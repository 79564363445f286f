package app

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/scan"
)

// ScanCommand is `securetrain scan PATH...`: report whether loading each
// model file could run code. Directories are scanned recursively. Exits 1
// when any file is not safe (dangerous, malformed or unsupported).
var ScanCommand = &cli.Command{
	Name:      "scan",
	Usage:     "check model files (pickle, PyTorch, NumPy, safetensors) for code that runs on load",
	ArgsUsage: "PATH...",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print the reports as JSON"},
	},
	Action: func(c *cli.Context) error {
		args, err := positional(c)
		if err != nil {
			return cli.Exit("scan: "+err.Error(), 2)
		}
		if len(args) == 0 {
			return cli.Exit("scan: give at least one PATH", 2)
		}
		var reps []*scan.Report
		for _, p := range args {
			st, err := os.Stat(p)
			if err != nil {
				return cli.Exit("scan: "+err.Error(), 2)
			}
			if st.IsDir() {
				rs, err := scan.ScanTree(c.Context, p)
				if err != nil {
					return cli.Exit("scan: "+err.Error(), 2)
				}
				reps = append(reps, rs...)
				continue
			}
			r, err := scan.Scan(p)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			reps = append(reps, r)
		}
		w := c.App.Writer
		if c.Bool("json") {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(reps); err != nil {
				return err
			}
		} else {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERDICT\tFORMAT\tPATH\tDETAIL")
			for _, r := range reps {
				detail := ""
				if r.Verdict != scan.Safe {
					detail = r.Summary()
					if n := len(r.Findings); n > 1 {
						detail += fmt.Sprintf(" (+%d more)", n-1)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Verdict, r.Format, r.Path, detail)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		bad := 0
		for _, r := range reps {
			if r.Verdict != scan.Safe {
				bad++
			}
		}
		if bad > 0 {
			return cli.Exit(fmt.Sprintf("scan: %d of %d files not safe", bad, len(reps)), 1)
		}
		return nil
	},
}

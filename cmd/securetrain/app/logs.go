package app

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/launcher"
)

// LogsCommand prints a job's log (running or finished).
var LogsCommand = &cli.Command{
	Name:      "logs",
	Usage:     "print a job's stdout/stderr log",
	ArgsUsage: "ID",
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return cli.Exit("logs: usage: securetrain logs ID", 2)
		}
		if viaDaemon(c) {
			return logsViaDaemon(c)
		}
		l, err := newLauncher(c)
		if err != nil {
			return err
		}
		uid := uidOf()
		f, err := l.OpenLog(launcher.Viewer{UID: uid, Admin: uid == 0}, c.Args().First())
		if err != nil {
			return fmt.Errorf("logs: %w", err)
		}
		defer f.Close()
		_, err = io.Copy(os.Stdout, f)
		return err
	},
}

func uidOf() int { return os.Getuid() }

package app

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
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
		h, err := loadHost(c)
		if err != nil {
			return err
		}
		id := c.Args().First()
		if filepath.Base(id) != id || id == "." || id == ".." {
			return fmt.Errorf("logs: %q is not a job id", id)
		}
		p := filepath.Join(h.DataDir, "jobs", id, "job.log")
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("logs: no log for job %s", id)
		}
		defer f.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return err
		}
		if uid := uidOf(); uid != 0 && int(st.Uid) != uid {
			return fmt.Errorf("logs: no log for job %s", id)
		}
		_, err = io.Copy(os.Stdout, f)
		return err
	},
}

func uidOf() int { return os.Getuid() }

package app

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/daemon"
	"github.com/securetrain/securetrain/launcher"
)

// daemonSocket is the daemon's socket from the host configuration (which a
// user who is not root may not be able to read: then the default).
func daemonSocket(c *cli.Context) string {
	if h, err := loadHost(c); err == nil {
		return h.Daemon.Socket
	}
	h := configs.Host{}
	h.SetDefaults()
	return h.Daemon.Socket
}

// viaDaemon reports whether this verb goes through the daemon: the caller is
// not root and a daemon socket exists.
func viaDaemon(c *cli.Context) bool {
	return os.Geteuid() != 0 && daemon.Available(daemonSocket(c))
}

// runViaDaemon is `securetrain run` for a user who is not root: the same
// flags, the caller's own stdin/stdout/stderr handed to the daemon, signals
// forwarded, the job's exit code returned. Without a daemon socket it is the
// one-line needs-root refusal.
func runViaDaemon(c *cli.Context, argv []string) error {
	refuse := func(err error) error { return cli.Exit("run: "+firstLine(err.Error()), launcher.ExitRefused) }
	cl, err := daemon.Dial(daemonSocket(c))
	if errors.Is(err, daemon.ErrNoDaemon) {
		return refuse(launcher.ErrNeedRoot)
	}
	if err != nil {
		return refuse(err)
	}
	defer cl.Close()
	dir, err := os.Getwd()
	if err != nil {
		return refuse(err)
	}
	args, err := daemonRunArgs(c, argv, dir)
	if err != nil {
		return refuse(err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	rep, err := cl.Run(args, os.Stdin, os.Stdout, os.Stderr, sigs)
	if err != nil {
		return refuse(err)
	}
	if !c.Bool("quiet") && rep.Summary != "" {
		fmt.Fprintln(os.Stderr, rep.Summary)
	}
	if args.Learn {
		printSuggested(rep.Suggested)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(os.Stderr, "securetrain: "+n)
	}
	if rep.Exit != nil && *rep.Exit != 0 {
		return cli.Exit("", *rep.Exit)
	}
	return nil
}

// daemonRunArgs is the daemon's request for `securetrain run` from run's
// flags (c), the command and the caller's working directory. It reads only
// flags RunCommand defines (TestDaemonRunArgsReadRunFlags).
func daemonRunArgs(c runFlags, argv []string, dir string) (daemon.RunArgs, error) {
	tty, err := wantTTY(c.String("tty"))
	if err != nil {
		return daemon.RunArgs{}, err
	}
	return daemon.RunArgs{
		Command: argv, Profile: c.String("profile"), Dir: dir, Code: c.String("code"),
		Output: c.String("output"), Data: c.StringSlice("data"), Python: c.String("python"),
		Env: c.StringSlice("env"), CallerEnv: os.Environ(),
		CPUs: c.Float64("cpus"), Memory: c.String("memory"), Pids: c.Int64("pids"),
		WallTime: c.Duration("wall-time"), GPUs: c.String("gpus"), Network: c.String("network"),
		Allow: c.StringSlice("allow"), Peers: c.StringSlice("peers"), Allocation: c.String("allocation"),
		Report: c.String("report"), TTY: tty,
		User: c.String("user"), Learn: c.Bool("learn"), Rootfs: c.String("rootfs"), Unrestricted: c.Bool("unrestricted"),
		Model: modelFlag(c),
	}, nil
}

func psViaDaemon(c *cli.Context) error {
	cl, err := daemon.Dial(daemonSocket(c))
	if err != nil {
		return err
	}
	defer cl.Close()
	jobs, err := cl.Ps(c.Bool("all"))
	if err != nil {
		return fmt.Errorf("ps: %w", err)
	}
	return printJobs(os.Stdout, jobs, time.Now())
}

// killViaDaemon stops a job through the daemon when one listens: for a user
// who is not root, and for root too, since the launcher of a daemon job is
// the daemon itself, which a direct kill would stop with all its jobs. It
// reports false when root should kill directly (no daemon answers).
func killViaDaemon(c *cli.Context) (bool, error) {
	sock := daemonSocket(c)
	if !daemon.Available(sock) {
		return false, nil
	}
	cl, err := daemon.Dial(sock)
	if err != nil {
		if os.Geteuid() == 0 {
			return false, nil
		}
		return true, err
	}
	defer cl.Close()
	return true, cl.Kill(c.Args().First(), c.Bool("force"))
}

func logsViaDaemon(c *cli.Context) error {
	cl, err := daemon.Dial(daemonSocket(c))
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.Logs(c.Args().First(), os.Stdout)
}

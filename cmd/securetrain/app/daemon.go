package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/daemon"
	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/metrics"
	"github.com/securetrain/securetrain/sdnotify"
	"github.com/securetrain/securetrain/slurm"
)

// DaemonCommand runs the root service that runs jobs for users who are not
// root (see package daemon).
var DaemonCommand = &cli.Command{
	Name:  "daemon",
	Usage: "serve jobs for users who are not root on the daemon socket (root service; systemd Type=notify)",
	Description: `Runs gc over what a previous daemon left, listens on daemon.socket of the
host configuration (default /run/securetrain/securetrain.sock), then tells
systemd READY=1. Callers are identified by their peer credentials; the
host configuration's policy: section says who may run which profiles and
how far their flags may go. Jobs die with the daemon.`,
	Action: func(c *cli.Context) error {
		if os.Geteuid() != 0 {
			return cli.Exit("daemon: must run as root (it runs jobs as their callers)", launcher.ExitRefused)
		}
		level := slog.LevelInfo
		if c.Bool("debug") {
			level = slog.LevelDebug
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		h, err := loadHost(c)
		if err != nil {
			return err
		}
		n, err := sdnotify.FromEnv(log)
		if err != nil {
			return err
		}
		ctx, cancel := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
		defer cancel()
		l := launcher.New(h, log)
		// With audit.checkpoints set, the daemon's own events are
		// checkpointed like every other writer's.
		al, err := l.OpenAudit(ctx)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		s := &daemon.Server{Launcher: l, Log: log, Audit: al, Notify: n}
		if h.Slurm.Enabled {
			// Every caller's job comes from Slurm, never from its SLURM_* variables.
			s.Slurm = &slurm.Client{Conf: h.Slurm.Conf, NodeName: h.Slurm.NodeName, Log: log}
		}
		if h.Daemon.MetricsAddr != "" {
			s.Metrics = metrics.New()
		}
		err = s.Serve(ctx)
		if cerr := al.Close(context.Background()); err == nil && cerr != nil {
			err = cerr
		}
		return err
	},
}

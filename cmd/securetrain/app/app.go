// Package app holds securetrain's verbs, one file each, and the *cli.App that
// ties them together. Verbs parse flags and call the library; no policy lives
// here.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/launcher"
)

// Version is set at build time (-ldflags "-X ...app.Version=...").
var Version = "dev"

// New builds the application.
func New() *cli.App {
	return &cli.App{
		Name:                 "securetrain",
		Usage:                "run training jobs in a gVisor sandbox with an egress allowlist, short-lived credentials and resource limits",
		Version:              Version,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Value: configs.DefaultHostConfig, Usage: "host configuration `FILE`", EnvVars: []string{"SECURETRAIN_CONFIG"}},
			&cli.BoolFlag{Name: "debug", Usage: "log what the launcher does on stderr"},
		},
		Commands: commands(),
		ExitErrHandler: func(*cli.Context, error) {
			// Main prints the one line and picks the exit code.
		},
	}
}

func commands() []*cli.Command {
	return []*cli.Command{
		RunCommand, PsCommand, KillCommand, LogsCommand, GCCommand, CheckCommand, ProfilesCommand,
		AuditCommand, ScanCommand, PinCommand, VerifyCommand, KeygenCommand, ExecEnvCommand, SlurmCommand, DaemonCommand,
	}
}

// Main runs the app and returns the process exit code. The error is printed
// once, on one line.
func Main(args []string) int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	err := New().RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := strings.TrimSpace(ec.Error()); msg != "" {
			fmt.Fprintln(os.Stderr, "securetrain: "+firstLine(msg))
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(os.Stderr, "securetrain: "+firstLine(err.Error()))
	var re *launcher.JobRefusedError
	if errors.As(err, &re) {
		return launcher.ExitRefused
	}
	return 1
}

// firstLine keeps an error to one line; joined errors are shown as "; ".
func firstLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// logger returns the launcher's logger: warnings only, or everything with --debug.
func logger(c *cli.Context) *slog.Logger {
	level := slog.LevelWarn
	if c.Bool("debug") {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// loadHost reads the host configuration named by --config.
func loadHost(c *cli.Context) (*configs.Host, error) {
	return configs.LoadHost(c.String("config"), c.IsSet("config"))
}

func newLauncher(c *cli.Context) (*launcher.Launcher, error) {
	h, err := loadHost(c)
	if err != nil {
		return nil, err
	}
	return launcher.New(h, logger(c)), nil
}

// interruptible returns a context cancelled by SIGINT/SIGTERM, for verbs
// other than run (which forwards signals to the job instead).
func interruptible(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
}

package app

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/launcher"
)

// RunCommand runs one job: securetrain run [flags] -- COMMAND [ARGS...].
var RunCommand = &cli.Command{
	Name:      "run",
	Usage:     "run a training job in a sandbox",
	ArgsUsage: "-- COMMAND [ARGS...]",
	Description: `Runs COMMAND inside a gVisor sandbox under a profile (default: "default").
The code directory (the working directory) is read-only, ./outputs is writable,
datasets come in read-only with --data. Exit codes: the job's own, 128+N when a
signal ended it, 123 killed for a policy violation, 124 killed for a resource
limit, 125 refused before it started.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "profile", Aliases: []string{"p"}, Value: "default", Usage: "profile `NAME` or FILE"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `NAME|UID` (root only; default: the sudo caller)"},
		&cli.StringFlag{Name: "code", Usage: "code `DIR`, mounted read-only (default: the working directory)"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "writable outputs `DIR` (default: the profile's, ./outputs)"},
		&cli.StringSliceFlag{Name: "data", Aliases: []string{"d"}, Usage: "read-only dataset `SRC[:DST]` (repeatable; DST defaults to /data/BASENAME)"},
		&cli.StringFlag{Name: "model", Usage: "a model `PATH[:TARGET]` verified by its OMS signature before the job starts, mounted read-only (default TARGET /inputs/BASENAME)"},
		&cli.StringFlag{Name: "model-signature", Usage: "the model's OMS signature `FILE` (e.g. model.sig)"},
		&cli.StringFlag{Name: "model-key", Usage: "the model publisher's public key `FILE` (PEM) the signature must verify with"},
		&cli.StringFlag{Name: "model-ca", Usage: "CA certificates `FILE` (PEM) the signing certificate must chain to"},
		&cli.StringFlag{Name: "model-identity", Usage: "with --model-ca: the signer `ID` the certificate must name (e-mail, URI, DNS name or common name)"},
		&cli.StringFlag{Name: "python", Usage: "interpreter `PATH` whose venv/conda environment the job uses (sudo drops VIRTUAL_ENV)"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `NAME=VALUE` in the job (repeatable)"},
		&cli.Float64Flag{Name: "cpus", Usage: "CPU limit (overrides limits.cpus)"},
		&cli.StringFlag{Name: "memory", Usage: "memory limit such as 8GiB (overrides limits.memory)"},
		&cli.Int64Flag{Name: "pids", Usage: "process/thread limit (overrides limits.pids)"},
		&cli.DurationFlag{Name: "wall-time", Usage: "wall-clock limit such as 2h (overrides limits.wall_time)"},
		&cli.StringFlag{Name: "gpus", Usage: "GPUs: all, none, a count N, or a list such as 0,1 (overrides limits.gpus)"},
		&cli.StringFlag{Name: "network", Usage: "none turns networking off for this run"},
		&cli.StringFlag{Name: "rootfs", Usage: "root file system `DIR` for the job instead of the host's system directories (overrides sandbox.rootfs; through the daemon: admins only)"},
		&cli.BoolFlag{Name: "unrestricted", Usage: "no egress allowlist for this run (overrides network.unrestricted; through the daemon: admins only)"},
		&cli.StringSliceFlag{Name: "allow", Usage: "allow `DEST` for this run: HOST, HOST:PORT, *.SUFFIX, CIDR, CIDR:PORT-PORT, optional tcp:/udp: prefix (repeatable)"},
		&cli.StringSliceFlag{Name: "peers", Usage: "distributed-training peer `NODE|ADDR|CIDR` reachable on network.peer_ports (repeatable)"},
		&cli.StringFlag{Name: "allocation", Usage: "distributed job `ID` (e.g. $SLURM_JOB_ID): its jobs on this node are peers, node names resolve to its address on each node (the daemon sets it from the caller's Slurm job)"},
		&cli.BoolFlag{Name: "learn", Usage: "audit mode: allow everything, record every destination, print a suggested allowlist"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no usage summary on stderr at the end"},
		&cli.StringFlag{Name: "report", Usage: "also write the result record (JSON) to `FILE`"},
		&cli.StringFlag{Name: "tty", Value: "auto", Usage: "give the job a terminal: auto (when stdin and stdout are terminals), always, never"},
	},
	Action: runAction,
}

func runAction(c *cli.Context) error {
	argv := c.Args().Slice()
	if len(argv) == 0 {
		return cli.Exit("run: no command; usage: securetrain run [flags] -- COMMAND [ARGS...]", launcher.ExitRefused)
	}
	refuse := func(err error) error { return cli.Exit("run: "+err.Error(), launcher.ExitRefused) }
	if os.Geteuid() != 0 {
		return runViaDaemon(c, argv) // viadaemon.go; without a daemon: the needs-root refusal
	}
	l, err := newLauncher(c)
	if err != nil {
		return refuse(err)
	}
	prof, err := configs.LoadProfile(c.String("profile"), l.Host.ProfileDir)
	if err != nil {
		return refuse(err)
	}
	over := launcher.Overrides{
		CPUs: c.Float64("cpus"), Memory: c.String("memory"), Pids: c.Int64("pids"),
		WallTime: c.Duration("wall-time"), GPUs: c.String("gpus"), Network: c.String("network"),
		Rootfs: c.String("rootfs"), Unrestricted: c.Bool("unrestricted"),
	}
	prof, err = launcher.ApplyOverrides(prof, over)
	if err != nil {
		return refuse(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return refuse(err)
	}
	if prof, err = launcher.WithModel(prof, modelFlag(c), wd); err != nil {
		return refuse(err)
	}
	env := os.Environ()
	caller, err := launcher.CallerFromEnv(envToMap(env), c.String("user"))
	if err != nil {
		return refuse(err)
	}
	var data []launcher.DataMount
	for _, d := range c.StringSlice("data") {
		dm, err := launcher.ParseData(d)
		if err != nil {
			return refuse(err)
		}
		data = append(data, dm)
	}
	tty, err := wantTTY(c.String("tty"))
	if err != nil {
		return refuse(err)
	}
	req := launcher.Request{
		Command: argv, Profile: prof, Caller: caller, CodeDir: c.String("code"),
		Output: c.String("output"), Data: data, Python: c.String("python"),
		Env: c.StringSlice("env"), CallerEnv: env,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, TTY: tty,
		ReportPath: c.String("report"), Extra: l.SlurmRunExtra(c.Context, os.Getenv),
		Allow: c.StringSlice("allow"), Peers: c.StringSlice("peers"), Learn: c.Bool("learn"),
		Allocation: c.String("allocation"), NetworkOff: over.NetworkOff(),
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	// A reader of our stdout or stderr that goes away (`| head`) must not
	// kill the launcher, which would leave the job's state for gc: with
	// SIGPIPE caught, the write fails with EPIPE and the job gets what it
	// would get without securetrain (launcher/stdio.go, tee).
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, syscall.SIGPIPE)
	defer signal.Stop(pipes)
	res, err := l.Run(c.Context, req, sigs)
	if res == nil {
		return refuse(err)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "securetrain: job %s: teardown: %s\n", res.ID, firstLine(err.Error()))
	}
	if !c.Bool("quiet") && res.Summary != "" {
		fmt.Fprintln(os.Stderr, res.Summary)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(os.Stderr, "securetrain: job %s: %s\n", res.ID, n)
	}
	if c.Bool("learn") {
		printSuggested(res.Suggested)
	}
	switch res.Outcome {
	case launcher.OutcomeViolation, launcher.OutcomeLimit:
		fmt.Fprintf(os.Stderr, "securetrain: job %s killed: %s\n", res.ID, res.Reason)
	case launcher.OutcomeStopped:
		fmt.Fprintf(os.Stderr, "securetrain: job %s %s\n", res.ID, res.Reason)
	}
	if res.ExitCode != 0 {
		return cli.Exit("", res.ExitCode)
	}
	return nil
}

func envToMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				m[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	return m
}

// wantTTY decides whether the job gets a terminal (--tty).
func wantTTY(mode string) (bool, error) {
	switch mode {
	case "auto":
		return term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd())), nil
	case "always":
		return true, nil
	case "never":
		return false, nil
	}
	return false, fmt.Errorf("--tty: want auto, always or never, got %q", mode)
}

// printSuggested prints --learn's suggested allowlist on stderr.
func printSuggested(dests []string) {
	fmt.Fprintf(os.Stderr, "securetrain: --learn: %d destination(s) contacted; to allow them, add to the profile:\nnetwork:\n  mode: sandbox\n  allow:\n", len(dests))
	for _, a := range dests {
		fmt.Fprintf(os.Stderr, "    - %q\n", a)
	}
}

// runFlags reads run's flags; *cli.Context is one. The daemon client reads
// through it, so that a test can check it reads only flags run defines.
type runFlags interface {
	String(name string) string
	StringSlice(name string) []string
	Bool(name string) bool
	Float64(name string) float64
	Int64(name string) int64
	Duration(name string) time.Duration
}

// modelFlag collects --model and its companions.
func modelFlag(c runFlags) *launcher.ModelFlag {
	return &launcher.ModelFlag{Path: c.String("model"), Signature: c.String("model-signature"),
		Key: c.String("model-key"), CA: c.String("model-ca"), Identity: c.String("model-identity")}
}

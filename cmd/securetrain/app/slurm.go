package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/slurm"
)

// SlurmCommand holds the hooks slurm.conf runs on each node as root:
//
//	Prolog=/etc/slurm/securetrain-prolog   (exec securetrain slurm prolog)
//	Epilog=/etc/slurm/securetrain-epilog   (exec securetrain slurm epilog)
//
// A prolog that exits non-zero DRAINS THE NODE (and requeues the job), so
// the prolog fails only when no sandboxed job can run here: a required
// preflight check fails or the state directory cannot be written. A Slurm
// that cannot be asked about the allocation is logged, not fatal. An epilog
// that exits non-zero also drains the node; it fails only when something of
// the job could not be removed, which an admin must then look at.
var SlurmCommand = &cli.Command{
	Name:  "slurm",
	Usage: "Slurm integration: prolog and epilog hooks, caller lookup",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "slurm-conf", Usage: "slurm.conf `FILE` for scontrol/squeue", EnvVars: []string{"SLURM_CONF"}},
		&cli.StringFlag{Name: "node-name", Usage: "this node's Slurm `NAME` (default: the short host name)", EnvVars: []string{"SLURMD_NODENAME"}},
	},
	Subcommands: []*cli.Command{
		{
			Name:   "prolog",
			Usage:  "slurm.conf Prolog: check this node can run sandboxed jobs and record the job's allocation (non-zero drains the node)",
			Action: slurmProlog,
		},
		{
			Name:  "epilog",
			Usage: "slurm.conf Epilog: stop the job's sandboxes, remove their network state, credentials and files, and the job's state",
			Flags: []cli.Flag{
				&cli.DurationFlag{Name: "grace", Value: 10 * time.Second, Usage: "time a job's launcher gets to stop after SIGTERM before SIGKILL"},
			},
			Action: slurmEpilog,
		},
		{
			Name:      "caller",
			Usage:     "show the Slurm job and allocation of process PID as Slurm reports it (root)",
			ArgsUsage: "PID",
			Action: func(c *cli.Context) error {
				pid, err := strconv.Atoi(c.Args().First())
				if err != nil || pid <= 0 {
					return cli.Exit("slurm caller: want a PID", 2)
				}
				ji, err := slurmClient(c).CallerJob(c.Context, pid)
				if err != nil {
					return err
				}
				out := struct {
					slurm.JobInfo
					SandboxGPUs []slurm.GPUMapping `json:"sandbox_gpus"`
				}{ji, ji.SandboxGPUs()}
				b, _ := json.MarshalIndent(out, "", "  ")
				fmt.Println(string(b))
				return nil
			},
		},
	},
}

func slurmClient(c *cli.Context) *slurm.Client {
	return &slurm.Client{Conf: c.String("slurm-conf"), NodeName: c.String("node-name"), Log: logger(c)}
}

func slurmProlog(c *cli.Context) error {
	id, err := slurm.HookJobID(os.Getenv)
	if err != nil {
		return err
	}
	l, err := newLauncher(c)
	if err != nil {
		return err
	}
	ctx, cancel := interruptible(c)
	defer cancel()
	return l.SlurmProlog(ctx, id, slurmClient(c).Job, slurm.HookJob(id, c.String("node-name"), os.Getenv))
}

func slurmEpilog(c *cli.Context) error {
	id, err := slurm.HookJobID(os.Getenv)
	if err != nil {
		return err
	}
	l, err := newLauncher(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), 5*time.Minute)
	defer cancel()
	return l.SlurmEpilog(ctx, id, c.Duration("grace"))
}

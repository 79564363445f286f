package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/launcher"
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

func slurmStore(l *launcher.Launcher) *slurm.Store {
	return &slurm.Store{Dir: filepath.Join(l.Host.StateDir, "slurm")}
}

// hookJobID reads SLURM_JOB_ID, which slurmd (not the job's user) sets for
// the prolog and epilog.
func hookJobID() (uint64, error) {
	v := os.Getenv("SLURM_JOB_ID")
	if v == "" {
		return 0, errors.New("SLURM_JOB_ID is not set: run this only as slurm.conf's Prolog/Epilog")
	}
	return slurm.ParseJobID(v)
}

func slurmProlog(c *cli.Context) error {
	id, err := hookJobID()
	if err != nil {
		return err
	}
	l, err := newLauncher(c)
	if err != nil {
		return err
	}
	ctx, cancel := interruptible(c)
	defer cancel()
	var failed []string
	for _, ch := range l.Preflight(ctx) {
		if !ch.OK && ch.Required {
			failed = append(failed, ch.Name+" ("+ch.Detail+")")
		}
	}
	if len(failed) > 0 {
		// Draining is right here: no sandboxed job can run on this node.
		return fmt.Errorf("slurm prolog: job %d: node cannot run sandboxed jobs: %v", id, failed)
	}
	ji, err := slurmClient(c).Job(ctx, id)
	if err != nil {
		// Not a reason to drain: record what slurmd told us and go on.
		l.Log.Warn("slurm prolog: allocation not readable from Slurm; recording slurmd's environment", "slurm_job", id, "err", err)
		ji = slurm.JobInfo{ID: id, User: os.Getenv("SLURM_JOB_USER"), Node: c.String("node-name"), Read: time.Now().UTC()}
		ji.UID, _ = strconv.Atoi(os.Getenv("SLURM_JOB_UID"))
		ji.GID, _ = strconv.Atoi(os.Getenv("SLURM_JOB_GID"))
	}
	if err := slurmStore(l).Save(ji); err != nil {
		return fmt.Errorf("slurm prolog: job %d: %w", id, err)
	}
	l.Log.Info("slurm prolog", "slurm_job", id, "uid", ji.UID, "cpus", ji.CPUs, "memory_mb", ji.MemoryMB, "gpus", ji.GPUs)
	return nil
}

func slurmEpilog(c *cli.Context) error {
	id, err := hookJobID()
	if err != nil {
		return err
	}
	l, err := newLauncher(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), 5*time.Minute)
	defer cancel()
	key := strconv.FormatUint(id, 10)
	stopped, stopErr := l.StopWhere(ctx, func(j launcher.JobState) bool {
		return j.Extra[launcher.ExtraSlurmJob] == key
	}, c.Duration("grace"))
	// gc removes sandboxes, netns, rules, Vault tokens and files of every
	// job whose launcher is gone, this Slurm job's included.
	rep, gcErr := l.GC(ctx)
	var rmErr error
	if stopErr == nil && gcErr == nil {
		rmErr = slurmStore(l).Remove(id)
	}
	l.Log.Info("slurm epilog", "slurm_job", id, "stopped", stopped, "gc_jobs", rep.Jobs, "orphans", rep.Orphans)
	if err := errors.Join(stopErr, gcErr, rmErr); err != nil {
		return fmt.Errorf("slurm epilog: job %d: %w", id, err)
	}
	return nil
}

// slurmRunExtra records, for `securetrain run` as root inside a Slurm job,
// which job that is, so the epilog can stop it. The job is established
// from this process through slurmd, not from SLURM_JOB_ID (which only says
// whether to ask).
func slurmRunExtra(c *cli.Context) map[string]string {
	if os.Getenv("SLURM_JOB_ID") == "" {
		return nil
	}
	cl := &slurm.Client{Conf: os.Getenv("SLURM_CONF"), NodeName: os.Getenv("SLURMD_NODENAME"), Log: logger(c)}
	id, err := cl.JobOfPID(c.Context, os.Getpid())
	if err != nil {
		logger(c).Warn("inside a Slurm job, but slurmd does not know this process; the epilog will not find this job", "err", err)
		return nil
	}
	return map[string]string{launcher.ExtraSlurmJob: strconv.FormatUint(id, 10)}
}

// Package slurm is securetrain's glue to Slurm: it reads a job's allocation
// from Slurm itself (squeue --json, scontrol pidinfo), never from the SLURM_*
// variables a job's user can set, establishes which Slurm job a process
// belongs to, and keeps the per-Slurm-job state the prolog writes and the
// epilog removes. It does not import the launcher: the CLI's `slurm prolog`
// and `slurm epilog` verbs (and the daemon) drive both.
package slurm

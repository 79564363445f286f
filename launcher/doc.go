// Package launcher owns a job's life: prepare (validate everything, no side
// effect), set up (state, network, credentials, bundle — each recorded before
// it is created, each with its undo on a cleanup stack), start runsc,
// supervise (exit, violations, renewals, signals, wall clock), tear down in
// reverse order, and report the result.
//
// It is the one package that knows the order of things. The CLI, the daemon
// and the Slurm hooks all drive it; the subsystems it drives never import
// each other.
package launcher

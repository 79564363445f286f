// Package netguard confines a job's network: a network namespace and veth
// pair per job, one nftables table per job on the host side of the veth
// (gVisor's netstack ignores rules inside the namespace), a DNS proxy that
// answers only allowlisted names and feeds their addresses into the table,
// and an NFLOG reader that turns every forbidden packet into a typed
// violation.Violation.
//
// The launcher builds a Config from the profile, calls Setup, hands
// NetnsPath, ResolvConf and Hosts to the sandbox, reads Violations while the
// job runs, and calls Close (or GC after a crash).
package netguard

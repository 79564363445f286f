// Package netguard confines a job's network: a network namespace and veth
// pair per job, one nftables table per job on the host side of the veth
// (gVisor's netstack ignores rules inside the namespace), a DNS proxy that
// answers only allowlisted names and feeds their addresses into the table,
// and an NFLOG reader that turns every forbidden packet into a typed
// violation.Violation.
//
// The launcher's order of calls:
//
//	cfg := netguard.Config{JobID: id, Mode: netguard.Enforce, Allow: rules, ...}
//	g, err := netguard.Setup(ctx, cfg, recorder) // records before creating; undoes on error
//	// sandbox: linux.namespaces network path = g.NetnsPath(); runsc --network=sandbox;
//	// /etc/resolv.conf = g.ResolvConf(), /etc/hosts = g.Hosts(hostname); env += g.Env()
//	// supervise: select on g.Violations() (enforce: kill on the first)
//	bytes := g.EgressBytes()                     // for the job's result
//	g.Close()                                    // after the sandbox is dead; idempotent
//
// Nothing gets into a job but replies to its own connections (the proxy's
// answers among them) and its peers on the peer ports: packets the host
// itself sends into the veth are filtered in the output hook, forwarded
// ones in the forward hook. The proxy serves, and judges, only queries from
// the job's address on the job's veth. Both refusals are counted
// (g.Refused) and are never the job's violation.
//
// After a crash, netguard.GC removes what each record names. Jobs get IPv4
// only; every IPv6 packet from a job is dropped.
package netguard

package netguard

// Names of what netguard creates on the host, for operators and leak checks.
const (
	// VethPrefix starts the host end of every job veth (VethPrefix + slot in hex).
	VethPrefix = "stg"
	// NamePrefix starts a job's network namespace (under /var/run/netns)
	// and its inet nftables table: NamePrefix + job ID.
	NamePrefix = "securetrain-"
	// ForwardTable is the inet table that confines forwarding to job veths
	// while netguard owns net.ipv4.ip_forward.
	ForwardTable = "securetrain-fwd"
)

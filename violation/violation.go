// Package violation defines the typed event that ends or marks a job when it
// breaks its profile: contacting a host outside its allowlist, exceeding a
// limit or a budget. The supervisor, the exit code, the audit log, the result
// record and the metrics all read the same value; it is never just a string.
//
// It is a leaf package: every subsystem may import it.
package violation

import (
	"fmt"
	"time"
)

// Kind says which rule was broken.
type Kind string

// Kinds of violation. Network kinds come from netguard, resource kinds from
// usage accounting and the supervisor.
const (
	Network     Kind = "network"      // a packet to a destination outside the allowlist
	DNS         Kind = "dns"          // a lookup of a name outside the allowlist
	EgressBytes Kind = "egress_bytes" // the egress byte budget was exceeded
	WallTime    Kind = "wall_time"
	Memory      Kind = "memory" // OOM kill by the cgroup
	CPU         Kind = "cpu"    // sustained CPU use above the profile
	CPUSeconds  Kind = "cpu_seconds"
	GPUSeconds  Kind = "gpu_seconds"
	GPUMemory   Kind = "gpu_memory"
	Pids        Kind = "pids"
	Secrets     Kind = "secrets" // credential renewal failed and the profile says stop
	Input       Kind = "input"   // a pinned input changed during the run
)

// IsPolicy reports whether the kind is a security-policy violation (network,
// DNS) as opposed to a resource limit. The two have distinct exit codes.
func (k Kind) IsPolicy() bool {
	switch k {
	case Network, DNS, EgressBytes, Input, Secrets:
		return true
	}
	return false
}

// Action says what was done about the violation.
type Action string

const (
	Killed   Action = "killed"   // the job was terminated
	Blocked  Action = "blocked"  // the packet/lookup was dropped, the job goes on
	Recorded Action = "recorded" // audit mode: only recorded
)

// Violation is one broken rule, with enough detail to act on it and to explain
// it to a person.
type Violation struct {
	Kind   Kind      `json:"kind"`
	Job    string    `json:"job,omitempty"`
	Time   time.Time `json:"time"`
	Action Action    `json:"action,omitempty"`
	// Network violations.
	Proto string `json:"proto,omitempty"` // tcp, udp, icmp, ...
	Dest  string `json:"dest,omitempty"`  // address or name
	Port  int    `json:"port,omitempty"`
	// Limit violations.
	Limit     string  `json:"limit,omitempty"` // profile field, e.g. limits.cpu_seconds
	Measured  float64 `json:"measured,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	Unit      string  `json:"unit,omitempty"`
	// Detail is a human sentence with whatever else matters.
	Detail string `json:"detail,omitempty"`
}

// String is the one line a person reads.
func (v Violation) String() string {
	switch {
	case v.Dest != "" && v.Port != 0:
		return fmt.Sprintf("%s violation: %s %s port %d not in allowlist%s", v.Kind, v.Proto, v.Dest, v.Port, suffix(v.Detail))
	case v.Dest != "":
		return fmt.Sprintf("%s violation: %s %s not in allowlist%s", v.Kind, v.Proto, v.Dest, suffix(v.Detail))
	case v.Limit != "":
		return fmt.Sprintf("%s exceeded: measured %g%s, limit %g%s%s", v.Limit, v.Measured, v.Unit, v.Threshold, v.Unit, suffix(v.Detail))
	}
	return fmt.Sprintf("%s violation%s", v.Kind, suffix(v.Detail))
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

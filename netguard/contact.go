package netguard

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Contact is one destination a job reached or tried to reach (audit mode
// records them all, for --learn).
type Contact struct {
	Proto string     `json:"proto"`
	Addr  netip.Addr `json:"addr"`
	Port  int        `json:"port,omitempty"`
	Name  string     `json:"name,omitempty"` // the name the job resolved through the proxy, if any
	First time.Time  `json:"first"`
	// AlwaysDenied marks destinations no allowlist can open (metadata, the
	// host, other jobs, DNS around the proxy); SuggestAllowlist skips them.
	AlwaysDenied bool `json:"always_denied,omitempty"`
}

// SuggestAllowlist turns contacts into allowlist entries (ParseRule syntax):
// by name where the job looked one up, by address otherwise, with protocol
// and port. Sorted and without duplicates.
func SuggestAllowlist(cs []Contact) []string {
	var out []string
	for _, c := range cs {
		if c.AlwaysDenied {
			continue
		}
		dst := c.Name
		if dst == "" {
			dst = c.Addr.String()
		}
		var r Rule
		if pfx, err := parsePrefix(dst); err == nil {
			r.Prefix = pfx
		} else {
			r.Host = dst
		}
		if (c.Proto == "tcp" || c.Proto == "udp") && c.Port > 0 {
			r.Proto, r.PortLo, r.PortHi = c.Proto, uint16(c.Port), uint16(c.Port)
		}
		out = append(out, r.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func contactKey(proto string, a netip.Addr, port int) string {
	return fmt.Sprintf("%s/%s/%d", proto, a, port)
}

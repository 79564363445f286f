package netguard

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidHostName: the /etc/hosts names of a job, checked against the
// regular expression they were first written as.
func TestValidHostName(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?$`)
	names := []string{"", "a", "_", "-", ".", "a-", "-a", "a.b", "node_01", "gpu-1.cluster", "a..b", "a b", "ä", "a\n", "A9",
		strings.Repeat("a", 253), strings.Repeat("a", 254), strings.Repeat("a", 255), "a" + strings.Repeat("-", 252) + "b", "a" + strings.Repeat("-", 253) + "b"}
	for _, n := range names {
		if got, want := ValidHostName(n), re.MatchString(n); got != want {
			t.Errorf("ValidHostName(%.20q…) = %v, want %v", n, got, want)
		}
	}
}

package charset

import (
	"regexp"
	"strings"
	"testing"
)

// TestOnlyAgreesWithRegexp: Only(s, lo, hi, p) is ^[A-Za-z0-9p]{lo,hi}$.
func TestOnlyAgreesWithRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_.+-]{1,8}$`)
	inputs := []string{"", "a", "A_9.+-", "12345678", "123456789", "a b", "a/b", "é", "a\x00", strings.Repeat("z", 8), "-", "..", "a:b"}
	for _, s := range inputs {
		if got, want := Only(s, 1, 8, "_.+-"), re.MatchString(s); got != want {
			t.Errorf("Only(%q) = %v, regexp says %v", s, got, want)
		}
	}
}

func FuzzOnly(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9_.-]{0,5}$`)
	for _, s := range []string{"", "ab", "a.b-c", "abcdef", "a b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := Only(s, 0, 5, "_.-"), re.MatchString(s); got != want {
			t.Errorf("Only(%q) = %v, regexp says %v", s, got, want)
		}
	})
}

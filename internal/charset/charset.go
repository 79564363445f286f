// Package charset checks names against a set of characters without a
// regular expression: a bounded repetition such as [a-z]{1,64} compiles
// into a program of 64 copies, at every start of the binary.
package charset

// Only reports whether s is minLen to maxLen bytes of ASCII letters, digits
// and the bytes of punct.
func Only(s string, minLen, maxLen int, punct string) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !Alnum(s[i]) && !contains(punct, s[i]) {
			return false
		}
	}
	return true
}

// Alnum reports whether b is an ASCII letter or digit.
func Alnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

func contains(s string, b byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return true
		}
	}
	return false
}

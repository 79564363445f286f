package audit

import (
	"strings"
	"testing"
)

// FuzzVerify: any input yields nil or a *VerifyError naming lines inside the
// input (or one past its end, for truncation), and never panics.
func FuzzVerify(f *testing.F) {
	_, lines := sampleLog(f, 6, Options{})
	f.Add(join(lines))
	f.Add(join(lines[1:]))
	f.Add(strings.Join(lines[:3], "") + "{\"seq\":")
	f.Add("")
	f.Add("\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		err := Verify(strings.NewReader(in))
		if err == nil {
			return
		}
		ve, ok := err.(*VerifyError)
		if !ok {
			t.Fatalf("error %T: %v", err, err)
		}
		n := strings.Count(in, "\n") + 1
		for _, p := range ve.Problems {
			if p.Line < 0 || p.Line > n+1 {
				t.Fatalf("problem names line %d of %d: %v", p.Line, n, p)
			}
		}
	})
}

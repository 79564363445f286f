package launcher

import "testing"

func TestSlurmJobOf(t *testing.T) {
	if id, ok := SlurmJobOf(JobState{Extra: SlurmJobExtra(42)}); !ok || id != 42 {
		t.Errorf("SlurmJobOf(SlurmJobExtra(42)) = %d, %v", id, ok)
	}
	for _, extra := range []map[string]string{nil, {ExtraSlurmJob: ""}, {ExtraSlurmJob: "042"}, {ExtraSlurmJob: "x"}} {
		if id, ok := SlurmJobOf(JobState{Extra: extra}); ok {
			t.Errorf("SlurmJobOf(%v) = %d, want none", extra, id)
		}
	}
}

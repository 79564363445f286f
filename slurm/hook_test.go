package slurm

import "testing"

func TestHookJob(t *testing.T) {
	env := map[string]string{"SLURM_JOB_ID": "77", "SLURM_JOB_USER": "alice", "SLURM_JOB_UID": "1001", "SLURM_JOB_GID": "100"}
	get := func(k string) string { return env[k] }
	id, err := HookJobID(get)
	if err != nil || id != 77 {
		t.Fatalf("HookJobID = %d, %v", id, err)
	}
	ji := HookJob(id, "n1", get)
	if ji.ID != 77 || ji.User != "alice" || ji.UID != 1001 || ji.GID != 100 || ji.Node != "n1" || ji.Read.IsZero() {
		t.Errorf("HookJob = %+v", ji)
	}
	for _, v := range []string{"", "0", "x", "07"} {
		env["SLURM_JOB_ID"] = v
		if _, err := HookJobID(get); err == nil {
			t.Errorf("HookJobID(%q): no error", v)
		}
	}
}

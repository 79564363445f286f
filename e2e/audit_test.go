package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestAuditTrail: every job leaves a job_start and an exit event (and the
// violation and kill when it is killed) in one valid hash chain.
func TestAuditTrail(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	r := e.job(t, dir, []string{"--report", "outputs/r.json"}, "/bin/true")
	if r.code != 0 {
		t.Fatalf("job: %s", r)
	}
	k := e.job(t, dir, []string{"--wall-time", "1s"}, "/bin/sleep", "30")
	if k.code != 124 {
		t.Fatalf("wall-time job: %s", k)
	}
	var res struct{ ID string }
	b, _ := os.ReadFile(dir + "/outputs/r.json")
	json.Unmarshal(b, &res)
	f, err := os.Open(e.auditLog)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	types := map[string][]string{} // job -> event types
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last string
	for sc.Scan() {
		var ev struct{ Type, Job string }
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line: %v", err)
		}
		types[ev.Job] = append(types[ev.Job], ev.Type)
		last = ev.Job
	}
	if got := strings.Join(types[res.ID], ","); got != "job_start,exit" {
		t.Errorf("a normal job logs job_start,exit; got %q", got)
	}
	if got := strings.Join(types[last], ","); got != "job_start,violation,kill,exit" {
		t.Errorf("a wall-time kill logs job_start,violation,kill,exit; got %q", got)
	}
	v := e.run(t, dir, nil, "audit", "verify", e.auditLog)
	if v.code != 0 {
		t.Fatalf("audit verify: %s", v)
	}
}

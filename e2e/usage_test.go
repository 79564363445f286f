package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// readOutputsReport reads the --report outputs/report.json of a job run in dir.
func readOutputsReport(t *testing.T, dir string) report {
	t.Helper()
	return readReport(t, filepath.Join(dir, "outputs", "report.json"), result{})
}

func TestCPUSecondsBudget(t *testing.T) {
	e := setup(t)
	prof := "version: 1\nname: budget\nlimits:\n  cpus: 1\n  cpu_seconds: 2\n"
	dir := e.project(t, map[string]string{"budget.yaml": prof})
	r := e.job(t, dir, []string{"--profile", "budget.yaml", "--report", "outputs/report.json"},
		"/usr/bin/python3", "-c", "while True: pass")
	rep := readOutputsReport(t, dir)
	if r.code != 124 || len(rep.Violations) == 0 || rep.Violations[0].Limit != "limits.cpu_seconds" {
		t.Fatalf("a CPU burner past its cpu_seconds budget must be killed for it: %s\n%+v", r, rep)
	}
	if v := rep.Violations[0]; v.Measured < 2 || v.Threshold != 2 {
		t.Errorf("violation must carry the measured value and the threshold: %+v", v)
	}
}

func TestCPUQuotaAndAccounting(t *testing.T) {
	e := setup(t)
	dir := e.project(t, nil)
	// Two busy processes for 4 s of wall time under a 1-CPU quota.
	burn := "import multiprocessing as m, time\n" +
		"def f():\n    t = time.time()\n    while time.time() - t < 4: pass\n" +
		"ps = [m.Process(target=f) for _ in range(2)]\n[p.start() for p in ps]\n[p.join() for p in ps]\n"
	os.WriteFile(filepath.Join(dir, "burn.py"), []byte(burn), 0o644)
	r := e.job(t, dir, []string{"--cpus", "1", "--report", "outputs/report.json"}, "/usr/bin/python3", "burn.py")
	rep := readOutputsReport(t, dir)
	if r.code != 0 {
		t.Fatalf("burner: %s", r)
	}
	// At most about one core over the job's wall time (CFS quota), and
	// clearly more than nothing.
	if rep.Usage.CPUS > rep.Usage.WallS*1.15 || rep.Usage.CPUS < 2 {
		t.Fatalf("cpus: 1 must hold the job to about one core: cpu %.2fs over %.2fs wall", rep.Usage.CPUS, rep.Usage.WallS)
	}
	if rep.Usage.GPUs != nil || rep.Usage.GPUS != nil {
		t.Errorf("without a GPU the GPU fields must be absent, got %+v", rep.Usage)
	}
}

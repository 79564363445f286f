package usage

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/violation"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec float64, cpu float64) Sample {
	return Sample{Time: t0.Add(time.Duration(sec * float64(time.Second))), CPUUser: cpu}
}

func mustEnforcer(t testing.TB, l Limits) *Enforcer {
	t.Helper()
	e, err := NewEnforcer(l)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEnforcerCPUSeconds(t *testing.T) {
	e := mustEnforcer(t, Limits{CPUSeconds: 10, Job: "j1"})
	for i, cpu := range []float64{0, 4, 9.9, 10} {
		if v := e.Observe(at(float64(i), cpu)); v != nil {
			t.Fatalf("cpu %v: unexpected %v", cpu, v)
		}
	}
	v := e.Observe(at(4, 10.5))
	if v == nil {
		t.Fatal("10.5 s > budget 10 s: no violation")
	}
	if v.Kind != violation.CPUSeconds || v.Limit != "limits.cpu_seconds" || v.Measured != 10.5 || v.Threshold != 10 || v.Job != "j1" || v.Action != violation.Killed || !v.Time.Equal(t0.Add(4*time.Second)) {
		t.Errorf("violation %+v", v)
	}
	if !strings.Contains(v.String(), "limits.cpu_seconds exceeded: measured 10.5s, limit 10s") {
		t.Errorf("String: %s", v)
	}
	if v := e.Observe(at(5, 12)); v != nil {
		t.Errorf("reported twice: %v", v)
	}
	// The budget counts the job's code, not gVisor's own processes.
	e = mustEnforcer(t, Limits{CPUSeconds: 10})
	s := at(1, 14)
	s.GVisorCPU = 5
	if v := e.Observe(s); v != nil {
		t.Errorf("9 s of job CPU + 5 s of gVisor under a 10 s budget: %v", v)
	}
}

func TestEnforcerSustainedCPU(t *testing.T) {
	e := mustEnforcer(t, Limits{CPUs: 1, CPUGrace: 3 * time.Second})
	// 2 cores for 2 s, a dip, then 2 cores again: the grace restarts.
	cpu := []float64{0, 2, 4, 4.5, 6.5, 8.5, 10.5}
	for i := 0; i < 6; i++ {
		if v := e.Observe(at(float64(i), cpu[i])); v != nil {
			t.Fatalf("t=%d: %v before the grace ran out", i, v)
		}
	}
	v := e.Observe(at(6, cpu[6])) // over since t=3: 3 s, not yet > grace
	if v != nil {
		t.Fatalf("t=6: %v at exactly the grace", v)
	}
	v = e.Observe(at(7, 12.5))
	if v == nil || v.Kind != violation.CPU || v.Limit != LimitCPUs || v.Measured != 2 || v.Threshold != 1 {
		t.Fatalf("t=7: got %+v, want limits.cpus 2 > 1", v)
	}
	// Within the tolerance: never a violation.
	e = mustEnforcer(t, Limits{CPUs: 1})
	for i := 0; i < 100; i++ {
		if v := e.Observe(at(float64(i), float64(i)*1.05)); v != nil {
			t.Fatalf("1.05 cores under a 1-core limit: %v", v)
		}
	}
}

func TestEnforcerWallTime(t *testing.T) {
	e := mustEnforcer(t, Limits{WallTime: time.Minute, Start: t0})
	if v := e.Observe(at(60, 0)); v != nil {
		t.Fatal(v)
	}
	if v := e.Observe(at(61, 0)); v == nil || v.Kind != violation.WallTime || v.Measured != 61 || v.Threshold != 60 {
		t.Fatalf("got %+v", v)
	}
}

func gpuAt(sec float64, busy float64, jobMem ...uint64) Sample {
	s := at(sec, 0)
	for i, m := range jobMem {
		s.GPUs = append(s.GPUs, GPUSample{Index: i, UUID: "GPU-x", JobMemUsed: m, JobMemKnown: true, BusySeconds: busy / float64(len(jobMem))})
	}
	return s
}

func TestEnforcerGPU(t *testing.T) {
	const G = 1 << 30
	e := mustEnforcer(t, Limits{GPUMemory: 10 * G, GPUMemoryGrace: 2 * time.Second, GPUSeconds: 100})
	steps := []Sample{
		gpuAt(0, 0, 11*G, 1*G), // GPU 0 over from t=0
		gpuAt(1, 10, 9*G, 1*G), // dips: grace restarts
		gpuAt(2, 20, 11*G, 1*G),
		gpuAt(3, 30, 11*G, 12*G),
	}
	for _, s := range steps {
		if v := e.Observe(s); v != nil {
			t.Fatalf("t=%v: %v", s.Time.Sub(t0), v)
		}
	}
	v := e.Observe(gpuAt(4, 40, 11*G, 12*G))
	if v == nil || v.Kind != violation.GPUMemory || v.Measured != 11*1024 || v.Threshold != 10*1024 || v.Unit != "MiB" || !strings.Contains(v.Detail, "GPU 0") {
		t.Fatalf("t=4: %+v, want GPU 0 over for 2 s", v)
	}
	if v := e.Observe(gpuAt(5, 101, 11*G, 12*G)); v == nil || v.Kind != violation.GPUSeconds || v.Measured != 101 {
		t.Fatalf("t=5: %+v, want gpu_seconds 101 > 100", v)
	}
	// GPU 1 (over since t=3) comes next: same sample, each limit once.
	if v := e.Observe(gpuAt(5, 101, 11*G, 12*G)); v == nil || v.Kind != violation.GPUMemory || !strings.Contains(v.Detail, "GPU 1") {
		t.Fatalf("second call: %+v, want GPU 1", v)
	}
	if v := e.Observe(gpuAt(6, 200, 11*G, 12*G)); v != nil {
		t.Fatalf("all reported already: %v", v)
	}
	// No GPUs (absent): no GPU violation, however low the limits.
	e = mustEnforcer(t, Limits{GPUMemory: 1, GPUSeconds: 1})
	if v := e.Observe(at(100, 0)); v != nil {
		t.Fatal(v)
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, l := range []Limits{{CPUs: -1}, {CPUSeconds: -0.5}, {WallTime: -time.Second}, {GPUMemoryGrace: -1}} {
		if _, err := NewEnforcer(l); err == nil {
			t.Errorf("%+v: no error", l)
		}
	}
}

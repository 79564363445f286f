package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/securetrain/securetrain/violation"
)

func TestJobLifecycle(t *testing.T) {
	m := New()
	m.JobState("j1", "alice", Starting)
	m.JobStarted("j1", "alice")
	m.JobStarted("j2", "bob")
	m.SetUsage("j1", "alice", Usage{CPUSeconds: 10, MemoryBytes: 1 << 20, MemoryPeakBytes: 2 << 20, GPUSeconds: 5})
	m.SetUsage("j1", "alice", Usage{CPUSeconds: 25, MemoryBytes: 1 << 20, MemoryPeakBytes: 2 << 20, GPUSeconds: 8})
	m.SetUsage("j2", "bob", Usage{CPUSeconds: 1})
	m.Violation(violation.Network)
	m.Violation(violation.Network)
	m.Violation(violation.Memory)
	m.ObserveLaunch(1500 * time.Millisecond)
	m.RanIn(true)
	m.RanIn(true)

	want := `
# HELP securetrain_job_sandboxes_total Jobs that ran, by sandbox: warm (booted ahead, daemon.warm) or cold (booted for the job).
# TYPE securetrain_job_sandboxes_total counter
securetrain_job_sandboxes_total{sandbox="cold"} 0
securetrain_job_sandboxes_total{sandbox="warm"} 2
# HELP securetrain_jobs Jobs on this node by state.
# TYPE securetrain_jobs gauge
securetrain_jobs{state="running"} 2
securetrain_jobs{state="starting"} 0
securetrain_jobs{state="stopping"} 0
# HELP securetrain_job_cpu_seconds CPU seconds used so far by a live job.
# TYPE securetrain_job_cpu_seconds gauge
securetrain_job_cpu_seconds{job="j1",user="alice"} 25
securetrain_job_cpu_seconds{job="j2",user="bob"} 1
# HELP securetrain_user_gpu_seconds_total GPU seconds used by a user's jobs on this node.
# TYPE securetrain_user_gpu_seconds_total counter
securetrain_user_gpu_seconds_total{user="alice"} 8
# HELP securetrain_violations_total Profile violations by kind.
# TYPE securetrain_violations_total counter
securetrain_violations_total{kind="memory"} 1
securetrain_violations_total{kind="network"} 2
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"securetrain_job_sandboxes_total", "securetrain_jobs", "securetrain_job_cpu_seconds", "securetrain_user_gpu_seconds_total", "securetrain_violations_total"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.userCPU.WithLabelValues("alice")); got != 25 {
		t.Errorf("alice cpu total %g, want 25", got)
	}

	m.JobEnded("j1", Violated)
	m.JobEnded("j2", "weird")
	// Per-job series are gone; per-user totals stay.
	for _, name := range []string{"securetrain_job_cpu_seconds", "securetrain_job_memory_bytes", "securetrain_job_memory_peak_bytes", "securetrain_job_gpu_seconds"} {
		if n, err := testutil.GatherAndCount(m.Registry(), name); err != nil || n != 0 {
			t.Errorf("%s: %d series after the jobs ended (%v)", name, n, err)
		}
	}
	if got := testutil.ToFloat64(m.userCPU.WithLabelValues("alice")); got != 25 {
		t.Errorf("alice cpu total %g after end, want 25", got)
	}
	if got := testutil.ToFloat64(m.ended.WithLabelValues("violation")); got != 1 {
		t.Errorf("violation outcomes %g", got)
	}
	if got := testutil.ToFloat64(m.ended.WithLabelValues("other")); got != 1 {
		t.Errorf("unknown outcome not counted as other: %g", got)
	}
	if got := testutil.ToFloat64(m.jobs.WithLabelValues("running")); got != 0 {
		t.Errorf("running %g after both ended", got)
	}
	// A late sample does not bring the series back.
	m.SetUsage("j1", "alice", Usage{CPUSeconds: 99})
	if n, _ := testutil.GatherAndCount(m.Registry(), "securetrain_job_cpu_seconds"); n != 0 {
		t.Errorf("late usage resurrected %d series", n)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP securetrain_launch_duration_seconds Time from a launch request to the workload running in its sandbox.
# TYPE securetrain_launch_duration_seconds histogram
securetrain_launch_duration_seconds_bucket{le="0.1"} 0
securetrain_launch_duration_seconds_bucket{le="0.25"} 0
securetrain_launch_duration_seconds_bucket{le="0.5"} 0
securetrain_launch_duration_seconds_bucket{le="1"} 0
securetrain_launch_duration_seconds_bucket{le="2"} 1
securetrain_launch_duration_seconds_bucket{le="4"} 1
securetrain_launch_duration_seconds_bucket{le="8"} 1
securetrain_launch_duration_seconds_bucket{le="15"} 1
securetrain_launch_duration_seconds_bucket{le="30"} 1
securetrain_launch_duration_seconds_bucket{le="60"} 1
securetrain_launch_duration_seconds_bucket{le="120"} 1
securetrain_launch_duration_seconds_bucket{le="+Inf"} 1
securetrain_launch_duration_seconds_sum 1.5
securetrain_launch_duration_seconds_count 1
`), "securetrain_launch_duration_seconds"); err != nil {
		t.Error(err)
	}
}

func TestLint(t *testing.T) {
	m := New()
	m.JobStarted("j", "u")
	m.SetUsage("j", "u", Usage{CPUSeconds: 1})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "securetrain_") && !strings.HasPrefix(p.Metric, "securetrain_process_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestNilMetricsIgnored(t *testing.T) {
	var m *Metrics
	m.JobStarted("j", "u")
	m.SetUsage("j", "u", Usage{})
	m.Violation(violation.DNS)
	m.ObserveLaunch(time.Second)
	m.RanIn(false)
	m.JobEnded("j", Success)
}

func TestHandlerAndServe(t *testing.T) {
	m := New()
	m.Violation(violation.DNS)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `securetrain_violations_total{kind="dns"} 1`) {
		t.Fatalf("scrape lacks the violation:\n%s", rec.Body.String())
	}
	if !strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Error("scrape lacks Go runtime metrics")
	}

	// Serve on loopback, scrape, shut down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Serve(ctx, ln, nil) }()
	var body string
	for range 100 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(body, "securetrain_jobs") {
		t.Errorf("served scrape: %q", body)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("still serving after the shutdown")
	}
}

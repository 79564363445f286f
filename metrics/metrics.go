// Package metrics exposes securetrain's Prometheus metrics: jobs by state and
// outcome, violations by kind, usage per job and per user, and launch
// latency. It keeps its own registry (never the global default), so tests and
// several daemons in one process do not collide.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/securetrain/securetrain/violation"
)

const namespace = "securetrain"

// State is where a live job is in its life.
type State string

// Job states.
const (
	Starting State = "starting" // setting up network, credentials, sandbox
	Running  State = "running"
	Stopping State = "stopping" // tearing down
)

var states = []State{Starting, Running, Stopping}

// Outcome is how a job ended.
type Outcome string

// Job outcomes. Anything else is counted as Other, to keep label values
// bounded.
const (
	Success   Outcome = "success"   // exit code 0
	Failed    Outcome = "failed"    // non-zero exit of the workload
	Violated  Outcome = "violation" // killed for a violation
	Killed    Outcome = "killed"    // stopped by a user, the admin or the daemon
	SetupFail Outcome = "setup_failed"
	Other     Outcome = "other"
)

var outcomes = []Outcome{Success, Failed, Violated, Killed, SetupFail, Other}

// Usage is one job's resource use so far. Seconds are cumulative.
type Usage struct {
	CPUSeconds      float64
	MemoryBytes     float64 // current
	MemoryPeakBytes float64
	GPUSeconds      float64 // GPU-seconds summed over the job's GPUs
}

type job struct {
	user  string
	state State
	usage Usage
}

// Metrics is the set of securetrain metrics. Its methods are safe for
// concurrent use; a nil *Metrics ignores every call, so callers need not
// check whether metrics are enabled.
type Metrics struct {
	reg *prometheus.Registry

	jobs       *prometheus.GaugeVec
	ended      *prometheus.CounterVec
	violations *prometheus.CounterVec
	launch     prometheus.Histogram
	sandboxes  *prometheus.CounterVec

	jobCPU, jobMem, jobMemPeak, jobGPU *prometheus.GaugeVec
	userCPU, userGPU                   *prometheus.CounterVec

	mu   sync.Mutex
	live map[string]*job
}

// New returns metrics registered in a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg:  prometheus.NewRegistry(),
		live: map[string]*job{},
		jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "jobs",
			Help: "Jobs on this node by state."}, []string{"state"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "jobs_ended_total",
			Help: "Jobs that ended, by outcome."}, []string{"outcome"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "violations_total",
			Help: "Profile violations by kind."}, []string{"kind"}),
		launch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "launch_duration_seconds",
			Help:    "Time from a launch request to the workload running in its sandbox.",
			Buckets: []float64{.1, .25, .5, 1, 2, 4, 8, 15, 30, 60, 120}}),
		sandboxes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "job_sandboxes_total",
			Help: "Jobs that ran, by sandbox: warm (booted ahead, daemon.warm) or cold (booted for the job)."}, []string{"sandbox"}),
		jobCPU: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "job_cpu_seconds",
			Help: "CPU seconds used so far by a live job."}, []string{"job", "user"}),
		jobMem: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "job_memory_bytes",
			Help: "Current memory of a live job."}, []string{"job", "user"}),
		jobMemPeak: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "job_memory_peak_bytes",
			Help: "Peak memory of a live job."}, []string{"job", "user"}),
		jobGPU: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "job_gpu_seconds",
			Help: "GPU seconds used so far by a live job, summed over its GPUs."}, []string{"job", "user"}),
		userCPU: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "user_cpu_seconds_total",
			Help: "CPU seconds used by a user's jobs on this node."}, []string{"user"}),
		userGPU: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "user_gpu_seconds_total",
			Help: "GPU seconds used by a user's jobs on this node."}, []string{"user"}),
	}
	m.reg.MustRegister(m.jobs, m.ended, m.violations, m.launch, m.sandboxes,
		m.jobCPU, m.jobMem, m.jobMemPeak, m.jobGPU, m.userCPU, m.userGPU,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: namespace}))
	// Known label values exist from the start, so rate() sees the first event.
	for _, s := range states {
		m.jobs.WithLabelValues(string(s))
	}
	for _, o := range outcomes {
		m.ended.WithLabelValues(string(o))
	}
	m.sandboxes.WithLabelValues("warm")
	m.sandboxes.WithLabelValues("cold")
	return m
}

// Registry returns the registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// JobState records that a job (new or known) is now in state s.
func (m *Metrics) JobState(jobID, user string, s State) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.live[jobID]
	if !ok {
		j = &job{user: user}
		m.live[jobID] = j
	} else {
		m.jobs.WithLabelValues(string(j.state)).Dec()
	}
	j.state = s
	m.jobs.WithLabelValues(string(s)).Inc()
}

// JobStarted records that a job's workload is running.
func (m *Metrics) JobStarted(jobID, user string) { m.JobState(jobID, user, Running) }

// JobEnded records a job's end and removes its per-job series. Its last usage
// stays in the per-user totals.
func (m *Metrics) JobEnded(jobID string, o Outcome) {
	if m == nil {
		return
	}
	valid := false
	for _, k := range outcomes {
		valid = valid || k == o
	}
	if !valid {
		o = Other
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ended.WithLabelValues(string(o)).Inc()
	j, ok := m.live[jobID]
	if !ok {
		return
	}
	delete(m.live, jobID)
	m.jobs.WithLabelValues(string(j.state)).Dec()
	for _, g := range []*prometheus.GaugeVec{m.jobCPU, m.jobMem, m.jobMemPeak, m.jobGPU} {
		g.DeleteLabelValues(jobID, j.user)
	}
}

// Violation counts one violation.
func (m *Metrics) Violation(k violation.Kind) {
	if m == nil {
		return
	}
	m.violations.WithLabelValues(string(k)).Inc()
}

// RanIn counts a job that ran in a warm sandbox (daemon.warm) or in one
// booted for it: how often the pool had one ready.
func (m *Metrics) RanIn(warm bool) {
	if m == nil {
		return
	}
	k := "cold"
	if warm {
		k = "warm"
	}
	m.sandboxes.WithLabelValues(k).Inc()
}

// ObserveLaunch records the time from request to running workload.
func (m *Metrics) ObserveLaunch(d time.Duration) {
	if m == nil {
		return
	}
	m.launch.Observe(d.Seconds())
}

// SetUsage records a live job's usage so far. The growth of CPU and GPU
// seconds since the last call is added to the user's totals. A job not
// announced with JobState/JobStarted is ignored, so a late sample after
// JobEnded cannot resurrect its series.
func (m *Metrics) SetUsage(jobID, user string, u Usage) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.live[jobID]
	if !ok {
		return
	}
	if user == "" {
		user = j.user
	}
	if d := u.CPUSeconds - j.usage.CPUSeconds; d > 0 {
		m.userCPU.WithLabelValues(user).Add(d)
	}
	if d := u.GPUSeconds - j.usage.GPUSeconds; d > 0 {
		m.userGPU.WithLabelValues(user).Add(d)
	}
	j.usage = u
	m.jobCPU.WithLabelValues(jobID, j.user).Set(u.CPUSeconds)
	m.jobMem.WithLabelValues(jobID, j.user).Set(u.MemoryBytes)
	m.jobMemPeak.WithLabelValues(jobID, j.user).Set(u.MemoryPeakBytes)
	m.jobGPU.WithLabelValues(jobID, j.user).Set(u.GPUSeconds)
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Serve serves /metrics on ln until ctx is done, then shuts the server down
// (ln is closed). The caller listens, so that a bad address fails at once;
// a clean shutdown returns nil.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	err := srv.Serve(ln)
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics serve %s: %w", ln.Addr(), err)
}

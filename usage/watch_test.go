package usage

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// fakeSource burns 1 CPU second per sample.
type fakeSource struct {
	mu sync.Mutex
	n  int
}

func (f *fakeSource) Sample(context.Context) (Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return Sample{Time: t0.Add(time.Duration(f.n) * time.Second), CPUUser: float64(f.n)}, nil
}

func TestWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := mustEnforcer(t, Limits{CPUSeconds: 3})
	ch, live := Watch(ctx, &fakeSource{}, e, time.Millisecond)
	var r Reader = live
	v, ok := <-ch
	if !ok || v.Kind != violation.CPUSeconds || v.Measured != 4 {
		t.Fatalf("got %+v (open %v), want cpu_seconds 4 > 3", v, ok)
	}
	if got := r.Latest(); got.Time.IsZero() || got.CPUUser < 4 {
		t.Errorf("Latest %+v", got)
	}
	if vs := live.Violations(); len(vs) != 1 {
		t.Errorf("Violations %v", vs)
	}
	cancel()
	for range ch { // must close
	}
	if live.Err() != nil {
		t.Error(live.Err())
	}
}

func TestWatchSurvivesGoneCgroup(t *testing.T) {
	s, err := NewSampler(Config{CgroupRoot: "testdata/cgroup2", CgroupPath: "/securetrain/nothere"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, live := Watch(ctx, s, nil, time.Millisecond)
	for live.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if !IsGone(live.Err()) || !live.Latest().Time.IsZero() {
		t.Errorf("Err %v Latest %+v", live.Err(), live.Latest())
	}
	cancel()
	for range ch {
	}
}

func TestRecord(t *testing.T) {
	f := Final{
		Sample: Sample{Time: t0.Add(90 * time.Second), CPUUser: 40, CPUSystem: 2, GVisorCPU: 2, MemPeak: 200 << 20, IORead: 1 << 20,
			Sandbox: &SandboxStats{CPU: 39}},
		OOMKills: 1,
	}
	r := NewRecord("j1", t0, t0.Add(90*time.Second), f, 200<<20, 0)
	r.Exit = ExitStatus{Code: 137, Reason: "oom"}
	if !r.OOMKilled || r.CPUSeconds != 42 || r.JobCPUSeconds != 40 || r.GVisorCPUSeconds != 2 || r.WallSeconds != 90 || len(r.Violations) != 1 || r.Violations[0].Kind != violation.Memory {
		t.Fatalf("record %+v", r)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, absent := range []string{"gpu_s", "gpu_mem_peak", "gpus", "egress_bytes"} {
		if strings.Contains(js, `"`+absent+`"`) {
			t.Errorf("%s present without GPUs/egress: %s", absent, js)
		}
	}
	if !strings.Contains(js, `"sandbox_cpu_s":39`) || !strings.Contains(js, `"oom_killed":true`) {
		t.Errorf("JSON %s", js)
	}
	sum := r.Summary()
	for _, want := range []string{"job j1 killed for memory (OOM, exit 137) after 1m30s", "cpu 40.0s (+2.0s gVisor)", "peak memory 200.0 MiB", "limits.memory exceeded: measured 200MiB, limit 200MiB"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}

	f.OOMKills = 0
	f.GPUs = []GPUSample{{Index: 0, BusySeconds: 30, JobMemPeak: 3 << 30}, {Index: 1, BusySeconds: 12, JobMemPeak: 5 << 30}}
	r = NewRecord("j2", t0, t0.Add(time.Minute), f, 0, 0)
	r.EgressBytes = map[string]uint64{"pypi.org:443": 2048}
	if r.GPUSeconds == nil || *r.GPUSeconds != 42 || *r.GPUMemPeak != 5<<30 || len(r.Violations) != 0 {
		t.Fatalf("GPU record %+v", r)
	}
	if sum := r.Summary(); !strings.Contains(sum, "exited 0") || !strings.Contains(sum, "gpu 42.0s busy, peak gpu memory 5.0 GiB") || !strings.Contains(sum, "egress 2.0 KiB to 1 destination") {
		t.Errorf("summary: %s", sum)
	}
}

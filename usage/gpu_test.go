package usage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

type fakeNVML struct {
	initErr error
	devs    map[int]*fakeGPU
	shut    int
}

func (f *fakeNVML) Init() error     { return f.initErr }
func (f *fakeNVML) Shutdown() error { f.shut++; return nil }
func (f *fakeNVML) Device(i int) (GPUDevice, error) {
	d, ok := f.devs[i]
	if !ok {
		return nil, fmt.Errorf("NVML device %d: invalid argument", i)
	}
	return d, nil
}

type fakeGPU struct {
	uuid        string
	util, mutil uint32
	used, total uint64
	procs       []GPUProcess
	procErr     error
}

func (g *fakeGPU) UUID() (string, error)                { return g.uuid, nil }
func (g *fakeGPU) Utilization() (uint32, uint32, error) { return g.util, g.mutil, nil }
func (g *fakeGPU) Memory() (uint64, uint64, error)      { return g.used, g.total, nil }
func (g *fakeGPU) Processes() ([]GPUProcess, error)     { return g.procs, g.procErr }

func TestGPUAbsentWithoutNVML(t *testing.T) {
	lib := &fakeNVML{initErr: fmt.Errorf("%w: libnvidia-ml.so.1 not found", ErrNoNVML)}
	s, err := NewSampler(Config{CgroupRoot: "testdata/cgroup2", CgroupPath: "/securetrain/job1", GPUs: []int{0}, NVML: lib})
	if err != nil {
		t.Fatalf("NVML absent must not fail: %v", err)
	}
	smp, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if smp.GPUs != nil {
		t.Errorf("GPUs = %v, want nil (absent)", smp.GPUs)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// The real library on this host: with no driver the GPU path must report
// absence, not fail (on a GPU machine it must find GPU 0).
func TestGPURealNVML(t *testing.T) {
	s, err := NewSampler(Config{CgroupRoot: "testdata/cgroup2", CgroupPath: "/securetrain/job1", GPUs: []int{0}})
	if err != nil {
		t.Fatalf("NewSampler: %v", err)
	}
	defer s.Close()
	smp, err := s.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GPUs: %+v", smp.GPUs)
	if s.gpu == nil && smp.GPUs != nil {
		t.Errorf("no NVML but GPUs = %v", smp.GPUs)
	}
	if s.gpu != nil && (len(smp.GPUs) != 1 || smp.GPUs[0].UUID == "" || smp.GPUs[0].MemTotal == 0) {
		t.Errorf("NVML present but GPU 0 reads %+v", smp.GPUs)
	}
}

func TestGPUUnknownIndex(t *testing.T) {
	lib := &fakeNVML{devs: map[int]*fakeGPU{0: {uuid: "GPU-0"}}}
	if _, err := newGPUReader(lib, []int{0, 3}, discard()); err == nil {
		t.Fatal("GPU 3 does not exist: want an error")
	}
	if lib.shut != 1 {
		t.Errorf("Shutdown called %d times after failure, want 1", lib.shut)
	}
}

func TestGPURead(t *testing.T) {
	g0 := &fakeGPU{uuid: "GPU-a", util: 50, mutil: 10, used: 8 << 30, total: 16 << 30,
		procs: []GPUProcess{{Pid: 100, MemUsed: 3 << 30}, {Pid: 200, MemUsed: 5 << 30}, {Pid: 101, MemUsed: 1 << 30}}}
	g1 := &fakeGPU{uuid: "GPU-b", util: 100, used: 1 << 30, total: 16 << 30, procErr: errors.New("not supported")}
	r, err := newGPUReader(&fakeNVML{devs: map[int]*fakeGPU{0: g0, 1: g1}}, []int{0, 1}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	r.read(t0, []int{100, 101})
	g0.procs[0].MemUsed = 1 << 30 // job's use drops; the peak stays
	s := r.read(t0.Add(2*time.Second), []int{100, 101})
	if len(s) != 2 {
		t.Fatalf("got %d GPUs", len(s))
	}
	a, b := s[0], s[1]
	if a.Index != 0 || a.UUID != "GPU-a" || a.Util != 50 || a.MemUsed != 8<<30 {
		t.Errorf("GPU 0: %+v", a)
	}
	if !a.JobMemKnown || a.JobMemUsed != 2<<30 || a.JobMem() != 2<<30 || a.JobMemPeak != 4<<30 {
		t.Errorf("GPU 0 job memory %d (known %v) peak %d, want 2 GiB, peak 4 GiB", a.JobMemUsed, a.JobMemKnown, a.JobMemPeak)
	}
	if a.BusySeconds != 1 || b.BusySeconds != 2 {
		t.Errorf("busy seconds %v %v, want 1 2", a.BusySeconds, b.BusySeconds)
	}
	if b.JobMemKnown || b.JobMem() != 1<<30 {
		t.Errorf("GPU 1 without per-process figures: JobMem %d known %v, want device's 1 GiB", b.JobMem(), b.JobMemKnown)
	}
}

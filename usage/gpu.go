package usage

import (
	"fmt"
	"log/slog"
	"time"
)

// NVML is the part of NVIDIA's management library the sampler uses; the
// real one (nvml_linux.go, github.com/NVIDIA/go-nvml, loaded with dlopen at
// run time) and a fake in tests implement it.
type NVML interface {
	// Init loads and initialises the library; ErrNoNVML (wrapped) when the
	// library is not there.
	Init() error
	Shutdown() error
	Device(index int) (GPUDevice, error)
}

// GPUDevice is one GPU as NVML sees it.
type GPUDevice interface {
	UUID() (string, error)
	// Utilization is the percent of time a kernel ran and memory was
	// accessed over the driver's last sample period.
	Utilization() (gpu, mem uint32, err error)
	Memory() (used, total uint64, err error)
	// Processes lists host processes using the device (compute and
	// graphics) with their memory; an error means the driver does not say.
	Processes() ([]GPUProcess, error)
}

// GPUProcess is a host process's use of one GPU.
type GPUProcess struct {
	Pid     int
	MemUsed uint64
}

// gpuReader samples the job's GPUs; a nil *gpuReader samples nothing.
type gpuReader struct {
	lib  NVML
	devs []gpuDev
	log  *slog.Logger
}

type gpuDev struct {
	index int
	uuid  string
	dev   GPUDevice
	busy  float64
	peak  uint64
	last  time.Time
}

// newGPUReader opens the GPUs with the given indices. Without indices, or
// when NVML cannot be loaded, it returns nil and no error: GPU figures are
// then absent. A GPU index NVML does not know is an error (the job was
// promised a GPU that is not there).
func newGPUReader(lib NVML, indices []int, log *slog.Logger) (*gpuReader, error) {
	if len(indices) == 0 {
		return nil, nil
	}
	if lib == nil {
		lib = newNVML()
	}
	if err := lib.Init(); err != nil {
		log.Info("GPU figures absent: NVML not available", "err", err)
		return nil, nil
	}
	g := &gpuReader{lib: lib, log: log}
	for _, i := range indices {
		d, err := lib.Device(i)
		if err != nil {
			_ = lib.Shutdown()
			return nil, fmt.Errorf("usage: GPU %d: %w", i, err)
		}
		uuid, err := d.UUID()
		if err != nil {
			log.Warn("GPU UUID unreadable", "gpu", i, "err", err)
		}
		g.devs = append(g.devs, gpuDev{index: i, uuid: uuid, dev: d})
	}
	return g, nil
}

// read samples every GPU. hostPids are the sandbox's host processes; their
// GPU memory is the job's. A reading that fails leaves its fields zero and
// is logged; it never fails the sample.
func (g *gpuReader) read(now time.Time, hostPids []int) []GPUSample {
	if g == nil {
		return nil
	}
	mine := make(map[int]bool, len(hostPids))
	for _, p := range hostPids {
		mine[p] = true
	}
	out := make([]GPUSample, 0, len(g.devs))
	for i := range g.devs {
		d := &g.devs[i]
		s := GPUSample{Index: d.index, UUID: d.uuid}
		if u, m, err := d.dev.Utilization(); err == nil {
			s.Util, s.MemUtil = float64(u), float64(m)
		} else {
			g.log.Debug("GPU utilization unreadable", "gpu", d.index, "err", err)
		}
		if used, total, err := d.dev.Memory(); err == nil {
			s.MemUsed, s.MemTotal = used, total
		} else {
			g.log.Debug("GPU memory unreadable", "gpu", d.index, "err", err)
		}
		if ps, err := d.dev.Processes(); err == nil {
			s.JobMemKnown = true
			for _, p := range ps {
				if mine[p.Pid] {
					s.JobMemUsed += p.MemUsed
				}
			}
		}
		if !d.last.IsZero() && now.After(d.last) {
			d.busy += s.Util / 100 * now.Sub(d.last).Seconds()
		}
		d.last = now
		s.BusySeconds = d.busy
		d.peak = max(d.peak, s.JobMem())
		s.JobMemPeak = d.peak
		out = append(out, s)
	}
	return out
}

func (g *gpuReader) close() error {
	if g == nil {
		return nil
	}
	return g.lib.Shutdown()
}

//go:build linux && cgo

package usage

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// realNVML adapts github.com/NVIDIA/go-nvml, which dlopens
// libnvidia-ml.so.1 at Init: a binary built with it runs on hosts without
// the driver.
type realNVML struct{ lib nvml.Interface }

func newNVML() NVML { return &realNVML{lib: nvml.New()} }

func nvErr(what string, r nvml.Return) error {
	if r == nvml.SUCCESS {
		return nil
	}
	if r == nvml.ERROR_LIBRARY_NOT_FOUND {
		return fmt.Errorf("%w: %s: %s", ErrNoNVML, what, nvml.ErrorString(r))
	}
	return fmt.Errorf("usage: NVML %s: %w", what, errors.New(nvml.ErrorString(r)))
}

func (n *realNVML) Init() error     { return nvErr("init", n.lib.Init()) }
func (n *realNVML) Shutdown() error { return nvErr("shutdown", n.lib.Shutdown()) }

func (n *realNVML) Device(i int) (GPUDevice, error) {
	d, r := n.lib.DeviceGetHandleByIndex(i)
	if err := nvErr(fmt.Sprintf("device %d", i), r); err != nil {
		return nil, err
	}
	return realDevice{d}, nil
}

// nvmlValueNotAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned long long.
const nvmlValueNotAvailable = ^uint64(0)

type realDevice struct{ d nvml.Device }

func (d realDevice) UUID() (string, error) {
	u, r := d.d.GetUUID()
	return u, nvErr("uuid", r)
}

func (d realDevice) Utilization() (uint32, uint32, error) {
	u, r := d.d.GetUtilizationRates()
	return u.Gpu, u.Memory, nvErr("utilization", r)
}

func (d realDevice) Memory() (uint64, uint64, error) {
	m, r := d.d.GetMemoryInfo()
	return m.Used, m.Total, nvErr("memory", r)
}

// Processes lists compute and graphics processes; either list alone will do
// (datacenter GPUs may not report graphics ones).
func (d realDevice) Processes() ([]GPUProcess, error) {
	var out []GPUProcess
	var errs []error
	for _, get := range []func() ([]nvml.ProcessInfo, nvml.Return){
		d.d.GetComputeRunningProcesses, d.d.GetGraphicsRunningProcesses,
	} {
		ps, r := get()
		if err := nvErr("processes", r); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range ps {
			if p.UsedGpuMemory == nvmlValueNotAvailable {
				return nil, fmt.Errorf("usage: NVML: memory of process %d not available", p.Pid)
			}
			out = append(out, GPUProcess{Pid: int(p.Pid), MemUsed: p.UsedGpuMemory})
		}
	}
	if len(errs) == 2 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

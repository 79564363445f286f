package daemon

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/securetrain/securetrain/configs"
)

// ErrGPUBusy is wrapped when the GPUs a job asks for are held by other jobs.
var ErrGPUBusy = errors.New("GPU in use by another job")

// GPUAllocator hands out GPUs exclusively between the daemon's concurrent
// jobs: a GPU belongs to at most one job until that job releases it.
type GPUAllocator struct {
	mu    sync.Mutex
	owner map[int]string // GPU index -> job id
}

// NewGPUAllocator returns an allocator with every GPU free.
func NewGPUAllocator() *GPUAllocator { return &GPUAllocator{owner: map[int]string{}} }

// Acquire gives job the GPUs want asks for, out of the host's avail, and
// returns their indices; all or nothing.
func (a *GPUAllocator) Acquire(job string, want configs.GPUSet, avail []int) ([]int, error) {
	if want.None() {
		return nil, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(avail) == 0 {
		return nil, fmt.Errorf("--gpus %s: this host has no GPUs; use --gpus none or a CPU profile", want)
	}
	free := func(i int) bool { _, held := a.owner[i]; return !held }
	var got []int
	switch {
	case len(want.Indices) > 0:
		for _, i := range want.Indices {
			if !slices.Contains(avail, i) {
				return nil, fmt.Errorf("--gpus %s: GPU %d does not exist on this host (have %s)", want, i, ints(avail))
			}
			if !free(i) {
				return nil, fmt.Errorf("--gpus %s: GPU %d is held by job %s: %w; wait for it or ask for another", want, i, a.owner[i], ErrGPUBusy)
			}
		}
		got = slices.Clone(want.Indices)
	case want.All:
		for _, i := range avail {
			if !free(i) {
				return nil, fmt.Errorf("--gpus all: GPU %d is held by job %s: %w; ask for a count instead", i, a.owner[i], ErrGPUBusy)
			}
		}
		got = slices.Clone(avail)
	default:
		for _, i := range avail {
			if free(i) && len(got) < want.Count {
				got = append(got, i)
			}
		}
		if len(got) < want.Count {
			return nil, fmt.Errorf("--gpus %d: only %d of the host's %d GPUs are free: %w", want.Count, len(got), len(avail), ErrGPUBusy)
		}
	}
	for _, i := range got {
		a.owner[i] = job
	}
	return got, nil
}

// Release frees every GPU job holds. Releasing twice is harmless.
func (a *GPUAllocator) Release(job string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, j := range a.owner {
		if j == job {
			delete(a.owner, i)
		}
	}
}

func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

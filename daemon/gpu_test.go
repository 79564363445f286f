package daemon

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
)

func TestGPUAllocatorExclusive(t *testing.T) {
	a := NewGPUAllocator()
	avail := []int{0, 1, 2, 3}
	got, err := a.Acquire("job1", configs.GPUSet{Count: 2}, avail)
	if err != nil || !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("job1: %v %v", got, err)
	}
	// GPU already taken: a listed index held by another job.
	_, err = a.Acquire("job2", configs.GPUSet{Indices: []int{1}}, avail)
	if !errors.Is(err, ErrGPUBusy) || !strings.Contains(err.Error(), "GPU 1 is held by job job1") {
		t.Fatalf("job2 asking for job1's GPU: %v", err)
	}
	// A count takes only free GPUs; too many is all or nothing.
	got, err = a.Acquire("job2", configs.GPUSet{Count: 2}, avail)
	if err != nil || !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("job2: %v %v", got, err)
	}
	if _, err := a.Acquire("job3", configs.GPUSet{Count: 1}, avail); !errors.Is(err, ErrGPUBusy) || !strings.Contains(err.Error(), "only 0 of the host's 4 GPUs are free") {
		t.Fatalf("job3 with none free: %v", err)
	}
	if _, err := a.Acquire("job3", configs.GPUSet{All: true}, avail); !errors.Is(err, ErrGPUBusy) {
		t.Fatalf("job3 all: %v", err)
	}
	a.Release("job1")
	a.Release("job1")
	got, err = a.Acquire("job3", configs.GPUSet{Indices: []int{1}}, avail)
	if err != nil || !slices.Equal(got, []int{1}) {
		t.Fatalf("job3 after release: %v %v", got, err)
	}
	if _, err := a.Acquire("job4", configs.GPUSet{Indices: []int{7}}, avail); err == nil || !strings.Contains(err.Error(), "GPU 7 does not exist on this host (have 0,1,2,3)") {
		t.Fatalf("job4 unknown GPU: %v", err)
	}
	if _, err := a.Acquire("job4", configs.GPUSet{Count: 1}, nil); err == nil || !strings.Contains(err.Error(), "this host has no GPUs") {
		t.Fatalf("no GPUs: %v", err)
	}
	if got, err := a.Acquire("job4", configs.GPUSet{}, nil); got != nil || err != nil {
		t.Fatalf("none: %v %v", got, err)
	}
}

func TestGPUAllocatorFailedAcquireHoldsNothing(t *testing.T) {
	a := NewGPUAllocator()
	a.Acquire("a", configs.GPUSet{Indices: []int{1}}, []int{0, 1})
	if _, err := a.Acquire("b", configs.GPUSet{Indices: []int{0, 1}}, []int{0, 1}); err == nil {
		t.Fatal("want busy")
	}
	if got, err := a.Acquire("c", configs.GPUSet{Indices: []int{0}}, []int{0, 1}); err != nil || !slices.Equal(got, []int{0}) {
		t.Fatalf("GPU 0 must still be free: %v %v", got, err)
	}
}

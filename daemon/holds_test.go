package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/slurm"
)

// TestAllocLedger: the runs inside one Slurm job together stay within its
// allocation; a hold ends at release; what the job store records (a run
// of a daemon that was restarted, or one gc has not removed) counts as
// well, once.
func TestAllocLedger(t *testing.T) {
	ji := slurm.JobInfo{ID: 9, CPUs: 2, MemoryMB: 1024, GPUs: []int{3}}
	var store []launcher.JobState
	var storeErr error
	l := newAllocLedger(func() ([]launcher.JobState, error) { return store, storeErr })
	one := hold{job: 9, cpus: 1, memory: 256 << 20}

	if err := l.reserve("a", ji, one); err != nil {
		t.Fatal(err)
	}
	if err := l.reserve("b", ji, one); err != nil {
		t.Fatalf("second CPU of two: %v", err)
	}
	err := l.reserve("c", ji, one)
	if !errors.Is(err, ErrAllocationFull) || !strings.Contains(err.Error(), "Slurm job 9 has 2 CPU(s), 1GiB memory, 1 GPU(s) on this node; its 2 running securetrain job(s) hold 2 CPU(s), 512MiB memory, 0 GPU(s), and this run asks 1 CPU(s), 256MiB memory, 0 GPU(s)") {
		t.Fatalf("third CPU of two: %v", err)
	}
	// Another allocation is not this one's business.
	if err := l.reserve("x", slurm.JobInfo{ID: 10, CPUs: 1}, hold{job: 10, cpus: 1}); err != nil {
		t.Fatalf("another job's allocation: %v", err)
	}
	l.release("a")
	l.release("a")
	if err := l.reserve("c", ji, one); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	l.release("b")
	l.release("c")

	// Memory and GPUs count as CPUs do.
	if err := l.reserve("m", ji, hold{job: 9, cpus: 0.5, memory: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	if err := l.reserve("m2", ji, hold{job: 9, cpus: 0.5, memory: 1}); !errors.Is(err, ErrAllocationFull) {
		t.Errorf("memory over the allocation: %v", err)
	}
	l.release("m")
	if err := l.reserve("g", ji, hold{job: 9, gpus: 2}); !errors.Is(err, ErrAllocationFull) {
		t.Errorf("two GPUs of one: %v", err)
	}

	// The store: a state of this job that the daemon did not admit (a
	// restarted daemon's predecessor) holds what it recorded; the daemon's
	// own, in the store as well, counts once; a state without a hold (root's
	// run) and another job's count nothing.
	h := hold{job: 9, cpus: 1.5, memory: 100 << 20}
	old := launcher.JobState{ID: "old", Extra: map[string]string{launcher.ExtraSlurmJob: "9"}}
	for k, v := range h.extra() {
		old.Extra[k] = v
	}
	store = []launcher.JobState{old,
		{ID: "root", Extra: map[string]string{launcher.ExtraSlurmJob: "9"}},
		{ID: "y", Extra: map[string]string{launcher.ExtraSlurmJob: "10", extraHeldCPUs: "8"}}}
	if err := l.reserve("d", ji, hold{job: 9, cpus: 1}); !errors.Is(err, ErrAllocationFull) {
		t.Errorf("1 CPU beside the store's 1.5 of 2: %v", err)
	}
	if err := l.reserve("d", ji, hold{job: 9, cpus: 0.5}); err != nil {
		t.Errorf("0.5 CPU beside the store's 1.5 of 2: %v", err)
	}
	store = append(store, launcher.JobState{ID: "d", Extra: old.Extra})
	if got, n, _ := l.held(9); got.cpus != 2 || n != 2 {
		t.Errorf("held %+v by %d jobs, want 2 CPUs by 2 (the daemon's own run counted once)", got, n)
	}
	// gc removed the old state: its hold is gone.
	store = store[1:]
	if got, _, _ := l.held(9); got.cpus != 0.5 {
		t.Errorf("after gc: held %+v, want 0.5 CPU", got)
	}
	// A store that cannot be read refuses (fail closed).
	storeErr = errors.New("permission denied")
	if err := l.reserve("e", ji, hold{job: 9}); err == nil || !strings.Contains(err.Error(), "cannot be read: permission denied") {
		t.Errorf("unreadable store: %v", err)
	}
}

func TestTaskShare(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{nil, 1},
		{[]string{"SLURM_STEP_NUM_TASKS=2"}, 2},
		{[]string{"SLURM_STEP_NUM_TASKS=8", "SLURM_STEP_NUM_NODES=2"}, 4},
		{[]string{"SLURM_STEP_NUM_TASKS=3", "SLURM_STEP_NUM_NODES=2"}, 2},
		{[]string{"SLURM_STEP_NUM_TASKS=x"}, 1},
		{[]string{"SLURM_STEP_NUM_TASKS=-4"}, 1},
	} {
		if got := taskShare(tc.env); got != tc.want {
			t.Errorf("taskShare(%v) = %d, want %d", tc.env, got, tc.want)
		}
	}
	// Each of two tasks gets half of the allocation.
	p := configs.Profile{}
	p.Limits.CPUs, p.Limits.Memory, p.Limits.Shm = 8, 8<<30, 1<<30
	q, _, err := capToJob(&p, slurm.JobInfo{ID: 1, CPUs: 2, MemoryMB: 1800}, 2)
	if err != nil || q.Limits.CPUs != 1 || q.Limits.Memory != 900<<20 {
		t.Errorf("share of 2: cpus %v memory %v (%v), want 1 and 900MiB", q.Limits.CPUs, q.Limits.Memory, err)
	}
}

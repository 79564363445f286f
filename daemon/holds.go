package daemon

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/oneline"
	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/slurm"
)

// ErrAllocationFull is wrapped when a run inside a Slurm job asks for more
// than that job's allocation on this node has left beside its running jobs.
var ErrAllocationFull = errors.New("the Slurm allocation is fully held by its running jobs")

// The job state's Extra keys that record what a run holds of its Slurm
// allocation, so that whoever lists the job store (a restarted daemon
// included) counts it until its state is gone.
const (
	extraHeldCPUs   = "held_cpus"
	extraHeldMemory = "held_memory_bytes"
	extraHeldGPUs   = "held_gpus"
)

// hold is what one run takes of its Slurm job's allocation on this node.
type hold struct {
	job    uint64 // the Slurm job
	cpus   float64
	memory int64 // bytes
	gpus   int
}

func (h hold) extra() map[string]string {
	return map[string]string{
		extraHeldCPUs:   strconv.FormatFloat(h.cpus, 'g', -1, 64),
		extraHeldMemory: strconv.FormatInt(h.memory, 10),
		extraHeldGPUs:   strconv.Itoa(h.gpus),
	}
}

// holdOf reads a job state's hold. A state that names the Slurm job but
// records no hold (a root `securetrain run` inside the allocation, which the
// allocation does not bound) holds nothing of it.
func holdOf(st launcher.JobState) (hold, bool) {
	id, inJob := launcher.SlurmJobOf(st)
	if _, recorded := st.Extra[extraHeldCPUs]; !inJob || !recorded {
		return hold{}, false
	}
	h := hold{job: id}
	h.cpus, _ = strconv.ParseFloat(st.Extra[extraHeldCPUs], 64)
	h.memory, _ = strconv.ParseInt(st.Extra[extraHeldMemory], 10, 64)
	h.gpus, _ = strconv.Atoi(st.Extra[extraHeldGPUs])
	return h, true
}

// holdFor is what a run with profile p (already capped to the job) holds.
func holdFor(ji slurm.JobInfo, p *configs.Profile) hold {
	return hold{job: ji.ID, cpus: p.Limits.CPUs, memory: int64(p.Limits.Memory), gpus: len(p.Limits.GPUs.Indices)}
}

// allocLedger counts what the runs inside each Slurm job hold, so that one
// allocation cannot start runs that together exceed it. Two sources: the
// runs this daemon admitted (from admission until their run returns, which
// covers the time before their state exists), and every other state in the
// job store that names the Slurm job: a live one, or one whose launcher died
// and that gc has not removed yet (its sandbox may still run). A restarted
// daemon therefore starts from what the store says, and a crashed run's hold
// ends when gc removes its state.
type allocLedger struct {
	mu    sync.Mutex
	mine  map[string]hold // daemon job id -> hold
	list  func() ([]launcher.JobState, error)
	float float64 // tolerance for fractional CPUs
}

func newAllocLedger(list func() ([]launcher.JobState, error)) *allocLedger {
	return &allocLedger{mine: map[string]hold{}, list: list, float: 1e-6}
}

// held sums what ji's running jobs hold, and counts them. The store's
// states of the daemon's own runs are counted once (from mine).
func (l *allocLedger) held(id uint64) (hold, int, error) {
	sum := hold{job: id}
	n := 0
	add := func(h hold) {
		sum.cpus += h.cpus
		sum.memory += h.memory
		sum.gpus += h.gpus
		n++
	}
	for _, h := range l.mine {
		if h.job == id {
			add(h)
		}
	}
	states, err := l.list()
	if err != nil {
		return sum, n, err
	}
	for _, st := range states {
		if _, ok := l.mine[st.ID]; ok {
			continue
		}
		if h, ok := holdOf(st); ok && h.job == id {
			add(h)
		}
	}
	return sum, n, nil
}

// reserve admits job's hold h against ji's allocation on this node, or
// refuses it (fail closed when the store cannot be read). Release it with
// release once the run has returned.
func (l *allocLedger) reserve(job string, ji slurm.JobInfo, h hold) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	got, n, err := l.held(ji.ID)
	if err != nil {
		return fmt.Errorf("slurm: what Slurm job %d's running jobs hold cannot be read: %w", ji.ID, oneline.Error(err))
	}
	gpus := len(ji.SandboxGPUs())
	over := (ji.CPUs > 0 && got.cpus+h.cpus > float64(ji.CPUs)+l.float) ||
		(ji.MemoryMB > 0 && got.memory+h.memory > ji.MemoryMB<<20) ||
		got.gpus+h.gpus > gpus
	if over {
		return fmt.Errorf("slurm: Slurm job %d has %s on this node; its %d running securetrain job(s) hold %s, and this run asks %s; wait for one to end or ask for less (--cpus, --memory, --gpus): %w",
			ji.ID, amount(float64(ji.CPUs), ji.MemoryMB<<20, gpus), n, amount(got.cpus, got.memory, got.gpus), amount(h.cpus, h.memory, h.gpus), ErrAllocationFull)
	}
	l.mine[job] = h
	return nil
}

// release ends job's hold. Releasing twice is harmless.
func (l *allocLedger) release(job string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.mine, job)
}

func amount(cpus float64, memory int64, gpus int) string {
	return fmt.Sprintf("%g CPU(s), %s memory, %d GPU(s)", cpus, configs.ByteSize(memory), gpus)
}

// taskShare is how many tasks of the caller's Slurm step share this node,
// from the step's own variables (SLURM_STEP_NUM_TASKS over
// SLURM_STEP_NUM_NODES, rounded up; 1 when absent or malformed). A run
// without explicit sizes gets its share of the allocation, so that each task
// of `srun -n 2` gets half, not the whole. The variables are the caller's to
// forge, but only ever shrink its own run: the ledger bounds the sum.
func taskShare(env []string) int {
	var tasks, nodes int
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "SLURM_STEP_NUM_TASKS="); ok {
			tasks, _ = strconv.Atoi(v)
		} else if v, ok := strings.CutPrefix(kv, "SLURM_STEP_NUM_NODES="); ok {
			nodes, _ = strconv.Atoi(v)
		}
	}
	if tasks <= 1 || tasks > 1<<16 {
		return 1
	}
	if nodes < 1 {
		nodes = 1
	}
	return int(math.Ceil(float64(tasks) / float64(nodes)))
}

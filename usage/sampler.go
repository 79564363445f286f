package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultEventsInterval is how often the runsc events stream asks the
// sentry. Its figures are shown, never enforced (see Sample.Sandbox), so
// they need not follow every sample: at 5 s the stream costs about a tenth
// of what the 1 Hz cgroup and /proc reads do.
const DefaultEventsInterval = 5 * time.Second

// Sampler reads one sandbox's usage. Sample and Final may be called from one
// goroutine at a time (Watch does that); Close stops its runsc and
// releases NVML.
type Sampler struct {
	cfg    Config
	log    *slog.Logger
	cg     *cgroup
	procs  *hostProcs
	gpu    *gpuReader
	events time.Duration

	mu      sync.Mutex // serialises readers
	created time.Time
	stream  *eventStream
	started time.Time // of the newest stream
	memPeak uint64
}

// NewSampler checks cfg and opens what the sampler reads. It creates
// nothing on the host. GPUs whose NVML cannot be loaded are absent, not an
// error; a GPU index that NVML does not know is an error.
func NewSampler(cfg Config) (*Sampler, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cg, err := openCgroup(cfg.CgroupRoot, cfg.CgroupPath)
	if err != nil {
		return nil, err
	}
	if cfg.Runsc != "" && cfg.ContainerID == "" {
		return nil, fmt.Errorf("%w: ContainerID is required with Runsc", ErrConfig)
	}
	procs, err := newHostProcs("")
	if err != nil {
		return nil, fmt.Errorf("usage: open /proc: %w", err)
	}
	gpu, err := newGPUReader(cfg.NVML, cfg.GPUs, log)
	if err != nil {
		return nil, err
	}
	ev := cfg.EventsInterval
	if ev <= 0 {
		ev = DefaultEventsInterval
	}
	return &Sampler{cfg: cfg, log: log, cg: cg, procs: procs, gpu: gpu, events: ev, created: time.Now()}, nil
}

// CgroupVersion is 1 or 2.
func (s *Sampler) CgroupVersion() int { return s.cg.Version() }

// Sample reads the sandbox now. ErrNoCgroup means the sandbox is not (or no
// longer) there. runsc and GPU readings that fail are logged and left out;
// they never fail a sample.
func (s *Sampler) Sample(ctx context.Context) (Sample, error) {
	_, smp, err := s.read(ctx, false)
	return smp, err
}

// Final reads the final counters, OOM kills included, after the job ended.
// Call it before `runsc delete`, which removes the cgroup (ErrNoCgroup
// afterwards). An error other than ErrNoCgroup comes with what could be
// read: some counter file was unreadable. It does not ask runsc, whose sandbox may be gone: Sandbox
// carries the last answer of a Sample.
func (s *Sampler) Final(ctx context.Context) (Final, error) {
	st, smp, err := s.read(ctx, true)
	return Final{Sample: smp, OOMKills: st.OOMKills, MemFailcnt: st.MemFailcnt, PidsMaxHit: st.PidsMaxHit}, err
}

func (s *Sampler) read(ctx context.Context, final bool) (cgroupStats, Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st, err := s.cg.read()
	if errors.Is(err, ErrNoCgroup) {
		return st, Sample{Time: now}, err
	}
	var partial error
	if err != nil {
		// A file vanished while the sandbox was torn down, or a kernel
		// without one of them: a sample reports what was read; Final
		// returns the error too, since a missing OOM counter must not
		// pass for "no OOM".
		s.log.Debug("cgroup read incomplete", "err", err)
		if final {
			partial = err
		}
	}
	smp := Sample{
		Time:       now,
		CPUUser:    st.CPUUser,
		CPUSystem:  st.CPUSystem,
		MemUsage:   st.MemUsage,
		BlockRead:  st.BlockRead,
		BlockWrite: st.BlockWrite,
		HostTasks:  st.Tasks,
	}
	// The kernel's peak where it keeps one; never less than what was seen.
	s.memPeak = max(s.memPeak, st.MemPeak, st.MemUsage)
	smp.MemPeak = s.memPeak
	pf := s.procs.read(st.Procs)
	smp.HostProcs, smp.MemRSS, smp.IORead, smp.IOWrite = pf.n, pf.rss, pf.rd, pf.wr
	smp.GVisorCPU = min(pf.gvisorCPU, smp.CPUSeconds())

	if !final && s.cfg.Runsc != "" {
		s.ensureStream(now)
	}
	if s.stream != nil {
		if sb := s.stream.latest(); sb != nil {
			c := *sb
			smp.Sandbox = &c
		}
	}
	smp.GPUs = s.gpu.read(now, st.Procs)
	return st, smp, partial
}

// ensureStream starts the runsc events stream at the first sample one
// events interval after the sampler was made (a job's start, when runsc's
// own start would compete with the sandbox's, and short jobs go without),
// and again (at most once a minute) if runsc ended while the sandbox still
// runs. A stream that cannot start leaves Sandbox absent; it never fails a
// sample.
func (s *Sampler) ensureStream(now time.Time) {
	if s.stream == nil && now.Sub(s.created) < s.events {
		return
	}
	if s.stream != nil {
		select {
		case <-s.stream.done:
		default:
			return
		}
		if now.Sub(s.started) < time.Minute {
			return
		}
	}
	st, err := startEventStream(context.Background(), s.cfg.Runsc, s.cfg.RunscRoot, s.cfg.ContainerID, s.events, s.log)
	if err != nil {
		s.log.Debug("runsc events failed", "err", err)
		return
	}
	old := s.stream
	s.stream, s.started = st, now
	if old != nil {
		// Keep the last answer until the new stream has one.
		if sb := old.latest(); sb != nil {
			st.mu.Lock()
			st.last = sb
			st.mu.Unlock()
		}
	}
}

// Close stops the runsc events stream and releases NVML. The sampler must
// not be used afterwards.
func (s *Sampler) Close() error {
	s.mu.Lock()
	if s.stream != nil {
		s.stream.close()
	}
	s.mu.Unlock()
	return s.gpu.close()
}

package usage

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// Source is what Watch samples; *Sampler is one.
type Source interface {
	Sample(ctx context.Context) (Sample, error)
}

// Reader is the one read-only view of a running job's figures that
// `securetrain ps` and the Prometheus metrics both use.
type Reader interface {
	// Latest returns the newest sample; its Time is zero before the first.
	Latest() Sample
}

// Live holds the newest sample of a watched job. It is safe for concurrent use.
type Live struct {
	mu      sync.RWMutex
	latest  Sample
	err     error
	samples uint64
	viols   []violation.Violation
}

var _ Reader = (*Live)(nil)

// Latest implements Reader.
func (l *Live) Latest() Sample {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s := l.latest
	s.GPUs = append([]GPUSample(nil), l.latest.GPUs...)
	if l.latest.GPUs == nil {
		s.GPUs = nil
	}
	return s
}

// Err is the error of the last sample, nil if it succeeded.
func (l *Live) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.err
}

// Samples counts the successful samples so far.
func (l *Live) Samples() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.samples
}

// Violations returns every violation sent so far.
func (l *Live) Violations() []violation.Violation {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([]violation.Violation(nil), l.viols...)
}

func (l *Live) set(s Sample, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
	if err == nil {
		l.latest = s
		l.samples++
	}
}

// DefaultInterval is Watch's sampling interval when given 0.
const DefaultInterval = time.Second

// Watch samples src every interval (DefaultInterval if <= 0; 100ms works),
// starting at once, publishes each sample in Live, and sends what e finds on
// the channel (e may be nil: accounting only). Sampling errors are kept in
// Live.Err and do not stop the loop: ErrNoCgroup before the sandbox starts
// or after it ended is normal. The loop ends and the channel closes when ctx
// is done; cancel ctx and drain the channel before calling Sampler.Final.
func Watch(ctx context.Context, src Source, e *Enforcer, interval time.Duration) (<-chan violation.Violation, *Live) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	ch := make(chan violation.Violation, 8)
	live := &Live{}
	go func() {
		defer close(ch)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			s, err := src.Sample(ctx)
			if ctx.Err() != nil {
				return
			}
			live.set(s, err)
			if err == nil && e != nil {
				for v := e.Observe(s); v != nil; v = e.Observe(s) {
					live.mu.Lock()
					live.viols = append(live.viols, *v)
					live.mu.Unlock()
					select {
					case ch <- *v:
					case <-ctx.Done():
						return
					}
				}
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, live
}

// IsGone reports whether err means the sandbox's cgroup is not there.
func IsGone(err error) bool { return errors.Is(err, ErrNoCgroup) }

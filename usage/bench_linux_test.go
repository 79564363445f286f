package usage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSample is the cost of one sample of a real sandbox: cgroup,
// /proc and (every EventsInterval) runsc events. "runsc-every-sample" asks
// runsc each time, which is what dominates (a runsc process per call).
func BenchmarkSample(b *testing.B) {
	sb := startSandbox(b, sandboxOpts{args: []string{"/bin/sleep", "600"}, memory: 256 << 20})
	for _, tc := range []struct {
		name  string
		every time.Duration
	}{{"runsc-1Hz", time.Second}, {"no-runsc", time.Hour}, {"runsc-every-sample", time.Nanosecond}} {
		b.Run(tc.name, func(b *testing.B) {
			sm, err := NewSampler(Config{CgroupPath: sb.cgPath, Runsc: sb.runsc, RunscRoot: sb.root, ContainerID: sb.id, EventsInterval: tc.every})
			if err != nil {
				b.Fatal(err)
			}
			defer sm.Close()
			for b.Loop() {
				if _, err := sm.Sample(bg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWatch runs Watch against a real sandbox for a fixed window and
// reports the CPU it cost (this process and the runsc processes it ran) as
// a share of one core. Run with -benchtime=1x.
func BenchmarkWatch(b *testing.B) {
	sb := startSandbox(b, sandboxOpts{args: []string{"/bin/sleep", "600"}, memory: 256 << 20})
	for _, hz := range []int{1, 10} {
		b.Run(fmt.Sprintf("%dHz", hz), func(b *testing.B) {
			sm, err := NewSampler(Config{CgroupPath: sb.cgPath, Runsc: sb.runsc, RunscRoot: sb.root, ContainerID: sb.id})
			if err != nil {
				b.Fatal(err)
			}
			defer sm.Close()
			e := mustEnforcer(b, Limits{CPUSeconds: 1e9, CPUs: 64})
			const window = 5 * time.Second
			var share float64
			var samples uint64
			for b.Loop() {
				self, kids, start := cpuTime(unix.RUSAGE_SELF), cpuTime(unix.RUSAGE_CHILDREN), time.Now()
				ctx, cancel := context.WithCancel(bg)
				ch, live := Watch(ctx, sm, e, time.Second/time.Duration(hz))
				time.Sleep(window)
				cancel()
				for range ch {
				}
				used := cpuTime(unix.RUSAGE_SELF) - self + cpuTime(unix.RUSAGE_CHILDREN) - kids
				share = used.Seconds() / time.Since(start).Seconds()
				samples = live.Samples()
				if live.Err() != nil {
					b.Fatal(live.Err())
				}
			}
			b.ReportMetric(100*share, "%core")
			b.ReportMetric(float64(samples), "samples")
		})
	}
}

package usage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/internal/testenv"
)

// BenchmarkSample is the cost of one sample of a real sandbox: cgroup and
// /proc files (the runsc events stream runs beside it, in its own process;
// BenchmarkWatch counts that too). "no-runsc" leaves the stream out.
func BenchmarkSample(b *testing.B) {
	sb := startSandbox(b, sandboxOpts{args: []string{"/bin/sleep", "600"}, memory: 256 << 20})
	for _, tc := range []struct {
		name  string
		runsc string
	}{{"runsc-stream", sb.runsc}, {"no-runsc", ""}} {
		b.Run(tc.name, func(b *testing.B) {
			sm, err := NewSampler(Config{CgroupPath: sb.cgPath, Runsc: tc.runsc, RunscRoot: sb.root, ContainerID: sb.id})
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

// procCPU is the CPU time of a live process, from /proc (0 if it is gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name's closing parenthesis: utime and stime
	// are the 12th and 13th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / userHZ
}

// BenchmarkWatch runs Watch against a real sandbox for a fixed window and
// reports what supervision costs as a share of one core, in steady state:
// this process (cgroup and /proc reads, the enforcer, the samples) and its
// long-lived runsc events stream, measured after the first sample started
// it. runsc-start-ms is that runsc's CPU outside the window (once per job).
// files-only leaves the stream out. Run with -benchtime=1x.
func BenchmarkWatch(b *testing.B) {
	sb := startSandbox(b, sandboxOpts{args: []string{"/bin/sleep", "600"}, memory: 256 << 20})
	shares, starts := map[string]float64{}, map[string]float64{}
	for _, tc := range []struct {
		name  string
		hz    int
		runsc string
	}{{"1Hz", 1, sb.runsc}, {"10Hz", 10, sb.runsc}, {"1Hz-files-only", 1, ""}} {
		b.Run(tc.name, func(b *testing.B) {
			e := mustEnforcer(b, Limits{CPUSeconds: 1e9, CPUs: 64})
			window := 10 * time.Second
			if os.Getenv("BENCH_TINY") != "" {
				window = 2 * time.Second
			}
			var share, startup float64
			var samples uint64
			for b.Loop() {
				kids0 := cpuTime(unix.RUSAGE_CHILDREN)
				sm, err := NewSampler(Config{CgroupPath: sb.cgPath, Runsc: tc.runsc, RunscRoot: sb.root, ContainerID: sb.id})
				if err != nil {
					b.Fatal(err)
				}
				sm.created = time.Time{}                 // as if the job had run for an events interval
				if _, err := sm.Sample(bg); err != nil { // starts the stream
					b.Fatal(err)
				}
				time.Sleep(2 * time.Second)
				pid := 0
				if sm.stream != nil {
					pid = sm.stream.pid
				}
				self, child, start := cpuTime(unix.RUSAGE_SELF), procCPU(pid), time.Now()
				ctx, cancel := context.WithCancel(bg)
				ch, live := Watch(ctx, sm, e, time.Second/time.Duration(tc.hz))
				time.Sleep(window)
				cancel()
				for range ch {
				}
				stream := procCPU(pid) - child
				used := cpuTime(unix.RUSAGE_SELF) - self + stream
				share = used.Seconds() / time.Since(start).Seconds()
				sm.Close() // waits for its runsc: RUSAGE_CHILDREN then holds all of its CPU
				startup = (cpuTime(unix.RUSAGE_CHILDREN) - kids0 - stream).Seconds()
				samples = live.Samples()
				if live.Err() != nil {
					b.Fatal(live.Err())
				}
				if s := live.Latest(); (s.Sandbox == nil) != (tc.runsc == "") {
					b.Fatalf("runsc events figures %+v with runsc %q", s.Sandbox, tc.runsc)
				}
			}
			b.ReportMetric(100*share, "%core")
			b.ReportMetric(1000*startup, "runsc-start-ms")
			b.ReportMetric(float64(samples), "samples")
			shares[tc.name], starts[tc.name] = 100*share, 1000*startup
		})
	}
	testenv.BenchRow(b, "supervisor's own CPU while a job runs, 1 Hz samples, steady state",
		fmt.Sprintf("cgroup and /proc files only: %.2f %% of a core", shares["1Hz-files-only"]),
		fmt.Sprintf("%.2f %% of a core (10 Hz: %.2f %%); its runsc events stream %.0f ms CPU once per job", shares["1Hz"], shares["10Hz"], starts["1Hz"]),
		"goal < 0.5 %")
}

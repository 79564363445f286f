package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/internal/versions"
)

// Benchmarks compare securetrain against its baselines in the same run,
// interleaved (one run of every variant per round, so that a host whose
// load changes shifts them all alike): a bare process, plain
// `runsc --network=none do` and securetrain. Each figure goes to the log
// and, through testenv.BenchRow, to the table in docs/performance.md.
// `make bench` runs them (scripts/bench.sh); BENCH_TINY=1 shrinks the
// workloads to a smoke run (TestBenchScriptTiny).

// variant is one way of running the same thing; run returns the workload's
// own rate (steps/s, iters/s; 0 when it has none).
type variant struct {
	name string
	run  func() (float64, error)
	// settle, when set, runs before each of the variant's runs, untimed
	// (BenchmarkLaunch: until the daemon's warm pool is full again, so that
	// no sandbox boots in the background of any measured run).
	settle func() error
}

// measured is one run: wall time, CPU time of the whole process tree
// (user+system of every reaped descendant: the launcher, runsc, the sentry,
// the gofer and the stubs) and the workload's rate.
type measured struct {
	wall, cpu, rate float64
}

// interleave runs every variant once per round, rounds times.
func interleave(b *testing.B, rounds int, vs []variant) map[string][]measured {
	b.Helper()
	out := map[string][]measured{}
	for r := 0; r < rounds; r++ {
		for _, v := range vs {
			if v.settle != nil {
				if err := v.settle(); err != nil {
					b.Fatalf("%s: %v", v.name, err)
				}
			}
			c0, t0 := childCPU(), time.Now()
			rate, err := v.run()
			if err != nil {
				b.Fatalf("%s: %v", v.name, err)
			}
			m := measured{wall: time.Since(t0).Seconds(), cpu: (childCPU() - c0).Seconds(), rate: rate}
			out[v.name] = append(out[v.name], m)
			b.Logf("%s: wall %.3fs cpu %.3fs rate %.3f load %s", v.name, m.wall, m.cpu, m.rate, loadavg())
		}
	}
	return out
}

func childCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_CHILDREN, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadavg is the host's 1, 5 and 15 minute load, written beside figures.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// field picks one figure out of each run.
func field(ms []measured, f func(measured) float64) []float64 {
	xs := make([]float64, len(ms))
	for i, m := range ms {
		xs[i] = f(m)
	}
	return xs
}

func wallMs(m measured) float64 { return 1000 * m.wall }

// runscDo runs args under plain runsc with no network, the baseline every
// sandboxed figure is compared with.
func runscDo(b *testing.B, e *env) func(dir string, env []string, args ...string) *exec.Cmd {
	return runscDoWith(b, e.runsc)
}

// runscDoWith is runscDo of another runsc binary.
func runscDoWith(b *testing.B, runsc string) func(dir string, env []string, args ...string) *exec.Cmd {
	root := b.TempDir()
	b.Cleanup(func() { exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run() })
	return func(dir string, env []string, args ...string) *exec.Cmd {
		a := []string{"--root", root, "--network=none", "do", "--cwd", dir}
		if len(env) > 0 {
			a = append(append(a, "/usr/bin/env"), env...)
		}
		return exec.Command(runsc, append(a, args...)...)
	}
}

// BenchmarkLaunch: `/bin/true`, cold, b.N rounds of bare, plain runsc,
// securetrain (default profile, no network) and securetrain with netguard
// (one allowlist entry: netns, veth, nftables table, DNS proxy).
func BenchmarkLaunch(b *testing.B) {
	if !testenv.FinalBenchRun(b) {
		return
	}
	e := benchSetup(b)
	dir := benchProject(b, e)
	do := runscDo(b, e)
	st := func(extra ...string) func() (float64, error) {
		return func() (float64, error) {
			args := append(append([]string{"run", "--user", jobUser}, extra...), "--", "/bin/true")
			out, err := e.cmd(b.Context(), dir, nil, args...).CombinedOutput()
			if err != nil {
				return 0, fmt.Errorf("%w: %s", err, out)
			}
			return 0, nil
		}
	}
	daemonRun, poolFull := benchDaemon(b, e)
	variants := []variant{
		{name: "bare", run: func() (float64, error) { return 0, exec.Command("/bin/true").Run() }},
		{name: "runsc-do", run: func() (float64, error) { return 0, do(dir, nil, "/bin/true").Run() }},
		{name: "securetrain", run: st()},
		{name: "securetrain-net", run: st("--allow", "tcp:192.0.2.10/32:443")},
		// Through the daemon, as the job's user: a warm start, and a cold
		// one (another memory limit than the pooled sandboxes').
		{name: "daemon-warm", run: daemonRun(dir)},
		{name: "daemon-warm-net", run: daemonRun(dir, "--profile", "benchnet")},
		{name: "daemon-cold", run: daemonRun(dir, "--memory", "4GiB")},
	}
	// The same runsc as a plain `go install` builds it, without the
	// precompiled seccomp filters of make runsc (scripts/bench.sh builds it).
	plainRunsc := os.Getenv("SECURETRAIN_RUNSC_PLAIN")
	if plainRunsc != "" {
		plain := runscDoWith(b, plainRunsc)
		variants = append(variants, variant{name: "runsc-do-plain", run: func() (float64, error) { return 0, plain(dir, nil, "/bin/true").Run() }})
	}
	for i := range variants {
		variants[i].settle = poolFull
	}
	b.ResetTimer()
	res := interleave(b, b.N, variants)
	b.StopTimer()
	med, p90, cpu := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for k, ms := range res {
		xs := field(ms, wallMs)
		med[k] = median(xs)
		sort.Float64s(xs)
		p90[k] = xs[len(xs)*9/10]
		cpu[k] = median(field(ms, func(m measured) float64 { return 1000 * m.cpu }))
		b.ReportMetric(med[k], k+"-ms")
		b.ReportMetric(cpu[k], k+"-cpu-ms")
	}
	b.ReportMetric(med["securetrain"]/med["runsc-do"], "x-runsc")
	b.ReportMetric(med["securetrain-net"]/med["runsc-do"], "net-x-runsc")
	n := len(res["bare"])
	plainBase, plainRatio := "", func(string) string { return "" }
	if plainRunsc != "" {
		b.ReportMetric(med["securetrain"]/med["runsc-do-plain"], "x-plain-build")
		plainBase = fmt.Sprintf("; the same runsc built by plain `go install` (filters built at start) %.1f ms", med["runsc-do-plain"])
		plainRatio = func(k string) string { return fmt.Sprintf("; %.2f× the plain build's", med[k]/med["runsc-do-plain"]) }
	}
	testenv.BenchRow(b, fmt.Sprintf("launch `/bin/true`, median of %d (p90; CPU), load %s", n, loadavg()),
		fmt.Sprintf("bare %.1f ms; `runsc --network=none do` %.1f ms (%.1f; %.0f ms CPU)%s", med["bare"], med["runsc-do"], p90["runsc-do"], cpu["runsc-do"], plainBase),
		fmt.Sprintf("%.1f ms (%.1f; %.0f ms CPU)", med["securetrain"], p90["securetrain"], cpu["securetrain"]),
		fmt.Sprintf("%.2f× runsc wall (goal ≤ 1.1), %.2f× CPU%s", med["securetrain"]/med["runsc-do"], cpu["securetrain"]/cpu["runsc-do"], plainRatio("securetrain")))
	testenv.BenchRow(b, fmt.Sprintf("launch with netguard, one allowlist entry, median of %d (p90; CPU)", n),
		fmt.Sprintf("`runsc --network=none do` %.1f ms (%.0f ms CPU)", med["runsc-do"], cpu["runsc-do"]),
		fmt.Sprintf("%.1f ms (%.1f; %.0f ms CPU)", med["securetrain-net"], p90["securetrain-net"], cpu["securetrain-net"]),
		fmt.Sprintf("%.2f× runsc wall (goal ≤ 1.3), %.2f× CPU%s", med["securetrain-net"]/med["runsc-do"], cpu["securetrain-net"]/cpu["runsc-do"], plainRatio("securetrain-net")))
	b.ReportMetric(med["daemon-warm"]/med["runsc-do"], "warm-x-runsc")
	testenv.BenchRow(b, fmt.Sprintf("warm start through the daemon (daemon.warm, default profile), `/bin/true` as the job's user, median of %d (p90)", n),
		fmt.Sprintf("`runsc --network=none do` %.1f ms; cold start through the same daemon %.1f ms (%.1f)", med["runsc-do"], med["daemon-cold"], p90["daemon-cold"]),
		fmt.Sprintf("%.1f ms (%.1f)", med["daemon-warm"], p90["daemon-warm"]),
		fmt.Sprintf("%.2f× runsc wall (goal ≤ 0.5); %.2f× the daemon's cold start", med["daemon-warm"]/med["runsc-do"], med["daemon-warm"]/med["daemon-cold"]))
	b.ReportMetric(med["daemon-warm-net"]/med["runsc-do"], "warm-net-x-runsc")
	testenv.BenchRow(b, fmt.Sprintf("warm start with netguard through the daemon (a profile allowing one entry, its network made with the sandbox), median of %d (p90)", n),
		fmt.Sprintf("`runsc --network=none do` %.1f ms; cold with netguard (CLI) %.1f ms", med["runsc-do"], med["securetrain-net"]),
		fmt.Sprintf("%.1f ms (%.1f)", med["daemon-warm-net"], p90["daemon-warm-net"]),
		fmt.Sprintf("%.2f× runsc wall; %.2f× the cold start with netguard", med["daemon-warm-net"]/med["runsc-do"], med["daemon-warm-net"]/med["securetrain-net"]))
}

// benchDaemon starts a daemon (its own state directory and address pool)
// with a warm pool of one sandbox each for the default profile and for
// benchnet (one allowlist entry), and returns a client run as the job's
// user and a wait until the pool is full.
func benchDaemon(b *testing.B, e *env) (run func(dir string, extra ...string) func() (float64, error), full func() error) {
	b.Helper()
	dir, err := os.MkdirTemp("", "st-bench-daemon-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "securetrain")
	src, err := os.ReadFile(e.bin)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		b.Fatal(err)
	}
	const state = "/run/securetrain-bench-daemon"
	if err := os.WriteFile(filepath.Join(dir, "benchnet.yaml"), []byte("version: 1\nname: benchnet\nnetwork:\n  mode: sandbox\n  allow: [\"tcp:192.0.2.10/32:443\"]\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "securetrain.yaml")
	body := fmt.Sprintf(`version: 1
runsc: %s
state_dir: %s
data_dir: /var/lib/securetrain-bench-daemon
profile_dir: %s
audit:
  path: %s
daemon:
  socket: %s
  warm:
    profiles: [default, benchnet]
    size: 1
network:
  pool: 10.219.0.0/16
policy:
  rules:
    - users: [%s]
      profiles: [default, benchnet]
      max_memory: 8GiB
`, e.runsc, state, dir, filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "securetrain.sock"), jobUser)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	d := exec.Command(bin, "--config", cfg, "daemon")
	log := &syncBuffer{}
	d.Stdout, d.Stderr = log, log
	d.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		d.Process.Signal(unix.SIGTERM)
		d.Wait()
		exec.Command(bin, "--config", cfg, "gc").Run()
	})
	full = func() error {
		deadline := time.Now().Add(time.Minute)
		for {
			ents, _ := os.ReadDir(filepath.Join(state, "jobs"))
			out, _ := exec.Command(e.runsc, "--root", filepath.Join(state, "runsc"), "list", "-quiet").Output()
			// Two pooled sandboxes, running, and nothing else: no job, no
			// used sandbox still being deleted.
			running := 0
			f := strings.Fields(string(out))
			for _, id := range f {
				if st, err := exec.Command(e.runsc, "--root", filepath.Join(state, "runsc"), "state", id).Output(); err == nil && strings.HasPrefix(id, "warm-") && strings.Contains(string(st), `"running"`) {
					running++
				}
			}
			if len(ents) == 2 && len(f) == 2 && running == 2 {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the daemon's warm pool did not fill: %s\n%s", out, log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	run = func(wd string, extra ...string) func() (float64, error) {
		return func() (float64, error) {
			c := exec.Command(bin, append(append([]string{"--config", cfg, "run", "-q"}, extra...), "--", "/bin/true")...)
			c.Dir = wd
			c.Env = []string{"PATH=/usr/bin:/bin"}
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(e.uid), Gid: uint32(e.gid), Groups: []uint32{}}}
			if out, err := c.CombinedOutput(); err != nil {
				return 0, fmt.Errorf("%w: %s", err, out)
			}
			return 0, nil
		}
	}
	return run, full
}

var rateRE = regexp.MustCompile(`(?:steps|iters)/s ([0-9.]+)`)

// workload is a training script of examples/ and its arguments.
type workload struct {
	name, script, unit string
	args, tiny         []string
}

var workloads = []workload{
	{"train", "train.py", "steps/s", []string{"--steps=300"}, []string{"--steps=5", "--batch=16"}},
	// The DCGAN layout on 64x64 random images (examples/gan.py).
	{"gan", "gan.py", "iters/s", []string{"--iters=3", "--batch=16"}, []string{"--iters=1", "--size=8", "--width=4", "--batch=2"}},
}

// BenchmarkTraining runs examples/train.py and examples/gan.py, b.N rounds
// of bare python, plain runsc and securetrain (default profile: 2 CPUs, so
// two threads for all three), and reports whole-process wall time, CPU
// time and the script's own rate.
func BenchmarkTraining(b *testing.B) {
	e := benchSetup(b)
	py := pythonWithTorch(b)
	tiny := os.Getenv("BENCH_TINY") != ""
	for _, w := range workloads {
		b.Run(w.name, func(b *testing.B) {
			if !testenv.FinalBenchRun(b) {
				return
			}
			dir := benchProject(b, e)
			src, err := os.ReadFile("../examples/" + w.script)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, w.script), src, 0o644); err != nil {
				b.Fatal(err)
			}
			args := w.args
			if tiny {
				args = w.tiny
			}
			cmdline := append([]string{py, w.script}, args...)
			threads := []string{"OMP_NUM_THREADS=2", "MKL_NUM_THREADS=2", "PATH=/usr/bin:/bin"}
			rate := func(c *exec.Cmd) (float64, error) {
				out, err := c.CombinedOutput()
				m := rateRE.FindSubmatch(out)
				if err != nil || m == nil {
					return 0, fmt.Errorf("%v: %s", err, out)
				}
				return strconv.ParseFloat(string(m[1]), 64)
			}
			do := runscDo(b, e)
			b.ResetTimer()
			res := interleave(b, b.N, []variant{
				{name: "bare", run: func() (float64, error) {
					c := exec.Command(cmdline[0], append(cmdline[1:], "--out", b.TempDir())...)
					c.Dir, c.Env = dir, threads
					return rate(c)
				}},
				{name: "runsc-do", run: func() (float64, error) {
					return rate(do(dir, threads, append(cmdline, "--out", "/tmp/out")...))
				}},
				{name: "securetrain", run: func() (float64, error) {
					return rate(e.cmd(b.Context(), dir, nil, append([]string{"run", "--user", jobUser, "--"}, cmdline...)...))
				}},
			})
			b.StopTimer()
			type fig struct{ wall, cpu, rate float64 }
			f := map[string]fig{}
			for k, ms := range res {
				f[k] = fig{median(field(ms, func(m measured) float64 { return m.wall })),
					median(field(ms, func(m measured) float64 { return m.cpu })),
					median(field(ms, func(m measured) float64 { return m.rate }))}
				b.ReportMetric(f[k].wall, k+"-wall-s")
				b.ReportMetric(f[k].cpu, k+"-cpu-s")
				b.ReportMetric(f[k].rate, k+"-"+w.unit)
			}
			bare, rs, st := f["bare"], f["runsc-do"], f["securetrain"]
			b.ReportMetric(bare.wall/st.wall, "bare/securetrain")
			desc := fmt.Sprintf("`examples/%s %s`, median of %d, load %s", w.script, strings.Join(args, " "), len(res["bare"]), loadavg())
			show := func(x fig) string {
				return fmt.Sprintf("%.2f s wall, %.2f s CPU, %.3g %s", x.wall, x.cpu, x.rate, w.unit)
			}
			testenv.BenchRow(b, desc, "bare: "+show(bare)+"; `runsc do`: "+show(rs), show(st),
				fmt.Sprintf("bare/securetrain %.2f wall (goal ≥ 0.95), %.2f rate; CPU %.2f× bare (`runsc do` %.2f×)",
					bare.wall/st.wall, st.rate/bare.rate, st.cpu/bare.cpu, rs.cpu/bare.cpu))
		})
	}
}

func benchSetup(b *testing.B) *env {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("benchmarks need root")
	}
	runsc := os.Getenv("SECURETRAIN_RUNSC")
	if runsc == "" {
		runsc = filepath.Join(testenv.ToolsDir(), versions.RunscTool)
	}
	once.Do(func() { shared, setupErr = build(runsc) })
	if shared == nil {
		b.Fatalf("setup: %s", setupErr)
	}
	return shared
}

func benchProject(b *testing.B, e *env) string {
	dir, err := os.MkdirTemp("/tmp", "st-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.Chown(dir, e.uid, e.gid)
	return dir
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestBenchScriptTiny runs scripts/bench.sh (what `make bench` runs) on tiny
// workloads, one round each, so that the benchmarks cannot rot: every row of
// the table in docs/performance.md that the launch, training and supervisor
// benchmarks write must come out.
func TestBenchScriptTiny(t *testing.T) {
	e := baseSetup(t)
	testenv.Python(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "../scripts/bench.sh")
	c.Env = append(os.Environ(), "BENCH_TINY=1", "BENCH_ONLY=launch training supervisor", "BENCH_DIR="+dir,
		"SECURETRAIN_BIN="+e.bin, "SECURETRAIN_RUNSC="+e.runsc,
		// Stands in for the plain go-install build (building one would take
		// minutes); the baseline's row is still written.
		"SECURETRAIN_RUNSC_PLAIN="+e.runsc)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("bench.sh: %v\n%s", err, out)
	}
	table, err := os.ReadFile(filepath.Join(dir, "table.md"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("table:\n%s", table)
	for _, row := range []string{"| launch `/bin/true`", "| launch with netguard", "| warm start through the daemon", "| warm start with netguard", "| `examples/train.py", "| `examples/gan.py", "| supervisor", "the plain build's"} {
		if !strings.Contains(string(table), row) {
			t.Errorf("no row %q in the table", row)
		}
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Benchmarks compare securetrain against its baselines in the same run:
// a bare process and plain runsc running the same command. Run with
// `make bench` (go test -bench . -benchtime 30x ./e2e).

func BenchmarkLaunch(b *testing.B) {
	e := benchSetup(b)
	dir := benchProject(b, e)
	b.Run("bare", func(b *testing.B) {
		timeEach(b, func() error { return exec.Command("/bin/true").Run() })
	})
	b.Run("runsc", func(b *testing.B) {
		bundle := plainBundle(b, []string{"/bin/true"})
		root := b.TempDir()
		i := 0
		timeEach(b, func() error {
			i++
			return exec.Command(e.runsc, "--root", root, "--network=none", "--overlay2=root:memory", "run", "--bundle", bundle, fmt.Sprintf("bench-%d", i)).Run()
		})
		exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run()
	})
	b.Run("securetrain", func(b *testing.B) {
		timeEach(b, func() error {
			c := e.cmd(b.Context(), dir, nil, "run", "--user", jobUser, "--", "/bin/true")
			return c.Run()
		})
	})
}

var stepsRE = regexp.MustCompile(`steps/s ([0-9.]+)`)

func BenchmarkTrainThroughput(b *testing.B) {
	e := benchSetup(b)
	py := pythonWithTorch(b)
	dir := benchProject(b, e)
	src, _ := os.ReadFile("../examples/train.py")
	os.WriteFile(filepath.Join(dir, "train.py"), src, 0o644)
	steps := func(out []byte, err error) float64 {
		m := stepsRE.FindSubmatch(out)
		if err != nil || m == nil {
			b.Fatalf("training: %v\n%s", err, out)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	const args = "--steps=300"
	b.Run("bare", func(b *testing.B) {
		var rates []float64
		for i := 0; i < b.N; i++ {
			c := exec.Command(py, "train.py", args, "--out", b.TempDir())
			c.Dir = dir
			c.Env = []string{"OMP_NUM_THREADS=2", "MKL_NUM_THREADS=2", "PATH=/usr/bin:/bin"}
			rates = append(rates, steps(c.CombinedOutput()))
		}
		b.ReportMetric(median(rates), "steps/s")
	})
	b.Run("securetrain", func(b *testing.B) {
		var rates []float64
		for i := 0; i < b.N; i++ {
			c := e.cmd(b.Context(), dir, nil, "run", "--user", jobUser, "--cpus", "2", "--", py, "train.py", args)
			rates = append(rates, steps(c.CombinedOutput()))
		}
		b.ReportMetric(median(rates), "steps/s")
	})
}

func benchSetup(b *testing.B) *env {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("benchmarks need root")
	}
	runsc := os.Getenv("SECURETRAIN_RUNSC")
	if runsc == "" {
		runsc = "/var/cache/securetrain/tools/runsc-v0.0.0-20260905035102-160fafc42237"
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

// timeEach runs f b.N times and reports the median and p90 wall time.
func timeEach(b *testing.B, f func() error) {
	b.Helper()
	ds := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, float64(time.Since(t0).Microseconds())/1000)
	}
	b.ReportMetric(median(ds), "ms-median")
	sort.Float64s(ds)
	b.ReportMetric(ds[len(ds)*9/10], "ms-p90")
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

// plainBundle is the baseline: runsc with the host root read-only and the
// command, nothing else.
func plainBundle(b *testing.B, args []string) string {
	dir := b.TempDir()
	sp := specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "/", Readonly: true},
		Process: &specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/usr/bin:/bin"}, User: specs.User{UID: 65534, GID: 65534}},
		Mounts:  []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: "pid"}, {Type: "network"}, {Type: "mount"}, {Type: "ipc"}, {Type: "uts"}}},
	}
	bs, _ := json.Marshal(sp)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), bs, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

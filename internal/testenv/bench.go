package testenv

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// FinalBenchRun reports whether this call of a benchmark function is the
// measured one. With -benchtime Nx, Go first calls every benchmark with
// b.N = 1 and then with N; a benchmark whose single run is minutes of
// training returns early from the first call.
func FinalBenchRun(b *testing.B) bool {
	f := flag.Lookup("test.benchtime")
	if f == nil {
		return true
	}
	v := f.Value.String()
	if n, err := strconv.Atoi(strings.TrimSuffix(v, "x")); err == nil && strings.HasSuffix(v, "x") {
		return b.N >= n
	}
	return true
}

// BenchRow appends one row of the benchmark table (docs/performance.md) to
// the file named by $BENCH_TABLE (scripts/bench.sh sets it); without it,
// nothing.
// Columns: what | baseline (same run) | securetrain | ratio.
func BenchRow(tb interface{ Logf(string, ...any) }, what, baseline, securetrain, ratio string) {
	row := fmt.Sprintf("| %s | %s | %s | %s |\n", what, baseline, securetrain, ratio)
	tb.Logf("table: %s", row)
	path := os.Getenv("BENCH_TABLE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		tb.Logf("BENCH_TABLE: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(row); err != nil {
		tb.Logf("BENCH_TABLE: %v", err)
	}
}

// BenchMB is the data size of a verification benchmark in MiB:
// $SECURETRAIN_BENCH_MB, or def.
func BenchMB(def int) int {
	if n, err := strconv.Atoi(os.Getenv("SECURETRAIN_BENCH_MB")); err == nil && n > 0 {
		return n
	}
	return def
}

// Sha256sumBaseline runs GNU sha256sum over paths (one process) as the
// "sha256sum" sub-benchmark, total bytes a run: the baseline every
// verification benchmark is compared with in the same run.
func Sha256sumBaseline(b *testing.B, total int64, paths []string) {
	b.Run("sha256sum", func(b *testing.B) {
		sum := LookPath(b, "sha256sum")
		b.SetBytes(total)
		for range b.N {
			if err := exec.Command(sum, paths...).Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package testenv

import (
	"fmt"
	"os"
)

// BenchRow appends one row of the README's benchmark table to the file
// named by $BENCH_TABLE (scripts/bench.sh sets it); without it, nothing.
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

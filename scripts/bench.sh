#!/usr/bin/env bash
# Benchmarks securetrain against its baselines in the same run and writes the
# figures to .bench/results.txt. Needs root and the pinned runsc.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench
out=.bench/results.txt
{
  echo "# securetrain benchmarks, $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r)"
  go test -run '^$' -bench 'Launch' -benchtime "${LAUNCH_RUNS:-30}x" ./e2e
  go test -run '^$' -bench 'TrainThroughput' -benchtime "${TRAIN_RUNS:-3}x" ./e2e
  for pkg in $(go list ./... | grep -v /e2e); do
    if grep -lq '^func Benchmark' $(go list -f '{{range .TestGoFiles}}{{$.Dir}}/{{.}} {{end}}' "$pkg") /dev/null 2>/dev/null; then
      go test -run '^$' -bench . -benchtime "${PKG_BENCHTIME:-1s}" "$pkg"
    fi
  done
} 2>&1 | tee "$out"
echo "bench: figures in $out"

#!/usr/bin/env bash
# Benchmarks securetrain against its baselines in the same run and writes the
# figures to .bench/results.txt and the table in docs/performance.md (the
# README keeps only a summary line) to .bench/table.md.
# Needs root, the pinned runsc, PyTorch and (for the secrets figures) Vault
# and PostgreSQL, all of which `make setup` installs. Benchmarks are not part
# of .ci/run.
#
#   BENCH_ONLY="launch training supervisor"  a subset (default: all)
#   BENCH_TINY=1                              tiny workloads, one round each (a smoke run)
#   LAUNCH_RUNS, TRAIN_RUNS                   rounds (default 30, 3)
#   BENCH_DIR                                 where the files go (default .bench)
#   SECURETRAIN_RUNSC_PLAIN                   a plain go-install runsc for the launch's second baseline (default: built and cached)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BENCH_DIR:-$PWD/.bench}
mkdir -p "$dir"
out=$dir/results.txt
export BENCH_TABLE=$dir/table.md
export CI=${CI:-1} # a missing component is an error here, not a skip
only=" ${BENCH_ONLY:-all} "
launch_runs=${LAUNCH_RUNS:-30} train_runs=${TRAIN_RUNS:-3}
if [[ -n ${BENCH_TINY:-} ]]; then
  launch_runs=${LAUNCH_RUNS:-1} train_runs=${TRAIN_RUNS:-1}
fi
want() { [[ $only == " all " || $only == *" $1 "* ]]; }
# The launch's second baseline: the pinned runsc as a plain `go install`
# builds it (no precompiled seccomp filters), cached beside make runsc's.
if want launch && [[ -z ${SECURETRAIN_RUNSC_PLAIN:-} ]]; then
  . scripts/env.sh
  SECURETRAIN_RUNSC_PLAIN="$TOOLS_DIR/runsc-$GVISOR_VERSION-plain"
  if [[ ! -x $SECURETRAIN_RUNSC_PLAIN ]]; then
    gobin=$(mktemp -d)
    CGO_ENABLED=0 GOBIN="$gobin" GOFLAGS=-buildvcs=false go install -trimpath "gvisor.dev/gvisor/runsc@$GVISOR_VERSION"
    mv "$gobin/runsc" "$SECURETRAIN_RUNSC_PLAIN" && rmdir "$gobin"
  fi
  export SECURETRAIN_RUNSC_PLAIN
fi
header="# securetrain benchmarks, $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n\n| what | baseline (same run) | securetrain | ratio |\n|---|---|---|---|\n' "$header" >"$BENCH_TABLE"
{
  echo "$header"
  if want launch; then go test -run '^$' -bench '^BenchmarkLaunch$' -benchtime "${launch_runs}x" ./e2e; fi
  if want training; then go test -run '^$' -bench '^BenchmarkTraining$' -benchtime "${train_runs}x" -timeout 60m ./e2e; fi
  if want supervisor; then go test -run '^$' -bench '^BenchmarkWatch$' -benchtime 1x ./usage; fi
  if want kill; then go test -run '^$' -bench 'NetworkViolationToKill' -benchtime "${KILL_RUNS:-30}x" ./e2e; fi
  if want secrets; then go test -run '^$' -bench 'Issue|RenewalTraffic' -benchtime 5x ./secrets; fi
  if want pin; then go test -run '^$' -bench 'Verify' -benchtime 3x ./pin; fi
  if want scan; then go test -run '^$' -bench 'ScanLargeCheckpoint' -benchtime 1x ./scan; fi
  if want audit; then go test -run '^$' -bench 'Append' -benchtime 2000x ./audit; fi
  if want netguard; then go test -run '^$' -bench 'SetupClose|ViolationLatency' -benchtime 30x ./netguard; fi
  echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$out"
echo "bench: figures in $out, the table for docs/performance.md in $BENCH_TABLE"
cat "$BENCH_TABLE"

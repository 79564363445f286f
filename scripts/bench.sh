#!/usr/bin/env bash
# Benchmarks securetrain against its baselines in the same run and writes the
# figures to .bench/results.txt. Needs root, the pinned runsc and (for the
# secrets figures) Vault and PostgreSQL, all of which `make setup` installs.
# Benchmarks are not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench
out=.bench/results.txt
export CI=${CI:-1} # a missing component is an error here, not a skip
{
  echo "# securetrain benchmarks, $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
  go test -run '^$' -bench 'Launch' -benchtime "${LAUNCH_RUNS:-30}x" ./e2e
  go test -run '^$' -bench 'NetworkViolationToKill' -benchtime "${KILL_RUNS:-30}x" ./e2e
  go test -run '^$' -bench 'TrainThroughput' -benchtime "${TRAIN_RUNS:-3}x" ./e2e
  go test -run '^$' -bench 'Watch' -benchtime 1x ./usage
  go test -run '^$' -bench 'Issue|RenewalTraffic' -benchtime 5x ./secrets
  go test -run '^$' -bench 'Verify' -benchtime 3x ./pin
  go test -run '^$' -bench 'ScanLargeCheckpoint' -benchtime 1x ./scan
  go test -run '^$' -bench 'Append' -benchtime 2000x ./audit
  go test -run '^$' -bench 'SetupClose|ViolationLatency' -benchtime 30x ./netguard
} 2>&1 | tee "$out"
echo "bench: figures in $out"

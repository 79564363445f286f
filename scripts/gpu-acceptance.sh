#!/usr/bin/env bash
# The GPU acceptance run: checks the whole GPU path of securetrain (nvproxy
# passthrough, GPU limits, NVML accounting, exclusive GPUs through the daemon,
# device isolation, leftovers) on a host with an NVIDIA GPU, and measures CUDA
# training bare vs sandboxed. One line per check; everything also goes to
# OUTDIR/gpu-acceptance.txt (and the job reports beside it).
#
#   scripts/gpu-acceptance.sh [--dry-run] [--steps N] OUTDIR
#
# Run as root, with the pinned static runsc. Environment:
#   SECURETRAIN  the securetrain binary (default: bin/securetrain)
#   RUNSC        the pinned runsc (default: bin/runsc)
#   PYTHON       an interpreter with CUDA PyTorch (default: python3 if its torch sees
#                CUDA); without one the run uses scripts/gpu/cudaprobe.c (built with
#                cc), and nvidia-smi inside the sandbox as the last resort
#   JOB_USER     the unprivileged user jobs run as (default: st-gpu, created if missing)
#
# --dry-run runs every part that needs no GPU (arguments, host report, runsc's
# driver list, the refusals a host without GPUs must give, the results file)
# and marks the GPU checks as skipped. Exit status: 0 when no check failed,
# 1 when one did, 2 for a refusal (bad arguments, no GPU, unsupported driver).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "gpu-acceptance: $*" >&2; exit 2; }
usage() { die "usage: scripts/gpu-acceptance.sh [--dry-run] [--steps N] OUTDIR${1:+ ($1)}"; }

dry=0 steps=60 out=
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1 ;;
    --steps) [ $# -ge 2 ] || usage "--steps needs a number"; steps=$2; shift ;;
    --steps=*) steps=${1#--steps=} ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) usage "unknown flag $1" ;;
    *) [ -z "$out" ] || usage "one OUTDIR only, got $out and $1"; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || usage "OUTDIR is missing"
[[ $steps =~ ^[0-9]+$ ]] && [ "$steps" -ge 20 ] && [ "$steps" -le 100000 ] || usage "--steps must be a whole number from 20 to 100000, got $steps"
[ "$(id -u)" = 0 ] || die "run as root (jobs run as \$JOB_USER through the launcher)"

bin=${SECURETRAIN:-$here/bin/securetrain}
runsc=${RUNSC:-$here/bin/runsc}
[ -x "$bin" ] || die "SECURETRAIN: $bin is not an executable (make build, or set SECURETRAIN=PATH)"
[ -x "$runsc" ] || die "RUNSC: $runsc is not an executable (make runsc, or set RUNSC=PATH)"
if file -L "$runsc" 2>/dev/null | grep -q 'dynamically linked'; then
  die "RUNSC: $runsc is dynamically linked; the sandbox needs a static runsc (CGO_ENABLED=0)"
fi
mkdir -p "$out" || die "OUTDIR: cannot create $out"
out=$(cd "$out" && pwd)
results=$out/gpu-acceptance.txt
: >"$results" || die "OUTDIR: cannot write $results"

say() { echo "$*"; echo "$*" >>"$results"; }
passed=0 failed=0 skipped=0
check() { # check NAME pass|fail|skip DETAIL
  local name=$1 r=$2; shift 2
  case $r in
    pass) passed=$((passed + 1)) ;;
    fail) failed=$((failed + 1)) ;;
    skip) skipped=$((skipped + 1)) ;;
  esac
  say "check $name: ${r^^} $*"
}
figure() { say "figure $1: $2"; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'; }

# A throwaway host configuration, state and data, so nothing of this run
# mixes with the host's own securetrain.
work=$(mktemp -d /tmp/st-gpu-acceptance.XXXXXX)
chmod 755 "$work"
state=/run/st-gpu-acceptance-$$
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  "$bin" --config "$work/host.yaml" gc >/dev/null 2>&1
  rm -rf "$work" "$state"
}
trap cleanup EXIT
mkdir -p "$work/profiles" "$work/data" "$work/code"
cat >"$work/host.yaml" <<EOF
version: 1
runsc: $runsc
state_dir: $state
data_dir: $work/data
profile_dir: $work/profiles
audit:
  path: $out/audit.jsonl
daemon:
  socket: $state/securetrain.sock
policy:
  rules:
    - users: [JOB_USER_PLACEHOLDER]
      profiles: [gpu]
      max_gpus: 8
      max_cpus: 16
      max_memory: 64GiB
      max_wall_time: 1h
EOF
st() { "$bin" --config "$work/host.yaml" "$@"; }

say "securetrain gpu acceptance run, $(date -u +%Y-%m-%dT%H:%M:%SZ)$([ $dry = 1 ] && echo ' (dry run)')"
say "host: $(uname -srm)"
say "securetrain: $("$bin" --version 2>&1 | head -n1)"
. "$here/internal/versions/versions.env"
say "runsc: $runsc (pinned gvisor.dev/gvisor $GVISOR_VERSION)"

# 1. Kernel, driver, GPUs, and whether the pinned runsc supports the driver.
supported=$("$runsc" nvproxy list-supported-drivers 2>/dev/null)
if [ -z "$supported" ]; then
  check runsc-driver-list fail "runsc nvproxy list-supported-drivers printed nothing"
else
  check runsc-driver-list pass "$(echo "$supported" | wc -l) driver versions, newest $(echo "$supported" | sort -V | tail -n1); 580.159.04 (the lent H100/H200 machines') $(echo "$supported" | grep -qxF 580.159.04 && echo listed || echo NOT listed)"
fi
driver=
if [ -e /dev/nvidia0 ] && command -v nvidia-smi >/dev/null; then
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)
fi
say "driver: ${driver:-none}"
if [ -n "$driver" ]; then
  nvidia-smi -L 2>&1 | sed 's/^/gpu: /' | tee -a "$results"
fi

user=${JOB_USER:-st-gpu}
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /usr/sbin/nologin "$user" || die "JOB_USER: cannot create user $user"
fi
sed -i "s/JOB_USER_PLACEHOLDER/$user/" "$work/host.yaml"
chown "$user" "$work/code"

if [ -z "$driver" ]; then
  # What a host without GPUs must say, in one line each.
  msg=$(cd "$work/code" && st run --user "$user" --profile gpu --gpus all -- /bin/true 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 0 ] && [ "$(echo "$msg" | wc -l)" = 1 ] && echo "$msg" | grep -q 'no NVIDIA GPU'; then
    check refuse-gpus-without-gpu pass "exit $rc: $msg"
  else
    check refuse-gpus-without-gpu fail "exit $rc, want a one-line refusal naming the missing GPU: $msg"
  fi
  ck=$(st check 2>&1)
  if echo "$ck" | grep -E '^GPU ' | grep -qiE 'none|no nvidia|no gpu'; then
    check check-reports-no-gpu pass "$(echo "$ck" | grep -i gpu | head -n1 | tr -s ' ')"
  else
    check check-reports-no-gpu fail "securetrain check did not report the missing GPU: $(echo "$ck" | grep -i gpu | head -n1)"
  fi
  if [ $dry = 0 ]; then
    say "summary: $passed passed, $failed failed, $skipped skipped"
    die "no NVIDIA GPU on this host (/dev/nvidia0 or nvidia-smi missing); --dry-run checks the rest"
  fi
  for c in driver-supported train-cuda gpus-visible gpu-isolation gpu-admin-refused gpu-memory-limit \
           gpu-seconds-budget nvml-accounting daemon-gpu-exclusive no-leftovers; do
    check "$c" skip "dry run: no GPU on this host"
  done
  for f in step-ratio start-gpus-all start-gpus-none; do figure "$f" "n/a (dry run)"; done
  say "summary: $passed passed, $failed failed, $skipped skipped"
  [ $failed = 0 ]
  exit
fi

if echo "$supported" | grep -qxF "$driver"; then
  check driver-supported pass "driver $driver is in runsc's nvproxy list"
else
  check driver-supported fail "driver $driver is not in runsc's nvproxy list"
  say "summary: $passed passed, $failed failed, $skipped skipped"
  die "driver $driver is not supported by this runsc's nvproxy (securetrain check refuses it the same way); use a runsc that lists it"
fi
if [ $dry = 1 ]; then
  say "dry run on a GPU host: stopping before any job"
  say "summary: $passed passed, $failed failed, $skipped skipped"
  [ $failed = 0 ]
  exit
fi
ngpus=$(nvidia-smi -L | grep -c '^GPU ')
apps_before=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | sort)

# 2. The workload: CUDA PyTorch, else cudaprobe built here, else nvidia-smi.
py=${PYTHON:-}
if [ -z "$py" ] && command -v python3 >/dev/null && python3 -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  py=$(command -v python3)
fi
cp "$here/scripts/gpu/train_cuda.py" "$here/scripts/gpu/cudaprobe.c" "$work/code/"
if [ -n "$py" ]; then
  wl=(--python "$py" -- "$py" train_cuda.py) bare=("$py" "$work/code/train_cuda.py") workload="torch ($py)"
elif command -v cc >/dev/null && cc -O2 -o "$work/code/cudaprobe" "$work/code/cudaprobe.c" -ldl 2>"$out/cudaprobe-build.log"; then
  wl=(-- ./cudaprobe) bare=("$work/code/cudaprobe") workload="cudaprobe (driver API, built with cc)"
else
  wl=() bare=() workload="nvidia-smi (no CUDA torch and no C compiler)"
fi
chown -R "$user" "$work/code"
say "workload: $workload"

job() { # job NAME PROFILE_ARGS... -- COMMAND...; stdout to OUTDIR/NAME.out, report to NAME.json
  local name=$1; shift
  (cd "$work/code" && st run --user "$user" --quiet --report "$out/$name.json" "$@") >"$out/$name.out" 2>"$out/$name.err"
}
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@" 2>/dev/null; }

# Training step, and the bare/sandboxed step-time ratio.
if [ ${#wl[@]} -gt 0 ]; then
  if job train --profile gpu --gpus all "${wl[@]}" train "$steps"; then
    sand=$(grep -o '"step_ms_median": [0-9.]*' "$out/train.out" | awk '{print $2}')
    "${bare[@]}" train "$steps" >"$out/train-bare.out" 2>&1
    b=$(grep -o '"step_ms_median": [0-9.]*' "$out/train-bare.out" | awk '{print $2}')
    check train-cuda pass "$(head -c 300 "$out/train.out")"
    if [ -n "$b" ] && [ -n "$sand" ]; then
      figure step-ratio "bare ${b} ms / securetrain ${sand} ms = $(awk -v b="$b" -v s="$sand" 'BEGIN{printf "%.3f", b/s}') (goal >= 0.98)"
    fi
  else
    check train-cuda fail "exit $?: $(tail -n3 "$out/train.err")"
  fi
else
  if job train --profile gpu --gpus all -- nvidia-smi; then
    check train-cuda pass "nvidia-smi ran in the sandbox (no CUDA workload available)"
  else
    check train-cuda fail "nvidia-smi in the sandbox: $(tail -n3 "$out/train.err")"
  fi
  figure step-ratio "n/a (no CUDA workload)"
fi

# 3. The job sees exactly its GPUs, and cannot reach another's device node.
job visible --profile gpu --gpus 0 -- sh -c 'nvidia-smi -L; ls /dev | grep "^nvidia"'
seen=$(grep -c '^GPU ' "$out/visible.out")
nodes=$(grep -c '^nvidia[0-9]' "$out/visible.out")
if [ "$seen" = 1 ] && [ "$nodes" = 1 ]; then
  check gpus-visible pass "--gpus 0 on a ${ngpus}-GPU host: nvidia-smi lists 1, /dev has 1 GPU node"
else
  check gpus-visible fail "--gpus 0 on a ${ngpus}-GPU host: nvidia-smi lists $seen, /dev has $nodes GPU nodes"
fi
if [ "$ngpus" -ge 2 ]; then
  job isolation --profile gpu --gpus 0 -- sh -c 'cat /dev/nvidia1 >/dev/null 2>&1 && echo OPENED || echo REFUSED'
  if grep -q REFUSED "$out/isolation.out"; then
    check gpu-isolation pass "a --gpus 0 job cannot open /dev/nvidia1"
  else
    check gpu-isolation fail "a --gpus 0 job opened /dev/nvidia1"
  fi
else
  check gpu-isolation skip "one GPU on this host: no other GPU's node to try"
fi
pm_before=$(nvidia-smi --query-gpu=persistence_mode,clocks.applications.graphics --format=csv,noheader | head -n1)
job admin --profile gpu --gpus 0 -- sh -c 'for a in "-pm 1" "-pm 0" "-e 0" "-lgc 300,300" "-ac 1000,300" "-rgc"; do nvidia-smi $a >/dev/null 2>&1 && echo "CHANGED $a" || echo "refused $a"; done'
pm_after=$(nvidia-smi --query-gpu=persistence_mode,clocks.applications.graphics --format=csv,noheader | head -n1)
if ! grep -q CHANGED "$out/admin.out" && [ "$pm_before" = "$pm_after" ]; then
  check gpu-admin-refused pass "persistence, ECC and clock changes refused inside the job (host: $pm_after)"
else
  check gpu-admin-refused fail "$(grep CHANGED "$out/admin.out" | tr '\n' ' ') host before '$pm_before' after '$pm_after'"
fi

# 4. Limits: gpu_memory over its bound ends the job with 124; gpu_seconds counts.
sed -e 's/^name: gpu$/name: gpu-limits/' "$here/configs/profiles/gpu.yaml" >"$work/limits.yaml"
python3 - "$work/limits.yaml" <<'EOF'
import sys, re
p = sys.argv[1]
s = open(p).read()
s = s.replace("  gpus: all\n", "  gpus: all\n  gpu_memory: 512MiB\n  gpu_seconds: 4\n")
s = re.sub(r"gpu_memory: 10s", "gpu_memory: 2s", s)
open(p, "w").write(s)
EOF
if [ ${#wl[@]} -gt 0 ]; then
  job gpumem --profile "$work/limits.yaml" --gpus 0 "${wl[@]}" hold 2048 60
  rc=$?
  reason=$(field "$out/gpumem.json" 'd["reason"]')
  if [ $rc = 124 ] && echo "$reason" | grep -qi 'gpu.memory\|gpu_memory'; then
    check gpu-memory-limit pass "2 GiB held against 512 MiB: exit 124, $reason"
  else
    check gpu-memory-limit fail "exit $rc, reason '$reason' (want 124 and gpu_memory)"
  fi
  job gpusec --profile "$work/limits.yaml" --gpus 0 "${wl[@]}" busy 60
  rc=$?
  reason=$(field "$out/gpusec.json" 'd["reason"]')
  gs=$(field "$out/gpusec.json" 'd["usage"].get("gpu_s")')
  if [ $rc = 124 ] && echo "$reason" | grep -qi 'gpu.seconds\|gpu_seconds'; then
    check gpu-seconds-budget pass "4 GPU-seconds budget: exit 124 after gpu_s=$gs, $reason"
  else
    check gpu-seconds-budget fail "exit $rc, gpu_s=$gs, reason '$reason' (want 124 and gpu_seconds)"
  fi
else
  check gpu-memory-limit skip "no CUDA workload to allocate memory"
  check gpu-seconds-budget skip "no CUDA workload to keep the GPU busy"
fi

# 5. NVML figures in the result record and in securetrain ps.
gpus_rec=$(field "$out/train.json" 'd["usage"].get("gpus")')
if [ ${#wl[@]} -gt 0 ]; then bgcmd=("${wl[@]}" busy 8); else bgcmd=(-- sleep 8); fi
(cd "$work/code" && st run --user "$user" --quiet --profile gpu --gpus 0 "${bgcmd[@]}") >/dev/null 2>&1 &
bg=$!
sleep 5
psline=$(st ps 2>/dev/null | awk 'NR>1' | head -n1)
wait $bg
gcol=$(echo "$psline" | awk '{print $7}')
if [ -n "$gpus_rec" ] && [ "$gpus_rec" != None ] && [ -n "$gcol" ] && [ "$gcol" != - ]; then
  check nvml-accounting pass "record: $(echo "$gpus_rec" | head -c 200); ps GPU column: $gcol"
else
  check nvml-accounting fail "record gpus: '$gpus_rec'; ps: '$psline'"
fi

# 6. Two daemon jobs asking for the same GPU are serialised.
st daemon >"$out/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$state/securetrain.sock" ] && break; sleep 0.2; done
asuser() { (cd "$work/code" && runuser -u "$user" -- "$bin" --config "$work/host.yaml" "$@"); }
asuser run --quiet --profile gpu --gpus 0 -- sleep 15 >/dev/null 2>"$out/daemon-a.err" &
a=$!
sleep 6
b_msg=$(asuser run --quiet --profile gpu --gpus 0 -- /bin/true 2>&1 >/dev/null)
b_rc=$?
wait $a
a_rc=$?
c_msg=$(asuser run --quiet --profile gpu --gpus 0 -- /bin/true 2>&1 >/dev/null)
c_rc=$?
if [ $a_rc = 0 ] && [ $b_rc != 0 ] && echo "$b_msg" | grep -qi 'in use' && [ $c_rc = 0 ]; then
  check daemon-gpu-exclusive pass "second job refused while the first held GPU 0 ($b_msg); granted after it ended"
else
  check daemon-gpu-exclusive fail "first exit $a_rc, second exit $b_rc '$b_msg', third exit $c_rc '$c_msg'"
fi
kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; daemon_pid=

# 7. Nothing left behind: no GPU process of a job, no job, no state.
sleep 1
apps_after=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | sort)
left=$(st ps 2>/dev/null | awk 'NR>1' | wc -l)
if [ "$apps_before" = "$apps_after" ] && [ "$left" = 0 ]; then
  check no-leftovers pass "no GPU process and no job left"
else
  check no-leftovers fail "GPU processes before '$apps_before' after '$apps_after'; jobs left: $left"
fi

# 8. Sandbox start time with and without GPUs (median of 5, /bin/true).
for g in all none; do
  ts=()
  for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    (cd "$work/code" && st run --user "$user" --quiet --profile gpu --gpus "$g" -- /bin/true) >/dev/null 2>&1
    ts+=($(( ($(date +%s%N) - t0) / 1000000 )))
  done
  figure "start-gpus-$g" "$(printf '%s\n' "${ts[@]}" | median) ms (median of 5: ${ts[*]})"
done

say "summary: $passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]

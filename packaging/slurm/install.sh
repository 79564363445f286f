#!/bin/sh
# Installs the Slurm hooks for securetrain into DIR (default
# /usr/local/lib/securetrain/slurm):
#   DIR/prolog, DIR/epilog     slurm.conf Prolog=/Epilog= (run as root by slurmd)
#   DIR/task-prolog            slurm.conf TaskProlog= (run as the user per task)
#   DIR/shims/{python,python3,torchrun}   what the task prolog puts first on PATH
# Usage: install.sh [DIR] [SECURETRAIN] [CONFIG] [PARTITIONS]
# PARTITIONS: comma-separated partitions whose tasks the task prolog routes
# through securetrain (default *, all).
set -eu
src=$(cd "$(dirname "$0")" && pwd)
dir=${1:-/usr/local/lib/securetrain/slurm}
bin=${2:-/usr/local/bin/securetrain}
cfg=${3:-/etc/securetrain/securetrain.yaml}
parts=${4:-*}
case "$parts" in *[!A-Za-z0-9_,*-]*) echo "install.sh: PARTITIONS: a comma-separated list of partition names, or *" >&2; exit 2 ;; esac
case "$dir$bin$cfg" in *[!A-Za-z0-9_./-]*) echo "install.sh: paths may hold only [A-Za-z0-9_./-]" >&2; exit 2 ;; esac
mkdir -p "$dir/shims"
for f in prolog epilog task-prolog shim; do
	sed -e "s#@SECURETRAIN@#$bin#g" -e "s#@CONFIG@#$cfg#g" -e "s#@SHIMDIR@#$dir/shims#g" -e "s#@PARTITIONS@#$parts#g" "$src/$f" >"$dir/$f.tmp"
	chmod 0755 "$dir/$f.tmp"
	mv "$dir/$f.tmp" "$dir/$f"
done
mv "$dir/shim" "$dir/shims/.shim"
for p in python python3 torchrun; do
	ln -sf .shim "$dir/shims/$p"
done
echo "installed securetrain Slurm hooks in $dir"

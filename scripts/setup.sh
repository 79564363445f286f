#!/usr/bin/env bash
# Installs what securetrain needs on a fresh Debian 12 machine (as root) and
# builds the pinned runsc and Vault. Idempotent: installed packages and cached
# builds are skipped. Usage: scripts/setup.sh [runtime|test]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:-test}

runtime_pkgs=(iproute2 kmod file ca-certificates python3-torch)
test_pkgs=(postgresql slurm-wlm munge nftables tmux procps psmisc systemd)
pkgs=("${runtime_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services must not start by themselves: tests start their own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
"$here/build-runsc.sh" >/dev/null
[ "$what" = test ] && "$here/build-vault.sh" >/dev/null
echo "setup: ok" >&2

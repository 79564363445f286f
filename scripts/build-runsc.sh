#!/usr/bin/env bash
# Builds the pinned, statically linked runsc into $TOOLS_DIR (cached).
# A cgo (dynamic) runsc fails at sandbox start: after pivot_root the loader is gone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
out="$TOOLS_DIR/runsc-$GVISOR_VERSION"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$TOOLS_DIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -trimpath "gvisor.dev/gvisor/runsc@$GVISOR_VERSION" >&2
if file "$tmp/runsc" 2>/dev/null | grep -q 'dynamically linked'; then
  echo "build-runsc: runsc is dynamically linked; it must be static (CGO_ENABLED=0)" >&2; exit 1
fi
mv "$tmp/runsc" "$out"
echo "$out"

#!/usr/bin/env bash
# Builds the pinned, statically linked runsc into $TOOLS_DIR (cached), with
# its seccomp-bpf filters precompiled (tools/runsc/seccompgen) as gVisor's
# own Bazel builds have them: a plain `go install` of runsc builds and
# optimises them at every sandbox start (~40 ms).
# A cgo (dynamic) runsc fails at sandbox start: after pivot_root the loader is gone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
out="$TOOLS_DIR/$RUNSC_TOOL"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mod="$here/../tools/runsc"
if ! grep -q "gvisor.dev/gvisor $GVISOR_VERSION\$" "$mod/go.mod"; then
  echo "build-runsc: tools/runsc/go.mod does not require gvisor.dev/gvisor $GVISOR_VERSION (internal/versions/versions.env)" >&2; exit 1
fi
mkdir -p "$TOOLS_DIR"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$mod" "$tmp/src"
cd "$tmp/src"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
go mod vendor >&2
mkdir "$tmp/gen"
go run -mod=vendor ./seccompgen -out "$tmp/gen" -gvisor "$tmp/src/vendor/gvisor.dev/gvisor" >&2
go build -mod=vendor -trimpath -overlay "$tmp/gen/overlay.json" -o "$tmp/runsc" gvisor.dev/gvisor/runsc >&2
if file "$tmp/runsc" 2>/dev/null | grep -q 'dynamically linked'; then
  echo "build-runsc: runsc is dynamically linked; it must be static (CGO_ENABLED=0)" >&2; exit 1
fi
mv "$tmp/runsc" "$out"
echo "$out"

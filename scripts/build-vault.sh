#!/usr/bin/env bash
# Builds Vault v1.13.0 (the last MPL-2.0 line we may use) into $TOOLS_DIR (cached).
# Run it with GODEBUG=x509negativeserial=1 (gosnowflake panics at start otherwise).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
out="$TOOLS_DIR/vault-$VAULT_VERSION"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$TOOLS_DIR"
cd "$here/../tools/vault"
GOFLAGS=-buildvcs=false go build -trimpath -o "$out.tmp" . >&2
mv "$out.tmp" "$out"
echo "$out"

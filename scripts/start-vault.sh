#!/usr/bin/env bash
# Starts a throwaway Vault dev server (pinned v1.13.0) and a PostgreSQL 15
# cluster on loopback, configures Vault like a securetrain site (the same
# names as internal/testenv.SetupVault), and writes an env file to source.
#
#   scripts/start-vault.sh [STATE_DIR]      # default /run/securetrain-testenv
#   . STATE_DIR/env                         # VAULT_ADDR, VAULT_TOKEN (root), ...
#   scripts/start-vault.sh --stop [STATE_DIR]
#
# Go tests do not need it (they start their own through internal/testenv);
# it is for manual runs and for end-to-end checks in .ci/run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
stop=0
if [ "${1:-}" = "--stop" ]; then stop=1; shift; fi
state=${1:-/run/securetrain-testenv}
pgbin=/usr/lib/postgresql/15/bin

if [ $stop = 1 ]; then
  [ -f "$state/vault.pid" ] && kill "$(cat "$state/vault.pid")" 2>/dev/null || true
  [ -f "$state/pg/data/postmaster.pid" ] && kill -QUIT "$(head -1 "$state/pg/data/postmaster.pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$state"
  exit 0
fi

vault=$TOOLS_DIR/vault-$VAULT_VERSION
[ -x "$vault" ] || vault=$("$here/build-vault.sh")
[ -x "$pgbin/initdb" ] || { echo "start-vault: PostgreSQL 15 missing (apt-get install postgresql-15)" >&2; exit 1; }
[ -e "$state" ] && { echo "start-vault: $state exists; run $0 --stop $state first" >&2; exit 1; }
mkdir -p "$state" && chmod 0711 "$state"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rand() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# PostgreSQL, as user postgres, in $state/pg.
pgport=$(freeport); pgpass=$(rand 16)
mkdir -p "$state/pg"; chown postgres:postgres "$state/pg"
printf '%s\n' "$pgpass" > "$state/pg/pw"; chown postgres "$state/pg/pw"; chmod 600 "$state/pg/pw"
runuser -u postgres -- "$pgbin/initdb" -D "$state/pg/data" -U postgres --pwfile="$state/pg/pw" \
  -A scram-sha-256 --auth-local=trust -E UTF8 -N >/dev/null
echo "host all all 0.0.0.0/0 scram-sha-256" >> "$state/pg/data/pg_hba.conf"
runuser -u postgres -- "$pgbin/pg_ctl" -D "$state/pg/data" -w -t 60 -l "$state/pg/log" \
  -o "-c listen_addresses=${PG_LISTEN:-127.0.0.1} -p $pgport -c unix_socket_directories=$state/pg -c fsync=off" start >/dev/null
runuser -u postgres -- psql -qX -h "$state/pg" -p "$pgport" -d postgres -c \
  "CREATE TABLE dataset (id int PRIMARY KEY, name text NOT NULL); INSERT INTO dataset SELECT g, 'row-' || g FROM generate_series(1, 5) g;"

# Vault dev server.
vport=$(freeport); root="root-$(rand 12)"
( cd "$state" && exec env -i PATH=/usr/bin:/bin HOME="$state" GODEBUG=x509negativeserial=1 \
    setsid "$vault" server -dev -dev-root-token-id="$root" -dev-listen-address="127.0.0.1:$vport" \
    -dev-no-store-token >"$state/vault.log" 2>&1 ) &
echo $! > "$state/vault.pid"
export VAULT_ADDR="http://127.0.0.1:$vport" VAULT_TOKEN="$root"
for _ in $(seq 600); do "$vault" status >/dev/null 2>&1 && break; sleep 0.1; done
"$vault" status >/dev/null || { cat "$state/vault.log" >&2; exit 1; }

v() { "$vault" "$@" >/dev/null; }
v policy write securetrain-job - <<'HCL'
path "database/creds/dataset-reader" { capabilities = ["read"] }
path "database/creds/dataset-reader-short" { capabilities = ["read"] }
path "secret/data/securetrain/*" { capabilities = ["read"] }
HCL
v policy write securetrain-launcher - <<'HCL'
path "auth/token/create/securetrain-job" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
HCL
v kv put secret/securetrain/app username="kv-user-$(rand 4)" api_key="kv-secret-$(rand 16)"
v write auth/token/roles/securetrain-job orphan=true renewable=true allowed_policies=securetrain-job \
  disallowed_policies=root,securetrain-launcher token_type=service token_explicit_max_ttl=24h
v auth enable approle
v write auth/approle/role/securetrain-launcher token_policies=securetrain-launcher token_ttl=1h token_max_ttl=4h
v secrets enable database
v write database/config/pg plugin_name=postgresql-database-plugin \
  connection_url="postgresql://{{username}}:{{password}}@127.0.0.1:$pgport/postgres?sslmode=disable" \
  username=postgres password="$pgpass" allowed_roles=dataset-reader,dataset-reader-short
create='CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '"'"'{{password}}'"'"' VALID UNTIL '"'"'{{expiration}}'"'"'; GRANT SELECT ON dataset TO "{{name}}";'
v write database/roles/dataset-reader db_name=pg creation_statements="$create" default_ttl=1h max_ttl=24h
v write database/roles/dataset-reader-short db_name=pg creation_statements="$create" default_ttl=6s max_ttl=2m
roleid=$("$vault" read -field=role_id auth/approle/role/securetrain-launcher/role-id)

umask 077
cat > "$state/env" <<ENV
export VAULT_ADDR=$VAULT_ADDR
export VAULT_TOKEN=$root
export SECURETRAIN_TEST_VAULT_ROLE_ID=$roleid
export SECURETRAIN_TEST_PG_ADDR=127.0.0.1:$pgport
export SECURETRAIN_TEST_PG_SOCKET=$state/pg
export SECURETRAIN_TEST_PG_PASSWORD=$pgpass
ENV
echo "$state/env"

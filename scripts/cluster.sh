#!/usr/bin/env bash
# Three CivicPulse nodes and a round-robin nginx on one machine: the
# README's cluster walk-through.
#
#   scripts/cluster.sh            # build (release), start, wait for Ctrl-C
#
# The nodes listen on 127.0.0.1:3101-3103 and nginx on 127.0.0.1:3001 (the
# address clients use). They share one PostgreSQL database and one Redis:
#   DATABASE_URL  default postgres://postgres@127.0.0.1:5432/civicpulse_cluster
#                 (created if missing)
#   REDIS_URL     default redis://127.0.0.1:6379
#   JWT_SECRET    default: a random one for this run (all nodes share it)
# Logs are in $LOG_DIR (default ./cluster-logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/civicpulse_cluster}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
JWT_SECRET=${JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
LOG_DIR=${LOG_DIR:-$ROOT/cluster-logs}
PROXY_PORT=${PROXY_PORT:-3001}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

[[ -x $NGINX ]] || { echo "cluster: nginx not found (Debian: apt-get install nginx)" >&2; exit 1; }
mkdir -p "$LOG_DIR"

echo "cluster: building (cargo build --release)"
cargo build --release -q
BIN=$ROOT/target/release/civicpulse

# The database: created on first use (migrations run when a node starts).
if [[ $DATABASE_URL == postgres* ]]; then
  db=${DATABASE_URL##*/}; db=${db%%\?*}
  admin=${DATABASE_URL%/*}/postgres
  psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql "$admin" -qc "CREATE DATABASE \"$db\""
fi

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "cluster: stopping"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

servers=""
for i in 1 2 3; do
  port=$((3100 + i))
  # Behind nginx every client has nginx's address: the per-address limits
  # would count them all as one, so they are off (the per-socket and
  # per-user ones still hold).
  env HOST=127.0.0.1 PORT=$port NODE_ID=node-$i DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" \
    MAX_CONNECTIONS_PER_ADDRESS=0 SOCKET_ADDRESS_EVENT_RATE=0 REST_ADDRESS_WRITE_RATE=0 \
    JWT_SECRET="$JWT_SECRET" RUST_LOG=${RUST_LOG:-info} "$BIN" >"$LOG_DIR/node-$i.log" 2>&1 &
  pids+=($!)
  servers+="    server 127.0.0.1:$port;"$'\n'
done

nginx_dir=$LOG_DIR/nginx
mkdir -p "$nginx_dir"
conf=$(<"$ROOT/deploy/nginx-round-robin.conf")
conf=${conf//@ROOT@/$nginx_dir}
conf=${conf//@PORT@/$PROXY_PORT}
conf=${conf//@SERVERS@/$servers}
printf '%s\n' "$conf" >"$nginx_dir/nginx.conf"
"$NGINX" -p "$nginx_dir" -c "$nginx_dir/nginx.conf" &
pids+=($!)

for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$((3100 + i))/readyz" >/dev/null && break
    sleep 0.2
  done
  echo "cluster: node-$i on http://127.0.0.1:$((3100 + i)): $(curl -s "http://127.0.0.1:$((3100 + i))/readyz")"
done
echo "cluster: clients connect to http://127.0.0.1:$PROXY_PORT (nginx, round-robin); logs in $LOG_DIR; Ctrl-C stops"
wait -n "${pids[@]}" || true

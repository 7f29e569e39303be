#!/usr/bin/env bash
# Flood: one client against everyone else. For each flood case, a freshly
# started server on a fresh SQLite file, and the load generator's `flood`
# scenario against it: a victim socket's message:send round trips, /healthz
# every 100 ms and the server's RSS, over a baseline, the flood (one
# authenticated socket with a 4 KiB receive buffer writes N frames and never
# reads) and a cool-down. civicpulse runs with its default limits (unlike
# bench/run.sh, which lifts them to measure volume); the Node.js peer
# (bench/peers/node) has none. Writes bench/results/flood/latest.json (every
# run) and latest.md (the table). See BENCHMARKS.md, "Flood".
#
#   bench/flood.sh                                   # ~15 minutes plus the build
#   ROUNDS=1 SERVERS=civicpulse BUILD=0 bench/flood.sh
#   CASES="send-unjoined:1000000" SERVERS="civicpulse node" bench/flood.sh
#
# CASES are kind:frames, kind one of typing, presence, send-unjoined,
# send-joined. Traffic goes to 127.0.0.x only; every run is bounded in time
# (FLOOD_TIMEOUT) and a server past MAX_SERVER_RSS_MIB is not flooded further.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}                # every case against every server, ROUNDS times
SERVERS=${SERVERS:-"civicpulse node"}
CASES=${CASES:-"typing:300000 presence:300000 send-unjoined:300000 send-joined:300000 send-unjoined:1000000"}
BUILD=${BUILD:-1}                  # 0: use the binaries already built
JOBS=${CARGO_BUILD_JOBS:-1}        # cargo -j (the machine is shared)
OUT=${OUT:-$ROOT/bench/results/flood}
BASELINE=${BASELINE:-5}            # seconds before the flood
FLOOD_MIN=${FLOOD_MIN:-5}          # the flood phase lasts at least this long
FLOOD_TIMEOUT=${FLOOD_TIMEOUT:-120} # a flooder still writing then gives up
COOLDOWN=${COOLDOWN:-5}            # seconds after the flood
VICTIM_RATE=${VICTIM_RATE:-20}     # the victim's message:send per second
RECV_BUFFER=${RECV_BUFFER:-4096}   # the flooder's SO_RCVBUF
MAX_SERVER_RSS_MIB=${MAX_SERVER_RSS_MIB:-4096}
PING_INTERVAL_MS=${PING_INTERVAL_MS:-25000}
PING_TIMEOUT_MS=${PING_TIMEOUT_MS:-20000}
JWT_SECRET=${JWT_SECRET:-civicpulse-benchmark-secret-0123456789abcdef}
PORT_BASE=${PORT_BASE:-39600}

CP_BIN=$ROOT/target/release/civicpulse
LG_BIN=$ROOT/target/release/civicpulse-loadgen
NODE_DIR=$ROOT/bench/peers/node

log() { echo "flood: $*" >&2; }

if [[ $BUILD == 1 ]]; then
  log "building release binaries (cargo -j $JOBS)"
  cargo build -j "$JOBS" --release -p civicpulse -p civicpulse-loadgen
  if [[ " $SERVERS " == *" node "* ]] &&
    ! (cd "$NODE_DIR" && node -e "require('better-sqlite3'); require('socket.io'); require('express')" 2>/dev/null); then
    log "npm ci (bench/peers/node)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
for bin in "$CP_BIN" "$LG_BIN"; do
  [[ -x $bin ]] || { log "missing $bin (run with BUILD=1)"; exit 1; }
done
command -v sqlite3 >/dev/null || { log "sqlite3 not found (apt-get install sqlite3): stored counts need it"; exit 1; }
for case in $CASES; do
  case ${case%%:*} in
    typing | presence | send-unjoined | send-joined) ;;
    *) log "unknown flood kind in $case"; exit 2 ;;
  esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/civicpulse-flood.XXXXXX")
RAW=$WORK/runs.jsonl
: >"$RAW"
SERVER_PID=""
LG_PID=""
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
on_signal() {
  log "interrupted: stopping"
  if [[ -n $LG_PID ]]; then kill "$LG_PID" 2>/dev/null || true; fi
  exit 130
}
trap stop_server EXIT
trap on_signal INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
NEXT_PORT=$((PORT_BASE - 1))
next_port() {
  for _ in $(seq 1 500); do
    NEXT_PORT=$((NEXT_PORT + 1))
    if ((NEXT_PORT >= PORT_BASE + 500)); then NEXT_PORT=$PORT_BASE; fi
    if port_free "$NEXT_PORT"; then return 0; fi
  done
  log "no free port in $PORT_BASE…$((PORT_BASE + 499))"
  return 1
}

# start_server name dir -> SERVER_PID, PORT, DB
start_server() {
  local name=$1 dir=$2
  next_port
  PORT=$NEXT_PORT
  case $name in
    civicpulse)
      # The limits are the defaults: the point is to see them hold.
      DB=$dir/civicpulse.db
      env HOST=127.0.0.1 PORT="$PORT" DATABASE_URL="sqlite://$DB" JWT_SECRET="$JWT_SECRET" \
        PING_INTERVAL_MS="$PING_INTERVAL_MS" PING_TIMEOUT_MS="$PING_TIMEOUT_MS" RUST_LOG="${SERVER_LOG:-warn}" \
        "$CP_BIN" >"$dir/server.log" 2>&1 &
      ;;
    node)
      DB=$dir/node.db
      (cd "$NODE_DIR" && exec env JWT_SECRET="$JWT_SECRET" PORT="$PORT" DB_PATH="$DB" \
        PING_INTERVAL_MS="$PING_INTERVAL_MS" PING_TIMEOUT_MS="$PING_TIMEOUT_MS" NODE_ENV=production \
        node server.js) >"$dir/server.log" 2>&1 &
      ;;
    *) log "unknown server $name"; exit 2 ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz"; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not start; its log:"
  cat "$dir/server.log" >&2
  return 1
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "$(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
RUN=0
read -r -a SERVER_LIST <<<"$SERVERS"
for round in $(seq 1 "$ROUNDS"); do
  for case in $CASES; do
    kind=${case%%:*} frames=${case##*:}
    # Rotate the order every round so no server always goes first.
    for i in "${!SERVER_LIST[@]}"; do
      server=${SERVER_LIST[$(((i + round - 1) % ${#SERVER_LIST[@]}))]}
      RUN=$((RUN + 1))
      dir=$WORK/run-$RUN
      mkdir -p "$dir"
      log "round $round/$ROUNDS, run $RUN: $frames $kind frames against $server"
      status=0
      load_before=$(cut -d' ' -f1 /proc/loadavg)
      if ! start_server "$server" "$dir"; then
        stop_server
        printf '{"round":%d,"server":"%s","kind":"%s","frames":%s,"exit":1,"result":{"ok":false,"error":"server did not start"}}\n' \
          "$round" "$server" "$kind" "$frames" >>"$RAW"
        continue
      fi
      timeout $((BASELINE + FLOOD_TIMEOUT + COOLDOWN + 90)) "$LG_BIN" flood --url "http://127.0.0.1:$PORT" \
        --secret "$JWT_SECRET" --pid "$SERVER_PID" --label "$server" --db "$DB" \
        --flood-kind "$kind" --frames "$frames" --baseline "$BASELINE" --flood-min "$FLOOD_MIN" \
        --flood-timeout "$FLOOD_TIMEOUT" --cooldown "$COOLDOWN" --victim-rate "$VICTIM_RATE" \
        --flood-recv-buffer "$RECV_BUFFER" --max-server-rss-mib "$MAX_SERVER_RSS_MIB" \
        >"$dir/loadgen.out" 2>"$dir/loadgen.err" &
      LG_PID=$!
      wait "$LG_PID" || status=$?
      LG_PID=""
      # The server's RSS once the run is over (the flooder gone either way).
      rss_after=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo null)
      stop_server
      grep -v '^RESULT ' "$dir/loadgen.out" >&2 || true
      result=$(grep '^RESULT ' "$dir/loadgen.out" | tail -n1 | cut -c8-)
      if [[ -z $result ]]; then
        log "no RESULT (exit $status); stderr:"
        tail -n 20 "$dir/loadgen.err" >&2
        result='{"ok":false,"error":"no result"}'
      fi
      printf '{"round":%d,"server":"%s","kind":"%s","frames":%s,"exit":%d,"load_before":%s,"load_after":%s,"rss_after_run_bytes":%s,"result":%s}\n' \
        "$round" "$server" "$kind" "$frames" "$status" "$load_before" "$(cut -d' ' -f1 /proc/loadavg)" "${rss_after:-null}" "$result" >>"$RAW"
    done
  done
done

mkdir -p "$OUT"
export ROUNDS STARTED BASELINE FLOOD_MIN COOLDOWN VICTIM_RATE RECV_BUFFER MAX_SERVER_RSS_MIB FLOOD_TIMEOUT
node "$ROOT/bench/flood-report.js" "$RAW" "$OUT/latest.json" "$OUT/latest.md"
log "wrote $OUT/latest.md and $OUT/latest.json (raw runs and server logs in $WORK)"

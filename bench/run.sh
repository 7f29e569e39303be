#!/usr/bin/env bash
# CivicPulse benchmarks: every scenario against civicpulse, the Node.js peer
# (bench/peers/node) and the limit server (bench/peers/limit), interleaved,
# ROUNDS rounds, each run on a freshly started server with a fresh database.
# Writes bench/results/latest.md (medians and ratios) and latest.json (every
# run plus the medians). See BENCHMARKS.md.
#
#   bench/run.sh                      # defaults: ~8 minutes on 2 cores, plus the build
#   ROUNDS=5 IDLE_CONNECTIONS=19000 bench/run.sh
#   SCENARIOS="rooms typing" SERVERS="civicpulse node" bench/run.sh
#
# Every size is an environment variable (defaults below). Traffic goes to
# 127.0.0.x only, and every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"idle broadcast broadcast_max rooms rooms_max handshake typing"}
SERVERS=${SERVERS:-"civicpulse node limit"}
BUILD=${BUILD:-1}                        # 0: use the binaries already built
JOBS=${CARGO_BUILD_JOBS:-1}              # cargo -j (the machine is shared)
OUT=${OUT:-$ROOT/bench/results}
# Heartbeats on every server; shorter than the 25 s default so that short
# idle holds include heartbeats. Same value for all three servers.
PING_INTERVAL_MS=${PING_INTERVAL_MS:-5000}
PING_TIMEOUT_MS=${PING_TIMEOUT_MS:-20000}
JWT_SECRET=${JWT_SECRET:-civicpulse-benchmark-secret-0123456789abcdef}

IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-4000}
IDLE_HOLD=${IDLE_HOLD:-8}
BROADCAST_CONNECTIONS=${BROADCAST_CONNECTIONS:-2000}
BROADCAST_RATE=${BROADCAST_RATE:-20}           # upvotes/s
BROADCAST_DURATION=${BROADCAST_DURATION:-6}
BROADCAST_MAX_RATE=${BROADCAST_MAX_RATE:-400}  # far beyond what any server sustains
BROADCAST_MAX_DURATION=${BROADCAST_MAX_DURATION:-3}
ROOMS=${ROOMS:-100}
ROOM_MEMBERS=${ROOM_MEMBERS:-20}
ROOM_RATE=${ROOM_RATE:-2}                      # messages/s per room
ROOM_DURATION=${ROOM_DURATION:-5}
ROOMS_MAX_RATE=${ROOMS_MAX_RATE:-20}           # messages/s per room, saturating
ROOMS_MAX_DURATION=${ROOMS_MAX_DURATION:-4}
HANDSHAKES=${HANDSHAKES:-3000}
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-200}
TYPING_ROOMS=${TYPING_ROOMS:-50}
TYPING_MEMBERS=${TYPING_MEMBERS:-20}
TYPING_RATE=${TYPING_RATE:-2}                  # toggles/s per member
TYPING_DURATION=${TYPING_DURATION:-5}
DRAIN=${DRAIN:-6}

CP_BIN=$ROOT/target/release/civicpulse
LG_BIN=$ROOT/target/release/civicpulse-loadgen
LIMIT_BIN=$ROOT/target/limit/release/civicpulse-limit
NODE_DIR=$ROOT/bench/peers/node

log() { echo "bench: $*" >&2; }

if [[ $BUILD == 1 ]]; then
  log "building release binaries (cargo -j $JOBS)"
  cargo build -j "$JOBS" --release --bin civicpulse --bin civicpulse-loadgen
  cargo build -j "$JOBS" --release --manifest-path bench/peers/limit/Cargo.toml --target-dir "$ROOT/target/limit"
  # npm ci builds better-sqlite3 from source when no prebuilt binary can be
  # fetched (a minute or two): skip it while node_modules matches the lock
  # file, unless NPM_CI=1.
  if [[ " $SERVERS " == *" node "* ]]; then
    if [[ ${NPM_CI:-0} == 1 || ! "$NODE_DIR/node_modules/.package-lock.json" -nt "$NODE_DIR/package-lock.json" ]] ||
      ! (cd "$NODE_DIR" && node -e "require('better-sqlite3'); require('socket.io'); require('express')" 2>/dev/null); then
      log "npm ci (bench/peers/node)"
      (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
fi
for bin in "$CP_BIN" "$LG_BIN" "$LIMIT_BIN"; do
  [[ -x $bin ]] || { log "missing $bin (run with BUILD=1)"; exit 1; }
done

# Sockets need file descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "file limit $(ulimit -n); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/civicpulse-bench.XXXXXX")
RAW=$WORK/runs.jsonl
: >"$RAW"
SERVER_PID=""
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

PORT_BASE=${PORT_BASE:-39100}
RUN_NO=0

start_server() { # name -> sets SERVER_PID and PORT
  local name=$1
  RUN_NO=$((RUN_NO + 1))
  PORT=$((PORT_BASE + RUN_NO % 500))
  local dir=$WORK/run-$RUN_NO
  mkdir -p "$dir"
  case $name in
    civicpulse)
      HOST=127.0.0.1 PORT=$PORT DATABASE_URL="sqlite://$dir/civicpulse.db" JWT_SECRET=$JWT_SECRET \
        PING_INTERVAL_MS=$PING_INTERVAL_MS PING_TIMEOUT_MS=$PING_TIMEOUT_MS RUST_LOG=${SERVER_LOG:-warn} \
        "$CP_BIN" >"$dir/server.log" 2>&1 &
      ;;
    node)
      (cd "$NODE_DIR" && JWT_SECRET=$JWT_SECRET PORT=$PORT DB_PATH="$dir/node.db" \
        PING_INTERVAL_MS=$PING_INTERVAL_MS PING_TIMEOUT_MS=$PING_TIMEOUT_MS NODE_ENV=production \
        exec node server.js) >"$dir/server.log" 2>&1 &
      ;;
    limit)
      HOST=127.0.0.1 PORT=$PORT PING_INTERVAL_MS=$PING_INTERVAL_MS PING_TIMEOUT_MS=$PING_TIMEOUT_MS \
        "$LIMIT_BIN" >"$dir/server.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz"; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "$name did not start; its log:"
  cat "$dir/server.log" >&2
  return 1
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# Which servers take part in a scenario: the limit server has no rooms.
servers_for() {
  local s
  for s in $SERVERS; do
    case $1:$s in
      rooms:limit | rooms_max:limit | typing:limit) ;;
      *) printf '%s ' "$s" ;;
    esac
  done
}

loadgen_args() { # scenario -> arguments
  case $1 in
    idle) echo "idle --connections $IDLE_CONNECTIONS --duration $IDLE_HOLD" ;;
    broadcast) echo "broadcast --connections $BROADCAST_CONNECTIONS --rate $BROADCAST_RATE --duration $BROADCAST_DURATION" ;;
    broadcast_max) echo "broadcast --connections $BROADCAST_CONNECTIONS --rate $BROADCAST_MAX_RATE --duration $BROADCAST_MAX_DURATION --http-connections 16" ;;
    rooms) echo "rooms --rooms $ROOMS --members $ROOM_MEMBERS --rate $ROOM_RATE --duration $ROOM_DURATION" ;;
    rooms_max) echo "rooms --rooms $ROOMS --members $ROOM_MEMBERS --rate $ROOMS_MAX_RATE --duration $ROOMS_MAX_DURATION" ;;
    handshake) echo "handshake --connections $HANDSHAKES --concurrency $HANDSHAKE_CONCURRENCY" ;;
    typing) echo "typing --rooms $TYPING_ROOMS --members $TYPING_MEMBERS --rate $TYPING_RATE --duration $TYPING_DURATION" ;;
    *) log "unknown scenario $1"; exit 2 ;;
  esac
}

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for round in $(seq 1 "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    read -r -a order <<<"$(servers_for "$scenario")"
    # Rotate the order every round so no server always goes first.
    n=${#order[@]}
    for i in $(seq 0 $((n - 1))); do
      server=${order[$(((i + round - 1) % n))]}
      log "round $round/$ROUNDS: $scenario against $server"
      start_server "$server"
      read -r -a args <<<"$(loadgen_args "$scenario")"
      out=$WORK/run-$RUN_NO/loadgen.out
      status=0
      timeout 600 "$LG_BIN" "${args[@]}" --url "http://127.0.0.1:$PORT" --secret "$JWT_SECRET" \
        --pid "$SERVER_PID" --label "$server" --drain "$DRAIN" >"$out" 2>"$WORK/run-$RUN_NO/loadgen.err" || status=$?
      stop_server
      grep -v '^RESULT ' "$out" >&2 || true
      result=$(grep '^RESULT ' "$out" | tail -n1 | cut -c8-)
      if [[ -z $result ]]; then
        log "no RESULT (exit $status); stderr:"
        tail -n 20 "$WORK/run-$RUN_NO/loadgen.err" >&2
        result='{"ok":false,"error":"no result"}'
      fi
      printf '{"round":%d,"bench":"%s","server":"%s","exit":%d,"result":%s}\n' \
        "$round" "$scenario" "$server" "$status" "$result" >>"$RAW"
    done
  done
done

mkdir -p "$OUT"
NOFILE_HARD=$(ulimit -Hn)
export STARTED ROUNDS PING_INTERVAL_MS NOFILE_HARD
export IDLE_CONNECTIONS IDLE_HOLD BROADCAST_CONNECTIONS BROADCAST_RATE BROADCAST_DURATION BROADCAST_MAX_RATE \
  BROADCAST_MAX_DURATION ROOMS ROOM_MEMBERS ROOM_RATE ROOM_DURATION ROOMS_MAX_RATE ROOMS_MAX_DURATION HANDSHAKES \
  HANDSHAKE_CONCURRENCY TYPING_ROOMS TYPING_MEMBERS TYPING_RATE TYPING_DURATION
node "$ROOT/bench/report.js" "$RAW" "$OUT/latest.json" "$OUT/latest.md"
log "wrote $OUT/latest.md and $OUT/latest.json (raw runs and server logs in $WORK)"

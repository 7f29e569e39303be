#!/usr/bin/env bash
# Issue 11's attacks against the release binary, with the caps at their
# defaults and (for comparison) turned off, each on a freshly started server
# with a fresh SQLite database. Prints one JSON line per run and writes them
# to bench/results/caps.jsonl. See BENCHMARKS.md, "Limits under attack".
#
#   bench/caps.sh                    # all three, ~3 minutes plus the build
#   SCENARIOS="binary" bench/caps.sh
#   BUILD=0 bench/caps.sh            # use target/release/civicpulse as it is
#
# binary:   20 sockets each declare 10 attachments and send 9 × 900 KB;
#           the server's RSS while they hold them.
# slowbody: 1000 connections from 127.0.0.2 send their headers, then a body
#           a byte a second; how many are still open every 5 s up to 30 s.
#           POST /api/auth/login, with AUTH_RATE_PER_MINUTE off: that limit
#           (300 a minute per address) would answer 700 of them 429 before
#           their body is read; `slowbody_defaults` runs with it on.
# fds:      one address (127.0.0.2) opens WebSockets until refused, then
#           /healthz, /readyz, /metrics and /api/issues are tried from it and
#           from 127.0.0.1; `fds_proxy` does the same with the per-address
#           cap off (a node behind a proxy), up to the descriptor limit.
# emfile:   MAX_CONNECTIONS set past a descriptor limit of 1024 (prlimit), so
#           that accept() itself fails: the server's CPU time over 10 s of
#           that, how often it failed, and how many lines it logged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCENARIOS=${SCENARIOS:-"binary binary_uncapped slowbody slowbody_uncapped slowbody_defaults fds fds_proxy emfile"}
BUILD=${BUILD:-1}
JOBS=${CARGO_BUILD_JOBS:-1}
BIN=$ROOT/target/release/civicpulse
OUT=${OUT:-$ROOT/bench/results/caps.jsonl}
JWT_SECRET=${JWT_SECRET:-civicpulse-benchmark-secret-0123456789abcdef}

log() { echo "caps: $*" >&2; }

if [[ $BUILD == 1 ]]; then
  log "building the release binary (cargo -j $JOBS)"
  cargo build -j "$JOBS" --release -p civicpulse
fi
[[ -x $BIN ]] || { log "missing $BIN (run with BUILD=1)"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "descriptor limit $(ulimit -n); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/civicpulse-caps.XXXXXX")
SERVER_PID=""
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start VAR=VALUE…: a fresh server with those settings over the defaults
# (run under $PREFIX, e.g. prlimit, when set).
PREFIX=""
start() {
  local port dir
  port=$(free_port)
  dir=$(mktemp -d "$WORK/run.XXXX")
  $PREFIX env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" WORKERS="$(nproc)" \
    DATABASE_URL="sqlite://$dir/civicpulse.db" JWT_SECRET="$JWT_SECRET" \
    RUST_LOG="info,civicpulse::http=warn,civicpulse::socket=warn" "$@" \
    "$BIN" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  URL=http://127.0.0.1:$port
  LOG=$dir/server.log
  for _ in $(seq 200); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && return
    sleep 0.05
  done
  log "the server did not start:"; cat "$LOG" >&2; exit 1
}

stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# The heartbeat and namespace timeouts are lengthened where held sockets
# answer nothing: the figures are about descriptors and memory.
QUIET="PING_INTERVAL_MS=600000 CONNECT_TIMEOUT_MS=600000"
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for scenario in $SCENARIOS; do
  log "$scenario"
  case $scenario in
    binary) start; args=(binary --pid "$SERVER_PID") ;;
    binary_uncapped)
      start MAX_PACKET_BINARY_BYTES=1000000000 MAX_PENDING_BINARY_BYTES=100000000000
      args=(binary --pid "$SERVER_PID") ;;
    slowbody) start AUTH_RATE_PER_MINUTE=0; args=(slowbody) ;;
    slowbody_uncapped) start AUTH_RATE_PER_MINUTE=0 BODY_READ_TIMEOUT_MS=86400000; args=(slowbody) ;;
    slowbody_defaults) start; args=(slowbody) ;;
    fds) start $QUIET; args=(fds) ;;
    fds_proxy) start $QUIET MAX_CONNECTIONS_PER_ADDRESS=0; args=(fds) ;;
    emfile)
      PREFIX="prlimit --nofile=1024:1024"
      start $QUIET MAX_CONNECTIONS_PER_ADDRESS=0 MAX_CONNECTIONS=100000
      PREFIX=""
      args=(fds --pid "$SERVER_PID" --hold 10 --refusals 3 --timeout 2) ;;
    *) log "unknown scenario $scenario"; exit 2 ;;
  esac
  result=$(python3 bench/caps/attack.py "${args[@]}" --url "$URL")
  # What the caps logged: once per episode or offender, not per connection.
  lines=$(grep -cE "actix_socketio::limits|binary packet refused" "$LOG" || true)
  echo "{\"run\":\"$scenario\",\"limit_log_lines\":$lines,\"result\":$result}" | tee -a "$OUT"
  stop
done
log "wrote $OUT"

#!/usr/bin/env bash
# CivicPulse benchmarks: every scenario against civicpulse, the Node.js peer
# (bench/peers/node), the socketioxide peer (bench/peers/socketioxide) and
# the limit server (bench/peers/limit), interleaved,
# ROUNDS rounds, each run on a freshly started server with a fresh database.
# Writes bench/results/latest.md (medians and ratios) and latest.json (every
# run plus the medians). See BENCHMARKS.md.
#
#   bench/run.sh                      # defaults: ~21 minutes on 2 cores, plus the build
#   ROUNDS=5 IDLE_CONNECTIONS=19000 bench/run.sh
#   SCENARIOS="rooms typing" SERVERS="civicpulse node" bench/run.sh
#   SCENARIOS=rooms_sweep ROOMS_SWEEP_RATES="20 40 80" bench/run.sh
#   BEFORE_BIN=/path/to/older/civicpulse SERVERS="civicpulse before node limit" bench/run.sh
#                                     # `before`: an older civicpulse binary beside this one
#   OUT=bench/results/cluster SCENARIOS="cluster_broadcast cluster_broadcast_max cluster_rooms" SERVERS="civicpulse node socketioxide" bench/run.sh
#                                     # cluster mode: 1 node, 1 node + Redis, 3 nodes (~13 minutes)
#   OUT=bench/results/postgres SCENARIOS="rest rooms_sweep broadcast_max" SERVERS="civicpulse civicpulse_pg" bench/run.sh
#                                     # civicpulse_pg: civicpulse on a fresh PostgreSQL database (PG_URL) per run
#   OUT=bench/results/recovery SCENARIOS="idle idle_rooms broadcast_max rooms rooms_sweep" SERVERS="civicpulse civicpulse_csr" bench/run.sh
#                                     # civicpulse_csr: connection state recovery on, against off
#   OUT=bench/results/scale SCENARIOS=scale SERVERS="civicpulse node socketioxide" ROUNDS=1 bench/run.sh
#                                     # 100,000 sessions on 7 nodes, one load generator per node
#
# Every size is an environment variable (defaults below). Traffic goes to
# 127.0.0.x only, and every run is bounded in time. The `rest` scenario needs
# wrk (Debian package `wrk`) and is skipped without it.
#
# The cluster_* scenarios (not in the default list) run broadcast (at a set
# rate, and saturated) and rooms
# against each server as one node, one node with Redis, and three nodes
# sharing Redis and storage (CLUSTER_TOPOLOGIES): civicpulse on a fresh
# PostgreSQL database per run (PG_URL), the Node peer on one shared SQLite
# file with @socket.io/redis-adapter, the socketioxide peer on one shared
# SQLite file with socketioxide-redis. They need redis-server (Debian package
# `redis-server`): the script starts its own on a free port (nothing is
# saved, it is shut down on exit), so no other Redis is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"idle idle_rooms broadcast broadcast_max rooms rooms_max rooms_sweep handshake typing rest"}
SERVERS=${SERVERS:-"civicpulse node socketioxide limit"}
BUILD=${BUILD:-1}                        # 0: use the binaries already built
JOBS=${CARGO_BUILD_JOBS:-1}              # cargo -j (the machine is shared)
OUT=${OUT:-$ROOT/bench/results}
# Heartbeats on every server; shorter than the 25 s default so that short
# idle holds include heartbeats. Same value for every server.
PING_INTERVAL_MS=${PING_INTERVAL_MS:-5000}
PING_TIMEOUT_MS=${PING_TIMEOUT_MS:-20000}
JWT_SECRET=${JWT_SECRET:-civicpulse-benchmark-secret-0123456789abcdef}

IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-4000}
IDLE_HOLD=${IDLE_HOLD:-8}
# idle_rooms: the idle sessions as real clients are: IDLE_ROOM_USERS distinct
# users, each socket in one of IDLE_ROOMS issue rooms.
IDLE_ROOMS=${IDLE_ROOMS:-100}
IDLE_ROOM_USERS=${IDLE_ROOM_USERS:-100}
BROADCAST_CONNECTIONS=${BROADCAST_CONNECTIONS:-2000}
BROADCAST_RATE=${BROADCAST_RATE:-20}           # upvotes/s
BROADCAST_DURATION=${BROADCAST_DURATION:-6}
BROADCAST_MAX_RATE=${BROADCAST_MAX_RATE:-1000} # far beyond what any server sustains
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
# The sustainable message rate (p99 < 100 ms, nothing lost): the rooms
# scenario (ROOMS × ROOM_MEMBERS) once per rate, per server and round.
ROOMS_SWEEP_RATES=${ROOMS_SWEEP_RATES:-"10 20 30 40 50 60 80"}  # messages/s per room
ROOMS_SWEEP_DURATION=${ROOMS_SWEEP_DURATION:-5}
# scale: SCALE_SESSIONS idle authenticated sessions over SCALE_NODES nodes of
# a cluster (Redis; civicpulse on PostgreSQL), one load generator process
# per node (a process may hold 20,000 descriptors here), with the servers'
# default heartbeats; held SCALE_HOLD s, then one upvote: one global event
# to every session.
SCALE_SESSIONS=${SCALE_SESSIONS:-100000}
SCALE_NODES=${SCALE_NODES:-7}
SCALE_HOLD=${SCALE_HOLD:-60}
SCALE_SETTLE=${SCALE_SETTLE:-5}
SCALE_USERS=${SCALE_USERS:-16}
SCALE_PING_INTERVAL_MS=${SCALE_PING_INTERVAL_MS:-25000}
SCALE_PING_TIMEOUT_MS=${SCALE_PING_TIMEOUT_MS:-20000}
# Short: the drain only lasts long for a rate the server does not keep up
# with, and such a run is not sustainable however long it drains.
ROOMS_SWEEP_DRAIN=${ROOMS_SWEEP_DRAIN:-2}
# REST throughput with wrk (every server but limit): per route, one wrk run.
REST_ROUTES=${REST_ROUTES:-"issue list upvote healthz"}
REST_DURATION=${REST_DURATION:-5}
REST_THREADS=${REST_THREADS:-2}
REST_CONNECTIONS=${REST_CONNECTIONS:-64}
DRAIN=${DRAIN:-6}
# Cluster mode. Topologies: `1` one node without Redis, `1r` one node with
# Redis (every emit goes through it, all sockets local), `3` three nodes
# sharing Redis and storage (sockets placed round-robin, so 2/3 of every
# room and of every broadcast are on other nodes than the emitter).
CLUSTER_TOPOLOGIES=${CLUSTER_TOPOLOGIES:-"1 1r 3"}
CLUSTER_BROADCAST_CONNECTIONS=${CLUSTER_BROADCAST_CONNECTIONS:-1500}
CLUSTER_BROADCAST_RATE=${CLUSTER_BROADCAST_RATE:-20}     # upvotes/s
CLUSTER_BROADCAST_DURATION=${CLUSTER_BROADCAST_DURATION:-5}
CLUSTER_TRIGGERS=${CLUSTER_TRIGGERS:-all}                # all: upvote k to node k mod N; first: all to node 1
CLUSTER_BROADCAST_MAX_RATE=${CLUSTER_BROADCAST_MAX_RATE:-1000} # cluster_broadcast_max: far beyond what any topology sustains
CLUSTER_BROADCAST_MAX_DURATION=${CLUSTER_BROADCAST_MAX_DURATION:-3}
CLUSTER_ROOMS=${CLUSTER_ROOMS:-60}
CLUSTER_ROOM_MEMBERS=${CLUSTER_ROOM_MEMBERS:-20}
CLUSTER_ROOM_RATE=${CLUSTER_ROOM_RATE:-5}                # messages/s per room
CLUSTER_ROOM_DURATION=${CLUSTER_ROOM_DURATION:-5}
CLUSTER_DRAIN=${CLUSTER_DRAIN:-4}
# civicpulse's cluster storage: a fresh database per run on this server
# (CREATE DATABASE before the run, DROP DATABASE … WITH (FORCE) after it).
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
# synchronous_commit of those databases. `off` by default: a commit does not
# wait for its WAL flush, the durability the Node peer's SQLite has in WAL
# mode with synchronous=NORMAL (a crash may lose the last commits, never
# corrupts). With `on`, every batch waits for an fdatasync, which on this
# shared machine's disk (other builds writing) took up to a second.
PG_SYNCHRONOUS_COMMIT=${PG_SYNCHRONOUS_COMMIT:-off}

CP_BIN=$ROOT/target/release/civicpulse
BEFORE_BIN=${BEFORE_BIN:-}
LG_BIN=$ROOT/target/release/civicpulse-loadgen
LIMIT_BIN=$ROOT/target/limit/release/civicpulse-limit
SIOX_BIN=$ROOT/target/socketioxide/release/civicpulse-socketioxide
NODE_DIR=$ROOT/bench/peers/node

log() { echo "bench: $*" >&2; }

if [[ $BUILD == 1 ]]; then
  log "building release binaries (cargo -j $JOBS)"
  cargo build -j "$JOBS" --release -p civicpulse -p civicpulse-loadgen
  if [[ " $SERVERS " == *" limit "* ]]; then
    cargo build -j "$JOBS" --release --manifest-path bench/peers/limit/Cargo.toml --target-dir "$ROOT/target/limit"
  fi
  if [[ " $SERVERS " == *" socketioxide "* ]]; then
    # SQLite as the peer's users get it: not with the planner flag
    # .cargo/config.toml gives civicpulse's build (a set variable wins).
    LIBSQLITE3_FLAGS="" cargo build -j "$JOBS" --release --manifest-path bench/peers/socketioxide/Cargo.toml --target-dir "$ROOT/target/socketioxide"
  fi
  # npm ci builds better-sqlite3 from source when no prebuilt binary can be
  # fetched (a minute or two): skip it while node_modules matches the lock
  # file, unless NPM_CI=1.
  if [[ " $SERVERS " == *" node "* ]]; then
    if [[ ${NPM_CI:-0} == 1 || ! "$NODE_DIR/node_modules/.package-lock.json" -nt "$NODE_DIR/package-lock.json" ]] ||
      ! (cd "$NODE_DIR" && node -e "require('better-sqlite3'); require('socket.io'); require('express'); require('@socket.io/redis-adapter'); require('redis')" 2>/dev/null); then
      log "npm ci (bench/peers/node)"
      (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
fi
if [[ " $SERVERS " == *" before "* && ! -x $BEFORE_BIN ]]; then
  log "SERVERS names before: set BEFORE_BIN to an older civicpulse binary"
  exit 2
fi
NEEDED=("$CP_BIN" "$LG_BIN")
if [[ " $SERVERS " == *" limit "* ]]; then NEEDED+=("$LIMIT_BIN"); fi
if [[ " $SERVERS " == *" socketioxide "* ]]; then NEEDED+=("$SIOX_BIN"); fi
for bin in "${NEEDED[@]}"; do
  [[ -x $bin ]] || { log "missing $bin (run with BUILD=1)"; exit 1; }
done
for route in $REST_ROUTES; do
  case $route in
    upvote | healthz | issue | list) ;;
    *) log "unknown REST route $route (REST_ROUTES: upvote healthz issue list)"; exit 2 ;;
  esac
done
# wrk is an outside tool (Debian package `wrk`): without it, `rest` is
# skipped rather than failing the whole run.
if [[ " $SCENARIOS " == *" rest "* ]] && ! command -v wrk >/dev/null; then
  log "wrk not found (apt-get install wrk): skipping the rest scenario"
  SCENARIOS=$(printf '%s\n' $SCENARIOS | { grep -vx rest || true; } | tr '\n' ' ')
fi
HAS_CLUSTER=0
if [[ " $SCENARIOS " == *" cluster_"* || " $SCENARIOS " == *" scale "* ]]; then HAS_CLUSTER=1; fi
if [[ $HAS_CLUSTER == 1 ]] && ! command -v redis-server >/dev/null; then
  log "redis-server not found (apt-get install redis-server): skipping the cluster scenarios"
  SCENARIOS=$(printf '%s\n' $SCENARIOS | { grep -v '^cluster_\|^scale$' || true; } | tr '\n' ' ')
  HAS_CLUSTER=0
fi
for topology in $CLUSTER_TOPOLOGIES; do
  case $topology in
    1 | 1r | [2-9]) ;;
    *) log "unknown cluster topology $topology (CLUSTER_TOPOLOGIES: 1 1r 3; N nodes for 2-9)"; exit 2 ;;
  esac
done
# civicpulse's cluster runs need PostgreSQL (a database per run).
PG_OK=0
if [[ ( $HAS_CLUSTER == 1 && " $SERVERS " == *" civicpulse "* ) || " $SERVERS " == *" civicpulse_pg "* ]]; then
  if command -v psql >/dev/null && psql "$PG_URL/postgres" -Atqc 'select 1' >/dev/null 2>&1; then
    PG_OK=1
  else
    log "PostgreSQL not reachable at $PG_URL (or no psql): civicpulse sits out the cluster scenarios, civicpulse_pg every scenario"
  fi
fi

# Sockets need file descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "file limit $(ulimit -n); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/civicpulse-bench.XXXXXX")
RAW=$WORK/runs.jsonl
: >"$RAW"
SERVER_PID=""   # the first node
SERVER_PIDS=()  # every node of the server under test
PORTS=()
RUN_DB=""       # the PostgreSQL database of the current run, if any
REDIS_PORT=""
REDIS_PID=""
cleanup() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n $RUN_DB ]]; then drop_db; fi
  if [[ -n $REDIS_PID ]]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
}
LG_PID=""       # the running load generator (its timeout), if any
on_signal() {
  log "interrupted: stopping"
  if [[ -n $LG_PID ]]; then
    kill "$LG_PID" 2>/dev/null || true
    wait "$LG_PID" 2>/dev/null || true
  fi
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

PORT_BASE=${PORT_BASE:-39100}
RUN_NO=0

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports for the servers' nodes: PORT_BASE … PORT_BASE+1499 in turn, skipping
# any that something else on the machine listens on.
NEXT_PORT=$((PORT_BASE - 1))
next_port() {
  for _ in $(seq 1 1500); do
    NEXT_PORT=$((NEXT_PORT + 1))
    if ((NEXT_PORT >= PORT_BASE + 1500)); then NEXT_PORT=$PORT_BASE; fi
    if port_free "$NEXT_PORT"; then return 0; fi
  done
  log "no free port in $PORT_BASE…$((PORT_BASE + 1499))"
  return 1
}

# The script's own Redis for the cluster scenarios: a free port, no
# persistence, a child of this script, gone on exit. Every run starts from an empty Redis with
# zeroed statistics (FLUSHALL + CONFIG RESETSTAT) and a key prefix of its own.
start_redis() {
  local port
  for port in $(seq $((PORT_BASE + 1700)) $((PORT_BASE + 1799))); do
    port_free "$port" || continue
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
      --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      if [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; then
        REDIS_PORT=$port
        log "redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-) on 127.0.0.1:$port (pid $REDIS_PID)"
        return 0
      fi
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  done
  log "could not start redis-server; its log:"
  cat "$WORK/redis.log" >&2 2>/dev/null || true
  return 1
}

drop_db() {
  timeout 30 psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$RUN_DB\" WITH (FORCE)" >/dev/null 2>&1 ||
    log "could not drop database $RUN_DB"
  RUN_DB=""
}

redis_reset() {
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
}

# One node of a server: name index port dir, then KEY=VALUE environment
# for it; sets NODE_PID.
start_node() {
  local name=$1 i=$2 port=$3 dir=$4
  shift 4
  case $name in
    civicpulse | civicpulse_pg | civicpulse_csr | before)
      local bin=$CP_BIN recovery=0
      [[ $name == before ]] && bin=$BEFORE_BIN
      # civicpulse_csr: connection state recovery on (a 120 s window).
      [[ $name == civicpulse_csr ]] && recovery=120
      # The load generator is faster than any person (the sweep sends up to
      # 80 messages/s from one socket; wrk upvotes with one user's token from
      # one address, and few users hold thousands of sockets from one
      # address): the limits on what clients send are lifted, as the Node
      # peer has none.
      env HOST=127.0.0.1 PORT="$port" DATABASE_URL="sqlite://$dir/civicpulse.db" JWT_SECRET="$JWT_SECRET" \
        PING_INTERVAL_MS="$PING_INTERVAL_MS" PING_TIMEOUT_MS="$PING_TIMEOUT_MS" RUST_LOG="${SERVER_LOG:-warn}" \
        SOCKET_EVENT_RATE=1000000 SOCKET_EVENT_BURST=1000000 SOCKET_USER_EVENT_RATE=0 SOCKET_ADDRESS_EVENT_RATE=0 \
        REST_USER_WRITE_RATE=0 REST_ADDRESS_WRITE_RATE=0 MAX_SOCKETS_PER_USER=1000000 MAX_CONNECTIONS_PER_ADDRESS=0 \
        CONNECTION_STATE_RECOVERY_SECS=$recovery "$@" "$bin" >"$dir/server-$i.log" 2>&1 &
      ;;
    node)
      (cd "$NODE_DIR" && exec env JWT_SECRET="$JWT_SECRET" PORT="$port" DB_PATH="$dir/node.db" \
        PING_INTERVAL_MS="$PING_INTERVAL_MS" PING_TIMEOUT_MS="$PING_TIMEOUT_MS" NODE_ENV=production \
        "$@" node server.js) >"$dir/server-$i.log" 2>&1 &
      ;;
    socketioxide)
      env HOST=127.0.0.1 PORT="$port" JWT_SECRET="$JWT_SECRET" DB_PATH="$dir/socketioxide.db" \
        PING_INTERVAL_MS="$PING_INTERVAL_MS" PING_TIMEOUT_MS="$PING_TIMEOUT_MS" RUST_LOG="${SERVER_LOG:-warn}" \
        "$@" "$SIOX_BIN" >"$dir/server-$i.log" 2>&1 &
      ;;
    limit)
      env HOST=127.0.0.1 PORT="$port" PING_INTERVAL_MS="$PING_INTERVAL_MS" PING_TIMEOUT_MS="$PING_TIMEOUT_MS" \
        "$@" "$LIMIT_BIN" >"$dir/server-$i.log" 2>&1 &
      ;;
  esac
  NODE_PID=$!
}

# start_server name [nodes] [redis: 0|1] [shared storage: 0|1] -> sets
# SERVER_PIDS, PORTS, URLS and PIDS (comma-separated) and, for the first
# node, SERVER_PID and PORT. With redis=1 the nodes use the script's Redis
# (REDIS_URL, and REDIS_KEY_PREFIX of the run's own). With shared storage,
# civicpulse runs on a fresh PostgreSQL database; the Node and socketioxide
# peers' nodes always share the run's one SQLite file (DB_PATH). Nodes start one after
# the other, each once the previous answers /healthz, so the schema is made
# once.
start_server() {
  local name=$1 nodes=${2:-1} redis=${3:-0} pg=${4:-0} i port pid
  RUN_NO=$((RUN_NO + 1))
  local dir=$WORK/run-$RUN_NO
  mkdir -p "$dir"
  SERVER_PIDS=() PORTS=()
  local shared=()
  if [[ $redis == 1 ]]; then
    redis_reset
    shared+=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT" REDIS_KEY_PREFIX="cpbench-$$-$RUN_NO")
  fi
  # civicpulse_pg: civicpulse on PostgreSQL in every scenario, beside
  # civicpulse on its SQLite default.
  if [[ $name == civicpulse_pg ]]; then pg=1; fi
  if [[ $pg == 1 && ( $name == civicpulse || $name == civicpulse_pg || $name == before ) ]]; then
    RUN_DB="cpbench_$$_$RUN_NO"
    if ! timeout 30 psql "$PG_URL/postgres" -qc "CREATE DATABASE \"$RUN_DB\"" >"$dir/createdb.err" 2>&1; then
      log "could not create database $RUN_DB:"
      cat "$dir/createdb.err" >&2
      RUN_DB=""
      return 1
    fi
    timeout 30 psql "$PG_URL/postgres" -qc "ALTER DATABASE \"$RUN_DB\" SET synchronous_commit = $PG_SYNCHRONOUS_COMMIT" \
      >>"$dir/createdb.err" 2>&1 || { log "could not set synchronous_commit:"; cat "$dir/createdb.err" >&2; return 1; }
    shared+=(DATABASE_URL="$PG_URL/$RUN_DB")
  fi
  for i in $(seq 1 "$nodes"); do
    next_port
    port=$NEXT_PORT
    start_node "$name" "$i" "$port" "$dir" "${shared[@]}" NODE_ID="$name-$i"
    pid=$NODE_PID
    SERVER_PIDS+=("$pid") PORTS+=("$port")
    local up=0
    for _ in $(seq 1 150); do
      if curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; then up=1; break; fi
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [[ $up == 0 ]]; then
      log "$name node $i did not start; its log:"
      cat "$dir/server-$i.log" >&2
      return 1
    fi
  done
  SERVER_PID=${SERVER_PIDS[0]} PORT=${PORTS[0]}
  URLS="" PIDS=""
  for i in "${!PORTS[@]}"; do
    URLS+="${URLS:+,}http://127.0.0.1:${PORTS[$i]}"
    PIDS+="${PIDS:+,}${SERVER_PIDS[$i]}"
  done
}

stop_server() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=() PORTS=() SERVER_PID=""
  if [[ -n $RUN_DB ]]; then drop_db; fi
}

# Which servers take part in a scenario: the limit server has no real REST
# (no storage), so it sits out `rest`; it has no cluster mode, and neither
# has an older civicpulse, so both sit out the cluster scenarios (as does
# civicpulse without PostgreSQL).
servers_for() {
  local s
  for s in $SERVERS; do
    case $1:$s in
      rest:limit | cluster_*:limit | cluster_*:before | scale:limit | scale:before | cluster_*:civicpulse_pg | scale:civicpulse_pg) ;;
      rest:civicpulse_csr | cluster_*:civicpulse_csr | scale:civicpulse_csr) ;;
      cluster_*:civicpulse | scale:civicpulse | *:civicpulse_pg) if [[ $PG_OK == 1 ]]; then printf '%s ' "$s"; fi ;;
      *) printf '%s ' "$s" ;;
    esac
  done
}

# The runs of a scenario per server and round: one, except the rooms
# sweep, which has one per rate (servers interleaved at every rate).
variants_for() {
  case $1 in
    rooms_sweep) echo "$ROOMS_SWEEP_RATES" ;;
    cluster_*) echo "$CLUSTER_TOPOLOGIES" ;;
    *) echo "-" ;;
  esac
}

loadgen_args() { # scenario variant -> arguments
  case $1 in
    idle) echo "idle --connections $IDLE_CONNECTIONS --duration $IDLE_HOLD" ;;
    idle_rooms) echo "idle --connections $IDLE_CONNECTIONS --duration $IDLE_HOLD --join-rooms $IDLE_ROOMS --users $IDLE_ROOM_USERS" ;;
    broadcast) echo "broadcast --connections $BROADCAST_CONNECTIONS --rate $BROADCAST_RATE --duration $BROADCAST_DURATION" ;;
    broadcast_max) echo "broadcast --connections $BROADCAST_CONNECTIONS --rate $BROADCAST_MAX_RATE --duration $BROADCAST_MAX_DURATION --http-connections 16" ;;
    rooms) echo "rooms --rooms $ROOMS --members $ROOM_MEMBERS --rate $ROOM_RATE --duration $ROOM_DURATION" ;;
    rooms_max) echo "rooms --rooms $ROOMS --members $ROOM_MEMBERS --rate $ROOMS_MAX_RATE --duration $ROOMS_MAX_DURATION" ;;
    handshake) echo "handshake --connections $HANDSHAKES --concurrency $HANDSHAKE_CONCURRENCY" ;;
    rooms_sweep) echo "rooms --rooms $ROOMS --members $ROOM_MEMBERS --rate $2 --duration $ROOMS_SWEEP_DURATION" ;;
    typing) echo "typing --rooms $TYPING_ROOMS --members $TYPING_MEMBERS --rate $TYPING_RATE --duration $TYPING_DURATION" ;;
    cluster_broadcast) echo "broadcast --connections $CLUSTER_BROADCAST_CONNECTIONS --rate $CLUSTER_BROADCAST_RATE --duration $CLUSTER_BROADCAST_DURATION --triggers $CLUSTER_TRIGGERS" ;;
    cluster_broadcast_max) echo "broadcast --connections $CLUSTER_BROADCAST_CONNECTIONS --rate $CLUSTER_BROADCAST_MAX_RATE --duration $CLUSTER_BROADCAST_MAX_DURATION --http-connections 16 --triggers $CLUSTER_TRIGGERS" ;;
    cluster_rooms) echo "rooms --rooms $CLUSTER_ROOMS --members $CLUSTER_ROOM_MEMBERS --rate $CLUSTER_ROOM_RATE --duration $CLUSTER_ROOM_DURATION" ;;
    *) log "unknown scenario $1"; exit 2 ;;
  esac
}

drain_for() {
  case $1 in
    rooms_sweep) echo "$ROOMS_SWEEP_DRAIN" ;;
    cluster_*) echo "$CLUSTER_DRAIN" ;;
    *) echo "$DRAIN" ;;
  esac
}

# CPU time (user + system, in clock ticks) of a process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

rest_route() { # name -> "METHOD path" (uses run_rest's ISSUE)
  case $1 in
    upvote) echo "POST /api/issues/$ISSUE/upvote" ;; # the same user every time: after the first, a read and a write transaction that changes nothing
    healthz) echo "GET /healthz" ;;                  # the HTTP stack alone: no token, no database
    issue) echo "GET /api/issues/$ISSUE" ;;          # one row by key, with the token checked
    list) echo "GET /api/issues?limit=20" ;;         # a page of 20, newest first
  esac
}

# rest: one user and 20 issues (a full page for `list`) made with curl, then
# one wrk run per route of REST_ROUTES, with the user's token on every
# request. Prints the result JSON; fails when a request failed.
run_rest() { # dir
  local dir=$1 base="http://127.0.0.1:$PORT" token answer route method path before after ok=true json="" ISSUE
  answer=$(curl -sf -X POST "$base/api/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"rest-$RUN_NO-$$@bench.test\",\"password\":\"bench-password-1\",\"displayName\":\"Bench\",\"city\":\"loadtown\"}") ||
    { echo '{"ok":false,"error":"register failed"}'; return 1; }
  token=$(grep -o '"accessToken":"[^"]*"' <<<"$answer" | cut -d'"' -f4)
  for i in $(seq 1 20); do
    answer=$(curl -sf -X POST "$base/api/issues" -H 'content-type: application/json' -H "authorization: Bearer $token" \
      -d "{\"title\":\"REST benchmark issue $i\",\"description\":\"made by bench/run.sh\",\"category\":\"roads\",\"city\":\"loadtown\"}") ||
      { echo '{"ok":false,"error":"creating an issue failed"}'; return 1; }
  done
  ISSUE=$(grep -o '"issueId":"[^"]*"' <<<"$answer" | head -n1 | cut -d'"' -f4)
  for route in $REST_ROUTES; do
    read -r method path <<<"$(rest_route "$route")"
    # wrk's own summary hook prints exact figures (latencies in µs) as one
    # line, so nothing depends on the layout of its text report.
    cat >"$dir/$route.lua" <<LUA
wrk.method = "$method"
if wrk.method == "POST" then wrk.body = "" end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests":%d,"requests_per_s":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non_2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
    before=$(cpu_ticks "$SERVER_PID")
    # --timeout 10s: a slow answer counts in the latencies; at wrk's default
    # of 2 s it would be dropped from them and counted as a socket error.
    timeout $((REST_DURATION + 30)) wrk -t"$REST_THREADS" -c"$REST_CONNECTIONS" -d"${REST_DURATION}s" --latency --timeout 10s \
      -H "Authorization: Bearer $token" -s "$dir/$route.lua" "$base$path" >"$dir/wrk-$route.out" 2>&1 || true
    after=$(cpu_ticks "$SERVER_PID")
    echo "== rest $route against $server: $method $path" >&2
    grep -v '^WRK ' "$dir/wrk-$route.out" >&2 || true
    answer=$(grep '^WRK ' "$dir/wrk-$route.out" | tail -n1 | cut -c5-)
    if [[ -z $answer ]]; then
      answer='{"requests":0,"error":"no wrk summary"}'
      ok=false
    elif ! grep -q '"requests":[1-9][0-9]*,.*"non_2xx":0,"socket_errors":0}' <<<"$answer"; then
      ok=false
    fi
    answer="${answer%\}},\"method\":\"$method\",\"server_cpu_pct\":$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v s="$REST_DURATION" 'BEGIN { printf "%.1f", t / hz / s * 100 }')}"
    json+="${json:+,}\"$route\":$answer"
  done
  echo "{\"ok\":$ok,\"threads\":$REST_THREADS,\"connections\":$REST_CONNECTIONS,\"duration_s\":$REST_DURATION,\"routes\":{$json}}"
  [[ $ok == true ]]
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_sum_kib() { local pid t=0; for pid in "$@"; do t=$((t + $(rss_kib "$pid"))); done; echo "$t"; }
cpu_sum_ticks() { local pid t=0; for pid in "$@"; do t=$((t + $(cpu_ticks "$pid"))); done; echo "$t"; }

# scale: one load generator per node (SCALE_SESSIONS / SCALE_NODES sockets
# each), meeting through files in $dir/barrier (see bench/loadgen/src/
# scale.rs). This script reads the nodes' RSS before the fleet, once it is
# up, and after the hold, and their CPU over the hold (heartbeats only),
# then says `go`; the load generators time the one event and write their
# latencies, merged here. Prints the result JSON.
run_scale() { # dir
  local dir=$1 barrier=$1/barrier k per lg_pids=() status=0 nodes=${#PORTS[@]}
  mkdir -p "$barrier"
  local rss_before rss_up rss_after cpu0 cpu1 t_hold
  rss_before=$(rss_sum_kib "${SERVER_PIDS[@]}")
  for k in "${!PORTS[@]}"; do
    # Exactly SCALE_SESSIONS in all: the first SCALE_SESSIONS % nodes take one more.
    per=$((SCALE_SESSIONS / nodes + (k < SCALE_SESSIONS % nodes ? 1 : 0)))
    timeout $((SCALE_HOLD + 900)) "$LG_BIN" scale --url "http://127.0.0.1:${PORTS[$k]}" --secret "$JWT_SECRET" \
      --connections "$per" --users "$SCALE_USERS" --barrier "$barrier" --index "$k" --label "$server" \
      >"$dir/loadgen-$k.out" 2>"$dir/loadgen-$k.err" &
    lg_pids+=($!)
  done
  # Every process up (or gone: then it failed, and the run with it).
  while (($(ls "$barrier"/connected.* 2>/dev/null | wc -l) < ${#PORTS[@]})); do
    local alive=0
    for k in "${lg_pids[@]}"; do kill -0 "$k" 2>/dev/null && alive=$((alive + 1)); done
    ((alive == ${#PORTS[@]})) || { log "a load generator exited before its fleet was up"; status=1; break; }
    sleep 0.5
  done
  if [[ $status == 0 ]]; then
    sleep "$SCALE_SETTLE"
    rss_up=$(rss_sum_kib "${SERVER_PIDS[@]}")
    cpu0=$(cpu_sum_ticks "${SERVER_PIDS[@]}")
    t_hold=$SECONDS
    log "scale: $(cat "$barrier"/connected.* | tr '\n' ' ')"
    log "scale: holding ${SCALE_HOLD} s"
    sleep "$SCALE_HOLD"
    cpu1=$(cpu_sum_ticks "${SERVER_PIDS[@]}")
    t_hold=$((SECONDS - t_hold))
    rss_after=$(rss_sum_kib "${SERVER_PIDS[@]}")
    echo go >"$barrier/go"
  fi
  for k in "${lg_pids[@]}"; do wait "$k" || status=$?; done
  for k in "${!PORTS[@]}"; do grep -v '^RESULT ' "$dir/loadgen-$k.out" >&2 || true; done
  [[ $status == 0 ]] || { tail -n 5 "$dir"/loadgen-*.err >&2; }
  SCALE_DIR=$dir RSS_BEFORE=${rss_before:-0} RSS_UP=${rss_up:-0} RSS_AFTER=${rss_after:-0} \
    CPU_TICKS=$(( ${cpu1:-0} - ${cpu0:-0} )) HOLD_SECS=${t_hold:-0} CLK_TCK=$CLK_TCK NODES=$nodes \
    SESSIONS=$SCALE_SESSIONS STATUS=$status node -e '
      const fs = require("node:fs"), e = process.env, dir = e.SCALE_DIR;
      const parts = fs.readdirSync(dir).filter((f) => /^loadgen-\d+\.out$/.test(f)).map((f) => {
        const line = fs.readFileSync(`${dir}/${f}`, "utf8").split("\n").find((l) => l.startsWith("RESULT "));
        return line ? JSON.parse(line.slice(7)) : { ok: false };
      });
      const lat = [];
      for (const f of fs.readdirSync(`${dir}/barrier`).filter((f) => f.startsWith("lat."))) {
        for (const l of fs.readFileSync(`${dir}/barrier/${f}`, "utf8").split("\n")) if (l) lat.push(Number(l));
      }
      lat.sort((a, b) => a - b);
      const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] / 1000 : null);
      const add = (k) => parts.reduce((a, p) => a + (p[k] ?? 0), 0);
      const sessions = Number(e.SESSIONS), ready = add("ready");
      const kib = (k) => Number(e[k]);
      const out = {
        ok: e.STATUS === "0" && parts.length === Number(e.NODES) && parts.every((p) => p.ok),
        nodes: Number(e.NODES), sessions, ready, failed: add("failed"),
        dropped_in_hold: add("dropped_in_hold"), dropped: add("dropped"), pings: add("pings"),
        ramp_secs: Math.max(...parts.map((p) => p.ramp_secs ?? 0)),
        rss_before_bytes: kib("RSS_BEFORE") * 1024, rss_connected_bytes: kib("RSS_UP") * 1024, rss_after_bytes: kib("RSS_AFTER") * 1024,
        bytes_per_session: ready ? Math.round(((kib("RSS_AFTER") - kib("RSS_BEFORE")) * 1024) / ready) : null,
        hold_secs: Number(e.HOLD_SECS),
        heartbeat_cpu_pct: Number(e.HOLD_SECS) ? Math.round((10000 * Number(e.CPU_TICKS)) / Number(e.CLK_TCK) / Number(e.HOLD_SECS)) / 100 : null,
        received: lat.length,
        latency: { p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat.length ? lat[lat.length - 1] / 1000 : null },
        frames_per_s: lat.length ? Math.round(lat.length / (lat[lat.length - 1] / 1e6)) : null,
      };
      console.log(JSON.stringify(out));
    '
  [[ $status == 0 ]]
}

if [[ $HAS_CLUSTER == 1 ]]; then start_redis; fi

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for round in $(seq 1 "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    read -r -a order <<<"$(servers_for "$scenario")"
    n=${#order[@]}
    for variant in $(variants_for "$scenario"); do
      # Rotate the order every round so no server always goes first.
      for i in $(seq 0 $((n - 1))); do
        server=${order[$(((i + round - 1) % n))]}
        extra="" label=$scenario nodes=1 redis=0 pg=0
        if [[ $scenario == scale ]]; then
          nodes=$SCALE_NODES redis=1 pg=1
          extra=",\"nodes\":$nodes,\"redis\":true"
          label+=" ($SCALE_SESSIONS sessions on $nodes nodes)"
        elif [[ $scenario == cluster_* ]]; then
          nodes=${variant%r} redis=0 pg=1
          if [[ $variant == *r || $nodes -gt 1 ]]; then redis=1; fi
          if [[ $redis == 1 ]]; then
            extra=",\"topology\":\"$variant\",\"nodes\":$nodes,\"redis\":true"
            label+=" on $nodes node(s) with Redis"
          else
            extra=",\"topology\":\"$variant\",\"nodes\":$nodes,\"redis\":false"
            label+=" on $nodes node(s)"
          fi
        elif [[ $variant != - ]]; then
          extra=",\"rate\":$variant"
          label+=" at $variant/s per room"
        fi
        log "round $round/$ROUNDS: $label against $server"
        dir=$WORK/run-$((RUN_NO + 1))
        status=0
        ping_interval=$PING_INTERVAL_MS ping_timeout=$PING_TIMEOUT_MS
        if [[ $scenario == scale ]]; then ping_interval=$SCALE_PING_INTERVAL_MS ping_timeout=$SCALE_PING_TIMEOUT_MS; fi
        if ! PING_INTERVAL_MS=$ping_interval PING_TIMEOUT_MS=$ping_timeout start_server "$server" "$nodes" "$redis" "$pg"; then
          stop_server
          printf '{"round":%d,"bench":"%s","server":"%s"%s,"exit":%d,"result":%s}\n' \
            "$round" "$scenario" "$server" "$extra" 1 '{"ok":false,"error":"server did not start"}' >>"$RAW"
          continue
        fi
        if [[ $scenario == rest ]]; then
          result=$(run_rest "$dir") || status=$?
          stop_server
        elif [[ $scenario == scale ]]; then
          result=$(run_scale "$dir") || status=$?
          stop_server
        else
          read -r -a args <<<"$(loadgen_args "$scenario" "$variant")"
          out=$dir/loadgen.out
          if [[ $redis == 1 ]]; then args+=(--redis "redis://127.0.0.1:$REDIS_PORT"); fi
          # In the background and waited for, so that Ctrl-C or TERM runs
          # on_signal at once (timeout puts the load generator in a process
          # group of its own, out of reach of the terminal's Ctrl-C).
          timeout 600 "$LG_BIN" "${args[@]}" --url "$URLS" --secret "$JWT_SECRET" \
            --pid "$PIDS" --label "$server" --drain "$(drain_for "$scenario")" >"$out" 2>"$dir/loadgen.err" &
          LG_PID=$!
          wait "$LG_PID" || status=$?
          LG_PID=""
          stop_server
          grep -v '^RESULT ' "$out" >&2 || true
          result=$(grep '^RESULT ' "$out" | tail -n1 | cut -c8-)
          if [[ -z $result ]]; then
            log "no RESULT (exit $status); stderr:"
            tail -n 20 "$dir/loadgen.err" >&2
            result='{"ok":false,"error":"no result"}'
          fi
        fi
        printf '{"round":%d,"bench":"%s","server":"%s"%s,"exit":%d,"result":%s}\n' \
          "$round" "$scenario" "$server" "$extra" "$status" "$result" >>"$RAW"
      done
    done
  done
done

mkdir -p "$OUT"
NOFILE_HARD=$(ulimit -Hn)
export STARTED ROUNDS PING_INTERVAL_MS NOFILE_HARD
export IDLE_CONNECTIONS IDLE_HOLD IDLE_ROOMS IDLE_ROOM_USERS BROADCAST_CONNECTIONS BROADCAST_RATE BROADCAST_DURATION BROADCAST_MAX_RATE \
  BROADCAST_MAX_DURATION ROOMS ROOM_MEMBERS ROOM_RATE ROOM_DURATION ROOMS_MAX_RATE ROOMS_MAX_DURATION HANDSHAKES \
  HANDSHAKE_CONCURRENCY TYPING_ROOMS TYPING_MEMBERS TYPING_RATE TYPING_DURATION ROOMS_SWEEP_RATES ROOMS_SWEEP_DURATION \
  ROOMS_SWEEP_DRAIN REST_ROUTES REST_DURATION REST_THREADS REST_CONNECTIONS \
  SCALE_SESSIONS SCALE_NODES SCALE_HOLD SCALE_USERS SCALE_PING_INTERVAL_MS
export PG_SYNCHRONOUS_COMMIT CLUSTER_TOPOLOGIES CLUSTER_BROADCAST_CONNECTIONS CLUSTER_BROADCAST_RATE CLUSTER_BROADCAST_DURATION CLUSTER_TRIGGERS \
  CLUSTER_BROADCAST_MAX_RATE CLUSTER_BROADCAST_MAX_DURATION \
  CLUSTER_ROOMS CLUSTER_ROOM_MEMBERS CLUSTER_ROOM_RATE CLUSTER_ROOM_DURATION CLUSTER_DRAIN
node "$ROOT/bench/report.js" "$RAW" "$OUT/latest.json" "$OUT/latest.md"
log "wrote $OUT/latest.md and $OUT/latest.json (raw runs and server logs in $WORK)"

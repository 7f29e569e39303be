#!/usr/bin/env bash
# schemathesis against the real server: starts the `civicpulse` binary on a
# free port over a fresh SQLite file, registers a user, and lets
# schemathesis generate requests for every operation of the served
# /api/openapi.json (as that user, by bearer token, and without it), checking
# that no answer is a 5xx and that every answer conforms to the document.
# Exits non-zero on any finding. Installs schemathesis (pinned, with its
# dependencies, in requirements.txt) in tests/openapi/.venv.
#
#   tests/openapi/schemathesis.sh            # CI's run
#   ST_MAX_EXAMPLES=200 ST_SEED=7 tests/openapi/schemathesis.sh
#   tests/openapi/schemathesis.sh --include-path-regex issues   # more st flags
#
# ST_MAX_EXAMPLES (default 100) bounds the cases per operation and phase;
# ST_SEED (default 1) makes a run repeatable (`random` for a new one each
# time). CIVICPULSE_BIN runs another binary than target/debug/civicpulse
# (and builds nothing). ST_INSTALL_ONLY=1 only installs schemathesis.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# ---- schemathesis, in a virtualenv of its own --------------------------------
venv="$here/.venv"
stamp="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/st" || "$(cat "$venv/.civicpulse-installed" 2>/dev/null)" != "$stamp" ]]; then
  echo "schemathesis: installing $(grep '^schemathesis==' "$here/requirements.txt") in $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt"
  echo "$stamp" >"$venv/.civicpulse-installed"
fi
[[ "${ST_INSTALL_ONLY:-}" == 1 ]] && exit 0

# ---- the server ---------------------------------------------------------------
bin="${CIVICPULSE_BIN:-$root/target/debug/civicpulse}"
if [[ -z "${CIVICPULSE_BIN:-}" ]]; then
  (cd "$root" && cargo build --quiet --bin civicpulse)
fi
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
# The limits are raised so that 429s do not hide the answers behind them
# (the document still describes them); the token outlives the run.
env -i PATH="$PATH" \
  HOST=127.0.0.1 PORT="$port" WORKERS=2 \
  DATABASE_URL="sqlite://$work/schemathesis.db" \
  JWT_SECRET="schemathesis-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  ACCESS_TOKEN_TTL_SECS=3600 \
  AUTH_RATE_PER_MINUTE=1000000 \
  REST_USER_WRITE_RATE=1000000 REST_USER_WRITE_BURST=1000000 \
  REST_ADDRESS_WRITE_RATE=1000000 REST_ADDRESS_WRITE_BURST=1000000 \
  RUST_LOG=info \
  "$bin" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -sf "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "schemathesis: the server did not start" >&2; exit 1; }
  sleep 0.1
done

# A citizen with a city, so that issues can be reported without one.
token="$(curl -sf "$base/api/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"schemathesis@example.com","password":"schemathesis-password","displayName":"Schemathesis","city":"springfield"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])')"

# ---- the run --------------------------------------------------------------------
# Every check (schemathesis.toml says where the document cannot be exact).
# Run from the scratch directory: schemathesis keeps a cache where it runs.
# One worker: hypothesis' ast.parse on two threads trips CPython 3.11's
# "AST constructor recursion depth mismatch".
seed=(--seed "${ST_SEED:-1}")
[[ "${ST_SEED:-}" == random ]] && seed=()
status=0
(cd "$work" && NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 "$venv/bin/st" --config-file "$here/schemathesis.toml" run \
  "$base/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --max-examples "${ST_MAX_EXAMPLES:-100}" \
  "${seed[@]}" \
  --workers 1 \
  --generation-database none \
  --no-color \
  "$@") || status=$?

if grep -q "internal error" "$work/server.log"; then
  echo "schemathesis: the server logged internal errors:" >&2
  grep "internal error" "$work/server.log" | head -20 >&2
  status=1
fi
if ((status != 0)); then
  echo "schemathesis: failed (exit $status); the server's last lines:" >&2
  tail -n 20 "$work/server.log" >&2
fi
exit "$status"

#!/usr/bin/env bash
# The browser client's tests: unit tests of its modules, then end-to-end
# tests in headless Chromium against a real turbochat-node and
# turbochat-router (embedded SQLite in a temporary directory, ports chosen
# by the OS). scripts/test runs this after `cargo test --workspace`.
#
#   web/tests/run.sh                  everything
#   web/tests/run.sh e2e/chat.test.js one file (paths relative to web/tests)
#
# Needs: Debian's chromium (installed here if missing), node >= 20, npm,
# cargo. Playwright drives the system Chromium through playwright-core;
# it never downloads a browser. Screenshots land in web/tests/screenshots/.
#
# Exported to the tests: TURBOCHAT_URL (the router), TURBOCHAT_OPS_URL,
# TURBOCHAT_ADMIN_URL and TURBOCHAT_ADMIN_SECRET (the node's admin API),
# TURBOCHAT_PUSH_FILE (the node's file push backend), TURBOCHAT_WEB_PUSH_*
# (the router's [web.push], whose SDK host the tests answer themselves).
set -euo pipefail

TESTS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$TESTS/../.." && pwd)
CHROMIUM=/usr/bin/chromium
READY_TIMEOUT=30

log() { echo "== web/tests: $*"; }

if [ ! -x "$CHROMIUM" ]; then
  log "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

log "npm ci"
(cd "$TESTS" && npm ci --no-audit --no-fund --loglevel=error)

log "building turbochat-node and turbochat-router"
cd "$ROOT"
cargo build --locked --bin turbochat-node --bin turbochat-router
# Wherever cargo put them: CARGO_TARGET_DIR, a config file, or ./target.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps --locked |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
BIN="$TARGET_DIR/debug"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/turbochat-web.XXXXXX")
PIDS=()
NAMES=()

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  local status=$?
  stop_all
  if [ "$status" -ne 0 ]; then
    local name
    for name in "${NAMES[@]}"; do
      log "last lines of $name's log"
      tail -n 40 "$WORK/$name.log" 2>/dev/null || true
    done
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A field of a process's JSON ready line, e.g. `ready_field node-1 grpc`.
ready_field() {
  node -e 'const fs=require("fs");const line=fs.readFileSync(process.argv[1],"utf8").split("\n")[0];console.log(JSON.parse(line)[process.argv[2]])' \
    "$WORK/$1.out" "$2"
}

# start NAME BINARY [VAR=VALUE...]: runs it in $WORK with configs/dev.toml
# and the overrides, and waits for its ready line on stdout.
start() {
  local name=$1 binary=$2
  shift 2
  (cd "$WORK" && exec env "$@" RUST_LOG="${TURBOCHAT_TEST_LOG:-info}" \
    "$BIN/$binary" --config "$ROOT/configs/dev.toml" >"$WORK/$name.out" 2>"$WORK/$name.log") &
  local pid=$!
  PIDS+=("$pid")
  NAMES+=("$name")
  local deadline=$((SECONDS + READY_TIMEOUT))
  until grep -q '"event":"ready"' "$WORK/$name.out" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited before it was ready"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name not ready after ${READY_TIMEOUT} s"
      exit 1
    fi
    sleep 0.1
  done
}

# The admin API's operator (listing cards are set through it), a secret per
# run. Pushes go to a file (the node's `file` backend: one FCM v1 message per
# line) that the push test reads and delivers to the browser itself.
ADMIN_SECRET=$(node -e 'console.log(require("crypto").randomBytes(32).toString("hex"))')
PUSH_FILE="$WORK/push.jsonl"
# Web push as an operator would configure it, except that the Firebase JS
# SDK's URL is a host under .test, answered by the tests with a stub: no
# test ever reaches Google.
WEB_PUSH_SDK_URL="https://firebase-sdk.turbocar.test/12.0.0"
WEB_PUSH_SENDER_ID=905412345678

log "starting node and router (data in $WORK)"
start node-1 turbochat-node \
  TURBOCHAT_NODE__ID=node-1 \
  TURBOCHAT_NODE__GRPC_LISTEN=127.0.0.1:0 \
  TURBOCHAT_NODE__HTTP_LISTEN=127.0.0.1:0 \
  TURBOCHAT_NODE__DRAIN_TIMEOUT=2s \
  TURBOCHAT_STORE__URL="sqlite:$WORK/turbochat.db" \
  TURBOCHAT_ADMIN__OPERATORS="[{name=\"web-tests\",secret=\"$ADMIN_SECRET\"}]" \
  TURBOCHAT_PUSH__BACKEND=file \
  TURBOCHAT_PUSH__FILE__PATH="$PUSH_FILE"
GRPC=$(ready_field node-1 grpc)
NODE_HTTP=$(ready_field node-1 http)
start router-1 turbochat-router \
  TURBOCHAT_ROUTER__ID=router-1 \
  TURBOCHAT_ROUTER__LISTEN=127.0.0.1:0 \
  TURBOCHAT_ROUTER__OPS_LISTEN=127.0.0.1:0 \
  TURBOCHAT_ROUTER__DRAIN_TIMEOUT=1s \
  TURBOCHAT_ROUTER__NODES="[{id=\"node-1\",grpc=\"http://$GRPC\"}]" \
  TURBOCHAT_WEB__PUSH__SDK_URL="$WEB_PUSH_SDK_URL" \
  TURBOCHAT_WEB__PUSH__VAPID_KEY=BTurbochatWebTestsVapidKey_not-a-real-key_0123456789 \
  TURBOCHAT_WEB__PUSH__FIREBASE__API_KEY=web-tests-api-key \
  TURBOCHAT_WEB__PUSH__FIREBASE__PROJECT_ID=turbochat-web-tests \
  TURBOCHAT_WEB__PUSH__FIREBASE__MESSAGING_SENDER_ID="$WEB_PUSH_SENDER_ID" \
  TURBOCHAT_WEB__PUSH__FIREBASE__APP_ID="1:$WEB_PUSH_SENDER_ID:web:0123456789abcdef"
ROUTER=$(ready_field router-1 http)
OPS=$(ready_field router-1 ops)
log "router at http://$ROUTER, operators at http://$OPS (node gRPC $GRPC, admin http://$NODE_HTTP)"

export TURBOCHAT_URL="http://$ROUTER"
export TURBOCHAT_OPS_URL="http://$OPS"
export TURBOCHAT_ADMIN_URL="http://$NODE_HTTP"
export TURBOCHAT_ADMIN_SECRET="$ADMIN_SECRET"
export TURBOCHAT_PUSH_FILE="$PUSH_FILE"
export TURBOCHAT_WEB_PUSH_SDK_URL="$WEB_PUSH_SDK_URL"
export TURBOCHAT_WEB_PUSH_SENDER_ID="$WEB_PUSH_SENDER_ID"
export TURBOCHAT_ROUTER_BIN="$BIN/turbochat-router"
export TURBOCHAT_CONFIG="$ROOT/configs/dev.toml"
export CHROMIUM
mkdir -p "$TESTS/screenshots"

cd "$TESTS"
if [ "$#" -gt 0 ]; then
  FILES=("$@")
else
  FILES=(unit/*.test.js e2e/*.test.js)
fi
log "node --test ${FILES[*]}"
# One file at a time: two cores, and each e2e file runs its own browser.
node --test --test-concurrency=1 "${FILES[@]}"

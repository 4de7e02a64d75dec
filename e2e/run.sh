#!/usr/bin/env bash
# Runs the Chromium end-to-end tests against a real server (as root: it makes network
# namespaces). From anywhere:
#
#   bash e2e/run.sh                  # uses target/debug/sfu
#   SFU_BIN=target/release/sfu bash e2e/run.sh
#
# 1. e2e/netns.sh up: namespaces sfu-srv (10.77.0.1) and sfu-cli (10.77.0.2), one veth.
# 2. The server in sfu-srv, with a token secret, its log in $E2E_LOG.
# 3. node --test e2e/call.test.mjs in sfu-cli, where Chromium runs.
# 4. Server stopped, namespaces removed (also on failure or Ctrl-C).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/.." && pwd)

SFU_BIN=${SFU_BIN:-$REPO/target/debug/sfu}
case "$SFU_BIN" in /*) ;; *) SFU_BIN=$REPO/$SFU_BIN ;; esac
SRV_ADDR=10.77.0.1
HTTP_PORT=${E2E_HTTP_PORT:-8080}
export SFU_URL="http://$SRV_ADDR:$HTTP_PORT"
export SFU_SECRET=${SFU_SECRET:-e2e-test-secret-$RANDOM$RANDOM}
E2E_LOG=${E2E_LOG:-$(mktemp /tmp/sfu-e2e-server.XXXXXX.log)}
TEST_TIMEOUT=${E2E_TIMEOUT:-540}

if [ "$(id -u)" != 0 ]; then
    echo "e2e/run.sh: needs root (ip netns)" >&2
    exit 2
fi
if [ ! -x "$SFU_BIN" ]; then
    echo "e2e/run.sh: no server binary at $SFU_BIN (cargo build -p sfu, or set SFU_BIN)" >&2
    exit 2
fi
if [ ! -d "$E2E_DIR/node_modules/playwright-core" ]; then
    (cd "$E2E_DIR" && npm ci --no-audit --no-fund)
fi

SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    bash "$E2E_DIR/netns.sh" down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$E2E_DIR/netns.sh" up

# `ip netns exec` execs the command, so $! is the server itself.
# No --advertise-ip: the default (every non-loopback IPv4 address, here the veth's) is
# what is tested.
RUST_LOG=${RUST_LOG:-info} ip netns exec sfu-srv "$SFU_BIN" \
    --http-listen "$SRV_ADDR:$HTTP_PORT" \
    --udp-ports 16384-16584 \
    >"$E2E_LOG" 2>&1 &
SERVER_PID=$!

ready=
for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        break
    fi
    if ip netns exec sfu-cli curl -fsS -m 1 "$SFU_URL/healthz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "e2e/run.sh: server did not become healthy at $SFU_URL; its log ($E2E_LOG):" >&2
    tail -n 50 "$E2E_LOG" >&2
    exit 1
fi

status=0
(cd "$REPO" && ip netns exec sfu-cli timeout "$TEST_TIMEOUT" \
    node --test --test-reporter=spec e2e/call.test.mjs) || status=$?

if [ "$status" != 0 ]; then
    echo "e2e/run.sh: tests failed ($status); server log tail ($E2E_LOG):" >&2
    tail -n 80 "$E2E_LOG" >&2
else
    echo "e2e/run.sh: server log in $E2E_LOG"
fi
exit "$status"

#!/usr/bin/env bash
# Runs the Chromium end-to-end tests against a real server (as root: it makes network
# namespaces). From anywhere:
#
#   bash e2e/run.sh                  # uses target/debug/sfu
#   SFU_BIN=target/release/sfu bash e2e/run.sh
#
# 1. e2e/netns.sh up: the server's namespace sfu-srv (10.77.0.1) and the clients' sfu-cli,
#    sfu-tcp and sfu-tls, each linked to it by a veth.
# 2. A self-signed certificate for 10.77.0.1, and the server in sfu-srv with a token
#    secret, ICE-TCP on 16384/tcp and its TURN relay on 3478 (UDP, TCP) and 5349 (TLS,
#    standing in for 443); its log in $E2E_LOG.
# 3. node --test e2e/*.test.mjs (one file at a time) in sfu-cli, where node, its child
#    processes (the GStreamer and aiortc clients) and most browsers run; the network
#    tests start some browsers in sfu-tcp and sfu-tls, the simulcast and SVC tests one in
#    sfu-tls (after the network tests are done with it); the drain tests start servers of
#    their own in sfu-srv (HTTP 8090) and stop them with SIGTERM, the HTTPS test one
#    (HTTPS 8443, with a CA and certificates of its own), the overload test one that
#    takes two participants (HTTP 8092), the cluster test three nodes (HTTP 8093-8095)
#    on a redis-server of its own (sfu-srv's 127.0.0.1:6390).
# 4. Server stopped, namespaces removed (also on failure or Ctrl-C).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/.." && pwd)

SFU_BIN=${SFU_BIN:-$REPO/target/debug/sfu}
case "$SFU_BIN" in /*) ;; *) SFU_BIN=$REPO/$SFU_BIN ;; esac
# The drain suite starts servers of its own with it.
export SFU_BIN
SRV_ADDR=10.77.0.1
HTTP_PORT=${E2E_HTTP_PORT:-8080}
export SFU_URL="http://$SRV_ADDR:$HTTP_PORT"
export SFU_SECRET=${SFU_SECRET:-e2e-test-secret-$RANDOM$RANDOM}
export E2E_LOG=${E2E_LOG:-$(mktemp /tmp/sfu-e2e-server.XXXXXX.log)}
# The server's test-only tap of what publishers send, in the E2EE suite's rooms only.
export E2E_TAP=${E2E_TAP:-$(mktemp /tmp/sfu-e2e-tap.XXXXXX.jsonl)}
TEST_TIMEOUT=${E2E_TIMEOUT:-1800}
TLS_PORT=5349
export E2E_TURN_TLS_PORT=$TLS_PORT

if [ "$(id -u)" != 0 ]; then
    echo "e2e/run.sh: needs root (ip netns)" >&2
    exit 2
fi
if [ ! -x "$SFU_BIN" ]; then
    echo "e2e/run.sh: no server binary at $SFU_BIN (cargo build -p sfu, or set SFU_BIN)" >&2
    exit 2
fi
if [ ! -d "$E2E_DIR/node_modules/playwright-core" ] || [ ! -d "$E2E_DIR/node_modules/standardwebhooks" ]; then
    (cd "$E2E_DIR" && npm ci --no-audit --no-fund)
fi

SERVER_PID=
CERT_DIR=$(mktemp -d /tmp/sfu-e2e-cert.XXXXXX)
cleanup() {
    rm -rf "$CERT_DIR"
    rm -f "$E2E_TAP" # test media, not kept
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # SIGINT stops at once (SIGTERM would drain).
        kill -INT "$SERVER_PID" 2>/dev/null || true
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

# TURN over TLS needs a certificate; the browsers are started with
# --ignore-certificate-errors (lib.mjs), so a self-signed one for the address will do.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$SRV_ADDR" -addext "subjectAltName=IP:$SRV_ADDR" \
    -keyout "$CERT_DIR/key.pem" -out "$CERT_DIR/cert.pem" 2>/dev/null

# `ip netns exec` execs the command, so $! is the server itself.
# No --advertise-ip: the default (every non-loopback IPv4 address, here the veth's) is
# what is tested. No load limit: a debug build on a shared machine may spend most of a
# second on a burst of joins, and the suites' joins must not be turned away for it (the
# overload suite's server has limits of its own).
SFU_LOG=${SFU_LOG:-${RUST_LOG:-info}} ip netns exec sfu-srv "$SFU_BIN" \
    --http-listen "$SRV_ADDR:$HTTP_PORT" \
    --max-load 0 \
    --udp-ports 16384-16584 \
    --tcp-port 16384 \
    --turn-tls-listen "$SRV_ADDR:$TLS_PORT" --turn-tls-host "$SRV_ADDR" \
    --turn-cert "$CERT_DIR/cert.pem" --turn-key "$CERT_DIR/key.pem" \
    --tap "$E2E_TAP" --tap-rooms e2e-e2ee- \
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
    node --test --test-concurrency=1 --test-reporter=spec ${E2E_TESTS:-e2e/call.test.mjs e2e/e2ee.test.mjs e2e/e2ee-codecs.test.mjs e2e/network.test.mjs e2e/simulcast.test.mjs e2e/svc.test.mjs e2e/broadcast.test.mjs e2e/whip.test.mjs e2e/slots.test.mjs e2e/aiortc.test.mjs e2e/adaptation.test.mjs e2e/drain.test.mjs e2e/tls.test.mjs e2e/overload.test.mjs e2e/admin.test.mjs e2e/cluster.test.mjs}) || status=$?

if [ "$status" != 0 ]; then
    echo "e2e/run.sh: tests failed ($status); server log tail ($E2E_LOG):" >&2
    tail -n 80 "$E2E_LOG" >&2
else
    echo "e2e/run.sh: server log in $E2E_LOG"
fi
exit "$status"

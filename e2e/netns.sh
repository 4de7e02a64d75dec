#!/usr/bin/env bash
# Network namespaces for the browser end-to-end tests (run as root).
#
#   e2e/netns.sh up     create sfu-srv and sfu-cli joined by a veth pair (idempotent)
#   e2e/netns.sh down   remove them
#
#   sfu-srv: veth sfu-v-srv 10.77.0.1/24, lo up   (the SFU runs here)
#   sfu-cli: veth sfu-v-cli 10.77.0.2/24, lo up   (node + Chromium run here)
#
# Chromium gathers no ICE candidates on `lo`, so the browser needs a real interface with a
# real address: the veth. All test traffic stays between these two namespaces.
set -euo pipefail

SRV_NS=${SFU_NETNS_SRV:-sfu-srv}
CLI_NS=${SFU_NETNS_CLI:-sfu-cli}
SRV_IF=sfu-v-srv
CLI_IF=sfu-v-cli
SRV_ADDR=10.77.0.1
CLI_ADDR=10.77.0.2
PREFIX=24

down() {
    ip netns del "$SRV_NS" 2>/dev/null || true
    ip netns del "$CLI_NS" 2>/dev/null || true
    # A veth end left in the root namespace by an interrupted run.
    ip link del "$SRV_IF" 2>/dev/null || true
    ip link del "$CLI_IF" 2>/dev/null || true
}

up() {
    down
    ip netns add "$SRV_NS"
    ip netns add "$CLI_NS"
    ip link add "$SRV_IF" type veth peer name "$CLI_IF"
    ip link set "$SRV_IF" netns "$SRV_NS"
    ip link set "$CLI_IF" netns "$CLI_NS"
    ip -n "$SRV_NS" addr add "$SRV_ADDR/$PREFIX" dev "$SRV_IF"
    ip -n "$CLI_NS" addr add "$CLI_ADDR/$PREFIX" dev "$CLI_IF"
    for ns in "$SRV_NS" "$CLI_NS"; do
        ip -n "$ns" link set lo up
    done
    ip -n "$SRV_NS" link set "$SRV_IF" up
    ip -n "$CLI_NS" link set "$CLI_IF" up
    # veth comes up asynchronously: wait (bounded) until both ends report LOWER_UP.
    for _ in $(seq 1 50); do
        if ip -n "$SRV_NS" link show dev "$SRV_IF" | grep -q LOWER_UP &&
           ip -n "$CLI_NS" link show dev "$CLI_IF" | grep -q LOWER_UP; then
            return 0
        fi
        sleep 0.1
    done
    echo "netns.sh: veth $SRV_IF/$CLI_IF did not come up" >&2
    return 1
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Network namespaces for the browser end-to-end tests (run as root).
#
#   e2e/netns.sh up     create them (idempotent: removes leftovers first)
#   e2e/netns.sh down   remove them
#
#   sfu-srv   the SFU runs here; one veth per client namespace:
#               sfu-v-srv 10.77.0.1/24, sfu-v-srv1 10.77.1.1/24, sfu-v-srv2 10.77.2.1/24
#   sfu-cli   node and most browsers: sfu-v-cli 10.77.0.2/24        (an open network)
#   sfu-tcp   a browser on a network that drops UDP: sfu-v-tcp 10.77.1.2/24
#   sfu-tls   a browser on a network that passes only TCP to two ports: sfu-v-tls 10.77.2.2/24
#
# sfu-tcp and sfu-tls route everything through sfu-srv (default route), so they reach the
# server at 10.77.0.1 like sfu-cli does. Their nftables rules are the tests' business
# (e2e/network.test.mjs sets them); here they are plain links.
#
# Chromium gathers no ICE candidates on `lo`, so the browser needs a real interface with a
# real address: a veth. All test traffic stays between these namespaces.
set -euo pipefail

SRV_NS=sfu-srv
CLIENTS=(sfu-cli sfu-tcp sfu-tls)

down() {
    for ns in "$SRV_NS" "${CLIENTS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    # veth ends left in the root namespace by an interrupted run.
    for dev in sfu-v-srv sfu-v-srv1 sfu-v-srv2 sfu-v-cli sfu-v-tcp sfu-v-tls; do
        ip link del "$dev" 2>/dev/null || true
    done
}

# link NS SRV_IF SRV_ADDR CLI_IF CLI_ADDR: a veth pair from sfu-srv to NS.
link() {
    local ns=$1 srv_if=$2 srv_addr=$3 cli_if=$4 cli_addr=$5
    ip netns add "$ns"
    ip link add "$srv_if" type veth peer name "$cli_if"
    ip link set "$srv_if" netns "$SRV_NS"
    ip link set "$cli_if" netns "$ns"
    ip -n "$SRV_NS" addr add "$srv_addr/24" dev "$srv_if"
    ip -n "$ns" addr add "$cli_addr/24" dev "$cli_if"
    ip -n "$ns" link set lo up
    ip -n "$SRV_NS" link set "$srv_if" up
    # The SFU sends a frame's packets to one client as one segmented message (UDP GSO),
    # which a NIC splits before the wire: a router, and a policer, sees each packet. A
    # veth would carry the message whole to the client's namespace, where the tests'
    # nftables policers would see one 12 kB packet: split it here, as a NIC does.
    ip -n "$SRV_NS" link set dev "$srv_if" gso_max_segs 1
    ip -n "$ns" link set "$cli_if" up
    if [ "$srv_addr" != 10.77.0.1 ]; then
        ip -n "$ns" route add default via "$srv_addr"
    fi
    # veth comes up asynchronously: wait (bounded) until both ends report LOWER_UP.
    for _ in $(seq 1 50); do
        if ip -n "$SRV_NS" link show dev "$srv_if" | grep -q LOWER_UP &&
           ip -n "$ns" link show dev "$cli_if" | grep -q LOWER_UP; then
            return 0
        fi
        sleep 0.1
    done
    echo "netns.sh: veth $srv_if/$cli_if did not come up" >&2
    return 1
}

up() {
    down
    ip netns add "$SRV_NS"
    ip -n "$SRV_NS" link set lo up
    link sfu-cli sfu-v-srv 10.77.0.1 sfu-v-cli 10.77.0.2
    link sfu-tcp sfu-v-srv1 10.77.1.1 sfu-v-tcp 10.77.1.2
    link sfu-tls sfu-v-srv2 10.77.2.1 sfu-v-tls 10.77.2.2
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

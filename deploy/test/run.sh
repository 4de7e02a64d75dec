#!/usr/bin/env bash
# Tests of deploy/ (run by scripts/test; as root, for the network namespace):
#  - the systemd unit passes `systemd-analyze verify` (a copy whose ExecStart is the built
#    binary, as verify needs the program to exist) and `systemd-analyze security` scores
#    its exposure under 3.0 (printed); the server runs under it, started by a systemd
#    of its own in private namespaces (deploy/test/systemd-ns.sh), or the test says why
#    it could not;
#  - the sysctl drop-in raises the socket buffer caps to what netio's sockets ask for;
#  - the sample config starts the real server (in a network namespace made here, with the
#    secret and address given as systemd and compose give them) under a fake
#    NOTIFY_SOCKET: READY=1, WATCHDOG=1 at the watchdog's half, STOPPING=1 on SIGTERM,
#    then a clean exit; the Dockerfile's HEALTHCHECK script passes against it and fails
#    against a port nothing listens on;
#  - every metric the Grafana dashboard queries is in that server's /metrics or a cluster
#    node's (below), and `promtool check metrics` finds nothing but the known finding;
#  - `promtool check config` passes the Prometheus config;
#  - the Kubernetes manifests, compose file (`docker-compose config`, client side: there
#    is no Docker daemon here, so no image is built) and Dockerfile have what issue 18
#    names (deploy/test/check.py), and each of those checks fails on a broken copy;
#  - the cluster: the DaemonSet makes each server a node of its own (name, public URL)
#    on the Redis of kubernetes/redis.yaml; compose.cluster.yaml's nodes share one Redis
#    and the secrets, differ in name, public URL and every port, and are each scraped
#    (prometheus.cluster.yml passes `promtool check config`); every SFU_ variable any
#    of these sets is one `sfu serve --help` names (check.py says what else);
#  - compose.cluster.yaml's nodes run as it configures them (its environment, its Redis
#    command with Debian's redis-server, in the network namespace): /readyz 503
#    redis_unreachable until Redis answers, then each is ready and counts every node,
#    and a node stopped with SIGTERM drains, exits 0 and leaves the others' count.
set -euo pipefail
cd "$(dirname "$0")/../.."

SFU_BIN=$(realpath "${SFU_BIN:-target/debug/sfu}")
PY=/usr/bin/python3 # Debian's, with python3-yaml
CHECK="$PY deploy/test/check.py"
tmp=$(mktemp -d)
help="$tmp/help" # the variables a deployment may set are the ones it names
ns=sfu-deploy-$$
server=
listener=
nodes=() # the cluster's servers and its Redis, by pid
cleanup() {
  [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
  [ -n "$listener" ] && kill "$listener" 2>/dev/null || true
  for pid in "${nodes[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
say() { echo "deploy/test: $*" >&2; }
fail() {
  say "FAILED: $*"
  for log in "$tmp"/sfu*.log "$tmp/redis.log"; do
    [ -f "$log" ] && { echo "--- $log" && tail -n 20 "$log"; } >&2
  done
  exit 1
}
# Waits up to $1 seconds for the fixed string $2 in file $3.
wait_for() {
  for _ in $(seq $(($1 * 10))); do
    grep -qF "$2" "$3" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# --- systemd ---------------------------------------------------------------------------
unit=deploy/systemd/sfu.service
sed "s#^ExecStart=/usr/local/bin/sfu #ExecStart=$SFU_BIN #" "$unit" >"$tmp/sfu.service"
grep -q "^ExecStart=$SFU_BIN " "$tmp/sfu.service" || fail "no ExecStart=/usr/local/bin/sfu in $unit"
verify=$(systemd-analyze verify "$tmp/sfu.service" 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
say "systemd-analyze verify: $unit passes (ExecStart pointed at $SFU_BIN)"
score=$(systemd-analyze security --offline=true "$tmp/sfu.service" 2>&1 |
  sed -n 's/.*Overall exposure level for sfu.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security printed no exposure level"
awk -v s="$score" 'BEGIN { exit !(s < 3.0) }' || fail "exposure $score is not under 3.0"
say "systemd-analyze security: exposure $score (under 3.0)"
for key in TimeoutStopSec=3660 Type=notify WatchdogSec= CapabilityBoundingSet=CAP_NET_BIND_SERVICE; do
  grep -q "^$key" "$unit" || fail "$unit lacks $key"
done
# The server under the unit, started by systemd: PID 1 here is not systemd, so a systemd
# of its own runs in private namespaces over a throwaway root (systemd-ns.sh says how).
ns_status=0
bash deploy/test/systemd-ns.sh "$SFU_BIN" || ns_status=$?
case $ns_status in
  0) ;;
  77) say "systemd: NOT RUN under the unit (systemd-ns.sh said why above)" ;;
  *) fail "the server under the unit (deploy/test/systemd-ns.sh)" ;;
esac

# --- sysctl ----------------------------------------------------------------------------
want=$(sed -n 's/^pub const SOCKET_BUFFER: usize = \(.*\);/\1/p' netio/src/udp.rs)
want=$((want))
[ "$want" -gt 0 ] || fail "no SOCKET_BUFFER in netio/src/udp.rs"
for key in net.core.rmem_max net.core.wmem_max; do
  value=$(sed -n "s/^$key *= *\([0-9]*\)$/\1/p" deploy/systemd/99-sfu.conf)
  [ -e "/proc/sys/${key//.//}" ] || fail "no such sysctl $key"
  [ "${value:-0}" -ge "$want" ] || fail "99-sfu.conf: $key=${value:-unset}, sockets ask $want"
done
say "sysctl: 99-sfu.conf raises rmem_max and wmem_max to $want"

# --- The server: sd_notify, health check, metrics -------------------------------------
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
head -c 32 /dev/urandom | base64 >"$tmp/secret"
chmod 600 "$tmp/secret"
# systemd's side of sd_notify: a datagram socket, each message logged on one line.
$PY -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "w") as log:
    while True:
        log.write(s.recv(4096).decode().replace("\n", " ") + "\n")
        log.flush()
' "$tmp/notify.sock" "$tmp/notify.log" &
listener=$!
for _ in $(seq 50); do [ -S "$tmp/notify.sock" ] && break; sleep 0.1; done
ip netns exec "$ns" env NOTIFY_SOCKET="$tmp/notify.sock" WATCHDOG_USEC=1000000 \
  SFU_SECRET_FILE="$tmp/secret" SFU_ADVERTISE_IP=127.0.0.1 \
  "$SFU_BIN" --config deploy/sfu.example.toml >"$tmp/sfu.log" 2>&1 &
server=$!
in_ns() { ip netns exec "$ns" "$@"; }
wait_for 30 "READY=1" "$tmp/notify.log" || fail "no READY=1 from the server"
code=$(in_ns curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz)
[ "$code" = 200 ] || fail "READY=1 before /healthz answers ($code)"
wait_for 3 "WATCHDOG=1" "$tmp/notify.log" || fail "no WATCHDOG=1 within 3 s (WatchdogSec=1)"
say "sd_notify: READY=1 once serving, WATCHDOG=1 pings: $(sort -u "$tmp/notify.log" | tr '\n' '|')"

health=$($CHECK healthcheck-script deploy/Dockerfile)
in_ns bash -c "$health" || fail "the Dockerfile's HEALTHCHECK fails against a healthy server"
if in_ns env SFU_HEALTH_PORT=1 bash -c "$health" 2>/dev/null; then
  fail "the Dockerfile's HEALTHCHECK passes with nothing listening"
fi
say "Dockerfile HEALTHCHECK: passes against the server, fails on a port with none"

in_ns $CHECK ws-error ws://127.0.0.1:8080/ws >&2 || fail "no signaling error could be made"
in_ns curl -sf http://127.0.0.1:8080/metrics >"$tmp/metrics" || fail "no /metrics"
# (The dashboard is checked below, with a cluster node's metrics too.)
# Known: promtool's lint wants seconds, not milliseconds, in sfu_video_frozen_ms_total's
# name (a rename across the shard core, e2e and bench; not done here). Anything else fails.
lint=$(promtool check metrics <"$tmp/metrics" 2>&1 | grep -v '^sfu_video_frozen_ms_total metric names should not contain abbreviated units$' || true)
[ -z "$lint" ] || fail "promtool check metrics: $lint"
say "promtool check metrics: clean but for the known sfu_video_frozen_ms_total unit lint"

kill -TERM "$server"
wait_for 5 "STOPPING=1" "$tmp/notify.log" || fail "no STOPPING=1 when the drain began"
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
kill -0 "$server" 2>/dev/null && fail "the server did not exit after draining no call"
status=0
wait "$server" || status=$?
server=
[ "$status" = 0 ] || fail "the server exited $status after the drain"
say "sd_notify: STOPPING=1 on SIGTERM, then the drained server exited 0"

# --- Prometheus, Kubernetes, compose, Dockerfile --------------------------------------
"$SFU_BIN" serve --help >"$help" || fail "sfu serve --help"
promtool check config deploy/prometheus/prometheus.yml >&2
promtool check config deploy/prometheus/prometheus.cluster.yml >&2
$CHECK kubernetes deploy/kubernetes "$help" >&2
if (cd deploy && env -u SFU_ADVERTISE_IP docker-compose -f compose.yaml config >/dev/null 2>&1); then
  fail "compose starts without SFU_ADVERTISE_IP"
fi
(cd deploy && SFU_ADVERTISE_IP=192.0.2.1 docker-compose -f compose.yaml config) >"$tmp/compose.yaml" ||
  fail "docker-compose config"
$CHECK compose "$tmp/compose.yaml" "$help" >&2
cluster=(docker-compose -f compose.cluster.yaml config)
for unset in SFU_ADVERTISE_IP REDIS_PASSWORD; do
  if (cd deploy && env SFU_ADVERTISE_IP=192.0.2.1 REDIS_PASSWORD=ab -u "$unset" \
    "${cluster[@]}" >/dev/null 2>&1); then
    fail "compose.cluster.yaml starts without $unset"
  fi
done
(cd deploy && SFU_ADVERTISE_IP=192.0.2.1 REDIS_PASSWORD=ab "${cluster[@]}") >"$tmp/cluster.yaml" ||
  fail "docker-compose -f compose.cluster.yaml config"
$CHECK compose-cluster "$tmp/cluster.yaml" "$help" >&2
$CHECK dockerfile deploy/Dockerfile >&2
say "not run: docker build and docker compose up (no Docker daemon on this machine)"
$CHECK selftest "$help" >&2

# --- The cluster as compose.cluster.yaml configures it, in the network namespace -------
# Its nodes' environment with the host's address 127.0.0.1, and files of here for the
# container's: the config, the two secrets.
password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
(cd deploy && SFU_ADVERTISE_IP=127.0.0.1 REDIS_PASSWORD=$password "${cluster[@]}") >"$tmp/cluster.yaml" ||
  fail "docker-compose -f compose.cluster.yaml config"
head -c 32 /dev/urandom | base64 >"$tmp/admin-secret"
chmod 600 "$tmp/admin-secret"
mapfile -t names < <(cd deploy && SFU_ADVERTISE_IP=127.0.0.1 REDIS_PASSWORD=ab \
  "${cluster[@]}" --services | grep '^sfu-' | sort)
[ "${#names[@]}" -ge 2 ] || fail "compose.cluster.yaml has ${#names[@]} sfu- services"
declare -A port node_pid
for name in "${names[@]}"; do
  mapfile -t vars < <($CHECK compose-env "$tmp/cluster.yaml" "$name")
  port[$name]=$(printf '%s\n' "${vars[@]}" | sed -n 's/^SFU_HTTP_LISTEN=.*:\([0-9]*\)$/\1/p')
  ip netns exec "$ns" env "${vars[@]}" SFU_CONFIG=deploy/sfu.example.toml \
    SFU_SECRET_FILE="$tmp/secret" SFU_ADMIN_SECRET_FILE="$tmp/admin-secret" \
    "$SFU_BIN" >"$tmp/$name.log" 2>&1 &
  node_pid[$name]=$!
  nodes+=("$!")
done
# Waits up to $1 seconds for `curl -s $2` in the namespace to print the line $3.
wait_answer() {
  for _ in $(seq $(($1 * 10))); do
    in_ns curl -s "$2" 2>/dev/null | grep -qx "$3" && return 0
    sleep 0.1
  done
  return 1
}
for name in "${names[@]}"; do
  wait_answer 10 "http://127.0.0.1:${port[$name]}/readyz" redis_unreachable ||
    fail "$name: /readyz does not say redis_unreachable before Redis runs"
done
say "cluster: ${names[*]} run (HTTP ${port[*]}), /readyz 503 redis_unreachable without Redis"
mapfile -d '' redis < <($CHECK compose-command "$tmp/cluster.yaml" redis)
(cd "$tmp" && exec ip netns exec "$ns" "${redis[@]}") >"$tmp/redis.log" 2>&1 &
nodes+=("$!")
for name in "${names[@]}"; do
  wait_answer 10 "http://127.0.0.1:${port[$name]}/readyz" ready ||
    fail "$name: not ready once Redis runs"
  wait_answer 10 "http://127.0.0.1:${port[$name]}/metrics" "sfu_cluster_nodes ${#names[@]}" ||
    fail "$name does not count ${#names[@]} nodes"
done
say "cluster: with compose's Redis command, each node is ready and counts ${#names[@]}"
in_ns curl -sf "http://127.0.0.1:${port[${names[0]}]}/metrics" >"$tmp/cluster-metrics" ||
  fail "no /metrics from ${names[0]}"
cat "$tmp/metrics" "$tmp/cluster-metrics" >"$tmp/all-metrics"
$CHECK dashboard deploy/grafana/dashboards/sfu.json "$tmp/all-metrics" >&2 || fail "dashboard"
say "dashboard: every metric it queries is on a server's /metrics, a cluster node's included"
stopped=${names[1]}
in_ns env SFU_HEALTH_PORT="${port[$stopped]}" bash -c "$health" ||
  fail "the Dockerfile's HEALTHCHECK fails against $stopped"
kill -TERM "${node_pid[$stopped]}"
for _ in $(seq 100); do kill -0 "${node_pid[$stopped]}" 2>/dev/null || break; sleep 0.1; done
kill -0 "${node_pid[$stopped]}" 2>/dev/null && fail "$stopped did not exit after draining no call"
status=0
wait "${node_pid[$stopped]}" || status=$?
[ "$status" = 0 ] || fail "$stopped exited $status after the drain"
for name in "${names[@]}"; do
  [ "$name" = "$stopped" ] && continue
  wait_answer 10 "http://127.0.0.1:${port[$name]}/metrics" "sfu_cluster_nodes $((${#names[@]} - 1))" ||
    fail "$name still counts $stopped after it stopped"
done
say "cluster: $stopped (HEALTHCHECK on its port passes) drained on SIGTERM, exited 0, left"
# The others and Redis stop on SIGTERM too; what has not within 10 s, cleanup kills.
for pid in "${nodes[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${nodes[@]}"; do
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null || wait "$pid" 2>/dev/null || true
done
say "every deploy/ check passed"

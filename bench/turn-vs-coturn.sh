#!/usr/bin/env bash
# TURN relay: our `sfu turn` against coturn's `turnserver`, side by side in one run, under
# the same `turnutils_uclient` load. Prints relayed packets/s, cores used, packets/s per
# core and loss for each, and appends one JSON line to bench/results/turn-vs-coturn.json.
#
# Usage: bench/turn-vs-coturn.sh            (see bench/README.md)
#   env: CLIENTS MESSAGES SIZE INTERVAL_MS  the uclient load (-m -n -l -z)
#        SERVERS="ours coturn"              which servers, in this order
#        SFU_BIN=path                       use this sfu binary instead of target/release/sfu
#        SERVER_CPU=0 LOAD_CPU=1            CPUs the server and the load are pinned to
#        PORT PEER_PORT OURS_RELAY_PORTS COTURN_MIN_PORT COTURN_MAX_PORT   loopback ports
#        COTURN_RELAY_THREADS=1             coturn's --relay-threads
#        TIMEOUT=seconds                    bound on one uclient run (default: from the load)
#        RESULTS=path                       where the JSON line goes
#
# Everything stays on 127.0.0.1; every process it starts is bounded by `timeout` and ended
# by its pid on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CLIENTS=${CLIENTS:-50}
MESSAGES=${MESSAGES:-20000}
SIZE=${SIZE:-100}
INTERVAL_MS=${INTERVAL_MS:-1}
SERVERS=${SERVERS:-"ours coturn"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-35781}
PEER_PORT=${PEER_PORT:-35791}
OURS_RELAY_PORTS=${OURS_RELAY_PORTS:-46100-46199}
COTURN_MIN_PORT=${COTURN_MIN_PORT:-46200}
COTURN_MAX_PORT=${COTURN_MAX_PORT:-46299}
COTURN_RELAY_THREADS=${COTURN_RELAY_THREADS:-1}
SFU_BIN=${SFU_BIN:-}
RESULTS=${RESULTS:-$ROOT/bench/results/turn-vs-coturn.json}
USER_NAME=bench
USER_PASS=benchpass
REALM=bench
# uclient starts each client 1-6 s after the allocations, sends MESSAGES at INTERVAL_MS,
# then waits up to 10 s for stragglers: bound the run well past that.
TIMEOUT=${TIMEOUT:-$(( 60 + 2 * MESSAGES * INTERVAL_MS / 1000 ))}

die() { echo "turn-vs-coturn: $*" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------------------------
for tool in turnserver turnutils_uclient turnutils_peer; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: install coturn (Debian/Ubuntu: apt-get install -y coturn)"
done
for tool in taskset timeout ss awk; do
    command -v "$tool" >/dev/null || die "$tool not found (util-linux, coreutils, iproute2, gawk/mawk)"
done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs: one for the server, one for the load"
CLK_TCK=$(getconf CLK_TCK)
# this script and its helpers (samplers, awk, ss) run on the load CPU, away from the server's
taskset -p -c "$LOAD_CPU" $$ >/dev/null

# --- our binary: build it when missing or older than its sources ---------------------------
if [[ " $SERVERS " == *" ours "* ]]; then
    if [ -z "$SFU_BIN" ]; then
        SFU_BIN=$ROOT/target/release/sfu
        newer=""
        if [ -x "$SFU_BIN" ]; then
            newer=$(find "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$ROOT/sfu" "$ROOT/turn" \
                "$ROOT/signaling" -newer "$SFU_BIN" -type f \( -name '*.rs' -o -name 'Cargo.*' \) \
                -print -quit 2>/dev/null || true)
        fi
        if [ ! -x "$SFU_BIN" ] || [ -n "$newer" ]; then
            echo "building target/release/sfu (cargo build --release -p sfu) ..." >&2
            (cd "$ROOT" && nice -n 10 cargo build --release -p sfu) ||
                die "build failed (set SFU_BIN=/path/to/sfu to bench a binary built elsewhere)"
        fi
    fi
    [ -x "$SFU_BIN" ] || die "no sfu binary at $SFU_BIN"
    "$SFU_BIN" turn --help >/dev/null 2>&1 || die "$SFU_BIN has no 'turn' subcommand"
fi

# --- ports must be free --------------------------------------------------------------------
busy() { ss -Hlnu "sport = :$1" | grep -q . || ss -Hlnt "sport = :$1" | grep -q .; }
for p in "$PORT" "$PEER_PORT"; do busy "$p" && die "port $p is in use on this machine"; done
for p in $(seq "${OURS_RELAY_PORTS%-*}" "${OURS_RELAY_PORTS#*-}") $(seq "$COTURN_MIN_PORT" "$COTURN_MAX_PORT"); do
    busy "$p" && die "relay port $p is in use"
done

WORK=$(mktemp -d /tmp/turn-vs-coturn.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# receive-buffer drops. /proc/net/udp has one line per socket with its drop count (last
# column); sockets come and go (coturn opens relay sockets per allocation and closes them at
# the end), so a sampler snapshots "port inode drops" twice a second during the load.
udp_snapshot() {
    awk 'NR > 1 { split($2, a, ":"); p = 0; h = a[2]
        for (i = 1; i <= length(h); i++) p = p * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1
        print p, $10, $NF }' /proc/net/udp
}
# drops that happened during the load on sockets bound to ports LO..HI, from the first
# snapshot (the baseline) and the samples: per socket, the highest count seen less its baseline
drops_in() { # baseline samples lo hi
    awk -v lo="$3" -v hi="$4" 'FNR == NR { base[$2] = $3; next }
        $1 >= lo && $1 <= hi { if (!($2 in max) || $3 > max[$2]) max[$2] = $3 }
        END { for (k in max) n += max[k] - base[k]; print n + 0 }' "$1" "$2"
}
rcvbuf_errors() {
    awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# utime+stime of a process (all its threads), in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now_ns() { date +%s%N; }
# waits until something listens on UDP 127.0.0.1:$1 (at most 10 s)
wait_udp() {
    for _ in $(seq 100); do
        ss -Hlnu "sport = :$1" | grep -q . && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_server() { # name -> sets SERVER_PID
    local name=$1
    case $name in
    ours)
        timeout --signal=TERM $((TIMEOUT + 60)) taskset -c "$SERVER_CPU" "$SFU_BIN" turn \
            --listen "127.0.0.1:$PORT" --realm "$REALM" --user "$USER_NAME:$USER_PASS" \
            --allow-peer 127.0.0.1/32 --relay-ports "$OURS_RELAY_PORTS" \
            --relay-ip 127.0.0.1 --relay-bind 127.0.0.1 \
            --max-allocations-per-user 100000 --log info \
            >"$WORK/ours.log" 2>&1 &
        ;;
    coturn)
        timeout --signal=TERM $((TIMEOUT + 60)) taskset -c "$SERVER_CPU" turnserver -n \
            --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$PORT" \
            --min-port "$COTURN_MIN_PORT" --max-port "$COTURN_MAX_PORT" \
            --relay-threads "$COTURN_RELAY_THREADS" \
            --lt-cred-mech --user "$USER_NAME:$USER_PASS" --realm "$REALM" \
            --allow-loopback-peers --no-tls --no-dtls --no-cli \
            --userdb "$WORK/coturn.sqlite" --pidfile "$WORK/coturn.pid" --log-file "$WORK/coturn.log" --simple-log \
            >"$WORK/coturn.stdout" 2>&1 &
        ;;
    *) die "unknown server $name (ours or coturn)" ;;
    esac
    local wrapper=$!
    PIDS+=("$wrapper")
    # the pid whose /proc/stat we read: the server itself, not `timeout`
    SERVER_PID=""
    for _ in $(seq 50); do
        SERVER_PID=$(pgrep -P "$wrapper" | head -n1 || true)
        [ -n "$SERVER_PID" ] && break
        sleep 0.1
    done
    [ -n "$SERVER_PID" ] || die "$name did not start"
    wait_udp "$PORT" "$SERVER_PID" || { cat "$WORK/$name"*.log* >&2 || true; die "$name does not listen on $PORT"; }
    SERVER_WRAPPER=$wrapper
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_WRAPPER" 2>/dev/null || true
}

# uclient's CPU: the children times of a subshell that waited for it
parse_times() { # "0m1.230s 0m0.450s" (children line of `times`) -> seconds
    awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } printf "%.3f", n }'
}

run_one() { # name -> writes $WORK/$name.result (key=value lines)
    local name=$1
    start_server "$name"
    timeout $((TIMEOUT + 30)) taskset -c "$LOAD_CPU" turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" \
        >"$WORK/$name.peer.log" 2>&1 &
    local peer_wrapper=$!
    PIDS+=("$peer_wrapper")
    local peer_pid="" relay_lo
    for _ in $(seq 50); do
        peer_pid=$(pgrep -P "$peer_wrapper" | head -n1 || true)
        [ -n "$peer_pid" ] && break
        sleep 0.1
    done
    wait_udp "$PEER_PORT" "$peer_pid" || die "turnutils_peer does not listen on $PEER_PORT"
    sleep 0.5

    local relay_lo relay_hi s0 p0 t0 s1 p1 t1 e0 e1 rc=0 sampler
    if [ "$name" = ours ]; then relay_lo=${OURS_RELAY_PORTS%-*}; relay_hi=${OURS_RELAY_PORTS#*-}
    else relay_lo=$COTURN_MIN_PORT; relay_hi=$COTURN_MAX_PORT; fi
    udp_snapshot >"$WORK/$name.udp.base"
    : >"$WORK/$name.udp.samples"
    (
        i=0
        while :; do
            udp_snapshot >>"$WORK/$name.udp.samples"
            # the receive buffers the server's sockets got (skmem rb), once the load runs
            [ $i -eq 16 ] && ss -Huanm "( sport = :$PORT or ( sport >= :$relay_lo and sport <= :$relay_hi ) )" \
                >"$WORK/$name.skmem" 2>/dev/null
            i=$((i + 1))
            sleep 0.5
        done
    ) &
    sampler=$!
    PIDS+=("$sampler")
    e0=$(rcvbuf_errors)
    s0=$(cpu_ticks "$SERVER_PID"); p0=$(cpu_ticks "$peer_pid"); t0=$(now_ns)
    (
        rc=0
        timeout "$TIMEOUT" taskset -c "$LOAD_CPU" turnutils_uclient -p "$PORT" \
            -u "$USER_NAME" -w "$USER_PASS" -e 127.0.0.1 -r "$PEER_PORT" \
            -m "$CLIENTS" -n "$MESSAGES" -l "$SIZE" -z "$INTERVAL_MS" -c 127.0.0.1 \
            >"$WORK/$name.uclient.log" 2>&1 || rc=$?
        times >"$WORK/$name.times"
        exit "$rc"
    ) || rc=$?
    t1=$(now_ns); s1=$(cpu_ticks "$SERVER_PID"); p1=$(cpu_ticks "$peer_pid")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    udp_snapshot >>"$WORK/$name.udp.samples"
    e1=$(rcvbuf_errors)
    tail -n1 "$WORK/$name.times" | parse_times >"$WORK/$name.uclient.cpu"
    local d_srv d_peer rb_listen rb_relay
    d_srv=$(( $(drops_in "$WORK/$name.udp.base" "$WORK/$name.udp.samples" "$PORT" "$PORT") +
        $(drops_in "$WORK/$name.udp.base" "$WORK/$name.udp.samples" "$relay_lo" "$relay_hi") ))
    d_peer=$(drops_in "$WORK/$name.udp.base" "$WORK/$name.udp.samples" "$PEER_PORT" "$PEER_PORT")
    rb_listen=$(awk -v p=":$PORT" '$4 ~ p"$" { getline; if (match($0, /rb[0-9]+/)) print substr($0, RSTART + 2, RLENGTH - 2); exit }' "$WORK/$name.skmem" 2>/dev/null || true)
    rb_relay=$(awk -v p=":$PORT" '$1 !~ /^skmem/ && $4 !~ p"$" { getline; if (match($0, /rb[0-9]+/)) print substr($0, RSTART + 2, RLENGTH - 2); exit }' "$WORK/$name.skmem" 2>/dev/null || true)
    kill "$peer_pid" 2>/dev/null || true
    wait "$peer_wrapper" 2>/dev/null || true
    stop_server

    local log=$WORK/$name.uclient.log
    if [ "$rc" -ne 0 ]; then
        echo "--- $name: turnutils_uclient exited with $rc (124: timed out after ${TIMEOUT}s); its last lines:" >&2
        tail -n 15 "$log" >&2
    fi
    local sent recv lost lost_pct ttime relayed=""
    sent=$(sed -n 's/.*tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)$/\1/p' "$log" | tail -n1)
    recv=$(sed -n 's/.*tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)$/\2/p' "$log" | tail -n1)
    lost=$(sed -n 's/.*Total lost packets \([0-9]*\) (\([0-9.]*\)%.*/\1/p' "$log" | tail -n1)
    lost_pct=$(sed -n 's/.*Total lost packets \([0-9]*\) (\([0-9.]*\)%.*/\2/p' "$log" | tail -n1)
    ttime=$(sed -n 's/.*Total transmit time is \([0-9]*\).*/\1/p' "$log" | tail -n1)
    # the active window, from uclient's once-a-second progress lines ("T: : ... tot_send_msgs=S,
    # tot_recv_msgs=R, ..."): from the last second nothing had been sent yet to the first
    # second the received count reached its final value. Excludes the allocations before and
    # the 10 s uclient waits for stragglers after, when packets were lost.
    local active
    active=$(awk -v final="${recv:-0}" '/start_mclient: msz=/ {
            t = $1 + 0; s = $0; r = $0
            sub(/.*tot_send_msgs=/, "", s); s += 0
            sub(/.*tot_recv_msgs=/, "", r); r += 0
            if (s == 0) first = t
            if (r >= final && last == "") last = t
        }
        /Total transmit time/ { end = $1 + 0 }
        END { if (last == "") last = end; if (last != "" && last > first) print last - first; else print "NA" }' "$log")
    if [ "$name" = ours ]; then
        relayed=$(sed -n 's/.*relayed \([0-9]*\) packets.*/\1/p' "$WORK/ours.log" | tail -n1)
    fi
    {
        echo "rc=$rc"
        echo "sent=${sent:-0}"
        echo "recv=${recv:-0}"
        echo "lost=${lost:-NA}"
        echo "lost_pct=${lost_pct:-NA}"
        echo "transmit_s=${ttime:-NA}"
        echo "active_s=$active"
        echo "wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
        echo "server_cpu_s=$(awk -v a="$s0" -v b="$s1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')"
        echo "peer_cpu_s=$(awk -v a="$p0" -v b="$p1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')"
        echo "uclient_cpu_s=$(cat "$WORK/$name.uclient.cpu" 2>/dev/null || echo 0)"
        echo "server_counter=${relayed:-NA}"
        echo "rcvbuf_listen=${rb_listen:-NA}"
        echo "rcvbuf_relay=${rb_relay:-NA}"
        echo "drops_server=$d_srv"
        echo "drops_peer=$d_peer"
        echo "drops_other=$(( e1 - e0 - d_srv - d_peer ))"
    } >"$WORK/$name.result"
}

get() { sed -n "s/^$2=//p" "$WORK/$1.result"; }

# --- run -----------------------------------------------------------------------------------
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
NPROC=$(getconf _NPROCESSORS_ONLN)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
[ "$SFU_BIN" = "$ROOT/target/release/sfu" ] || { REV="external"; DIRTY=""; }

echo "TURN relay: ours vs coturn, one run"
echo "date        $DATE"
echo "machine     nproc=$NPROC, $CPU_MODEL"
echo "load avg    $LOAD_BEFORE (before)"
echo "ours        $SFU_BIN ($([ "$REV" = external ] && echo "SFU_BIN, not built here" || echo "built from tree $REV$DIRTY"), $(date -r "$SFU_BIN" -u +%Y-%m-%dT%H:%MZ 2>/dev/null))"
echo "coturn      $(turnserver --version 2>/dev/null | head -n1)"
echo "load        turnutils_uclient -m $CLIENTS -n $MESSAGES -l $SIZE -z $INTERVAL_MS -c (UDP, channels)," \
    "offered ~$((CLIENTS * 1000 / INTERVAL_MS)) msg/s = ~$((2 * CLIENTS * 1000 / INTERVAL_MS)) relayed pkt/s"
echo "pinning     server on CPU $SERVER_CPU, uclient + turnutils_peer on CPU $LOAD_CPU"
echo

for s in $SERVERS; do
    echo "running $s ..." >&2
    run_one "$s"
done

# relayed packets: every message uclient sent crosses the relay client->peer, and every one
# it got back crossed it again peer->client: relayed = sent + received (at zero loss 2 x sent).
row() { # name
    local n=$1
    awk -v name="$n" -v sent="$(get "$n" sent)" -v recv="$(get "$n" recv)" \
        -v wall="$(get "$n" wall_s)" -v act="$(get "$n" active_s)" -v cpu="$(get "$n" server_cpu_s)" \
        -v ucpu="$(get "$n" uclient_cpu_s)" -v pcpu="$(get "$n" peer_cpu_s)" \
        -v lost="$(get "$n" lost)" -v lpct="$(get "$n" lost_pct)" -v tt="$(get "$n" transmit_s)" \
        -v ctr="$(get "$n" server_counter)" -v rc="$(get "$n" rc)" \
        -v ds="$(get "$n" drops_server)" -v dp="$(get "$n" drops_peer)" -v do_="$(get "$n" drops_other)" 'BEGIN {
        relayed = sent + recv
        win = (act != "NA" && act > 0) ? act : wall     # the active window, else the whole run
        pps = win > 0 ? relayed / win : 0
        cores = win > 0 ? cpu / win : 0
        ppc = cpu > 0 ? relayed / cpu : 0
        ul = win > 0 ? ucpu / win : 0
        pl = win > 0 ? pcpu / win : 0
        printf "%-7s %9d %9d %7s %7.3f %6s %6.1f %6.2f %6.3f %9.0f %9.0f %5.2f %5.2f  %s%s\n",
            name, sent, recv, lost, lpct + 0, act, wall, cpu, cores, pps, ppc, ul, pl,
            ds "/" dp "/" do_, (rc != 0 ? "  uclient rc=" rc : "")
        # machine-readable copy for the JSON line
        printf "{\"server\":\"%s\",\"sent\":%d,\"received\":%d,\"relayed\":%d,\"lost\":%s,\"loss_pct\":%.4f,\"transmit_s\":%s,\"active_s\":%s,\"wall_s\":%.3f,\"server_cpu_s\":%.3f,\"cores\":%.4f,\"relayed_pps\":%.0f,\"pps_per_core\":%.0f,\"uclient_cpu_s\":%.3f,\"peer_cpu_s\":%.3f,\"uclient_rc\":%d,\"rcvbuf_drops\":{\"server\":%d,\"peer\":%d,\"other\":%d}%s}\n",
            name, sent, recv, relayed, (lost == "NA" ? "null" : lost), lpct + 0, (tt == "NA" ? "null" : tt),
            (act == "NA" ? "null" : act), wall, cpu, cores, pps, ppc, ucpu, pcpu, rc, ds, dp, do_,
            (ctr != "NA" ? ",\"server_relayed_counter\":" ctr : "") > "/dev/stderr"
    }'
}

{
    printf "%-7s %9s %9s %7s %7s %6s %6s %6s %6s %9s %9s %5s %5s  %s\n" \
        server sent recvd lost loss% act_s wall_s cpu_s cores relay_pps pps/core uc pe "rcvbuf drops srv/peer/other"
    for s in $SERVERS; do row "$s" 2>>"$WORK/json.parts"; done
} | tee "$WORK/table"

ratio=null
if [[ " $SERVERS " == *" ours "* && " $SERVERS " == *" coturn "* ]]; then
    ratio=$(awk -v a="$(get ours sent)" -v b="$(get ours recv)" -v c="$(get ours server_cpu_s)" \
        -v d="$(get coturn sent)" -v e="$(get coturn recv)" -v f="$(get coturn server_cpu_s)" \
        'BEGIN { if (c > 0 && f > 0 && d + e > 0) printf "%.3f", ((a + b) / c) / ((d + e) / f); else print "null" }')
    echo
    echo "ours/coturn packets/s per core: $ratio"
fi

# warnings that change how to read the figures
for s in $SERVERS; do
    awk -v name="$s" -v u="$(get "$s" uclient_cpu_s)" -v p="$(get "$s" peer_cpu_s)" \
        -v w="$(get "$s" wall_s)" -v a="$(get "$s" active_s)" -v c="$(get "$s" server_cpu_s)" \
        -v l="$(get "$s" lost)" -v ds="$(get "$s" drops_server)" -v dp="$(get "$s" drops_peer)" \
        -v do_="$(get "$s" drops_other)" 'BEGIN {
        win = (a != "NA" && a > 0) ? a : w
        if (win > 0 && (u + p) / win > 0.85)
            printf "WARNING %s: CPU %s was %.0f%% busy with uclient + turnutils_peer: the generator may be the bottleneck\n", name, "'"$LOAD_CPU"'", 100 * (u + p) / win
        if (win > 0 && c / win > 0.9)
            printf "WARNING %s: the server used %.0f%% of its core: saturated at this load\n", name, 100 * c / win
        if (l != "NA" && l + 0 > 0)
            printf "NOTE %s: %d packets lost; receive-buffer drops: %d at the server sockets, %d at turnutils_peer, %d elsewhere (uclient or other programs)\n", name, l, ds, dp, do_
    }'
done
echo "load avg    $(cut -d' ' -f1-3 /proc/loadavg) (after)"

mkdir -p "$(dirname "$RESULTS")"
{
    printf '{"scenario":"turn-vs-coturn","date":"%s","nproc":%s,"cpu":"%s","loadavg_before":"%s","rev":"%s%s","coturn":"%s",' \
        "$DATE" "$NPROC" "$CPU_MODEL" "$LOAD_BEFORE" "$REV" "$DIRTY" "$(turnserver --version 2>/dev/null | head -n1)"
    printf '"load":{"clients":%s,"messages":%s,"size":%s,"interval_ms":%s,"transport":"udp","channels":true},' \
        "$CLIENTS" "$MESSAGES" "$SIZE" "$INTERVAL_MS"
    printf '"servers":[%s],"ratio_pps_per_core_ours_over_coturn":%s}\n' \
        "$(paste -sd, "$WORK/json.parts")" "$ratio"
} >>"$RESULTS"
echo "appended to ${RESULTS#"$ROOT"/}"

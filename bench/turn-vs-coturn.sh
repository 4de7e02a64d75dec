#!/usr/bin/env bash
# TURN relay: our `sfu turn` against coturn's `turnserver`, side by side in one run, under the
# same `turnutils_uclient` load (UDP, channels). For each server: relayed packets/s, the CPU
# it used, packets/s per core, and loss; then the ratio ours/coturn. Appends one JSON line to
# bench/results/turn-vs-coturn.json. How to read it: bench/README.md.
#
# Usage: bench/turn-vs-coturn.sh
#   CLIENTS=48 MESSAGES=20000 SIZE=100 INTERVAL_MS=1   the load: turnutils_uclient -m -n -l -z
#   ROUNDS=3                  rounds; each runs both servers, the order alternating
#   SERVERS="ours coturn"     which servers (one alone gives no ratio)
#   SFU_BIN=path              bench this sfu binary instead of target/release/sfu (which is
#                             built first when missing or older than the sources)
#   SERVER_CPU=0 LOAD_CPU=1   the server's CPU; uclient's and turnutils_peer's CPU
#   PORT=35781 PEER_PORT=35791 OURS_RELAY_PORTS=46000-46999
#   COTURN_MIN_PORT=47000 COTURN_MAX_PORT=47999         loopback ports
#   COTURN_RELAY_THREADS=1    coturn's --relay-threads
#   TIMEOUT=seconds           bound on one uclient run (default: from the load)
#   RESULTS=path              where the JSON line goes;  KEEP=1 keeps the logs
#
# Everything stays on 127.0.0.1. Every process started here is bounded by `timeout` and
# stopped by its pid when the script ends.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CLIENTS=${CLIENTS:-48}
MESSAGES=${MESSAGES:-20000}
SIZE=${SIZE:-100}
INTERVAL_MS=${INTERVAL_MS:-1}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-"ours coturn"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT=${PORT:-35781}
PEER_PORT=${PEER_PORT:-35791}
OURS_RELAY_PORTS=${OURS_RELAY_PORTS:-46000-46999}
COTURN_MIN_PORT=${COTURN_MIN_PORT:-47000}
COTURN_MAX_PORT=${COTURN_MAX_PORT:-47999}
COTURN_RELAY_THREADS=${COTURN_RELAY_THREADS:-1}
SFU_BIN=${SFU_BIN:-}
RESULTS=${RESULTS:-$ROOT/bench/results/turn-vs-coturn.json}
USER_NAME=bench
USER_PASS=benchpass
REALM=bench
# uclient starts each client 1-6 s after the allocations, sends MESSAGES every INTERVAL_MS,
# then waits up to 10 s for stragglers when packets were lost: bound a run well past that.
TIMEOUT=${TIMEOUT:-$((60 + 2 * MESSAGES * INTERVAL_MS / 1000))}

die() { echo "turn-vs-coturn: $*" >&2; exit 1; }

# --- prerequisites ---------------------------------------------------------------------------
for tool in turnserver turnutils_uclient turnutils_peer; do
    command -v "$tool" >/dev/null ||
        die "$tool not found: install coturn (Debian/Ubuntu: apt-get install -y coturn)"
done
for tool in taskset timeout ss awk pgrep; do
    command -v "$tool" >/dev/null || die "$tool not found (util-linux, coreutils, iproute2, awk, procps)"
done
NPROC=$(getconf _NPROCESSORS_ONLN)
[ "$NPROC" -ge 2 ] || die "needs 2 CPUs: one for the server, one for the load"
for s in $SERVERS; do [ "$s" = ours ] || [ "$s" = coturn ] || die "SERVERS: ours and/or coturn, not $s"; done
CLK_TCK=$(getconf CLK_TCK)

# --- our binary: built when missing or older than its sources ---------------------------------
BUILT_HERE=""
if [[ " $SERVERS " == *" ours "* ]]; then
    if [ -z "$SFU_BIN" ]; then
        SFU_BIN=$ROOT/target/release/sfu
        BUILT_HERE=1
        newer=""
        if [ -x "$SFU_BIN" ]; then
            newer=$(find "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$ROOT/sfu" "$ROOT/turn" "$ROOT/signaling" \
                -newer "$SFU_BIN" -type f \( -name '*.rs' -o -name 'Cargo.*' \) -print -quit 2>/dev/null || true)
        fi
        if [ ! -x "$SFU_BIN" ] || [ -n "$newer" ]; then
            echo "building target/release/sfu: cargo build --release -p sfu (a few minutes) ..." >&2
            (cd "$ROOT" && nice -n 10 cargo build --release -p sfu) ||
                die "the build failed (SFU_BIN=/path/to/sfu benches a binary built elsewhere)"
        fi
    fi
    [ -x "$SFU_BIN" ] || die "no sfu binary at $SFU_BIN"
    "$SFU_BIN" turn --help >/dev/null 2>&1 || die "$SFU_BIN has no 'turn' subcommand"
fi

# --- ports: free, and enough relay ports -------------------------------------------------------
# uclient makes about two allocations per client (one a probe that it gives up), and they all
# send to the one turnutils_peer address. coturn gives every allocation a port of its own; ours
# shares relay ports between allocations, and two allocations on one relay port may not talk to
# the same peer address (508 on ChannelBind). So both get ranges wide enough for a port each.
ours_ports=$((${OURS_RELAY_PORTS#*-} - ${OURS_RELAY_PORTS%-*} + 1))
coturn_ports=$((COTURN_MAX_PORT - COTURN_MIN_PORT + 1))
for n in "$ours_ports" "$coturn_ports"; do
    [ "$n" -ge $((2 * CLIENTS + 10)) ] ||
        die "each relay port range needs at least 2 x CLIENTS + 10 = $((2 * CLIENTS + 10)) ports"
done
in_use=$({ ss -Hlnu; ss -Hlnt; } | awk '{ n = split($4, a, ":"); print a[n] }' |
    awk -v p="$PORT" -v q="$PEER_PORT" -v a="${OURS_RELAY_PORTS%-*}" -v b="${OURS_RELAY_PORTS#*-}" \
        -v c="$COTURN_MIN_PORT" -v d="$COTURN_MAX_PORT" \
        '$1 == p || $1 == q || ($1 >= a && $1 <= b) || ($1 >= c && $1 <= d)' | sort -un | tr '\n' ' ')
[ -z "$in_use" ] ||
    die "ports in use: $in_use(choose others: PORT, PEER_PORT, OURS_RELAY_PORTS, COTURN_MIN_PORT, COTURN_MAX_PORT)"

# From here on this script and its helpers (samplers, awk, ss) run on the load's CPU.
taskset -p -c "$LOAD_CPU" $$ >/dev/null

WORK=$(mktemp -d /tmp/turn-vs-coturn.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- measuring helpers ----------------------------------------------------------------------
# utime + stime of a process, all its threads, in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now_ns() { date +%s%N; }

# Receive-buffer drops. /proc/net/udp has a line per socket with its drop count (last column).
# Sockets come and go (coturn opens a relay socket per allocation and closes it at the end), so
# a sampler takes "port inode drops" snapshots twice a second during the load.
udp_snapshot() {
    awk 'NR > 1 { split($2, a, ":"); p = 0; h = a[2]
        for (i = 1; i <= length(h); i++) p = p * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1
        print p, $10, $NF }' /proc/net/udp
}
# drops during the load on sockets bound to ports LO..HI: per socket, the highest count seen
# in the samples less its count in the baseline snapshot
drops_in() { # baseline samples lo hi
    awk -v lo="$3" -v hi="$4" 'FNR == NR { base[$2] = $3; next }
        $1 >= lo && $1 <= hi { if (!($2 in max) || $3 > max[$2]) max[$2] = $3 }
        END { for (k in max) n += max[k] - base[k]; print n + 0 }' "$1" "$2"
}
# time the hypervisor ran something else while this VM wanted the CPU (all CPUs, ticks)
steal_ticks() { awk '$1 == "cpu" { print $9 }' /proc/stat; }
# the machine's count of datagrams dropped for a full receive buffer
rcvbuf_errors() {
    awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp
}
# the receive buffer (skmem rb, bytes) of the first socket in an `ss -m` listing matching $2
rcvbuf_of() { # file awk-condition-on-local-address
    awk "$2"' { getline; if (match($0, /rb[0-9]+/)) print substr($0, RSTART + 2, RLENGTH - 2); exit }' "$1" 2>/dev/null || true
}
# waits until UDP port $1 is bound while pid $2 lives (at most 10 s)
wait_udp() {
    for _ in $(seq 100); do
        ss -Hlnu "sport = :$1" | grep -q . && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
child_of() { # the first child of pid $1, waiting up to 5 s for it
    local c=""
    for _ in $(seq 100); do
        c=$(pgrep -P "$1" | head -n1 || true)
        [ -n "$c" ] && break
        sleep 0.05
    done
    echo "$c"
}

start_server() { # name tag -> SERVER_PID, SERVER_WRAPPER
    local name=$1 tag=$2
    case $name in
    ours)
        timeout $((TIMEOUT + 60)) taskset -c "$SERVER_CPU" "$SFU_BIN" turn \
            --listen "127.0.0.1:$PORT" --realm "$REALM" --user "$USER_NAME:$USER_PASS" \
            --allow-peer 127.0.0.1/32 --relay-ports "$OURS_RELAY_PORTS" \
            --relay-ip 127.0.0.1 --relay-bind 127.0.0.1 \
            --max-allocations-per-user 100000 --log info \
            >"$WORK/$tag.server.log" 2>&1 &
        ;;
    coturn)
        timeout $((TIMEOUT + 60)) taskset -c "$SERVER_CPU" turnserver -n \
            --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$PORT" \
            --min-port "$COTURN_MIN_PORT" --max-port "$COTURN_MAX_PORT" \
            --relay-threads "$COTURN_RELAY_THREADS" \
            --lt-cred-mech --user "$USER_NAME:$USER_PASS" --realm "$REALM" \
            --allow-loopback-peers --no-tls --no-dtls --no-cli \
            --userdb "$WORK/$tag.sqlite" --pidfile "$WORK/$tag.pid" \
            --log-file "$WORK/$tag.server.log" --simple-log \
            >"$WORK/$tag.server.stdout" 2>&1 &
        ;;
    esac
    SERVER_WRAPPER=$!
    PIDS+=("$SERVER_WRAPPER")
    SERVER_PID=$(child_of "$SERVER_WRAPPER") # taskset execs the server: timeout's child
    [ -n "$SERVER_PID" ] || die "$name did not start"
    wait_udp "$PORT" "$SERVER_PID" || {
        tail -n 20 "$WORK/$tag".server.* >&2 || true
        die "$name does not listen on $PORT"
    }
}

# uclient's CPU: the children's times of the subshell that reaped it, "0m1.230s 0m0.450s"
parse_times() { awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } printf "%.3f", n }'; }

run_one() { # name tag -> $WORK/$tag.result (key=value lines)
    local name=$1 tag=$2
    start_server "$name" "$tag"
    timeout $((TIMEOUT + 30)) taskset -c "$LOAD_CPU" turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" \
        >"$WORK/$tag.peer.log" 2>&1 &
    local peer_wrapper=$!
    PIDS+=("$peer_wrapper")
    local peer_pid
    peer_pid=$(child_of "$peer_wrapper")
    wait_udp "$PEER_PORT" "$peer_pid" || die "turnutils_peer does not listen on $PEER_PORT"
    sleep 0.5

    local relay_lo relay_hi
    if [ "$name" = ours ]; then relay_lo=${OURS_RELAY_PORTS%-*} relay_hi=${OURS_RELAY_PORTS#*-}
    else relay_lo=$COTURN_MIN_PORT relay_hi=$COTURN_MAX_PORT; fi
    udp_snapshot >"$WORK/$tag.udp.base"
    : >"$WORK/$tag.udp.samples"
    : >"$WORK/$tag.cpu.samples"
    : >"$WORK/$tag.procs"
    # sampler: socket drops, and the CPU of the server, turnutils_peer and uclient, every 0.5 s
    (
        set +e +o pipefail # a process that ends between the glob and the read is no error here
        i=0
        while :; do
            udp_snapshot >>"$WORK/$tag.udp.samples"
            # every process's CPU ticks, to tell how busy the rest of the machine was
            echo "T" >>"$WORK/$tag.procs"
            cat /proc/[0-9]*/stat 2>/dev/null | awk '{ pid = $1; sub(/.*\) /, ""); print pid, $12 + $13 }' >>"$WORK/$tag.procs"
            up=$(cat "$WORK/$tag.uclient.pid" 2>/dev/null || true)
            echo "$(now_ns) $(cpu_ticks "$SERVER_PID" 2>/dev/null || echo x)" \
                "$(cpu_ticks "$peer_pid" 2>/dev/null || echo x)" \
                "$({ [ -n "$up" ] && cpu_ticks "$up" 2>/dev/null; } || echo x)" >>"$WORK/$tag.cpu.samples"
            # the receive buffers the server's sockets got, once the allocations are made
            { [ "$i" -eq 6 ] || [ "$i" -eq 16 ]; } && ss -Huanm "( sport = :$PORT or ( sport >= :$relay_lo and sport <= :$relay_hi ) )" \
                >"$WORK/$tag.skmem" 2>/dev/null
            i=$((i + 1))
            sleep 0.5
        done
    ) &
    local sampler=$!
    PIDS+=("$sampler")

    local e0 s0 p0 t0 e1 s1 p1 t1 rc=0
    local st0 st1
    st0=$(steal_ticks)
    e0=$(rcvbuf_errors); s0=$(cpu_ticks "$SERVER_PID"); p0=$(cpu_ticks "$peer_pid"); t0=$(now_ns)
    (
        timeout "$TIMEOUT" taskset -c "$LOAD_CPU" turnutils_uclient -p "$PORT" \
            -u "$USER_NAME" -w "$USER_PASS" -e 127.0.0.1 -r "$PEER_PORT" \
            -m "$CLIENTS" -n "$MESSAGES" -l "$SIZE" -z "$INTERVAL_MS" -c 127.0.0.1 \
            >"$WORK/$tag.uclient.log" 2>&1 &
        tw=$!
        child_of "$tw" >"$WORK/$tag.uclient.pid"
        rc=0
        wait "$tw" || rc=$?
        times >"$WORK/$tag.times"
        exit "$rc"
    ) || rc=$?
    t1=$(now_ns); s1=$(cpu_ticks "$SERVER_PID"); p1=$(cpu_ticks "$peer_pid")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    udp_snapshot >>"$WORK/$tag.udp.samples"
    e1=$(rcvbuf_errors); st1=$(steal_ticks)

    # the busiest second (1 s spans of the samples) of the server, and of the generator
    # (uclient + turnutils_peer, on one CPU). Per-process times: in this VM the per-CPU counters
    # of /proc/stat miss most of the time of processes that sleep and wake often.
    local peak_srv peak_gen
    read -r peak_srv peak_gen < <(awk -v hz="$CLK_TCK" '$2 != "x" && $3 != "x" {
            t[n] = $1; s[n] = $2; p[n] = $3; u[n] = $4; n++ }
        END { for (i = 0; i + 2 < n; i++) { dt = (t[i + 2] - t[i]) / 1e9; if (dt <= 0) continue
                a = (s[i + 2] - s[i]) / hz / dt; if (a > ms) ms = a
                if (u[i] != "x" && u[i + 2] != "x") { b = (p[i + 2] - p[i] + u[i + 2] - u[i]) / hz / dt; if (b > mg) mg = b } }
              printf "%.2f %.2f\n", ms, mg }' "$WORK/$tag.cpu.samples")
    # CPU that other processes used meanwhile (seen in two samples in a row): another build or
    # test on the machine takes CPU from the server or the generator and shows up as loss
    local others
    others=$(awk -v hz="$CLK_TCK" -v skip=" $SERVER_PID $peer_pid $(cat "$WORK/$tag.uclient.pid" 2>/dev/null) $$ $sampler " '
        $1 == "T" { delete prev; for (k in cur) prev[k] = cur[k]; delete cur; next }
        { cur[$1] = $2; if (($1 in prev) && $2 > prev[$1] && index(skip, " " $1 " ") == 0) n += $2 - prev[$1] }
        END { printf "%.2f", n / hz }' "$WORK/$tag.procs")
    local d_listen d_relay d_peer
    d_listen=$(drops_in "$WORK/$tag.udp.base" "$WORK/$tag.udp.samples" "$PORT" "$PORT")
    d_relay=$(drops_in "$WORK/$tag.udp.base" "$WORK/$tag.udp.samples" "$relay_lo" "$relay_hi")
    d_peer=$(drops_in "$WORK/$tag.udp.base" "$WORK/$tag.udp.samples" "$PEER_PORT" "$PEER_PORT")

    kill "$peer_pid" 2>/dev/null || true
    wait "$peer_wrapper" 2>/dev/null || true
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_WRAPPER" 2>/dev/null || true

    local log=$WORK/$tag.uclient.log
    if [ "$rc" -ne 0 ]; then
        echo "--- $tag: turnutils_uclient exited with $rc (124: timed out after ${TIMEOUT}s); its last lines:" >&2
        tail -n 15 "$log" >&2
    fi
    local sent recv lost ttime active
    sent=$(sed -n 's/.*start_mclient: tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)$/\1/p' "$log" | tail -n1)
    recv=$(sed -n 's/.*start_mclient: tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)$/\2/p' "$log" | tail -n1)
    lost=$(sed -n 's/.*Total lost packets \([0-9]*\) .*/\1/p' "$log" | tail -n1)
    ttime=$(sed -n 's/.*Total transmit time is \([0-9]*\).*/\1/p' "$log" | tail -n1)
    # The active window, from uclient's progress lines ("T: : start_mclient: msz=.., tot_send_msgs=S,
    # tot_recv_msgs=R, .." once a second, T in whole seconds): from the last line with nothing
    # sent yet to the first with the final received count (or the end of transmission). Leaves
    # out the allocations before, and the 10 s uclient waits for stragglers after a loss.
    active=$(awk -v final="${recv:-0}" '/start_mclient: msz=/ {
            t = $1 + 0; s = $0; r = $0
            sub(/.*tot_send_msgs=/, "", s); s += 0
            sub(/.*tot_recv_msgs=/, "", r); r += 0
            if (s == 0) first = t
            if (r >= final && last == "") last = t
        }
        /Total transmit time/ { end = $1 + 0 }
        END { if (last == "") last = end; if (last != "" && last > first) print last - first; else print "NA" }' "$log")
    {
        echo "server=$name"
        echo "rc=$rc"
        echo "sent=${sent:-0}"
        echo "recv=${recv:-0}"
        echo "lost=${lost:-NA}"
        echo "transmit_s=${ttime:-NA}"
        echo "active_s=$active"
        echo "wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
        echo "server_cpu_s=$(awk -v a="$s0" -v b="$s1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')"
        echo "peer_cpu_s=$(awk -v a="$p0" -v b="$p1" -v t="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / t }')"
        echo "uclient_cpu_s=$(tail -n1 "$WORK/$tag.times" | parse_times)"
        echo "peak_server_cores=${peak_srv:-0}"
        echo "peak_generator_cores=${peak_gen:-0}"
        echo "others_cpu_s=${others:-0}"
        echo "steal_s=$(awk -v a="$st0" -v b="$st1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
        echo "drops_listen=$d_listen"
        echo "drops_relay=$d_relay"
        echo "drops_peer=$d_peer"
        echo "drops_other=$((e1 - e0 - d_listen - d_relay - d_peer))"
        echo "rcvbuf_listen=$(rcvbuf_of "$WORK/$tag.skmem" "\$4 ~ /:$PORT\$/")"
        echo "rcvbuf_relay=$(rcvbuf_of "$WORK/$tag.skmem" "\$1 !~ /^skmem/ && \$4 !~ /:$PORT\$/")"
        echo "server_counter=$(sed -n 's/.*relayed \([0-9]*\) packets.*/\1/p' "$WORK/$tag.server.log" 2>/dev/null | tail -n1)"
    } >"$WORK/$tag.result"
}

# --- run ---------------------------------------------------------------------------------------
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1 | tr -d '"\\')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -n1 | tr -d '"\\')
OURS_DESC=""
if [[ " $SERVERS " == *" ours "* ]]; then
    if [ -n "$BUILT_HERE" ]; then
        OURS_DESC="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && OURS_DESC="$OURS_DESC+uncommitted"
    else
        OURS_DESC="SFU_BIN=$SFU_BIN"
    fi
fi

echo "TURN relay, ours vs coturn: $ROUNDS round(s), same load, one run"
echo "date       $DATE"
echo "machine    nproc=$NPROC, $CPU_MODEL, load average $LOAD_BEFORE before"
[ -z "$OURS_DESC" ] || echo "ours       sfu turn ($OURS_DESC, binary of $(date -u -r "$SFU_BIN" +%Y-%m-%dT%H:%MZ))"
echo "coturn     turnserver $COTURN_VERSION, --relay-threads $COTURN_RELAY_THREADS"
echo "load       turnutils_uclient -m $CLIENTS -n $MESSAGES -l $SIZE -z $INTERVAL_MS -c: UDP, channels, offered" \
    "$((CLIENTS * 1000 / INTERVAL_MS)) msg/s = $((2 * CLIENTS * 1000 / INTERVAL_MS)) relayed packets/s at full rate"
echo "pinning    server on CPU $SERVER_CPU; uclient and turnutils_peer on CPU $LOAD_CPU"
echo

TAGS=()
for round in $(seq "$ROUNDS"); do
    order=$SERVERS
    [ $((round % 2)) -eq 0 ] && order=$(echo "$SERVERS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }')
    for s in $order; do
        echo "round $round: $s ..." >&2
        run_one "$s" "$s-$round"
        TAGS+=("$s-$round")
    done
done

# One row per server run. relayed = 2 x received: every message uclient got back crossed the
# relay twice, client->peer and peer->client. A lost message crossed it once or not at all and
# is not counted (so at zero loss relayed = 2 x sent, and a loss never flatters a server).
# pps/core = relayed / server CPU seconds; relay/s is over the active window.
: >"$WORK/rows.json"
{
    printf "%-9s %8s %8s %6s %6s %5s %6s %5s %5s %8s %8s %5s %5s %5s  %s\n" server sent recvd lost loss% \
        act_s cpu_s cores peak relay/s pps/core gen genpk other "drops listen+relay/peer/other"
    for tag in "${TAGS[@]}"; do
        # shellcheck disable=SC2046
        awk -v tag="$tag" -v out="$WORK/rows.json" $(sed 's/^/-v /' "$WORK/$tag.result") 'BEGIN {
            relayed = 2 * recv
            win = (active_s != "NA" && active_s > 0) ? active_s : wall_s
            pps = win > 0 ? relayed / win : 0
            cores = win > 0 ? server_cpu_s / win : 0
            ppc = server_cpu_s > 0 ? relayed / server_cpu_s : 0
            gen = win > 0 ? (uclient_cpu_s + peer_cpu_s) / win : 0
            lpct = sent > 0 && lost != "NA" ? 100 * lost / sent : 0
            oth = wall_s > 0 ? others_cpu_s / wall_s : 0
            stl = wall_s > 0 ? steal_s / wall_s : 0
            printf "%-9s %8d %8d %6s %6.2f %5s %6.2f %5.2f %5.2f %8.0f %8.0f %5.2f %5.2f %5.2f  %s%s\n",
                tag, sent, recv, lost, lpct, active_s, server_cpu_s, cores, peak_server_cores, pps, ppc,
                gen, peak_generator_cores, oth, drops_listen "+" drops_relay "/" drops_peer "/" drops_other,
                (rc != 0 ? "  uclient exit " rc : "")
            printf "{\"server\":\"%s\",\"run\":\"%s\",\"sent\":%d,\"received\":%d,\"relayed\":%d,\"lost\":%s,\"loss_pct\":%.4f,", server, tag, sent, recv, relayed, (lost == "NA" ? "null" : lost), lpct >> out
            printf "\"transmit_s\":%s,\"active_s\":%s,\"wall_s\":%s,\"server_cpu_s\":%s,\"cores\":%.4f,\"peak_cores\":%s,", (transmit_s == "NA" ? "null" : transmit_s), (active_s == "NA" ? "null" : active_s), wall_s, server_cpu_s, cores, peak_server_cores >> out
            printf "\"relayed_pps\":%.0f,\"pps_per_core\":%.0f,\"uclient_cpu_s\":%s,\"peer_cpu_s\":%s,\"generator_cores\":%.4f,\"peak_generator_cores\":%s,\"other_processes_cores\":%.4f,\"steal_cores\":%.4f,", pps, ppc, uclient_cpu_s, peer_cpu_s, gen, peak_generator_cores, oth, stl >> out
            printf "\"rcvbuf_drops\":{\"server_listen\":%d,\"server_relay\":%d,\"peer\":%d,\"other\":%d},", drops_listen, drops_relay, drops_peer, drops_other >> out
            printf "\"server_rcvbuf_bytes\":{\"listen\":%s,\"relay\":%s},\"uclient_exit\":%d%s}\n", (rcvbuf_listen == "" ? "null" : rcvbuf_listen), (rcvbuf_relay == "" ? "null" : rcvbuf_relay), rc, (server_counter != "" ? ",\"server_relayed_counter\":" server_counter : "") >> out
        }'
    done
} | tee "$WORK/table"

# Summary over the rounds: per server the median packets/s per core and the loss in all; the
# ratio is the median of the rounds' ratios (each from two runs next to each other in time).
summary=$(for tag in "${TAGS[@]}"; do
    echo "$(sed -n 's/^server=//p' "$WORK/$tag.result") ${tag##*-} $(sed -n 's/^sent=//p' "$WORK/$tag.result")" \
        "$(sed -n 's/^recv=//p' "$WORK/$tag.result") $(sed -n 's/^lost=//p' "$WORK/$tag.result")" \
        "$(sed -n 's/^server_cpu_s=//p' "$WORK/$tag.result") $(sed -n 's/^rc=//p' "$WORK/$tag.result")"
done | awk '
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        if (n == 0) return ""
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { srv = $1; round = $2; sent = $3; recv = $4; lost = ($5 == "NA" ? 0 : $5); cpu = $6
      if ($7 != 0 || cpu <= 0) { bad[srv]++; next }
      ppc = 2 * recv / cpu
      list[srv] = list[srv] " " ppc; tsent[srv] += sent; tlost[srv] += lost; byround[srv, round] = ppc
      if (round + 0 > maxr) maxr = round + 0 }
    END {
        for (r = 1; r <= maxr; r++)
            if ((("ours", r) in byround) && (("coturn", r) in byround)) ratios = ratios " " byround["ours", r] / byround["coturn", r]
        for (s in list) printf "%s %.0f %d %d %.4f\n", s, median(list[s]), tsent[s], tlost[s], (tsent[s] > 0 ? 100 * tlost[s] / tsent[s] : 0)
        printf "ratio %s %s\n", (ratios == "" ? "null" : sprintf("%.3f", median(ratios))), ratios
        for (s in bad) printf "failed %s %d\n", s, bad[s]
    }')

echo
RATIO=null
for s in $SERVERS; do
    line=$(echo "$summary" | awk -v s="$s" '$1 == s')
    [ -n "$line" ] || { echo "$s: no complete run"; continue; }
    read -r _ ppc tsent tlost tpct <<<"$line"
    printf "%-7s median %8s packets/s per core, lost %d of %d sent (%.4f%%)\n" "$s" "$ppc" "$tlost" "$tsent" "$tpct"
done
ratio_line=$(echo "$summary" | awk '$1 == "ratio"')
RATIO=$(echo "$ratio_line" | awk '{ print $2 }')
if [ "$RATIO" != null ]; then
    echo "ours/coturn packets/s per core: $RATIO (median of the rounds:$(echo "$ratio_line" | awk '{ for (i = 3; i <= NF; i++) printf " %.3f", $i }'))"
fi
if [ "$RATIO" != null ]; then
    echo "$summary" | awk -v r="$RATIO" '$1 == "ours" { ol = $4 } $1 == "coturn" { cl = $4 }
        $1 == "ratio" { n = NF - 2; lo = $3; hi = $3; for (i = 3; i <= NF; i++) { if ($i < lo) lo = $i; if ($i > hi) hi = $i } }
        END {
        if (n < 2) printf "spread: one round only, so no spread to judge the ratio against (ROUNDS=3 or more)\n"
        else if (lo <= 1 && hi > 1) printf "spread: the per-round ratios range %.3f-%.3f, across 1: the difference is within the run-to-run noise\n", lo, hi
        why = ""
        if (r + 0 <= 1) why = "ratio " r
        if (ol > 0) why = why (why != "" ? ", " : "") "ours lost " ol " packets"
        if (cl > 0) why = why (why != "" ? ", " : "") "coturn lost " cl
        printf "goal, more packets/s per core than coturn at zero loss: %s\n", (r + 0 > 1 && ol == 0 ? "met" : "NOT met") (why != "" ? " (" why ")" : "") }'
fi
echo "$summary" | awk '$1 == "failed" { printf "WARNING: %d run(s) of %s failed (uclient exit status): left out\n", $3, $2 }'
for tag in "${TAGS[@]}"; do
    awk -v tag="$tag" -F= '{ v[$1] = $2 } END {
        if (v["peak_generator_cores"] + 0 > 0.9)
            printf "WARNING %s: the generator (uclient + turnutils_peer) used %.0f%% of its CPU in its busiest second: it may be the bottleneck\n", tag, 100 * v["peak_generator_cores"]
        if (v["wall_s"] > 0 && v["others_cpu_s"] / v["wall_s"] > 0.05)
            printf "WARNING %s: other processes used %.2f cores on average during this run: the machine was not quiet, figures disturbed\n", tag, v["others_cpu_s"] / v["wall_s"]
        if (v["wall_s"] > 0 && v["steal_s"] / v["wall_s"] > 0.02)
            printf "WARNING %s: the hypervisor took %.2f cores from this VM (steal) during this run: figures disturbed\n", tag, v["steal_s"] / v["wall_s"]
        if (v["peak_server_cores"] + 0 > 0.9)
            printf "NOTE %s: the server used %.0f%% of its core in its busiest second: at or near saturation\n", tag, 100 * v["peak_server_cores"]
    }' "$WORK/$tag.result"
done
for s in $SERVERS; do
    t=$(for tag in "${TAGS[@]}"; do
        [ "${tag%-*}" = "$s" ] && grep -q '^rcvbuf_listen=[0-9]' "$WORK/$tag.result" && echo "$tag"
    done | head -n1 || true)
    [ -n "$t" ] || continue
    printf "%-7s socket receive buffers (bytes, as the kernel holds them): listener %s, relay %s\n" "$s" \
        "$(sed -n 's/^rcvbuf_listen=//p' "$WORK/$t.result")" "$(sed -n 's/^rcvbuf_relay=//p' "$WORK/$t.result")"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$(dirname "$RESULTS")"
{
    printf '{"scenario":"turn-vs-coturn","date":"%s","nproc":%s,"cpu":"%s","loadavg_before":"%s",' \
        "$DATE" "$NPROC" "$CPU_MODEL" "$LOAD_BEFORE"
    printf '"ours":"%s","coturn":"%s","coturn_relay_threads":%s,"rounds":%s,' \
        "$OURS_DESC" "$COTURN_VERSION" "$COTURN_RELAY_THREADS" "$ROUNDS"
    printf '"load":{"clients":%s,"messages":%s,"size":%s,"interval_ms":%s,"transport":"udp","channels":true},' \
        "$CLIENTS" "$MESSAGES" "$SIZE" "$INTERVAL_MS"
    printf '"median_pps_per_core":{%s},' "$(echo "$summary" | awk '$1 == "ours" || $1 == "coturn" { printf "%s\"%s\":%s", (n++ ? "," : ""), $1, $2 }')"
    printf '"loss_pct":{%s},' "$(echo "$summary" | awk '$1 == "ours" || $1 == "coturn" { printf "%s\"%s\":%s", (n++ ? "," : ""), $1, $5 }')"
    printf '"ratio_pps_per_core_ours_over_coturn":%s,"runs":[%s]}\n' "$RATIO" "$(paste -sd, "$WORK/rows.json")"
} >>"$RESULTS"
echo "appended to ${RESULTS#"$ROOT"/}"

#!/usr/bin/env bash
# Our server against Janus's VideoRoom (Debian's `janus`), side by side in one run, under the
# same `bench` load: the same str0m clients, media, join rate and window, both in the clear
# (Janus cannot carry the clients' SFrame keys), each server pinned to the same CPU. Rounds
# alternate which server goes first. For each scenario and server it prints the median and
# the spread (min-max) over the rounds of: delivered packets/s (RTP the subscribers got),
# server cores, ms of server CPU per 1000 delivered, RSS, loss, latency p50/p99, join
# p50/p99, first frame p50; then the ratios ours/Janus of the medians. Runs whose clients
# failed are left out (and named). Appends one JSON line to bench/results/vs-janus.json.
# How to read it: bench/README.md, "Side by side with Janus".
#
# Usage: bench/vs-janus.sh
#   SCENARIOS="broadcast conference"   which scenarios
#   VIEWERS=300                 broadcast: viewers of one 2.5 Mbit/s screen share
#   PARTICIPANTS=20             conference: one room, everyone publishing audio and simulcast
#                               video (150k,500k,1.5M) and receiving everyone
#   DURATION=20 ROUNDS=3        seconds measured per run; rounds (each runs both servers)
#   JOIN_RATE=50/s              clients joining per second
#   SERVERS="sfu janus"         which servers (one alone gives no ratio)
#   SFU_BIN, BENCH_BIN          default target/release/{sfu,bench}, built when missing
#   JANUS_BIN=janus             Janus's binary
#   JANUS_EVENT_LOOPS=n         Janus's event_loops: n threads carry all its peer connections
#                               (default: unset, Janus's own default of a thread for each)
#   RESULTS=path                where the JSON line goes;  KEEP=1 keeps each run's report
#
# Everything stays on 127.0.0.1; every run is bounded by `timeout`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS=${SCENARIOS:-"broadcast conference"}
VIEWERS=${VIEWERS:-300}
PARTICIPANTS=${PARTICIPANTS:-20}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
JOIN_RATE=${JOIN_RATE:-50/s}
SERVERS=${SERVERS:-"sfu janus"}
SFU_BIN=${SFU_BIN:-$ROOT/target/release/sfu}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/bench}
JANUS_BIN=${JANUS_BIN:-janus}
JANUS_EVENT_LOOPS=${JANUS_EVENT_LOOPS:-}
RESULTS=${RESULTS:-$ROOT/bench/results/vs-janus.json}

die() { echo "vs-janus: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 not found"
for s in $SERVERS; do [ "$s" = sfu ] || [ "$s" = janus ] || die "SERVERS: sfu and/or janus, not $s"; done
if [[ " $SERVERS " == *" janus "* ]]; then
    command -v "$JANUS_BIN" >/dev/null || die "$JANUS_BIN not found (Debian: apt-get install janus)"
fi
if [ ! -x "$SFU_BIN" ] || [ ! -x "$BENCH_BIN" ]; then
    echo "vs-janus: building the release binaries (cargo build --release -p sfu -p bench) ..." >&2
    (cd "$ROOT" && nice -n 10 cargo build --release -p sfu -p bench) || die "the build failed"
fi

WORK=$(mktemp -d /tmp/vs-janus.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] && echo "vs-janus: reports kept in $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT

run() { # scenario server round
    local scenario=$1 server=$2 round=$3 load
    case $scenario in
        broadcast) load=(broadcast --viewers "$VIEWERS") ;;
        conference) load=(conference --participants "$PARTICIPANTS") ;;
        *) die "SCENARIOS: broadcast and/or conference, not $scenario" ;;
    esac
    local out=$WORK/$scenario-$server-$round extra=()
    if [ "$server" = janus ] && [ -n "$JANUS_EVENT_LOOPS" ]; then
        extra=(--janus-event-loops "$JANUS_EVENT_LOOPS")
    fi
    echo "vs-janus: round $round, $scenario on $server" >&2
    # Bounded: the joins, the window, the ceiling run after it, and margin.
    timeout 600 "$BENCH_BIN" "${load[@]}" --target "$server" --plaintext \
        --duration "$DURATION" --join-rate "$JOIN_RATE" \
        --sfu-bin "$SFU_BIN" --janus-bin "$JANUS_BIN" \
        "${extra[@]}" --results "$out.json" > "$out.txt" 2>&1 ||
        echo "vs-janus: the run failed (its report: $out.txt)" >&2
    grep -E "^(delivered|server CPU|loss|latency|join|WARNING)" "$out.txt" | sed 's/^/    /' >&2 || true
}

for round in $(seq 1 "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        order=$SERVERS
        # Odd rounds in the given order, even ones reversed: neither always goes first.
        if [ $((round % 2)) -eq 0 ]; then order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
        for server in $order; do run "$scenario" "$server" "$round"; done
    done
done

python3 - "$WORK" "$RESULTS" "$ROUNDS" "$JANUS_EVENT_LOOPS" <<'PY'
import glob, json, os, statistics, sys, time
work, results, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
event_loops = int(sys.argv[4]) if sys.argv[4] else None
runs, unusable = {}, []
for path in sorted(glob.glob(os.path.join(work, "*.json"))):
    scenario, server, _ = os.path.basename(path)[:-5].split("-")
    with open(path) as f:
        for line in f:
            run = json.loads(line)
            # A run whose clients failed measured the harness, not the server: left out.
            if run["failed_clients"] > 0:
                unusable.append(os.path.basename(path))
                continue
            runs.setdefault((scenario, server), []).append(run)
if unusable:
    print(f"\nleft out, clients failed: {', '.join(unusable)}")
figures = [
    ("delivered packets/s", lambda r: r["delivered_pps"], "{:.0f}"),
    ("server cores", lambda r: r["server_cores"], "{:.2f}"),
    ("ms CPU / 1000 delivered", lambda r: r["server_cpu_ms_per_1000_delivered"], "{:.3f}"),
    ("RSS MiB", lambda r: r["server_rss_bytes"] / 1048576, "{:.1f}"),
    ("loss %", lambda r: r["loss_pct"], "{:.3f}"),
    ("latency p50 ms", lambda r: r["latency_ms"]["p50"], "{:.1f}"),
    ("latency p99 ms", lambda r: r["latency_ms"]["p99"], "{:.1f}"),
    ("join p50 ms", lambda r: r["join_ms"]["p50"], "{:.0f}"),
    ("join p99 ms", lambda r: r["join_ms"]["p99"], "{:.0f}"),
    ("first frame p50 ms", lambda r: r["first_frame_ms"]["p50"], "{:.0f}"),
    ("kernel rcvbuf drops", lambda r: r["kernel_rcvbuf_drops"], "{:.0f}"),
    ("generator cores", lambda r: r["generator_cores"], "{:.2f}"),
]
summary = {"date": int(time.time()), "rounds": rounds, "janus_event_loops": event_loops,
           "left_out": unusable, "scenarios": {}}
for scenario in sorted({s for s, _ in runs}):
    servers = [s for s in ("sfu", "janus") if (scenario, s) in runs]
    first = runs[(scenario, servers[0])][0]
    print(f"\n{scenario}: {first['clients']} clients, {len(runs[(scenario, servers[0])])} runs per server"
          " (median [min-max])")
    print(f"  {'':26}" + "".join(f"{s:>28}" for s in servers) + ("   ours/janus" if len(servers) == 2 else ""))
    out = {"clients": first["clients"]}
    for name, get, fmt in figures:
        cells, medians = [], {}
        for s in servers:
            values = [v for v in (get(r) for r in runs[(scenario, s)]) if v is not None]
            if not values:
                cells.append(f"{'-':>28}")
                continue
            m = statistics.median(values)
            medians[s] = m
            out.setdefault(s, {})[name] = {"median": m, "min": min(values), "max": max(values)}
            cell = f"{fmt.format(m)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"
            cells.append(f"{cell:>28}")
        ratio = ""
        if len(medians) == 2 and medians["janus"]:
            r = medians["sfu"] / medians["janus"]
            out.setdefault("ratio", {})[name] = r
            ratio = f"   {r:8.2f}"
        print(f"  {name:26}" + "".join(cells) + ratio)
    summary["scenarios"][scenario] = out
with open(results, "a") as f:
    f.write(json.dumps(summary) + "\n")
print(f"\nappended to {results}")
PY

#!/usr/bin/env bash
# tracegate vs rotel and Jaeger v2 (an OpenTelemetry Collector build), side by side in one run,
# all exporting OTLP to the same blackhole sink.
#
#   bench/run.sh                       # everything, defaults below
#   RATE=50000 GATEWAYS=tracegate bench/run.sh
#
# For each gateway, on one process pinned to core 0 (load generator and sink on core 1):
#   1. fixed offered load (RATE spans/s for FIXED_DURATION, after WARMUP): CPU seconds per
#      million acked spans (utime+stime from /proc/PID/stat), p99 ack latency, peak RSS (VmHWM);
#   2. as fast as possible (--rate 0 for MAX_DURATION): acked spans/s, p99, gateway CPU use.
# Results: a Markdown table on stdout, appended with date and command to bench/out/results.md;
# raw loadgen JSON and logs under bench/out/. See bench/README.md and BENCHMARKS.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# ---- knobs (environment) ---------------------------------------------------------------------
RATE=${RATE:-100000}                     # fixed offered load, spans/s
FIXED_DURATION=${FIXED_DURATION:-20s}
WARMUP=${WARMUP:-3s}
MAX_DURATION=${MAX_DURATION:-20s}
SPANS_PER_REQUEST=${SPANS_PER_REQUEST:-100}
FIXED_CONCURRENCY=${FIXED_CONCURRENCY:-32}  # headroom: a stalled reply must not hold back the rate
MAX_CONCURRENCY=${MAX_CONCURRENCY:-32}
PROTOCOL=${PROTOCOL:-grpc}               # grpc | http
GATEWAYS=${GATEWAYS:-"tracegate tracegate-enrich rotel jaeger"}
SKIP_BUILD=${SKIP_BUILD:-0}
GATEWAY_CORE=${GATEWAY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}                # load generator and sink

ROTEL_VERSION=0.0.1a15
BATCH_MAX_SPANS=8192                     # = exporters.sink.batch.max_spans in the YAML
BATCH_TIMEOUT=200ms                      # = exporters.sink.batch.max_wait

SINK_GRPC=127.0.0.1:14317
SINK_HTTP=127.0.0.1:14318
TRACEGATE_GRPC=127.0.0.1:24317
TRACEGATE_HTTP=127.0.0.1:24318
TRACEGATE_API=127.0.0.1:28080
NULL_ES=127.0.0.1:19200                  # tracegate-es: bench-elasticsearch --serve-null
ROTEL_GRPC=127.0.0.1:25317
ROTEL_HTTP=127.0.0.1:25318
JAEGER_GRPC=127.0.0.1:26317               # jaeger: Jaeger v2 as a pass-through collector
JAEGER_HTTP=127.0.0.1:26318

OUT=bench/out
TRACEGATE=${TRACEGATE:-target/release/tracegate}  # the binary under test; also the load generator
CONFIG=bench/tracegate-bench.yaml
CONFIG_ENRICH=bench/tracegate-enrich.yaml   # the same with order_enrich + order_sampling
CONFIG_ES=bench/tracegate-es.yaml           # the same exporting to Elasticsearch (null endpoint)
CONFIG_DISK=bench/tracegate-disk.yaml       # the same with a disk-backed queue (fsync per group)
CONFIG_JAEGER=bench/jaeger-passthrough.yaml # Jaeger v2: otlp receiver -> batch -> otlp exporter
COMMAND="RATE=$RATE FIXED_DURATION=$FIXED_DURATION MAX_DURATION=$MAX_DURATION SPANS_PER_REQUEST=$SPANS_PER_REQUEST PROTOCOL=$PROTOCOL GATEWAYS=\"$GATEWAYS\" bench/run.sh"
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- processes we started, stopped on any exit --------------------------------------------------
STARTED_PIDS=()

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do          # up to 10 s for a graceful stop
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {  # newest first: the gateway stops while its sink still listens
    local i
    for (( i = ${#STARTED_PIDS[@]} - 1; i >= 0; i-- )); do
        stop_pid "${STARTED_PIDS[i]}"
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers -------------------------------------------------------------------------------------
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

wait_listening() {  # ADDR PID NAME LOG

    for _ in $(seq 1 150); do          # up to 15 s
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$4" >&2; die "$3 exited during start-up (log: $4)"; }
        sleep 0.1
    done
    tail -n 20 "$4" >&2
    die "$3 is not listening on $1 after 15 s (log: $4)"
}

require_alive() {  # PID NAME
    kill -0 "$1" 2>/dev/null && [[ -r /proc/$1/stat ]] && return 0
    local status=unknown
    wait "$1" 2>/dev/null && status=0 || status=$?
    tail -n 20 "$OUT/$2.log" >&2
    die "$2 (pid $1) exited during the run, status $status (log: $OUT/$2.log)"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }   # utime + stime, all threads
core_ticks() { awk -v cpu="cpu$1" '$1 == cpu { print $2+$3+$4+$7+$8+$9 }' /proc/stat; }  # busy, not idle/iowait
vm_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

seconds() { python3 -c 'import sys,re; m=re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)",sys.argv[1]); assert m, sys.argv[1]; print(float(m[1])*{"ms":0.001,"s":1,"m":60}[m[2]])' "$1"; }

json_get() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }

loadgen() {  # NAME PHASE ENDPOINT RATE DURATION CONCURRENCY -> bench/out/NAME-PHASE.json
    local name=$1 phase=$2 endpoint=$3 rate=$4 duration=$5 concurrency=$6
    local limit
    limit=$(python3 -c "print(int($(seconds "$duration") + 60))")
    # In the background and waited for, so that Ctrl-C or SIGTERM stop the run at once.
    timeout "$limit" "${ON_LOAD_CORE[@]}" "$TRACEGATE" loadgen \
        --endpoint "$endpoint" --protocol "$PROTOCOL" --rate "$rate" --duration "$duration" \
        --spans-per-request "$SPANS_PER_REQUEST" --concurrency "$concurrency" --json \
        > "$OUT/$name-$phase.json" 2> "$OUT/$name-$phase.stderr" &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait "$pid" || die "loadgen against $name ($phase) failed: $(tail -n 5 "$OUT/$name-$phase.stderr")"
}

endpoint_of() {  # NAME -> the URL the load generator sends to
    local grpc http
    case $1 in
        tracegate|tracegate-enrich|tracegate-es|tracegate-disk) grpc=$TRACEGATE_GRPC http=$TRACEGATE_HTTP ;;
        rotel) grpc=$ROTEL_GRPC http=$ROTEL_HTTP ;;
        jaeger) grpc=$JAEGER_GRPC http=$JAEGER_HTTP ;;
    esac
    if [[ $PROTOCOL == http ]]; then echo "http://$http"; else echo "http://$grpc"; fi
}

start_gateway() {  # NAME -> sets GATEWAY_PID
    local name=$1 pid
    case $name in
        tracegate)
            "${ON_GATEWAY_CORE[@]}" "$TRACEGATE" run --config "$CONFIG" > "$OUT/tracegate.log" 2>&1 &
            pid=$!
            ;;
        tracegate-enrich)
            "${ON_GATEWAY_CORE[@]}" "$TRACEGATE" run --config "$CONFIG_ENRICH" > "$OUT/tracegate-enrich.log" 2>&1 &
            pid=$!
            ;;
        tracegate-es)
            "${ON_GATEWAY_CORE[@]}" "$TRACEGATE" run --config "$CONFIG_ES" > "$OUT/tracegate-es.log" 2>&1 &
            pid=$!
            ;;
        tracegate-disk)
            rm -rf "$OUT/queue"
            "${ON_GATEWAY_CORE[@]}" "$TRACEGATE" run --config "$CONFIG_DISK" > "$OUT/tracegate-disk.log" 2>&1 &
            pid=$!
            ;;
        rotel)
            "${ON_GATEWAY_CORE[@]}" "$ROTEL" start \
                --otlp-grpc-endpoint "$ROTEL_GRPC" --otlp-http-endpoint "$ROTEL_HTTP" \
                --exporter otlp --otlp-exporter-endpoint "http://$SINK_GRPC" \
                --otlp-exporter-protocol grpc --otlp-exporter-compression none \
                --batch-max-size "$BATCH_MAX_SPANS" --batch-timeout "$BATCH_TIMEOUT" \
                --pid-file "$OUT/rotel-agent.pid" --log-file "$OUT/rotel-agent.log" \
                > "$OUT/rotel.log" 2>&1 &
            pid=$!
            ;;
        jaeger)
            JAEGER_BENCH_GRPC_ENDPOINT=$JAEGER_GRPC JAEGER_BENCH_HTTP_ENDPOINT=$JAEGER_HTTP JAEGER_BENCH_SINK_ENDPOINT=$SINK_GRPC \
                "${ON_GATEWAY_CORE[@]}" "$JAEGER" --config "$CONFIG_JAEGER" > "$OUT/jaeger.log" 2>&1 &
            pid=$!
            ;;
        *) die "unknown gateway $name (choose from: tracegate tracegate-enrich tracegate-es tracegate-disk rotel jaeger)" ;;
    esac
    STARTED_PIDS+=("$pid")
    echo "$pid" > "$OUT/$name.pid"
    GATEWAY_PID=$pid
}

# ---- preflight -----------------------------------------------------------------------------------
[[ $PROTOCOL == grpc || $PROTOCOL == http ]] || die "PROTOCOL must be grpc or http"
command -v python3 > /dev/null || die "python3 is needed (Debian: python3, python3-venv)"
command -v taskset > /dev/null || die "taskset is needed (Debian: util-linux)"
CORES=$(nproc)
# Prefixes, not functions: a backgrounded function would make $! a subshell, not the program.
if (( CORES >= 2 )); then
    ON_GATEWAY_CORE=(taskset -c "$GATEWAY_CORE")
    ON_LOAD_CORE=(taskset -c "$LOAD_CORE")
else
    ON_GATEWAY_CORE=()
    ON_LOAD_CORE=()
    log "warning: $CORES core(s); running unpinned"
fi
mkdir -p "$OUT"
read -r LOAD_1MIN _ < /proc/loadavg
if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.5 else 1)" "$LOAD_1MIN"; then
    log "warning: load average $LOAD_1MIN before the start; other work on this machine makes the numbers noisy"
fi
for addr in $SINK_GRPC $SINK_HTTP $TRACEGATE_GRPC $TRACEGATE_HTTP $TRACEGATE_API $ROTEL_GRPC $ROTEL_HTTP $JAEGER_GRPC $JAEGER_HTTP $NULL_ES; do
    listening "$addr" && die "$addr is already in use; stop whatever listens there"
done

if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    cargo build --release
fi
[[ -x $TRACEGATE ]] || die "$TRACEGATE is missing; run cargo build --release"

if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    python3 -m venv .venv
fi
if [[ $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("rotel"))' 2>/dev/null) != "$ROTEL_VERSION" ]]; then
    log "installing rotel==$ROTEL_VERSION into .venv"
    .venv/bin/python -m pip install --quiet "rotel==$ROTEL_VERSION"
fi
ROTEL=$(.venv/bin/python -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
[[ -x $ROTEL ]] || die "no rotel-agent binary at $ROTEL"
"$ROTEL" --version > /dev/null 2>&1 || die "$ROTEL does not run (it needs Debian's libpython3.11)"
if [[ " $GATEWAYS " == *" jaeger "* ]]; then
    # JAEGER_BIN, or the build of scripts/jaeger/install.sh (10 to 15 minutes the first time).
    JAEGER=$(bash scripts/jaeger/install.sh) || die "Jaeger v2 is not available (bash scripts/jaeger/install.sh)"
    [[ -x $JAEGER ]] || die "no Jaeger binary at $JAEGER"
    JAEGER_VERSION=$(cat "$JAEGER.version" 2>/dev/null || echo "(JAEGER_BIN)")
fi

# ---- the sink ------------------------------------------------------------------------------------
log "starting the sink (rotel, blackhole exporter) on $SINK_GRPC"
"${ON_LOAD_CORE[@]}" "$ROTEL" start --otlp-grpc-endpoint "$SINK_GRPC" --otlp-http-endpoint "$SINK_HTTP" \
    --exporter blackhole --pid-file "$OUT/sink-agent.pid" --log-file "$OUT/sink-agent.log" \
    > "$OUT/sink.log" 2>&1 &
SINK_PID=$!
STARTED_PIDS+=("$SINK_PID")
wait_listening "$SINK_GRPC" "$SINK_PID" sink "$OUT/sink.log"
if [[ " $GATEWAYS " == *" tracegate-es "* ]]; then
    log "starting the null Elasticsearch endpoint on $NULL_ES"
    "${ON_LOAD_CORE[@]}" "$TRACEGATE" bench-elasticsearch --serve-null "$NULL_ES" > "$OUT/null-es.log" 2>&1 &
    NULL_ES_PID=$!
    STARTED_PIDS+=("$NULL_ES_PID")
    wait_listening "$NULL_ES" "$NULL_ES_PID" null-es "$OUT/null-es.log"
fi

# ---- one gateway at a time -----------------------------------------------------------------------
declare -A CPU_PER_M P99_FIXED RSS_FIXED RATE_OK MAX_RATE P99_MAX RSS_PEAK BUSY_MAX LOAD_BUSY_MAX REFUSED

measure() {
    local name=$1 pid endpoint
    endpoint=$(endpoint_of "$name")
    start_gateway "$name"
    pid=$GATEWAY_PID
    local addr=${endpoint#http://}
    wait_listening "$addr" "$pid" "$name" "$OUT/$name.log"
    log "$name (pid $pid): warm-up, $WARMUP at $RATE spans/s"
    loadgen "$name" warmup "$endpoint" "$RATE" "$WARMUP" "$FIXED_CONCURRENCY"
    require_alive "$pid" "$name"
    (( $(json_get "$OUT/$name-warmup.json" acked_spans) > 0 )) \
        || die "$name acknowledged nothing during warm-up: $(json_get "$OUT/$name-warmup.json" first_error)$(json_get "$OUT/$name-warmup.json" first_refusal) (log: $OUT/$name.log)"
    sleep 1

    log "$name: fixed load, $FIXED_DURATION at $RATE spans/s"
    local before after
    before=$(cpu_ticks "$pid")
    loadgen "$name" fixed "$endpoint" "$RATE" "$FIXED_DURATION" "$FIXED_CONCURRENCY"
    sleep 0.5                           # let the last batch (max wait 200 ms) go out
    require_alive "$pid" "$name"
    after=$(cpu_ticks "$pid")
    local acked
    acked=$(json_get "$OUT/$name-fixed.json" acked_spans)
    (( acked > 0 )) || die "$name acknowledged no spans; see $OUT/$name-fixed.json and $OUT/$name.log"
    CPU_PER_M[$name]=$(python3 -c "print(f'{($after - $before) / $CLK_TCK / $acked * 1e6:.3f}')")
    P99_FIXED[$name]=$(json_get "$OUT/$name-fixed.json" latency_p99_ms)
    RATE_OK[$name]=$(json_get "$OUT/$name-fixed.json" target_rate_reached)
    RSS_FIXED[$name]=$(python3 -c "print(f'{$(vm_hwm_kib "$pid") / 1024:.1f}')")
    REFUSED[$name]=$(json_get "$OUT/$name-fixed.json" refused_spans)

    log "$name: as fast as possible for $MAX_DURATION"
    local start_ns end_ns load_before load_after
    before=$(cpu_ticks "$pid")
    load_before=$(core_ticks "$LOAD_CORE")
    start_ns=$(date +%s%N)
    loadgen "$name" max "$endpoint" 0 "$MAX_DURATION" "$MAX_CONCURRENCY"
    end_ns=$(date +%s%N)
    require_alive "$pid" "$name"
    after=$(cpu_ticks "$pid")
    load_after=$(core_ticks "$LOAD_CORE")
    MAX_RATE[$name]=$(python3 -c "print(round($(json_get "$OUT/$name-max.json" acked_spans_per_sec)))")
    P99_MAX[$name]=$(json_get "$OUT/$name-max.json" latency_p99_ms)
    # Share of its core the gateway used; well below 100% means the load side was the limit.
    BUSY_MAX[$name]=$(python3 -c "print(round(100 * ($after - $before) / $CLK_TCK / (($end_ns - $start_ns) / 1e9)))")
    # The load core runs the load generator and the sink; near 100% there, the load side and
    # not the gateway set the maximum.
    LOAD_BUSY_MAX[$name]=$(python3 -c "print(round(100 * ($load_after - $load_before) / $CLK_TCK / (($end_ns - $start_ns) / 1e9)))")
    RSS_PEAK[$name]=$(python3 -c "print(f'{$(vm_hwm_kib "$pid") / 1024:.1f}')")
    if [[ $name == tracegate* ]] && command -v curl > /dev/null; then
        sleep 0.5                       # the last batch
        curl -s --max-time 2 "http://$TRACEGATE_API/metrics" > "$OUT/$name-metrics.txt" || true
    fi
    stop_pid "$pid"
}

for name in $GATEWAYS; do
    measure "$name"
done

# ---- report --------------------------------------------------------------------------------------
rate_k=$((RATE / 1000))
table=$(
    echo "| gateway | CPU s / 1M spans @ ${rate_k}k/s | p99 ack @ ${rate_k}k/s (ms) | peak RSS @ ${rate_k}k/s (MiB) | max sustained spans/s (1 core) | gateway CPU @ max | load core busy @ max | p99 ack @ max (ms) | peak RSS overall (MiB) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for name in $GATEWAYS; do
        note=""
        [[ ${RATE_OK[$name]} == True ]] || note=" (rate not reached)"
        [[ ${REFUSED[$name]} == 0 ]] || note="$note (${REFUSED[$name]} refused)"
        bound=""
        (( BUSY_MAX[$name] < 90 && LOAD_BUSY_MAX[$name] >= 90 )) && bound=" (load-bound: at least)"
        echo "| $name | ${CPU_PER_M[$name]}$note | ${P99_FIXED[$name]} | ${RSS_FIXED[$name]} | ${MAX_RATE[$name]}$bound | ${BUSY_MAX[$name]}% | ${LOAD_BUSY_MAX[$name]}% | ${P99_MAX[$name]} | ${RSS_PEAK[$name]} |"
    done
)
verdict=""
if [[ -n ${CPU_PER_M[tracegate]:-} ]]; then
    verdict=$(python3 - "${CPU_PER_M[tracegate]}" "${CPU_PER_M[rotel]:-}" "${RSS_FIXED[tracegate]}" "$rate_k" "${CPU_PER_M[tracegate-enrich]:-}" \
        "${CPU_PER_M[tracegate-es]:-}" "${REFUSED[tracegate-es]:-}" "${RATE_OK[tracegate-es]:-}" "${MAX_RATE[tracegate-es]:-}" \
        "${CPU_PER_M[tracegate-disk]:-}" "${P99_FIXED[tracegate-disk]:-}" "${P99_FIXED[tracegate]}" "${CPU_PER_M[jaeger]:-}" <<'EOF'
import sys
tg, rotel, rss, rate_k, enrich = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
es, es_refused, es_rate_ok, es_max = sys.argv[6:10]
disk, disk_p99, mem_p99 = sys.argv[10:13]
jaeger = sys.argv[13]
lines = []
if disk:
    ratio = float(disk) / tg
    ok = "PASS" if ratio <= 1.3 else "FAIL"
    lines.append(f"- CPU per span, disk-backed queue (sync: always) / in memory: {ratio:.2f} (target <= 1.30): {ok}; "
                 f"p99 acknowledgement {disk_p99} ms with group commit vs {mem_p99} ms in memory")
if es:
    extra = float(es) - tg
    ok = "PASS" if es_rate_ok == "True" and es_refused == "0" else "FAIL"
    lines.append(f"- tracegate with the elasticsearch exporter took {rate_k}k spans/s for the whole fixed phase, {es_refused} refused: {ok}; "
                 f"the exporter costs {extra:.2f} CPU s per million spans more than OTLP out ({extra * int(rate_k) / 1000:.2f} of a core at {rate_k}k/s); "
                 f"max {es_max} spans/s on one core")
if rotel and enrich:
    ratio = float(enrich) / float(rotel)
    ok = "PASS" if ratio <= 1 else "FAIL"
    lines.append(f"- CPU per span, tracegate with order_enrich + order_sampling / rotel pass-through: {ratio:.2f} (target <= 1.00): {ok}")
if rotel:
    ratio = tg / float(rotel)
    ok = "PASS" if ratio <= 2 / 3 else "FAIL"
    lines.append(f"- CPU per span, tracegate / rotel: {ratio:.2f} (target <= 0.67): {ok}")
if jaeger:
    lines.append(f"- CPU per span, tracegate / Jaeger v2 pass-through (a Go OpenTelemetry Collector build): {tg / float(jaeger):.2f}")
ok = "PASS" if rss < 100 else "FAIL"
lines.append(f"- tracegate peak RSS at {rate_k}k spans/s: {rss:.1f} MiB (target < 100 MiB): {ok}")
print("\n".join(lines))
EOF
)
fi

machine="$CORES cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)"
revision=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
report=$(
    echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) — tracegate $revision vs rotel $ROTEL_VERSION${JAEGER_VERSION:+ and Jaeger $JAEGER_VERSION}"
    echo
    echo "Command: \`$COMMAND\`"
    echo
    echo "Machine: $machine, load average $LOAD_1MIN at the start. Gateway pinned to core $GATEWAY_CORE, load generator and sink to core $LOAD_CORE."
    echo "Load: $PROTOCOL, $SPANS_PER_REQUEST spans/request; fixed phase $FIXED_DURATION after $WARMUP warm-up, $FIXED_CONCURRENCY in flight; max phase $MAX_DURATION, $MAX_CONCURRENCY in flight."
    echo
    echo "$table"
    echo
    echo "$verdict"
)
echo
echo "$report"
printf '%s\n\n' "$report" >> "$OUT/results.md"
log "appended to $OUT/results.md; raw loadgen reports in $OUT/*.json"

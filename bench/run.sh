#!/usr/bin/env bash
# tracegate vs rotel and Jaeger v2 (an OpenTelemetry Collector build), side by side in one run,
# all exporting OTLP to the same sink.
#
#   bench/run.sh                                  # MODE=fixed, everything, defaults below
#   RATE=50000 GATEWAYS=tracegate bench/run.sh
#   MODE=saturate bench/run.sh                    # CPU per delivered span at saturation
#   MODE=orderless bench/run.sh                   # enrichment with 30% of traces never ordered
#   MODE="fixed saturate orderless" bench/run.sh  # all three, one report
#
# Every gateway runs on one process pinned to GATEWAY_CORE (load generator and sink on LOAD_CORE).
# MODE (one or more of):
#   fixed      for each of GATEWAYS, the sink a real collector (rotel, blackhole exporter):
#              1. fixed offered load (RATE spans/s for FIXED_DURATION, after WARMUP): CPU seconds
#                 per million acked spans (utime+stime from /proc/PID/stat), p99 ack latency,
#                 peak RSS (VmHWM);
#              2. as fast as possible (--rate 0 for MAX_DURATION): acked spans/s, p99, CPU use.
#   saturate   for each of SATURATE_GATEWAYS, the sink `tracegate bench-sink` (counts spans
#              without decoding them, so it is not the limit): a closed loop of
#              SATURATE_CONCURRENCY clients for SATURATE_WARMUP + SATURATE_DURATION; over the
#              last SATURATE_DURATION, CPU seconds per million spans delivered at the sink,
#              delivered spans/s, the gateway's share of its core and the load core's use.
#   orderless  for each of ORDERLESS_GATEWAYS, the counting sink: RATE spans/s for
#              ORDERLESS_DURATION with ORDERLESS_SHARE of the traces never getting an order,
#              every span new (UNIQUE_SPANS): peak RSS and p99 acknowledgement. With IN_FLIGHT,
#              that many orders are placed first (one span each, going no further), which an
#              order monitor holds in flight through the run (tracegate-monitor3: three pending
#              clocks each; compare with tracegate-store, the same gateway without the monitor).
# Results: Markdown tables on stdout, appended with date and command to bench/out/results.md;
# raw loadgen JSON and logs under bench/out/. See bench/README.md and BENCHMARKS.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# ---- knobs (environment) ---------------------------------------------------------------------
MODE=${MODE:-fixed}                      # fixed | saturate | orderless, or several, space-separated
RATE=${RATE:-100000}                     # fixed offered load, spans/s (modes fixed and orderless)
FIXED_DURATION=${FIXED_DURATION:-20s}
WARMUP=${WARMUP:-3s}
MAX_DURATION=${MAX_DURATION:-20s}
SPANS_PER_REQUEST=${SPANS_PER_REQUEST:-100}
FIXED_CONCURRENCY=${FIXED_CONCURRENCY:-32}  # headroom: a stalled reply must not hold back the rate
MAX_CONCURRENCY=${MAX_CONCURRENCY:-32}
PROTOCOL=${PROTOCOL:-grpc}               # grpc | http
GATEWAYS=${GATEWAYS:-"tracegate tracegate-enrich rotel jaeger"}       # mode fixed
SATURATE_GATEWAYS=${SATURATE_GATEWAYS:-"tracegate tracegate-enrich-only rotel"}
SATURATE_WARMUP=${SATURATE_WARMUP:-3s}   # saturated, not counted
SATURATE_DURATION=${SATURATE_DURATION:-20s}
SATURATE_CONCURRENCY=${SATURATE_CONCURRENCY:-32}
ORDERLESS_GATEWAYS=${ORDERLESS_GATEWAYS:-tracegate-enrich}
ORDERLESS_SHARE=${ORDERLESS_SHARE:-0.3}  # share of traces that never get an order
ORDERLESS_DURATION=${ORDERLESS_DURATION:-$FIXED_DURATION}
IN_FLIGHT=${IN_FLIGHT:-0}                # mode orderless: orders placed before the warm-up that go no further
SINK=${SINK:-}                           # rotel | counting; default: rotel for fixed, counting otherwise
UNIQUE_SPANS=${UNIQUE_SPANS:-auto}       # 1: fixed-rate runs send every span once (loadgen --unique-spans),
                                         # as real traffic; 0: a pool of 25 600 spans sent again and again;
                                         # auto: every span once in mode orderless (what a cache or store
                                         # holds grows as with real traffic), the pool otherwise
LATENCY_LOG=${LATENCY_LOG:-0}            # 1: each acked request's start and latency to bench/out/NAME-PHASE.latency
SKIP_BUILD=${SKIP_BUILD:-0}
GATEWAY_CORE=${GATEWAY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}                # load generator and sink

# ---- addresses (environment; host:port). The YAML configurations read the same variables. ------
export SINK_GRPC=${SINK_GRPC:-127.0.0.1:14317}
export SINK_HTTP=${SINK_HTTP:-127.0.0.1:14318}
export TRACEGATE_GRPC=${TRACEGATE_GRPC:-127.0.0.1:24317}
export TRACEGATE_HTTP=${TRACEGATE_HTTP:-127.0.0.1:24318}
export TRACEGATE_API=${TRACEGATE_API:-127.0.0.1:28080}
export NULL_ES=${NULL_ES:-127.0.0.1:19200}         # tracegate-es: bench-elasticsearch --serve-null
ROTEL_GRPC=${ROTEL_GRPC:-127.0.0.1:25317}
ROTEL_HTTP=${ROTEL_HTTP:-127.0.0.1:25318}
JAEGER_GRPC=${JAEGER_GRPC:-127.0.0.1:26317}        # jaeger: Jaeger v2 as a pass-through collector
JAEGER_HTTP=${JAEGER_HTTP:-127.0.0.1:26318}
ADDRESSES=(SINK_GRPC SINK_HTTP TRACEGATE_GRPC TRACEGATE_HTTP TRACEGATE_API NULL_ES ROTEL_GRPC ROTEL_HTTP JAEGER_GRPC JAEGER_HTTP)

ROTEL_VERSION=0.0.1a15
BATCH_MAX_SPANS=8192                     # = exporters.sink.batch.max_spans in the YAML
BATCH_TIMEOUT=200ms                      # = exporters.sink.batch.max_wait

OUT=bench/out
export BENCH_DATA_DIR="$OUT/data"             # tracegate-store, tracegate-monitor: the embedded store
TRACEGATE=${TRACEGATE:-target/release/tracegate}  # the binary under test; also the load generator and counting sink
CONFIG=bench/tracegate-bench.yaml
CONFIG_ENRICH=${CONFIG_ENRICH:-bench/tracegate-enrich.yaml}  # the same with order_enrich + order_sampling
CONFIG_ENRICH_ONLY=bench/tracegate-enrich-only.yaml  # the same with order_enrich only (drops nothing)
CONFIG_ES=bench/tracegate-es.yaml           # the same exporting to Elasticsearch (null endpoint)
CONFIG_DISK=bench/tracegate-disk.yaml       # the same with a disk-backed queue (fsync per group)
CONFIG_STORE=bench/tracegate-store.yaml     # enrich-only plus the embedded store (monitor off)
CONFIG_MONITOR=bench/tracegate-monitor.yaml # the same with the order monitor on
CONFIG_MONITOR3=bench/tracegate-monitor3.yaml # the same with three rules that all start at `new`
CONFIG_JAEGER=bench/jaeger-passthrough.yaml # Jaeger v2: otlp receiver -> batch -> otlp exporter
COMMAND="MODE=\"$MODE\" bench/run.sh with RATE=$RATE SPANS_PER_REQUEST=$SPANS_PER_REQUEST PROTOCOL=$PROTOCOL"
[[ " $MODE " == *" fixed "* ]] && COMMAND+=" FIXED_DURATION=$FIXED_DURATION MAX_DURATION=$MAX_DURATION GATEWAYS=\"$GATEWAYS\""
[[ " $MODE " == *" saturate "* ]] && COMMAND+=" SATURATE_DURATION=$SATURATE_DURATION SATURATE_CONCURRENCY=$SATURATE_CONCURRENCY SATURATE_GATEWAYS=\"$SATURATE_GATEWAYS\""
[[ " $MODE " == *" orderless "* ]] && COMMAND+=" ORDERLESS_SHARE=$ORDERLESS_SHARE ORDERLESS_DURATION=$ORDERLESS_DURATION ORDERLESS_GATEWAYS=\"$ORDERLESS_GATEWAYS\""
[[ " $MODE " == *" orderless "* && $IN_FLIGHT != 0 ]] && COMMAND+=" IN_FLIGHT=$IN_FLIGHT"
[[ -n $SINK ]] && COMMAND+=" SINK=$SINK"
[[ $UNIQUE_SPANS != auto ]] && COMMAND+=" UNIQUE_SPANS=$UNIQUE_SPANS"
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
    for _ in $(seq 1 50); do           # gone, and its ports free, before the next one starts
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
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

calc() { python3 -c "print($1)"; }   # a Python expression of numbers the script computed

sink_spans() {  # spans the counting sink has received so far (its GET /count), over plain bash TCP
    local reply
    reply=$(exec 4<>"/dev/tcp/${SINK_HTTP%:*}/${SINK_HTTP##*:}" \
        && printf 'GET /count HTTP/1.0\r\nHost: %s\r\n\r\n' "$SINK_HTTP" >&4 && cat <&4) \
        || die "cannot read the sink's count at http://$SINK_HTTP/count"
    [[ $reply =~ \"spans\":([0-9]+) ]] || die "unexpected reply from the sink's /count: $reply"
    echo "${BASH_REMATCH[1]}"
}

loadgen_cmd() {  # NAME PHASE ENDPOINT RATE DURATION CONCURRENCY [EXTRA ARGS] -> starts it, sets LOADGEN_PID
    local name=$1 phase=$2 endpoint=$3 rate=$4 duration=$5 concurrency=$6
    shift 6
    local limit
    limit=$(calc "int($(seconds "$duration") + 60)")
    if [[ $rate != 0 && ( $UNIQUE_SPANS == 1 || ( $UNIQUE_SPANS == auto && $phase == orderless* ) ) ]]; then
        set -- "$@" --unique-spans
    fi
    if [[ $LATENCY_LOG == 1 ]]; then
        set -- "$@" --latency-log "$OUT/$name-$phase.latency"
    fi
    timeout "$limit" "${ON_LOAD_CORE[@]}" "$TRACEGATE" loadgen \
        --endpoint "$endpoint" --protocol "$PROTOCOL" --rate "$rate" --duration "$duration" \
        --spans-per-request "$SPANS_PER_REQUEST" --concurrency "$concurrency" --json "$@" \
        > "$OUT/$name-$phase.json" 2> "$OUT/$name-$phase.stderr" &
    LOADGEN_PID=$!
    STARTED_PIDS+=("$LOADGEN_PID")
}

loadgen_wait() {  # NAME PHASE: waits for the load generator of loadgen_cmd
    wait "$LOADGEN_PID" || die "loadgen against $1 ($2) failed: $(tail -n 5 "$OUT/$1-$2.stderr")"
}

loadgen() {  # NAME PHASE ENDPOINT RATE DURATION CONCURRENCY [EXTRA ARGS] -> bench/out/NAME-PHASE.json
    # In the background and waited for, so that Ctrl-C or SIGTERM stop the run at once.
    loadgen_cmd "$@"
    loadgen_wait "$1" "$2"
}

endpoint_of() {  # NAME -> the URL the load generator sends to
    local grpc http
    case $1 in
        tracegate|tracegate-enrich|tracegate-enrich-only|tracegate-es|tracegate-disk|tracegate-store|tracegate-monitor|tracegate-monitor3) grpc=$TRACEGATE_GRPC http=$TRACEGATE_HTTP ;;
        rotel) grpc=$ROTEL_GRPC http=$ROTEL_HTTP ;;
        jaeger) grpc=$JAEGER_GRPC http=$JAEGER_HTTP ;;
        *) die "unknown gateway $1 (choose from: tracegate tracegate-enrich tracegate-enrich-only tracegate-es tracegate-disk tracegate-store tracegate-monitor tracegate-monitor3 rotel jaeger)" ;;
    esac
    if [[ $PROTOCOL == http ]]; then echo "http://$http"; else echo "http://$grpc"; fi
}

start_gateway() {  # NAME -> sets GATEWAY_PID
    local name=$1 pid config=
    case $name in
        tracegate) config=$CONFIG ;;
        tracegate-enrich) config=$CONFIG_ENRICH ;;
        tracegate-enrich-only) config=$CONFIG_ENRICH_ONLY ;;
        tracegate-es) config=$CONFIG_ES ;;
        tracegate-disk) rm -rf "$OUT/queue"; config=$CONFIG_DISK ;;
        # Each starts on an empty store.
        tracegate-store) rm -rf "$BENCH_DATA_DIR"; config=$CONFIG_STORE ;;
        tracegate-monitor) rm -rf "$BENCH_DATA_DIR"; config=$CONFIG_MONITOR ;;
        tracegate-monitor3) rm -rf "$BENCH_DATA_DIR"; config=$CONFIG_MONITOR3 ;;
    esac
    case $name in
        tracegate*)
            "${ON_GATEWAY_CORE[@]}" "$TRACEGATE" run --config "$config" > "$OUT/$name.log" 2>&1 &
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
        *) die "unknown gateway $name (choose from: tracegate tracegate-enrich tracegate-enrich-only tracegate-es tracegate-disk tracegate-store tracegate-monitor tracegate-monitor3 rotel jaeger)" ;;
    esac
    STARTED_PIDS+=("$pid")
    echo "$pid" > "$OUT/$name.pid"
    GATEWAY_PID=$pid
}

start_gateway_and_wait() {  # NAME -> sets GATEWAY_PID, ENDPOINT
    ENDPOINT=$(endpoint_of "$1")
    start_gateway "$1"
    wait_listening "${ENDPOINT#http://}" "$GATEWAY_PID" "$1" "$OUT/$1.log"
}

scrape_metrics() {  # NAME SUFFIX: tracegate's /metrics at the end of its run, when curl is there
    if [[ $1 == tracegate* ]] && command -v curl > /dev/null; then
        sleep 0.5                       # the last batch
        curl -s --max-time 2 "http://$TRACEGATE_API/metrics" > "$OUT/$1$2-metrics.txt" || true
    fi
}

# ---- preflight -----------------------------------------------------------------------------------
for mode in $MODE; do
    [[ $mode == fixed || $mode == saturate || $mode == orderless ]] || die "MODE must be one or more of: fixed saturate orderless (got \"$MODE\")"
done
[[ -z $SINK || $SINK == rotel || $SINK == counting ]] || die "SINK must be rotel or counting"
[[ $PROTOCOL == grpc || $PROTOCOL == http ]] || die "PROTOCOL must be grpc or http"
for var in "${ADDRESSES[@]}"; do
    [[ ${!var} =~ ^[^:]+:[0-9]+$ ]] || die "$var must be host:port, got \"${!var}\""
done
command -v python3 > /dev/null || die "python3 is needed (Debian: python3, python3-venv)"
command -v taskset > /dev/null || die "taskset is needed (Debian: util-linux)"
python3 -c 'import sys; f = float(sys.argv[1]); sys.exit(0 if 0 <= f <= 1 else 1)' "$ORDERLESS_SHARE" 2>/dev/null \
    || die "ORDERLESS_SHARE must be a number from 0 to 1, got \"$ORDERLESS_SHARE\""
[[ $IN_FLIGHT =~ ^[0-9]+$ ]] || die "IN_FLIGHT must be a number of orders, got \"$IN_FLIGHT\""
[[ $UNIQUE_SPANS == 0 || $UNIQUE_SPANS == 1 || $UNIQUE_SPANS == auto ]] \
    || die "UNIQUE_SPANS must be 0, 1 or auto, got \"$UNIQUE_SPANS\""
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
for var in "${ADDRESSES[@]}"; do
    listening "${!var}" && die "${!var} ($var) is already in use; stop whatever listens there or set $var"
done

sink_of() {  # MODE -> rotel | counting
    if [[ -n $SINK ]]; then echo "$SINK"; elif [[ $1 == fixed ]]; then echo rotel; else echo counting; fi
}
ALL_GATEWAYS=""
NEED_ROTEL=0
for mode in $MODE; do
    case $mode in
        fixed) ALL_GATEWAYS+=" $GATEWAYS" ;;
        saturate) ALL_GATEWAYS+=" $SATURATE_GATEWAYS" ;;
        orderless) ALL_GATEWAYS+=" $ORDERLESS_GATEWAYS" ;;
    esac
    [[ $(sink_of "$mode") == rotel ]] && NEED_ROTEL=1
done
[[ " $ALL_GATEWAYS " == *" rotel "* ]] && NEED_ROTEL=1
[[ " $MODE " != *" saturate "* || $(sink_of saturate) == counting ]] \
    || die "MODE=saturate counts delivery at the counting sink; unset SINK or set SINK=counting"
for name in $ALL_GATEWAYS; do endpoint_of "$name" > /dev/null; done   # unknown names fail here

if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    cargo build --release
fi
[[ -x $TRACEGATE ]] || die "$TRACEGATE is missing; run cargo build --release"
for mode in $MODE; do
    [[ $(sink_of "$mode") == rotel ]] || "$TRACEGATE" bench-sink --help > /dev/null 2>&1 \
        || die "$TRACEGATE has no bench-sink command (the counting sink); rebuild it (cargo build --release)"
done

if (( NEED_ROTEL )); then
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
fi
if [[ " $ALL_GATEWAYS " == *" jaeger "* ]]; then
    # JAEGER_BIN, or the build of scripts/jaeger/install.sh (10 to 15 minutes the first time).
    JAEGER=$(bash scripts/jaeger/install.sh) || die "Jaeger v2 is not available (bash scripts/jaeger/install.sh)"
    [[ -x $JAEGER ]] || die "no Jaeger binary at $JAEGER"
    JAEGER_VERSION=$(cat "$JAEGER.version" 2>/dev/null || echo "(JAEGER_BIN)")
fi

# ---- the sink ------------------------------------------------------------------------------------
SINK_PID=
SINK_KIND=
start_sink() {  # rotel | counting
    SINK_KIND=$1
    if [[ $1 == rotel ]]; then
        log "starting the sink (rotel, blackhole exporter) on $SINK_GRPC"
        "${ON_LOAD_CORE[@]}" "$ROTEL" start --otlp-grpc-endpoint "$SINK_GRPC" --otlp-http-endpoint "$SINK_HTTP" \
            --exporter blackhole --pid-file "$OUT/sink-agent.pid" --log-file "$OUT/sink-agent.log" \
            > "$OUT/sink.log" 2>&1 &
    else
        log "starting the counting sink (tracegate bench-sink) on $SINK_GRPC and $SINK_HTTP"
        "${ON_LOAD_CORE[@]}" "$TRACEGATE" bench-sink --grpc "$SINK_GRPC" --http "$SINK_HTTP" > "$OUT/sink.log" 2>&1 &
    fi
    SINK_PID=$!
    STARTED_PIDS+=("$SINK_PID")
    wait_listening "$SINK_GRPC" "$SINK_PID" sink "$OUT/sink.log"
    wait_listening "$SINK_HTTP" "$SINK_PID" sink "$OUT/sink.log"
}
stop_sink() {
    [[ -n $SINK_PID ]] && stop_pid "$SINK_PID"
    SINK_PID=
    SINK_KIND=
}

if [[ " $ALL_GATEWAYS " == *" tracegate-es "* ]]; then
    log "starting the null Elasticsearch endpoint on $NULL_ES"
    "${ON_LOAD_CORE[@]}" "$TRACEGATE" bench-elasticsearch --serve-null "$NULL_ES" > "$OUT/null-es.log" 2>&1 &
    NULL_ES_PID=$!
    STARTED_PIDS+=("$NULL_ES_PID")
    wait_listening "$NULL_ES" "$NULL_ES_PID" null-es "$OUT/null-es.log"
fi

# ---- mode fixed: one gateway at a time -----------------------------------------------------------
declare -A CPU_PER_M P99_FIXED RSS_FIXED RATE_OK MAX_RATE P99_MAX RSS_PEAK BUSY_MAX LOAD_BUSY_MAX REFUSED

measure_fixed() {
    local name=$1 pid endpoint
    start_gateway_and_wait "$name"
    pid=$GATEWAY_PID endpoint=$ENDPOINT
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
    CPU_PER_M[$name]=$(calc "f'{($after - $before) / $CLK_TCK / $acked * 1e6:.3f}'")
    P99_FIXED[$name]=$(json_get "$OUT/$name-fixed.json" latency_p99_ms)
    RATE_OK[$name]=$(json_get "$OUT/$name-fixed.json" target_rate_reached)
    RSS_FIXED[$name]=$(calc "f'{$(vm_hwm_kib "$pid") / 1024:.1f}'")
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
    MAX_RATE[$name]=$(calc "round($(json_get "$OUT/$name-max.json" acked_spans_per_sec))")
    P99_MAX[$name]=$(json_get "$OUT/$name-max.json" latency_p99_ms)
    # Share of its core the gateway used; well below 100% means the load side was the limit.
    BUSY_MAX[$name]=$(calc "round(100 * ($after - $before) / $CLK_TCK / (($end_ns - $start_ns) / 1e9))")
    # The load core runs the load generator and the sink; near 100% there, the load side and
    # not the gateway set the maximum.
    LOAD_BUSY_MAX[$name]=$(calc "round(100 * ($load_after - $load_before) / $CLK_TCK / (($end_ns - $start_ns) / 1e9))")
    RSS_PEAK[$name]=$(calc "f'{$(vm_hwm_kib "$pid") / 1024:.1f}'")
    scrape_metrics "$name" ""
    stop_pid "$pid"
}

report_fixed() {
    local rate_k=$((RATE / 1000)) table verdict=""
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
    echo "### Fixed rate and maximum (sink: $(sink_of fixed))"
    echo
    echo "Fixed phase $FIXED_DURATION at $RATE spans/s after $WARMUP warm-up, $FIXED_CONCURRENCY in flight; max phase $MAX_DURATION, $MAX_CONCURRENCY in flight."
    echo
    echo "$table"
    echo
    echo "$verdict"
}

# ---- mode saturate: CPU per delivered span, the gateway saturated, the sink not the limit --------
declare -A SAT_CPU_PER_M SAT_RATE SAT_BUSY SAT_LOAD_BUSY SAT_ACKED SAT_REFUSED SAT_P99 SAT_RSS

measure_saturated() {
    local name=$1 pid endpoint
    start_gateway_and_wait "$name"
    pid=$GATEWAY_PID endpoint=$ENDPOINT
    local warmup_s duration_s
    warmup_s=$(seconds "$SATURATE_WARMUP")
    duration_s=$(seconds "$SATURATE_DURATION")
    # One closed-loop run: SATURATE_WARMUP to fill the gateway's queue and reach a steady state,
    # then SATURATE_DURATION measured, then a second so that the window closes under load.
    log "$name (pid $pid): saturated for $SATURATE_WARMUP + $SATURATE_DURATION, $SATURATE_CONCURRENCY in flight"
    loadgen_cmd "$name" saturate "$endpoint" 0 "$(calc "f'{round(($warmup_s + $duration_s + 1) * 1000)}ms'")" "$SATURATE_CONCURRENCY"
    sleep "$warmup_s"
    require_alive "$pid" "$name"
    local cpu_before cpu_after sink_before sink_after load_before load_after start_ns end_ns
    start_ns=$(date +%s%N)
    cpu_before=$(cpu_ticks "$pid")
    load_before=$(core_ticks "$LOAD_CORE")
    sink_before=$(sink_spans)
    sleep "$duration_s"
    end_ns=$(date +%s%N)
    cpu_after=$(cpu_ticks "$pid")
    load_after=$(core_ticks "$LOAD_CORE")
    sink_after=$(sink_spans)
    require_alive "$pid" "$name"
    loadgen_wait "$name" saturate
    local delivered=$((sink_after - sink_before))
    (( delivered > 0 )) || die "the sink received nothing from $name while it was saturated; see $OUT/$name-saturate.json and $OUT/$name.log"
    local wall="(($end_ns - $start_ns) / 1e9)" cpu="(($cpu_after - $cpu_before) / $CLK_TCK)"
    SAT_CPU_PER_M[$name]=$(calc "f'{$cpu / $delivered * 1e6:.3f}'")
    SAT_RATE[$name]=$(calc "round($delivered / $wall)")
    SAT_BUSY[$name]=$(calc "round(100 * $cpu / $wall)")
    SAT_LOAD_BUSY[$name]=$(calc "round(100 * ($load_after - $load_before) / $CLK_TCK / $wall)")
    SAT_ACKED[$name]=$(calc "round($(json_get "$OUT/$name-saturate.json" acked_spans_per_sec))")
    SAT_REFUSED[$name]=$(json_get "$OUT/$name-saturate.json" refused_spans)
    SAT_P99[$name]=$(json_get "$OUT/$name-saturate.json" latency_p99_ms)
    SAT_RSS[$name]=$(calc "f'{$(vm_hwm_kib "$pid") / 1024:.1f}'")
    scrape_metrics "$name" "-saturate"
    stop_pid "$pid"
}

report_saturated() {
    local table verdict
    table=$(
        echo "| gateway | CPU s / 1M spans delivered | delivered spans/s | gateway core share | load core busy | acked spans/s (whole run) | refused spans | p99 ack (ms) | peak RSS (MiB) |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for name in $SATURATE_GATEWAYS; do
            note=""
            # Not saturated: the load side (generator plus sink) held it back.
            (( SAT_BUSY[$name] < 90 )) && note=" (not saturated)"
            [[ $name == tracegate-enrich ]] && note="$note (order_sampling drops spans)"
            echo "| $name | ${SAT_CPU_PER_M[$name]}$note | ${SAT_RATE[$name]} | ${SAT_BUSY[$name]}% | ${SAT_LOAD_BUSY[$name]}% | ${SAT_ACKED[$name]} | ${SAT_REFUSED[$name]} | ${SAT_P99[$name]} | ${SAT_RSS[$name]} |"
        done
    )
    verdict=$(python3 - "${SAT_CPU_PER_M[rotel]:-}" "${SAT_CPU_PER_M[tracegate]:-}" "${SAT_CPU_PER_M[tracegate-enrich-only]:-}" \
        "${SAT_CPU_PER_M[jaeger]:-}" "${SAT_BUSY[tracegate]:-}" "${SAT_BUSY[tracegate-enrich-only]:-}" "${SAT_BUSY[rotel]:-}" <<'EOF'
import sys
rotel, tg, enrich, jaeger = sys.argv[1:5]
busy = {"tracegate": sys.argv[5], "tracegate-enrich-only": sys.argv[6], "rotel": sys.argv[7]}
lines = []
def caveat(*names):
    low = [n for n in names if busy[n] and int(busy[n]) < 90]
    return f" ({', '.join(low)} below 90% of its core: not saturated, repeat on a quiet machine)" if low else ""
if rotel and tg:
    ratio = float(tg) / float(rotel)
    ok = "PASS" if ratio <= 0.67 else "FAIL"
    lines.append(f"- CPU per delivered span at saturation, tracegate pass-through / rotel pass-through: {ratio:.2f} (target <= 0.67): {ok}{caveat('tracegate', 'rotel')}")
if rotel and enrich:
    ratio = float(enrich) / float(rotel)
    ok = "PASS" if ratio <= 1.0 else "FAIL"
    lines.append(f"- CPU per delivered span at saturation, tracegate with order_enrich / rotel pass-through: {ratio:.2f} (target <= 1.00): {ok}{caveat('tracegate-enrich-only', 'rotel')}")
if jaeger and tg:
    lines.append(f"- CPU per delivered span at saturation, tracegate / Jaeger v2 pass-through: {float(tg) / float(jaeger):.2f}")
if not lines:
    lines.append("- (no ratio: run tracegate, tracegate-enrich-only and rotel together for the targets)")
print("\n".join(lines))
EOF
)
    echo "### Saturated (sink: tracegate bench-sink, counting)"
    echo
    echo "Closed loop, $SATURATE_CONCURRENCY in flight, $SATURATE_WARMUP to settle, then $SATURATE_DURATION measured: gateway CPU and spans counted at the sink over the same window."
    echo
    echo "$table"
    echo
    echo "$verdict"
}

# ---- mode orderless: enrichment with traces that never get an order, at a fixed rate -------------
declare -A OL_RSS OL_P99 OL_RATE_OK OL_REFUSED OL_TRACE_SHARE OL_SPAN_SHARE OL_DELIVERED OL_CPU_PER_M OL_PENDING

monitor_pending() {  # clocks the gateway's order monitors hold pending (its /metrics), or nothing
    command -v curl > /dev/null || return 0
    curl -s --max-time 5 "http://$TRACEGATE_API/metrics" \
        | awk '/^tracegate_order_monitor_pending[{ ]/ { sum += $NF; seen = 1 } END { if (seen) printf "%d\n", sum }'
}

exporter_queues() {  # spans in the gateway's exporter queues (its /metrics), or nothing
    command -v curl > /dev/null || return 0
    curl -s --max-time 5 "http://$TRACEGATE_API/metrics" \
        | awk '/^tracegate_exporter_queue_size[{ ]/ { sum += $NF; seen = 1 } END { if (seen) printf "%d\n", sum }'
}

place_orders() {  # NAME ENDPOINT PID: IN_FLIGHT orders that go no further, then the monitor settled
    local name=$1 endpoint=$2 pid=$3 acked pending last=unread
    log "$name: placing $IN_FLIGHT orders that go no further"
    loadgen "$name" in-flight "$endpoint" 0 600s "$FIXED_CONCURRENCY" --placed-orders "$IN_FLIGHT"
    acked=$(json_get "$OUT/$name-in-flight.json" acked_spans)
    [[ $acked == "$IN_FLIGHT" ]] || die "$name acknowledged $acked of the $IN_FLIGHT placed orders; see $OUT/$name-in-flight.json"
    # The exporters (the embedded store above all) work off what they were given, and the
    # monitor applies and writes the orders in its own turns: wait until both are done.
    for _ in $(seq 600); do
        require_alive "$pid" "$name"
        [[ $(exporter_queues) == 0 ]] && break
        sleep 1
    done
    for _ in $(seq 120); do
        require_alive "$pid" "$name"
        pending=$(monitor_pending)     # nothing from a gateway without a monitor
        [[ $pending == "$last" ]] && break
        last=$pending
        sleep 1
    done
    OL_PENDING[$name]=${pending:-n/a}
    log "$name: $IN_FLIGHT orders placed, exporter queues at $(exporter_queues) spans; monitor clocks pending: ${OL_PENDING[$name]}"
}

measure_orderless() {
    local name=$1 pid endpoint
    start_gateway_and_wait "$name"
    pid=$GATEWAY_PID endpoint=$ENDPOINT
    (( IN_FLIGHT > 0 )) && place_orders "$name" "$endpoint" "$pid"
    log "$name (pid $pid): warm-up, $WARMUP at $RATE spans/s, orderless share $ORDERLESS_SHARE"
    loadgen "$name" orderless-warmup "$endpoint" "$RATE" "$WARMUP" "$FIXED_CONCURRENCY" --orderless-share "$ORDERLESS_SHARE"
    require_alive "$pid" "$name"
    sleep 1
    log "$name: $ORDERLESS_DURATION at $RATE spans/s, $ORDERLESS_SHARE of the traces never get an order"
    local before after sink_before=0 sink_after=0
    [[ $(sink_of orderless) == counting ]] && sink_before=$(sink_spans)
    before=$(cpu_ticks "$pid")
    loadgen "$name" orderless "$endpoint" "$RATE" "$ORDERLESS_DURATION" "$FIXED_CONCURRENCY" --orderless-share "$ORDERLESS_SHARE"
    sleep 0.5                           # the last batch
    require_alive "$pid" "$name"
    after=$(cpu_ticks "$pid")
    local acked
    acked=$(json_get "$OUT/$name-orderless.json" acked_spans)
    (( acked > 0 )) || die "$name acknowledged no spans; see $OUT/$name-orderless.json and $OUT/$name.log"
    if [[ $(sink_of orderless) == counting ]]; then
        sink_after=$(sink_spans)
        OL_DELIVERED[$name]=$((sink_after - sink_before))
    else
        OL_DELIVERED[$name]="n/a"
    fi
    OL_CPU_PER_M[$name]=$(calc "f'{($after - $before) / $CLK_TCK / $acked * 1e6:.3f}'")
    OL_RSS[$name]=$(calc "f'{$(vm_hwm_kib "$pid") / 1024:.1f}'")
    OL_P99[$name]=$(json_get "$OUT/$name-orderless.json" latency_p99_ms)
    OL_RATE_OK[$name]=$(json_get "$OUT/$name-orderless.json" target_rate_reached)
    OL_REFUSED[$name]=$(json_get "$OUT/$name-orderless.json" refused_spans)
    OL_TRACE_SHARE[$name]=$(calc "f'{$(json_get "$OUT/$name-orderless.json" orderless_trace_share):.2f}'")
    OL_SPAN_SHARE[$name]=$(calc "f'{$(json_get "$OUT/$name-orderless.json" orderless_span_share):.2f}'")
    scrape_metrics "$name" "-orderless"
    stop_pid "$pid"
}

report_orderless() {
    local rate_k=$((RATE / 1000)) table verdict=""
    table=$(
        local head="| gateway | orderless traces (spans) |" rule="| --- | ---: |"
        (( IN_FLIGHT > 0 )) && head+=" monitor clocks pending |" rule+=" ---: |"
        echo "$head peak RSS @ ${rate_k}k/s (MiB) | p99 ack @ ${rate_k}k/s (ms) | CPU s / 1M spans acked | spans delivered | refused spans |"
        echo "$rule ---: | ---: | ---: | ---: | ---: |"
        for name in $ORDERLESS_GATEWAYS; do
            note="" pending=""
            [[ ${OL_RATE_OK[$name]} == True ]] || note=" (rate not reached)"
            (( IN_FLIGHT > 0 )) && pending=" ${OL_PENDING[$name]:-n/a} |"
            echo "| $name | ${OL_TRACE_SHARE[$name]} (${OL_SPAN_SHARE[$name]}) |$pending ${OL_RSS[$name]} | ${OL_P99[$name]}$note | ${OL_CPU_PER_M[$name]} | ${OL_DELIVERED[$name]} | ${OL_REFUSED[$name]} |"
        done
    )
    for name in $ORDERLESS_GATEWAYS; do
        verdict+=$(python3 - "$name" "${OL_RSS[$name]}" "${OL_P99[$name]}" "${OL_RATE_OK[$name]}" "${OL_REFUSED[$name]}" "$rate_k" "${OL_TRACE_SHARE[$name]}" <<'EOF'
import sys
name, rss, p99, rate_ok, refused, rate_k, share = sys.argv[1:8]
taken = " (the full rate was not taken: the figures are of a lower load)" if rate_ok != "True" or refused != "0" else ""
rss_ok = "PASS" if float(rss) < 100 else "FAIL"
p99_ok = "PASS" if p99 and float(p99) < 20 else "FAIL"
print(f"- {name}, {share} of the traces never ordered, {rate_k}k spans/s: peak RSS {float(rss):.1f} MiB (target < 100 MiB): {rss_ok}; "
      f"p99 acknowledgement {p99} ms (target < 20 ms): {p99_ok}{taken}")
EOF
)
        verdict+=$'\n'
    done
    echo "### Orderless traffic (sink: $(sink_of orderless))"
    echo
    local spans="the load generator's pool of 25 600 spans sent again and again"
    [[ $UNIQUE_SPANS != 0 ]] && spans="every span sent once (\`--unique-spans\`)"
    echo "$RATE spans/s for $ORDERLESS_DURATION after $WARMUP warm-up, $FIXED_CONCURRENCY in flight, \`--orderless-share $ORDERLESS_SHARE\`, $spans."
    (( IN_FLIGHT > 0 )) && echo "Before the warm-up, $IN_FLIGHT orders placed that go no further (\`loadgen --placed-orders\`), held in flight by an order monitor; not counted in the figures."
    echo
    echo "$table"
    echo
    echo "$verdict"
}

# ---- run -----------------------------------------------------------------------------------------
SECTIONS=()
for mode in $MODE; do
    kind=$(sink_of "$mode")
    [[ $SINK_KIND == "$kind" ]] || { stop_sink; start_sink "$kind"; }
    case $mode in
        fixed)
            for name in $GATEWAYS; do measure_fixed "$name"; done
            SECTIONS+=("$(report_fixed)")
            ;;
        saturate)
            for name in $SATURATE_GATEWAYS; do measure_saturated "$name"; done
            SECTIONS+=("$(report_saturated)")
            ;;
        orderless)
            for name in $ORDERLESS_GATEWAYS; do measure_orderless "$name"; done
            SECTIONS+=("$(report_orderless)")
            ;;
    esac
done
stop_sink

# ---- report --------------------------------------------------------------------------------------
machine="$CORES cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)"
revision=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || revision+=" (with uncommitted changes)"
report=$(
    echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) — tracegate $revision vs rotel $ROTEL_VERSION${JAEGER_VERSION:+ and Jaeger $JAEGER_VERSION}"
    echo
    echo "Command: \`$COMMAND\`"
    echo
    echo "Machine: $machine, load average $LOAD_1MIN at the start. Gateway pinned to core $GATEWAY_CORE, load generator and sink to core $LOAD_CORE."
    echo "Load: $PROTOCOL, $SPANS_PER_REQUEST spans/request."
    for section in "${SECTIONS[@]}"; do
        echo
        echo "$section"
    done
)
echo
echo "$report"
printf '%s\n\n' "$report" >> "$OUT/results.md"
log "appended to $OUT/results.md; raw loadgen reports in $OUT/*.json"

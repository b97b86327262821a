#!/usr/bin/env bash
# Recovery of a disk-backed queue (issue 14): fills an exporter's queue (sending_queue.storage)
# to TARGET_MIB with the downstream down, kills tracegate with SIGKILL, starts it again and
# measures how long the start takes until it listens, with the batches read back from disk, and
# the resident memory before and after. Prints one Markdown table row per figure.
#
#   bench/disk-recovery.sh                 # 1 GiB
#   TARGET_MIB=256 SKIP_BUILD=1 bench/disk-recovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_MIB=${TARGET_MIB:-1024}
TRACEGATE=${TRACEGATE:-target/release/tracegate}
OUT=bench/out/recovery
GRPC=${RECOVERY_GRPC:-127.0.0.1:34317}          # tracegate's OTLP/gRPC
API=${RECOVERY_API:-127.0.0.1:38080}            # tracegate's API
DOWN=${RECOVERY_DOWN:-127.0.0.1:34999}          # the exporter's endpoint, where nothing listens

[[ ${SKIP_BUILD:-} == 1 ]] || cargo build --release --locked --quiet
rm -rf "$OUT" && mkdir -p "$OUT"
cat > "$OUT/tracegate.yaml" <<EOF
receivers:
  otlp: {grpc: {endpoint: "$GRPC"}}
exporters:
  down:
    type: otlp
    endpoint: "http://$DOWN"
    retry_on_failure: {initial_interval: 30s, max_interval: 60s}
    sending_queue: {queue_size: 50000000, storage: $OUT/queue, sync: always}
api: {endpoint: "$API"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [down]}
EOF

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

metric() {  # NAME -> the value of the first sample of NAME on /metrics
    curl -s "http://$API/metrics" | awk -v n="$1" '$1 ~ "^"n"(\\{|$)" { print $2; exit }'
}
rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
wait_listening() {
    local deadline=$((SECONDS + 600))
    until (exec 3<>"/dev/tcp/${GRPC%:*}/${GRPC#*:}") 2>/dev/null; do
        (( SECONDS < deadline )) || { echo "tracegate did not start" >&2; exit 1; }
        sleep 0.01
    done
}

"$TRACEGATE" run --config "$OUT/tracegate.yaml" > "$OUT/first.log" 2>&1 &
PIDS+=($!); first=$!
wait_listening
"$TRACEGATE" loadgen --endpoint "http://$GRPC" --rate 0 --duration 30m --concurrency 16 --json > "$OUT/loadgen.json" 2> "$OUT/loadgen.stderr" &
PIDS+=($!); load=$!
fill_start=$(date +%s.%N)
while :; do
    bytes=$(du -sb "$OUT/queue" | cut -f1)
    (( bytes >= TARGET_MIB * 1024 * 1024 )) && break
    kill -0 "$load" 2>/dev/null || { echo "the load generator stopped" >&2; tail "$OUT/loadgen.stderr" >&2; exit 1; }
    sleep 1
done
fill_end=$(date +%s.%N)
kill "$load" 2>/dev/null || true
sleep 1
queued_spans=$(metric tracegate_exporter_queue_size)
rss_before=$(rss_mib "$first")
bytes=$(du -sb "$OUT/queue" | cut -f1)
kill -9 "$first"
wait "$first" 2>/dev/null || true

start=$(date +%s.%N)
"$TRACEGATE" run --config "$OUT/tracegate.yaml" > "$OUT/second.log" 2>&1 &
PIDS+=($!); second=$!
# Listeners are bound first; the start is complete when the API answers.
until curl -sf "http://$API/healthz" > /dev/null; do sleep 0.01; done
listening=$(date +%s.%N)
# Every recovered batch is back in the queue once the queue holds what was on disk.
until [[ "$(metric tracegate_exporter_queue_recovered_batches_total)" != "" ]] && \
      (( $(metric tracegate_exporter_queue_size | cut -d. -f1) >= ${queued_spans%.*} )); do
    sleep 0.05
done
restored=$(date +%s.%N)
rss_after=$(rss_mib "$second")

python3 - "$bytes" "$fill_start" "$fill_end" "$start" "$listening" "$restored" "$queued_spans" "$rss_before" "$rss_after" <<'EOF'
import sys
b, fs, fe, s, l, r, spans, rb, ra = sys.argv[1:]
b = int(b); fs, fe, s, l, r = map(float, (fs, fe, s, l, r))
print(f"| queue on disk | {b / 2**20:.0f} MiB, {float(spans):,.0f} spans (filled at {b / 2**20 / (fe - fs):.0f} MiB/s with fsync per group) |")
print(f"| start after kill -9 until the API answers (the log read back) | {l - s:.2f} s |")
print(f"| until every batch is back in the queue | {r - s:.2f} s |")
print(f"| RSS before the kill / after recovery | {rb} MiB / {ra} MiB |")
EOF

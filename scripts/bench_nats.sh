#!/usr/bin/env bash
# The JetStream backend (`--log nats://…`) measured by the same broker-bench scenarios as the
# embedded log, in one run: insert throughput and publish-to-delivery latency with the
# embedded log, one NATS server (R1), and a 3-server NATS cluster (R3 stream); then fan-out
# across nodes on the cluster (the same subscribers on 1 node, then spread over 3 nodes:
# delivered, p99, memory per node); then, with BENCH_FAILOVER=1, the failover faults of
# scripts/failover_nats.py (into bench/failover-nats.jsonl).
#
#   scripts/bench_nats.sh [OUT.jsonl]     # default bench/results-nats.jsonl (replaced)
#
# Every figure is the median of BENCH_RUNS runs (3) of BENCH_DURATION seconds (5), and each
# scenario measures the `ceiling` baseline in the same run. With the default output,
# bench/results.md is then rendered again with a section for these figures.
#
# Needs a current nats-server (`$BROKER_NATS_SERVER`, else the one scripts/test.sh installs,
# else the PATH's) and a release build (cargo build --release --bins). NATS servers listen on
# loopback ports 14250-14252 (routes 16250-16252) and keep their data in a temporary directory
# removed at exit. Each broker start gets a fresh stream.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-bench/results-nats.jsonl}"
bin=target/release/broker-bench
nats="${BROKER_NATS_SERVER:-$HOME/.cache/broker/nats-server-2.12.8/bin/nats-server}"
[ -x "$nats" ] || nats=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats" ] || { echo "nats-server is not installed (scripts/test.sh installs one)" >&2; exit 1; }
echo "nats-server: $("$nats" --version)" >&2
[ -x "$bin" ] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 1; }
runs="${BENCH_RUNS:-3}"
dur="${BENCH_DURATION:-5}"
mkdir -p "$(dirname "$out")"
# Before the output is emptied: a results file being rewritten is not a code change.
commit=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit+"
: > "$out"

scratch=$(mktemp -d)
pids=()
stop_nats() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_nats; rm -rf "$scratch"' EXIT

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nats-server did not listen on $1" >&2
    exit 1
}

start_cluster() { # $1: servers (1 or 3)
    local routes=""
    for i in $(seq 0 $(($1 - 1))); do routes+="${routes:+,}nats://127.0.0.1:$((16250 + i))"; done
    for i in $(seq 0 $(($1 - 1))); do
        local cluster=()
        [ "$1" -gt 1 ] && cluster=(--cluster_name bench --cluster "nats://127.0.0.1:$((16250 + i))" --routes "$routes")
        "$nats" -a 127.0.0.1 -p $((14250 + i)) -n "n$i" "${cluster[@]}" -js -sd "$scratch/nats-$1-$i" \
            >"$scratch/nats-$1-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in $(seq 0 $(($1 - 1))); do wait_port $((14250 + i)); done
    urls=""
    for i in $(seq 0 $(($1 - 1))); do urls+="${urls:+,}nats://127.0.0.1:$((14250 + i))"; done
}

bench() {
    echo "--- broker-bench $*" >&2
    "$bin" --json --runs "$runs" "$@" | sed "s/^{/{\"commit\":\"$commit\",/" >> "$out"
}

scenarios() {
    bench --duration "$dur" "$@" insert --connections 64
    bench --duration "$dur" "$@" fanout --subscribers 200 --rate 200
}

scenarios --fsync always

start_cluster 1
scenarios --broker-arg="--log=$urls" --broker-arg="--log_stream=bench{n}"
stop_nats

start_cluster 3
scenarios --broker-arg="--log=$urls" --broker-arg="--log_stream=bench{n}" --broker-arg=--log_replicas=3
# What several nodes are for: the same subscribers on one node, then spread over three.
bench --duration "$dur" --broker-arg="--log=$urls" --broker-arg="--log_stream=bench{n}" \
    --broker-arg=--log_replicas=3 fanout --nodes 3 --subscribers "${BENCH_NODE_SUBSCRIBERS:-3000}" --rate 100
stop_nats

if [ "${BENCH_FAILOVER:-0}" = 1 ]; then
    python3 scripts/failover_nats.py --runs "$runs" --nats "$nats" --broker target/release/broker \
        --json bench/failover-nats.jsonl >&2
fi

echo "wrote $out" >&2
if [ "$out" = bench/results-nats.jsonl ] && [ -f bench/results.jsonl ]; then
    python3 scripts/bench_report.py bench/results.jsonl bench/results-nats.jsonl bench/failover-nats.jsonl > bench/results.md
    echo "wrote bench/results.md" >&2
fi

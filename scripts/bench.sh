#!/usr/bin/env bash
# Runs Broker's benchmark suite at sizes that fit a 2-core machine in under 10 minutes and
# writes bench/results.md (figures, targets met or not, machine, date, commit).
#
#   scripts/bench.sh            # the suite
#   BENCH_QUICK=1 scripts/bench.sh   # one run of each, short: a smoke test of the tooling
#
# Every scenario measures its baseline (`broker-bench ceiling`, a minimal hyper server) in
# the same run, so figures from noisy machines compare as fractions of it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
bin=target/release/broker-bench
out=bench/results.jsonl
mkdir -p bench
: > "$out"

runs=3
dur=5
restart_records=10000000
if [ -n "${BENCH_QUICK:-}" ]; then
    runs=1
    dur=2
    restart_records=200000
fi
# The idle scenario holds 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)" || true

run() {
    echo "--- broker-bench $*" >&2
    local started=$SECONDS
    "$bin" --json --runs "$runs" "$@" >> "$out"
    echo "    ($((SECONDS - started)) s)" >&2
}

run --duration "$dur" insert --connections 64 --fsync always,never
run --duration "$dur" fanout --subscribers 200,1000 --rate 200,20 --ramp 200
run idle --connections 10000 --idle-secs 5
run resume --events 200000
run restart --records "$restart_records"
run --duration 3 tenants --tenants 1,100,10000 --users 10,100000
run --duration "$dur" login --rate 100

python3 scripts/bench_report.py "$out" > bench/results.md
echo "wrote bench/results.md" >&2

#!/usr/bin/env bash
# Runs Broker's benchmark suite at sizes that fit a 2-core machine in under 10 minutes and
# writes bench/results.md (figures, targets met or not, machine, date, commit).
#
#   scripts/bench.sh                  # the suite
#   scripts/bench.sh restart idle     # only these scenarios, replacing their earlier figures
#   BENCH_QUICK=1 scripts/bench.sh    # one run of each, short: a smoke test of the tooling
#
# Every scenario measures its baseline (`broker-bench ceiling`, a minimal hyper server) in
# the same run, so figures from noisy machines compare as fractions of it.
set -euo pipefail
cd "$(dirname "$0")/.."

only=" $* "
# selected SCENARIO: whether this run measures it (every scenario when none was named).
selected() {
    [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]
}
cargo build --release --workspace --bins
# The profile-guided build (~13 minutes on 2 cores) is only for the insert_pgo scenario.
if selected insert_pgo; then
    scripts/pgo.sh
fi
bin=target/release/broker-bench
out=bench/results.jsonl
mkdir -p bench
# Before the output is touched: a results file being rewritten is not a code change.
commit=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain --untracked-files=no -- . ':!bench')" ] || commit="$commit+"
if [ $# -eq 0 ]; then
    : > "$out"
else
    touch "$out"
    for name in "$@"; do
        grep -v "\"scenario\":\"$name\"" "$out" > "$out.tmp" || true
        mv "$out.tmp" "$out"
    done
fi

runs=3
dur=5
restart_records=10000000
memory_users=1000000
memory_tenants=100000
if [ -n "${BENCH_QUICK:-}" ]; then
    runs=1
    dur=2
    restart_records=200000
    memory_users=20000
    memory_tenants=2000
fi
# The idle scenario holds 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)" || true

# run SCENARIO [broker-bench arguments…]: skipped unless selected (or nothing was).
run() {
    local name=$1
    shift
    if ! selected "$name"; then
        return
    fi
    echo "--- broker-bench $*" >&2
    local started=$SECONDS
    # Each line records the commit it measured, and the scenario's name here (insert_pgo is
    # broker-bench's insert against another binary).
    "$bin" --json --runs "$runs" "$@" |
        sed -e "s/^{/{\"commit\":\"$commit\",/" \
            -e "s/\"scenario\":\"[a-z_]*\"/\"scenario\":\"$name\"/" >> "$out"
    echo "    ($((SECONDS - started)) s)" >&2
}

run insert --duration "$dur" insert --connections 64 --fsync always,never
# The same against the production build (scripts/pgo.sh, built before any scenario runs so
# that the two insert rows are measured minutes apart), each run beside a ceiling of its own.
run insert_pgo --duration "$dur" --broker target/pgo/broker insert --connections 64 --fsync always,never
# The same over HTTPS (self-signed certificate; HTTP/1.1, then HTTP/2), each protocol against
# the ceiling over HTTPS.
run insert_tls --duration "$dur" insert --tls --protocols http1,h2 --connections 64 --fsync always
run fanout --duration "$dur" fanout --subscribers 200,1000 --rate 200,20 --ramp 200
run idle idle --connections 10000 --idle-secs 5
run resume resume --events 200000
run restart restart --records "$restart_records"
run memory memory --users "$memory_users" --tenants "$memory_tenants"
run history --duration "$dur" history --events 1000,1000000
run fanout_filtered --duration "$dur" fanout --subscribers 200 --rate 200 --filter
run tenants --duration 3 tenants --tenants 1,100,10000 --users 10,100000
run login --duration 3 login --rate 100

# The JetStream rows (scripts/bench_nats.sh) keep their section.
python3 scripts/bench_report.py "$out" bench/results-nats.jsonl bench/failover-nats.jsonl > bench/results.md
echo "wrote bench/results.md" >&2

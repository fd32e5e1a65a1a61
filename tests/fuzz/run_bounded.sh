#!/usr/bin/env bash
# Every fuzz target for a bounded time, started from the committed seeds: a CI step.
#
#   tests/fuzz/run_bounded.sh SECONDS
#
# Builds the targets once (cargo-fuzz, nightly, release with debug assertions and overflow
# checks, AddressSanitizer), then runs each for SECONDS with a 10 s limit per input (a hang
# is a failure). Seeds: tests/fuzz/seeds/<target> (committed; refresh them with
# `cd tests/fuzz/corpus-gen && cargo run --release`). New inputs go to tests/fuzz/corpus/
# <target> and crashes to tests/fuzz/artifacts/<target>/ (both ignored by git). Exits
# non-zero if any target found a crash, leak, timeout or out-of-memory, and prints the
# command that replays it. Needs: a nightly toolchain and `cargo install cargo-fuzz`.
set -uo pipefail

secs=${1:?usage: tests/fuzz/run_bounded.sh SECONDS}
case $secs in '' | *[!0-9]*) echo "SECONDS must be a whole number" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fuzz=tests/fuzz
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  exit 2
fi
flags=(-O -a --fuzz-dir "$fuzz")

t0=$(date +%s)
if ! cargo +nightly fuzz build "${flags[@]}"; then
  echo "fuzz targets do not build" >&2
  exit 1
fi
echo "build: $(($(date +%s) - t0)) s"

failed=()
for target in $(cargo +nightly fuzz list --fuzz-dir "$fuzz"); do
  work=$fuzz/corpus/$target
  artifacts=$fuzz/artifacts/$target
  seeds=$fuzz/seeds/$target
  mkdir -p "$work" "$artifacts" "$seeds"
  log=$(mktemp)
  cargo +nightly fuzz run "${flags[@]}" "$target" "$work" "$seeds" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    echo "$target: ok, ${runs:-?} inputs in ${secs} s"
  else
    echo "$target: FAILED (exit $status)"
    grep -E "^(==[0-9]+==ERROR|thread .* panicked|SUMMARY|ALARM|Test unit written|artifact_prefix)" "$log" | head -20
    for crash in "$artifacts"/*; do
      [ -f "$crash" ] && echo "  replay: cargo +nightly fuzz run ${flags[*]} $target $crash"
    done
    failed+=("$target")
  fi
  rm -f "$log"
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz targets that failed: ${failed[*]}"
  exit 1
fi
echo "all fuzz targets ran ${secs} s each with no failure"

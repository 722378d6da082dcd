#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer on stable Rust and runs each for
# SECONDS_PER_TARGET seconds (default 30), starting from the committed seeds in
# fuzz/corpus/<target>/. Exits non-zero when any target crashes (a panic or an abort,
# a failed allocation included; one input running over 10 s; the process growing over
# 2 GB), after printing the reproducer path of each crash.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Environment: CARGO_TARGET_DIR (default fuzz/target), FUZZ_WORK (where new corpus
# entries and crash files go; default fuzz/work), FUZZ_BUILD=0 (run the targets as last
# built). SECONDS_PER_TARGET 0 only builds.
#
# No nightly flag is used: the coverage instrumentation that libFuzzer needs is LLVM's
# SanitizerCoverage pass, which stable rustc runs with -Cpasses=sancov-module and its
# -Cllvm-args options: the coverage flags `cargo fuzz build --sanitizer none` passes
# (it adds no nightly flag with that option), without its tuning (branch folding, stack
# depth, one codegen unit), and without -Zsanitizer=address, which needs nightly:
# keyward forbids unsafe code, and what the fuzzer looks for here is panics, aborts,
# unbounded memory and hangs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${1:-30}"
shift || true
case "$seconds" in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

triple="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
work="${FUZZ_WORK:-$here/work}"
# --target keeps these flags off build scripts and procedural macros, as cargo-fuzz does.
export RUSTFLAGS="--cfg fuzzing \
  -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cdebug-assertions \
  -Coverflow-checks"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for file in "$here"/fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
fi

if [ "${FUZZ_BUILD:-1}" != 0 ]; then
  started=$(date +%s)
  (cd "$here" && cargo build --locked --release --target "$triple" --bins)
  echo "fuzz: built the targets in $(( $(date +%s) - started )) s"
fi
bin="$CARGO_TARGET_DIR/$triple/release"
if [ "$seconds" -eq 0 ]; then
  exit 0
fi

failed=()
summary=()
for target in "${targets[@]}"; do
  seeds="$here/corpus/$target"
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target"
  log="$work/logs/$target.log"
  mkdir -p "$seeds" "$corpus" "$artifacts" "$(dirname "$log")"
  dict=()
  if [ -f "$here/dicts/$target.dict" ]; then
    dict=("-dict=$here/dicts/$target.dict")
  fi
  echo "fuzz: $target for ${seconds} s"
  # New inputs go to the first directory (the work corpus), never into the seeds.
  status=0
  "$bin/$target" "$corpus" "$seeds" "${dict[@]}" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -max_len=16384 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  summary+=("$(printf '%-16s %10s runs in %4s s' "$target" "${runs:-?}" "$seconds")")
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target FAILED (exit $status); last lines of $log:" >&2
    tail -n 30 "$log" >&2
    for crash in "$artifacts"/*; do
      [ -e "$crash" ] || continue
      echo "fuzz: reproducer: $crash (run: $bin/$target $crash)" >&2
    done
    failed+=("$target")
  fi
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"

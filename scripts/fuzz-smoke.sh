#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short while (default 20 s each) on the stable toolchain.
# usage: scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1   # cargo-fuzz needs -Z flags; this is how stable runs them
targets=$(cargo fuzz list)
RUSTC_BOOTSTRAP=1 cargo fuzz build >/dev/null 2>&1 || cargo fuzz build
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz-smoke: $t for ${secs}s"
  cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
    | grep -E '^(stat::number_of_executed_units|Done)|ERROR|panicked' || true
  # cargo fuzz exits non-zero on a finding; re-check so a crash fails the script.
  if ls "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/timeout-* >/dev/null 2>&1; then
    echo "fuzz-smoke: $t found a failure:" >&2
    ls "fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz-smoke: all targets clean"

#!/usr/bin/env bash
# End-to-end echo throughput: wsgate vs rawecho (the kernel ceiling), server pinned to core 0,
# load to core 1. Builds the load tools from ../shared/tools (or $LOADTOOLS_SRC).
# usage: scripts/bench-echo.sh [SECONDS] [REPEATS]
# BASE_WSGATE=path/to/another/wsgate: the same runs against that build too, in the same rounds
# (machines differ 2x from one session to the next; only ratios in one run mean much).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-3}
src=${LOADTOOLS_SRC:-../shared/tools}
tools=$(bash "$src/build-load-tools.sh" /tmp/loadtools | tail -1)
wsload=${tools%% *}
rawecho=${tools##* }
cargo build --release --quiet
port=18080
raw_port=18081
taskset -c 0 ./target/release/wsgate -l 127.0.0.1:$port -q &
server=$!
taskset -c 0 "$rawecho" $raw_port >/dev/null &
raw=$!
base=
base_port=18082
if [ -n "${BASE_WSGATE:-}" ]; then
  taskset -c 0 "$BASE_WSGATE" -l 127.0.0.1:$base_port -q &
  base=$!
fi
trap 'kill $server $raw $base 2>/dev/null || true' EXIT
sleep 0.5
run() { taskset -c 1 "$wsload" -d "$secs" -w 1 "$@" 2>&1 | tr '\n' ' ' | grep -o 'msgs_per_s=[0-9]*\|server_[a-z_]*=[0-9.]*' | tr '\n' ' '; echo; }
for i in $(seq "$repeats"); do
  echo "round $i"
  echo "  wsgate  closed 100x20B:   $(run -c 100 -s 20 -p /echo --pid $server 127.0.0.1 $port)"
  echo "  rawecho closed 100x20B:   $(run --raw -c 100 -s 20 --pid $raw 127.0.0.1 $raw_port)"
  echo "  wsgate  flood  100x20B:   $(run -m flood -c 100 -s 20 -p /echo --pid $server 127.0.0.1 $port)"
  echo "  wsgate  flood  100x16KiB: $(run -m flood -c 100 -s 16384 -p /echo --pid $server 127.0.0.1 $port)"
  if [ -n "$base" ]; then
    echo "  base    closed 100x20B:   $(run -c 100 -s 20 -p /echo --pid $base 127.0.0.1 $base_port)"
    echo "  base    flood  100x20B:   $(run -m flood -c 100 -s 20 -p /echo --pid $base 127.0.0.1 $base_port)"
    echo "  base    flood  100x16KiB: $(run -m flood -c 100 -s 16384 -p /echo --pid $base 127.0.0.1 $base_port)"
  fi
done

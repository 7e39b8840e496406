#!/usr/bin/env bash
# End-to-end echo throughput: wsgate vs rawecho (the kernel ceiling), server pinned to core 0,
# load to core 1. The load is `wsgate bench`; the raw TCP ceiling needs wsload --raw and rawecho,
# built from ../shared/tools (or $LOADTOOLS_SRC) when that is there, skipped otherwise.
# usage: scripts/bench-echo.sh [SECONDS] [REPEATS]
# BASE_WSGATE=path/to/another/wsgate: the same runs against that build too, in the same rounds
# (machines differ 2x from one session to the next; only ratios in one run mean much).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-3}
src=${LOADTOOLS_SRC:-../shared/tools}
wsload= raw=
if [ -f "$src/build-load-tools.sh" ]; then
  tools=$(bash "$src/build-load-tools.sh" /tmp/loadtools | tail -1)
  wsload=${tools%% *}
  rawecho=${tools##* }
fi
cargo build --release --quiet
port=18080
raw_port=18081
taskset -c 0 ./target/release/wsgate -l 127.0.0.1:$port -q &
server=$!
if [ -n "$wsload" ]; then
  taskset -c 0 "$rawecho" $raw_port >/dev/null &
  raw=$!
fi
base=
base_port=18082
if [ -n "${BASE_WSGATE:-}" ]; then
  taskset -c 0 "$BASE_WSGATE" -l 127.0.0.1:$base_port -q &
  base=$!
fi
trap 'kill $server $raw $base 2>/dev/null || true' EXIT
sleep 0.5
# run PID PORT ARGS...: one measured window of `wsgate bench` against the echo route.
run() {
  local pid=$1 port=$2
  shift 2
  taskset -c 1 ./target/release/wsgate bench -d "$secs" -w 1 --server-pid "$pid" "$@" "ws://127.0.0.1:$port/echo" 2>&1 |
    tr '\n' ' ' | grep -o 'msgs_per_s=[0-9]*\|server_[a-z_]*=[0-9.]*\|result=failed' | tr '\n' ' '
  echo
}
raw() { taskset -c 1 "$wsload" -d "$secs" -w 1 --raw "$@" 2>&1 | tr '\n' ' ' | grep -o 'msgs_per_s=[0-9]*\|server_[a-z_]*=[0-9.]*' | tr '\n' ' '; echo; }
for i in $(seq "$repeats"); do
  echo "round $i"
  echo "  wsgate  closed 100x20B:   $(run $server $port -c 100 -s 20)"
  if [ -n "$raw" ]; then echo "  rawecho closed 100x20B:   $(raw -c 100 -s 20 --pid $raw 127.0.0.1 $raw_port)"; fi
  echo "  wsgate  flood  100x20B:   $(run $server $port -m flood -c 100 -s 20)"
  echo "  wsgate  flood  100x16KiB: $(run $server $port -m flood -c 100 -s 16384)"
  if [ -n "$base" ]; then
    echo "  base    closed 100x20B:   $(run $base $base_port -c 100 -s 20)"
    echo "  base    flood  100x20B:   $(run $base $base_port -m flood -c 100 -s 20)"
    echo "  base    flood  100x16KiB: $(run $base $base_port -m flood -c 100 -s 16384)"
  fi
done

#!/usr/bin/env bash
# Side by side with uWebSockets on one core each (step 12's set): server pinned to core 0, load
# (`wsgate bench`, and tcpkali when built) on core 1, the servers alternating in every round, so only
# the ratios within one run are compared (machines differ 2x from one session to the next).
#
# usage: scripts/bench-vs-uws.sh [SECONDS] [ROUNDS]
#   PEERS=dir with uws_echo and uws_room (default /tmp/peers/bin: ../shared/tools/build-peers.sh
#         builds them; without them only wsgate runs)
#   BASE_WSGATE=path/to/another/wsgate: the same runs against that build too (before/after)
#   ONLY=regex: only the runs whose label matches (e.g. ONLY='closed|chat')
#
# Prints one line per run: messages (or deliveries) per second, the server's user and system
# microseconds per message (from /proc, over the measured window), and messages per server
# CPU-second. Loopback only; every server stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh
secs=${1:-5}
rounds=${2:-3}
peers=${PEERS:-/tmp/peers/bin}
cargo build --release --quiet
bench=./target/release/wsgate
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT

start_wsgate() { # name binary port
  bench_config "$tmp/$1.toml" "$3"
  taskset -c 0 "$2" -c "$tmp/$1.toml" -q &
  pids+=($!)
  eval "pid_$1=$!; port_$1=$3"
}

servers=(wsgate)
start_wsgate wsgate ./target/release/wsgate 18300
if [ -n "${BASE_WSGATE:-}" ]; then
  start_wsgate base "$BASE_WSGATE" 18301
  servers+=(base)
fi
# uws_echo dies of SIGPIPE when a flooding client goes with frames in flight (the end of every
# 16 KiB flood): it is started again whenever it is gone.
start_uws() {
  if [ -z "${pid_uws:-}" ] || ! kill -0 "$pid_uws" 2>/dev/null; then
    taskset -c 0 "$peers/uws_echo" 18302 >/dev/null 2>&1 &
    pids+=($!); pid_uws=$!; port_uws=18302
  fi
  if [ -z "${pid_uwsroom:-}" ] || ! kill -0 "$pid_uwsroom" 2>/dev/null; then
    taskset -c 0 "$peers/uws_room" 18303 >/dev/null 2>&1 &
    pids+=($!); pid_uwsroom=$!; port_uwsroom=18303
  fi
  sleep 0.3
}
if [ -x "$peers/uws_echo" ] && [ -x "$peers/uws_room" ]; then
  start_uws
  servers+=(uws)
else
  echo "no uWebSockets peers in $peers (../shared/tools/build-peers.sh): wsgate only" >&2
fi
sleep 0.5

# run NAME LABEL PATH bench-args... : one measured window of `wsgate bench` against server NAME.
run() {
  local name=$1 label=$2 path=$3; shift 3
  [[ "$label" =~ ${ONLY:-.} ]] || return 0
  local pid port
  pid=$(eval echo "\$pid_$name"); port=$(eval echo "\$port_$name")
  if [ "$name" = uws ] && [ "$path" = /chat ]; then
    pid=$pid_uwsroom; port=$port_uwsroom
  fi
  local out
  out=$(taskset -c 1 "$bench" bench -d "$secs" -w 1 "$@" --server-pid "$pid" "ws://127.0.0.1:$port$path" 2>&1 | tr '\n' ' ' || true)
  local rate usr sys
  rate=$(grep -o 'deliveries_per_s=[0-9]*' <<<"$out" | cut -d= -f2 || true)
  [ -n "$rate" ] || rate=$(grep -o 'msgs_per_s=[0-9]*' <<<"$out" | cut -d= -f2 || true)
  usr=$(grep -o 'server_usr_ns_per_msg=[0-9.]*' <<<"$out" | cut -d= -f2 || true)
  sys=$(grep -o 'server_sys_ns_per_msg=[0-9.]*' <<<"$out" | cut -d= -f2 || true)
  if [ -z "$rate" ] || [ -z "$usr" ] || [[ "$out" == *result=failed* ]] || ! kill -0 "$pid" 2>/dev/null; then
    printf '  %-7s %-24s failed (server gone?): %s\n' "$name" "$label" "$(tail -c 200 <<<"$out")"
    return 0
  fi
  printf '  %-7s %-24s %12s /s  usr %6.1f ns  sys %6.1f ns  %6.2f M msg per CPU-s\n' "$name" "$label" "$rate" \
    "$usr" "$sys" "$(echo "1000 / ($usr + $sys)" | bc -l)"
}

tcpkali_run() { # name: flood 100 x 20 B text with tcpkali --ws (to "/"), messages per second
  local name=$1 port bytes
  [[ "tcpkali flood 100x20B" =~ ${ONLY:-.} ]] || return 0
  port=$(eval echo "\$port_$name")
  bytes=$(taskset -c 1 "$peers/tcpkali" --ws -c100 -m aaaaaaaaaaaaaaaaaaaa -T"${secs}s" "127.0.0.1:$port" 2>&1 |
    grep -o 'Total data received: .*(\([0-9]*\) bytes)' | grep -o '([0-9]*' | tr -d '(' || true)
  # Each echoed message is a 22-byte frame (2-byte header, 20 bytes).
  if [ -n "$bytes" ]; then printf '  %-7s %-24s %12d /s\n' "$name" "tcpkali flood 100x20B" $((bytes / 22 / secs)); fi
}

command -v bc >/dev/null || { echo "bc is needed (apt-get install bc)" >&2; exit 1; }
for r in $(seq "$rounds"); do
  echo "round $r"
  for s in "${servers[@]}"; do
    if [ "$s" = uws ]; then start_uws; fi
    run "$s" "flood 100x20B text" /echo -m flood -t -c 100 -s 20
    run "$s" "flood 100x20B binary" /echo -m flood -c 100 -s 20
    run "$s" "closed 100x20B" /echo -c 100 -s 20
    run "$s" "closed 1000x20B" /echo -c 1000 -s 20
    run "$s" "chat echo 1x20B" /chat -m fanout -t -c 1 -s 20
    run "$s" "fanout 500x20B" /chat -m fanout -t -c 500 -s 20
    if [ -x "$peers/tcpkali" ]; then tcpkali_run "$s"; fi
    run "$s" "flood 100x16KiB" /echo -m flood -c 100 -s 16384
  done
done

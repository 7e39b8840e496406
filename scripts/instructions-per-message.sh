#!/usr/bin/env bash
# The server's user-space instructions per message, counted exactly by valgrind's callgrind:
# a figure that does not move with the machine's noise (unlike CPU time on a shared 2-vCPU
# host), so small changes on the message path can be compared run to run, and side by side
# with uWebSockets' EchoServer when it is built (../shared/tools/build-peers.sh).
#
# usage: scripts/instructions-per-message.sh [SECONDS] [BENCH ARGS...]
#   default load: a closed loop of 100 connections x 20 B (`wsgate bench -c 100 -s 20`)
#   PATH_=/chat to measure a chat route (uWebSockets: its room peer), PATH_=/deflate an echo
#   with permessage-deflate (shared; with --compress --payload json), PEERS=dir of uws_echo,
#   BASE_WSGATE=another build to count too, TOP=N functions to list (default 15), KEEP=dir to
#   keep the callgrind files (NAME.callgrind, NAME.msgs) for callgrind_annotate.
# Needs valgrind (apt-get install valgrind). Loopback only; the servers stop when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-config.sh
secs=${1:-5}; shift || true
args=("$@"); [ ${#args[@]} -gt 0 ] || args=(-c 100 -s 20)
path=${PATH_:-/echo}
peers=${PEERS:-/tmp/peers/bin}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

count() { # name port command...
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$tmp/$name.out" "$@" >"$tmp/$name.log" 2>&1 &
  local vg=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  callgrind_control -z "$vg" >/dev/null 2>&1
  local out msgs
  out=$(./target/release/wsgate bench -d "$secs" -w 0 "${args[@]}" "ws://127.0.0.1:$port$path" 2>&1)
  callgrind_control -d "$vg" >/dev/null 2>&1
  msgs=$(grep -o 'deliveries=[0-9]*' <<<"$out" | cut -d= -f2 || true)
  [ -n "$msgs" ] || msgs=$(grep -o 'msgs=[0-9]*' <<<"$out" | cut -d= -f2)
  kill "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  echo "== $name: $msgs messages"
  python3 scripts/callgrind_self.py "$(ls "$tmp/$name.out".* | head -1)" "$msgs" "${TOP:-15}"
  if [ -n "${KEEP:-}" ]; then cp "$(ls "$tmp/$name.out".* | head -1)" "$KEEP/$name.callgrind"; echo "$msgs" >"$KEEP/$name.msgs"; fi
}

wsgate_config() { # port
  bench_config "$tmp/$1.toml" "$1"
  echo "$tmp/$1.toml"
}

count wsgate 18500 ./target/release/wsgate -c "$(wsgate_config 18500)" -q
if [ -n "${BASE_WSGATE:-}" ]; then
  count base 18501 "$BASE_WSGATE" -c "$(wsgate_config 18501)" -q
fi
if [ "$path" = /deflate ]; then
  : # uws_echo does not compress: no peer to count
elif [ "$path" = /chat ] && [ -x "$peers/uws_room" ]; then
  count uws 18502 "$peers/uws_room" 18502
elif [ -x "$peers/uws_echo" ]; then
  count uws 18502 "$peers/uws_echo" 18502
fi

#!/usr/bin/env bash
# Scale-out figures (docs/performance.md, "More workers, more nodes"):
#   1. echo closed loop and flood, workers = 1 (server on core 0, load on core 1) and
#      workers = 2 (server and load sharing both cores);
#   2. fan-out (wsgate bench -m fanout, N = 500 in one chat room), workers = 1 and 2;
#   3. connections per worker after 10,000 connects, balance = reuseport and handoff;
#   4. publish -> delivery latency through the admin API: same node, and across two nodes
#      through Redis (redis-server started here on a loopback port).
# BASE_WSGATE=path/to/another/wsgate adds single-worker rows for that build (same rounds).
# usage: scripts/bench-workers.sh [SECONDS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-3}
cargo build --release --quiet
cargo build --release --quiet -p wsgate-bench
bin=./target/release/wsgate
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

# start NAME CPUS CONFIG-TEXT [BINARY]: runs a server, waits for its port; sets $pid.
start() {
  local name=$1 cpus=$2 text=$3 binary=${4:-$bin}
  printf '%s\n' "$text" >"$dir/$name.toml"
  taskset -c "$cpus" "$binary" -c "$dir/$name.toml" -q &
  pid=$!
  pids+=("$pid")
  sleep 0.7
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# run CPUS PID URL BENCH-ARGS...: one measured window of `wsgate bench` on CPUS.
run() {
  taskset -c "$1" "$bin" bench -d "$secs" -w 1 --server-pid "$2" "${@:4}" "$3" 2>&1 | tr '\n' ' ' |
    grep -o 'msgs_per_s=[0-9]*\|deliveries_per_s=[0-9]*\|server_[a-z_]*=[0-9.]*\|result=failed' | tr '\n' ' '
  echo
}
routes='[[route]]
path = "/echo"
app = "echo"
[[route]]
path = "/chat"
app = "chat"
[[route]]
path = "/pubsub"
app = "pubsub"'

echo "== echo and fan-out"
for i in $(seq "$repeats"); do
  echo "round $i"
  start w1 0 "[server]
listen = [\"127.0.0.1:18180\"]
workers = 1
$routes"
  w1=$pid
  echo "  workers=1 closed 100x20B:   $(run 1 $w1 ws://127.0.0.1:18180/echo -c 100 -s 20)"
  echo "  workers=1 flood  100x20B:   $(run 1 $w1 ws://127.0.0.1:18180/echo -m flood -c 100 -s 20)"
  echo "  workers=1 fanout 500x20B:   $(run 1 $w1 ws://127.0.0.1:18180/chat -m fanout -c 500 -s 20 -t)"
  stop $w1
  start w2 0,1 "[server]
listen = [\"127.0.0.1:18181\"]
workers = 2
balance = \"handoff\"
$routes"
  w2=$pid
  echo "  workers=2 closed 100x20B:   $(run 0,1 $w2 ws://127.0.0.1:18181/echo -c 100 -s 20)"
  echo "  workers=2 flood  100x20B:   $(run 0,1 $w2 ws://127.0.0.1:18181/echo -m flood -c 100 -s 20)"
  echo "  workers=2 fanout 500x20B:   $(run 0,1 $w2 ws://127.0.0.1:18181/chat -m fanout -c 500 -s 20 -t)"
  stop $w2
  if [ -n "${BASE_WSGATE:-}" ]; then
    start base 0 "[server]
listen = [\"127.0.0.1:18182\"]
$routes" "$BASE_WSGATE"
    b=$pid
    echo "  base      closed 100x20B:   $(run 1 $b ws://127.0.0.1:18182/echo -c 100 -s 20)"
    echo "  base      flood  100x20B:   $(run 1 $b ws://127.0.0.1:18182/echo -m flood -c 100 -s 20)"
    echo "  base      fanout 500x20B:   $(run 1 $b ws://127.0.0.1:18182/chat -m fanout -c 500 -s 20 -t)"
    stop $b
  fi
done

echo "== connections per worker after 10,000 connects"
for balance in reuseport handoff; do
  for workers in 2 4; do
    start spread 0,1 "[server]
listen = [\"127.0.0.1:18183\"]
workers = $workers
balance = \"$balance\"
max_connections = 20000
[admin]
listen = \"127.0.0.1:18184\"
$routes"
    s=$pid
    taskset -c 0,1 "$bin" bench -c 10000 -s 20 -d 6 -w 1 ws://127.0.0.1:18183/echo >/dev/null 2>&1 &
    load=$!
    sleep 4
    counts=$(curl -s http://127.0.0.1:18184/metrics | grep '^wsgate_worker_connections_open' | sed 's/.*worker="\([0-9]*\)"} /w\1=/' | tr '\n' ' ')
    echo "  $balance workers=$workers: $counts"
    wait $load || true
    stop $s
  done
done

echo "== publish -> delivery latency (POST /api/publish -> pubsub subscriber)"
redis_port=18190
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
sleep 0.5
node() {
  start "node$1" "$2" "[server]
listen = [\"127.0.0.1:$3\"]
[admin]
listen = \"127.0.0.1:$4\"
[cluster]
redis = \"redis://127.0.0.1:$redis_port\"
$routes"
}
node a 0 18191 18192
na=$pid
node b 0 18193 18194
nb=$pid
sleep 1
for i in $(seq "$repeats"); do
  echo "  same node:              $(taskset -c 1 ./target/release/brokerload latency 127.0.0.1:18191 127.0.0.1:18192 5000 2>&1 | tail -1)"
  echo "  across nodes via Redis: $(taskset -c 1 ./target/release/brokerload latency 127.0.0.1:18193 127.0.0.1:18192 5000 2>&1 | tail -1)"
done

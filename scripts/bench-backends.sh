#!/usr/bin/env bash
# Round trips client -> proxy -> UNIX echo backend -> client, side by side, in issue 5's layout:
# the proxy pinned to core 0, the backend and the load (`wsgate bench`) to core 1, closed loop 100 x 20 B and
# 500 x 1 KiB. Contenders, each measured in every round so drift hits them all alike:
#   wsgate raw (binary) and lines (text, -t) routes  -> unix-echo
#   unix-relay (epoll) and uring-relay (io_uring)    -> unix-echo   (the floor: bytes only)
#   nginx (proxy_pass to a UNIX WebSocket server)    -> unix-ws-echo
#   websockify (--unix-target)                       -> unix-echo
#   websocketd (one `cat` per client, lines, -t)
# Third-party proxies are measured when installed (INSTALL=1 installs them: apt nginx-light and
# websocketd, pip websockify); otherwise they are skipped with a note.
# usage: [BASE_WSGATE=other/wsgate] [INSTALL=1] scripts/bench-backends.sh [SECONDS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
repeats=${2:-2}
src=${LOADTOOLS_SRC:-../shared/tools}
tools=$(bash "$src/build-load-tools.sh" /tmp/loadtools | tail -1)
wsload=${tools%% *}
if [ "${INSTALL:-0}" = 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light websocketd >/dev/null
  pip install -q websockify==0.12.0
fi
cargo build --release --quiet
cargo build --release --quiet -p wsgate-bench
ex=./target/release   # the measuring peers (bench/)
dir=$(mktemp -d /tmp/wsgate-bench-backends.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
start() { # start CORE CMD...: runs CMD pinned to CORE in the background, records its pid in $last
  taskset -c "$1" "${@:2}" >>"$dir/log" 2>&1 &
  last=$!
  pids+=("$last")
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

start 1 "$ex/unix-echo" "$dir/echo"
start 1 "$ex/unix-ws-echo" "$dir/wsecho"
sleep 0.3
user=()
[ "$(id -u)" = 0 ] && user=(-u nobody)
start 0 ./target/release/wsgate "${user[@]}" -q -l 127.0.0.1:18600 \
  --route "/raw=unix:$dir/echo#raw,binary" --route "/lines=unix:$dir/echo#lines"
wsgate=$last
# BASE_WSGATE=path/to/another/wsgate: the same routes on that build too, measured in the same
# rounds (machines differ 2x from one session to the next; only ratios in one run mean much).
base=
if [ -n "${BASE_WSGATE:-}" ]; then
  start 0 "$BASE_WSGATE" "${user[@]}" -q -l 127.0.0.1:18606 \
    --route "/raw=unix:$dir/echo#raw,binary" --route "/lines=unix:$dir/echo#lines"
  base=$last
  wait_port 18606
fi
start 0 "$ex/unix-relay" 127.0.0.1:18601 "$dir/echo"
relay=$last
start 0 "$ex/uring-relay" 127.0.0.1:18602 "$dir/echo"
uring=$last
for p in 18600 18601 18602; do wait_port $p; done
kill -0 "$uring" 2>/dev/null || uring= # io_uring can be disabled on the machine

nginx= websockify= websocketd=
if command -v nginx >/dev/null; then
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
error_log $dir/nginx.err warn;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  server {
    listen 127.0.0.1:18603;
    location / {
      proxy_pass http://unix:$dir/wsecho:;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }
  }
}
EOF
  start 0 nginx -c "$dir/nginx.conf"
  nginx=$last
  wait_port 18603
else
  echo "nginx not installed: skipped (INSTALL=1 installs it)"
fi
if command -v websockify >/dev/null; then
  start 0 websockify 127.0.0.1:18604 --unix-target="$dir/echo"
  websockify=$last
  wait_port 18604
else
  echo "websockify not installed: skipped (INSTALL=1 installs it)"
fi
if command -v websocketd >/dev/null; then
  # Each client's `cat` runs on core 1, as the backends of the others do.
  start 0 websocketd --port 18605 --address 127.0.0.1 --loglevel=fatal taskset -c 1 cat
  websocketd=$last
  wait_port 18605
else
  echo "websocketd not installed: skipped (INSTALL=1 installs it)"
fi

# One measurement: prints msg/s and the proxy's CPU (of its main process) per message.
# WebSocket contenders are loaded by `wsgate bench` (every echo checked); the byte relays
# speak no WebSocket, so the raw floor is loaded by wsload --raw.
run() {
  local pid=$1 port=$2 path=$3
  shift 3
  if [ "$path" = --raw ]; then
    taskset -c 1 "$wsload" -d "$secs" -w 1 --pid "$pid" --raw "$@" 127.0.0.1 "$port" 2>&1 | tr '\n' ' ' |
      grep -o 'msgs_per_s=[0-9]*\|server_cpu_pct=[0-9.]*\|failed=[1-9][0-9]*\|mismatches=[1-9][0-9]*' | tr '\n' ' '
    return
  fi
  taskset -c 1 ./target/release/wsgate bench -d "$secs" -w 1 --server-pid "$pid" "$@" "ws://127.0.0.1:$port$path" 2>&1 |
    tr '\n' ' ' | grep -o 'msgs_per_s=[0-9]*\|server_cpu_pct=[0-9.]*\|result=failed\|connection [0-9]*: [^.]*' | tr '\n' ' '
}
both() { # both NAME PID PORT PATH|--raw BENCH-ARGS...
  local name=$1 pid=$2 port=$3
  shift 3
  [ -n "$pid" ] || return 0
  printf '  %-22s 100x20B:  %s\n' "$name" "$(run "$pid" "$port" "$@" -c 100 -s 20)"
  printf '  %-22s 500x1KiB: %s\n' "$name" "$(run "$pid" "$port" "$@" -c 500 -s 1024)"
}
for i in $(seq "$repeats"); do
  echo "round $i"
  both "wsgate raw" "$wsgate" 18600 /raw
  both "wsgate lines (text)" "$wsgate" 18600 /lines -t
  both "base raw" "$base" 18606 /raw
  both "base lines (text)" "$base" 18606 /lines -t
  both "unix-relay (floor)" "$relay" 18601 --raw
  both "uring-relay" "$uring" 18602 --raw
  both "nginx" "$nginx" 18603 /app
  both "websockify" "$websockify" 18604 /app
  both "websocketd (text)" "$websocketd" 18605 /app -t
done

#!/usr/bin/env bash
# Runs the whole Autobahn TestSuite (wstest -m fuzzingclient, cases 1-10, 12 and 13: 12 and 13
# are permessage-deflate) against wsgate's /echo with compression = "shared", over ws://, over
# wss:// (a self-signed certificate made by examples/gen-cert.rs), and over ws:// through a
# framed UNIX backend (examples/backend-echo.rs: every frame crosses the backend link and comes
# back; the gateway inflates what the client compressed and compresses the backend's answers), and
# over ws:// through the C echo plugin (examples/plugins/echo.c, built here with the system's C
# compiler: every message crosses to a plugin thread and back). The four agents run side by side
# (wstest is one Python process each). Fails unless every case is OK, but for what
# conformance/autobahn-check.py lists as expected (and says why).
# usage: conformance/autobahn.sh [ws|wss|backend|plugin|all]      (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
conformance/install-autobahn.sh
cargo build --release --quiet
cargo build --release --quiet --example gen-cert --example backend-echo
mkdir -p target/autobahn

run() { # name scheme port route-lines wsgate-args...
  local name=$1 scheme=$2 port=$3 route=$4
  shift 4
  local out=target/autobahn/report-$name
  rm -rf "$out"
  printf '[[route]]\npath = "/echo"\ncompression = "shared"\n%s\n' "$route" >"target/autobahn/wsgate-$name.toml"
  ./target/release/wsgate -c "target/autobahn/wsgate-$name.toml" -l "127.0.0.1:$port" -q "$@" \
    >"target/autobahn/server-$name.log" 2>&1 &
  local server=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sed -e "s#ws://127.0.0.1:9001/echo#$scheme://127.0.0.1:$port/echo#" -e "s#./target/autobahn/report#./$out#" \
    conformance/fuzzingclient.json >"target/autobahn/spec-$name.json"
  "$HOME/.local/bin/wstest" -m fuzzingclient -s "target/autobahn/spec-$name.json" >"target/autobahn/wstest-$name.log" 2>&1 || true
  local status=0
  if ! kill -0 $server 2>/dev/null; then
    echo "autobahn ($name): the server died during the run" >&2
    status=1
  fi
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  {
    echo "--- $name"
    python3 conformance/autobahn-check.py "$out/index.json" 2>&1 || status=1
  } >"target/autobahn/result-$name.txt"
  return $status
}

pids=()
names=()
if [ "$which" = ws ] || [ "$which" = all ]; then
  run ws ws "${AUTOBAHN_PORT:-9001}" 'app = "echo"' &
  pids+=($!) names+=(ws)
fi
if [ "$which" = wss ] || [ "$which" = all ]; then
  ./target/release/examples/gen-cert target/autobahn/cert.pem target/autobahn/key.pem localhost 127.0.0.1 >/dev/null
  run wss wss "${AUTOBAHN_TLS_PORT:-9002}" 'app = "echo"' \
    --tls-cert target/autobahn/cert.pem --tls-key target/autobahn/key.pem &
  pids+=($!) names+=(wss)
fi
backend=
sockets=
if [ "$which" = backend ] || [ "$which" = all ]; then
  # A directory the gateway can reach after dropping to nobody (it must, when run as root).
  sockets=$(mktemp -d /tmp/wsgate-autobahn.XXXXXX)
  chmod 755 "$sockets"
  ./target/release/examples/backend-echo -R "$sockets" -n echo -f framed 2>"target/autobahn/backend.log" &
  backend=$!
  for _ in $(seq 50); do [ -S "$sockets/echo" ] && break; sleep 0.1; done
  user=()
  [ "$(id -u)" = 0 ] && user=(-u nobody)
  run backend ws "${AUTOBAHN_BACKEND_PORT:-9003}" "backend = \"unix:$sockets/echo\"
framing = \"framed\"" "${user[@]}" &
  pids+=($!) names+=(backend)
fi
if [ "$which" = plugin ] || [ "$which" = all ]; then
  cc -O2 -shared -fPIC -I include -o target/autobahn/echo.so examples/plugins/echo.c
  run plugin ws "${AUTOBAHN_PLUGIN_PORT:-9004}" "app = \"plugin\"
plugin = \"$PWD/target/autobahn/echo.so\"
init = \"echo_init\"" &
  pids+=($!) names+=(plugin)
fi
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "target/autobahn/result-${names[$i]}.txt"
done
if [ -n "$backend" ]; then
  kill $backend 2>/dev/null || true
  wait $backend 2>/dev/null || true
  rm -rf "$sockets"
fi
exit $status

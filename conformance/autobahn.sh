#!/usr/bin/env bash
# Runs the Autobahn TestSuite (wstest -m fuzzingclient, cases 1-7, 9, 10) against wsgate's /echo
# over ws://, over wss:// (a self-signed certificate made by examples/gen-cert.rs), and over
# ws:// through a framed UNIX backend (examples/backend-echo.rs: every frame crosses the backend
# link and comes back), and fails unless every case is OK (INFORMATIONAL only where the suite
# itself marks a case so).
# usage: conformance/autobahn.sh [ws|wss|backend|all]      (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
conformance/install-autobahn.sh
cargo build --release --quiet
cargo build --release --quiet --example gen-cert --example backend-echo
mkdir -p target/autobahn
status=0

run() { # name scheme port wsgate-args...
  local name=$1 scheme=$2 port=$3
  shift 3
  local out=target/autobahn/report-$name
  rm -rf "$out"
  ./target/release/wsgate -l "127.0.0.1:$port" -q "$@" >"target/autobahn/server-$name.log" 2>&1 &
  local server=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sed -e "s#ws://127.0.0.1:9001/echo#$scheme://127.0.0.1:$port/echo#" -e "s#./target/autobahn/report#./$out#" \
    conformance/fuzzingclient.json >"target/autobahn/spec-$name.json"
  "$HOME/.local/bin/wstest" -m fuzzingclient -s "target/autobahn/spec-$name.json" >"target/autobahn/wstest-$name.log" 2>&1 || true
  if ! kill -0 $server 2>/dev/null; then
    echo "autobahn ($name): the server died during the run" >&2
    status=1
  fi
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  echo "--- $name"
  python3 conformance/autobahn-check.py "$out/index.json" || status=1
}

if [ "$which" = ws ] || [ "$which" = all ]; then
  run ws ws "${AUTOBAHN_PORT:-9001}" --route /echo=echo
fi
if [ "$which" = wss ] || [ "$which" = all ]; then
  ./target/release/examples/gen-cert target/autobahn/cert.pem target/autobahn/key.pem localhost 127.0.0.1 >/dev/null
  run wss wss "${AUTOBAHN_TLS_PORT:-9002}" --route /echo=echo \
    --tls-cert target/autobahn/cert.pem --tls-key target/autobahn/key.pem
fi
if [ "$which" = backend ] || [ "$which" = all ]; then
  # A directory the gateway can reach after dropping to nobody (it must, when run as root).
  sockets=$(mktemp -d /tmp/wsgate-autobahn.XXXXXX)
  chmod 755 "$sockets"
  ./target/release/examples/backend-echo -R "$sockets" -n echo -f framed 2>"target/autobahn/backend.log" &
  backend=$!
  for _ in $(seq 50); do [ -S "$sockets/echo" ] && break; sleep 0.1; done
  user=()
  [ "$(id -u)" = 0 ] && user=(-u nobody)
  run backend ws "${AUTOBAHN_BACKEND_PORT:-9003}" "${user[@]}" --route "/echo=unix:$sockets/echo#framed"
  kill $backend 2>/dev/null || true
  wait $backend 2>/dev/null || true
  rm -rf "$sockets"
fi
exit $status

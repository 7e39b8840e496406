#!/usr/bin/env bash
# Runs the Autobahn TestSuite (wstest -m fuzzingclient, cases 1-7, 9, 10) against wsgate's /echo
# over ws:// and over wss:// (a self-signed certificate made by examples/gen-cert.rs), and fails
# unless every case is OK (INFORMATIONAL only where the suite itself marks a case so).
# usage: scripts/autobahn.sh [ws|wss|both]      (default both)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
scripts/install-autobahn.sh
cargo build --release --quiet
cargo build --release --quiet --example gen-cert
mkdir -p target/autobahn
status=0

run() { # scheme port extra-args...
  local scheme=$1 port=$2
  shift 2
  local out=target/autobahn/report-$scheme
  rm -rf "$out"
  ./target/release/wsgate -l "127.0.0.1:$port" -q --route /echo=echo "$@" >"target/autobahn/server-$scheme.log" 2>&1 &
  local server=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sed -e "s#ws://127.0.0.1:9001/echo#$scheme://127.0.0.1:$port/echo#" -e "s#./target/autobahn/report#./$out#" \
    autobahn/fuzzingclient.json >"target/autobahn/spec-$scheme.json"
  "$HOME/.local/bin/wstest" -m fuzzingclient -s "target/autobahn/spec-$scheme.json" >"target/autobahn/wstest-$scheme.log" 2>&1 || true
  if ! kill -0 $server 2>/dev/null; then
    echo "autobahn ($scheme): the server died during the run" >&2
    status=1
  fi
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  echo "--- $scheme://"
  python3 scripts/autobahn-check.py "$out/index.json" || status=1
}

if [ "$which" = ws ] || [ "$which" = both ]; then
  run ws "${AUTOBAHN_PORT:-9001}"
fi
if [ "$which" = wss ] || [ "$which" = both ]; then
  ./target/release/examples/gen-cert target/autobahn/cert.pem target/autobahn/key.pem localhost 127.0.0.1 >/dev/null
  run wss "${AUTOBAHN_TLS_PORT:-9002}" --tls-cert target/autobahn/cert.pem --tls-key target/autobahn/key.pem
fi
exit $status

#!/usr/bin/env bash
# Runs the Autobahn TestSuite (wstest -m fuzzingclient) against wsgate's /echo and fails unless
# every case is OK (INFORMATIONAL only where the suite itself marks a case so).
# usage: scripts/autobahn.sh            (builds the release binary, installs wstest if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-autobahn.sh
cargo build --release --quiet
port=${AUTOBAHN_PORT:-9001}
spec=autobahn/fuzzingclient.json
rm -rf target/autobahn/report
./target/release/wsgate -l "127.0.0.1:$port" -q --route /echo=echo >target/autobahn-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
sed "s/127.0.0.1:9001/127.0.0.1:$port/" "$spec" >target/autobahn-spec.json
"$HOME/.local/bin/wstest" -m fuzzingclient -s target/autobahn-spec.json >target/autobahn-wstest.log 2>&1
kill -0 $server || { echo "autobahn: the server died during the run" >&2; exit 1; }
python3 scripts/autobahn-check.py target/autobahn/report/index.json

#!/usr/bin/env bash
# The Autobahn TestSuite as the referee for wsgate's client: wstest -m fuzzingserver runs cases
# 1-7, 9, 10, 12 and 13 against examples/autobahn-client.rs (wsgate::client echoing every
# message, offering permessage-deflate), then the same check as the server's agents: every
# case OK but the informational ones.
# usage: conformance/autobahn-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."
conformance/install-autobahn.sh
cargo build --release --quiet --example autobahn-client
mkdir -p target/autobahn
port=${AUTOBAHN_CLIENT_PORT:-9011}
out=target/autobahn/report-client
rm -rf "$out"
sed -e "s#127.0.0.1:9011#127.0.0.1:$port#" conformance/fuzzingserver.json >target/autobahn/spec-client.json
(cd target/autobahn && exec "$HOME/.local/bin/wstest" -m fuzzingserver -s spec-client.json) \
  >target/autobahn/wstest-client.log 2>&1 &
suite=$!
trap 'kill $suite 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
./target/release/examples/autobahn-client "ws://127.0.0.1:$port" wsgate-client 2>target/autobahn/client.log
echo "--- client"
python3 conformance/autobahn-check.py "$out/index.json"

#!/usr/bin/env bash
# A 3-node Qdrant cluster on loopback (from an already-built QDRANT_BIN, see qdrant-tests.sh): the
# store suite on collections with 3 shards and replication factor 2, plainly sharded and sharded by
# district; then an import during which one node is killed (SIGKILL): the import must finish and
# every case it acknowledged must be found afterwards.
#
#   QDRANT_BIN=/path/to/qdrant scripts/qdrant-cluster-test.sh [CASES.jsonl]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${QDRANT_BIN:?set QDRANT_BIN to a qdrant binary (v1.16.x)}"
CASES="${1:-$ROOT/data/sample/cases.jsonl}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

node() { # node N [bootstrap]: HTTP 1733N, gRPC 1734N, P2P 1735N
  local n=$1 extra=()
  [ "$n" -gt 1 ] && extra=(--bootstrap "http://127.0.0.1:17351")
  # From its own directory: Qdrant writes a marker file (.qdrant-initialized) where it runs.
  mkdir -p "$WORK/run$n"
  (cd "$WORK/run$n" && QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=1733$n QDRANT__SERVICE__GRPC_PORT=1734$n \
    QDRANT__CLUSTER__ENABLED=true QDRANT__CLUSTER__P2P__PORT=1735$n \
    QDRANT__STORAGE__STORAGE_PATH="$WORK/node$n" QDRANT__STORAGE__SNAPSHOTS_PATH="$WORK/snap$n" \
    exec "$QDRANT_BIN" --disable-telemetry --uri "http://127.0.0.1:1735$n" "${extra[@]}" >"$WORK/node$n.log" 2>&1) &
  PIDS+=($!)
  until curl -sf "http://127.0.0.1:1733$n/readyz" >/dev/null; do sleep 0.5; done
}
node 1; node 2; node 3
until [ "$(curl -s http://127.0.0.1:17331/cluster | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["result"]["peers"]))')" = 3 ]; do sleep 0.5; done
echo "cluster of 3 peers up"

cd "$ROOT"
# One test at a time: on this 3-node loopback cluster, Qdrant 1.16.3 creating several
# district-sharded collections at once (shard keys, then payload indexes) stalled its consensus and
# every layout call timed out; one after another they pass.
# The suite's tests are ignored by default (they need a server): `--ignored` runs them; the
# single-server test does not apply to a cluster and is skipped by name.
QDRANT_URL=http://127.0.0.1:17341 QDRANT_DISTRIBUTED=1 QDRANT_SHARDS=3 QDRANT_REPLICATION=2 \
  cargo test --release --workspace --test integration qdrant_suite -- --ignored --nocapture --test-threads=1
cargo build --release -q --workspace --bins
TRIAGE=("$TARGET/release/triage" --data-dir "$WORK/triage" --store qdrant --qdrant-url http://127.0.0.1:17341
        --qdrant-collection cluster-test --qdrant-shards 3 --qdrant-replication 2 --qdrant-write-consistency 1)
"${TRIAGE[@]}" import --json "$CASES" >"$WORK/import.json" 2>"$WORK/import.err" &
IMPORT=$!
# Kill node 3 once part of the import is acknowledged.
until [ "$(curl -s -X POST http://127.0.0.1:17331/collections/cluster-test/points/count -H 'content-type: application/json' -d '{"exact":true}' 2>/dev/null | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["result"]["count"])
except Exception: print(0)')" -ge 200 ]; do sleep 0.2; done
kill -9 "${PIDS[2]}"
echo "node 3 killed during the import"
wait $IMPORT || { cat "$WORK/import.err" >&2; exit 1; }
python3 - "$WORK/import.json" "$CASES" <<'PY'
import json, sys, urllib.request
summary = json.load(open(sys.argv[1]))[0]
acknowledged = summary["imported"] + summary["updated"]
lines = sum(1 for l in open(sys.argv[2]) if l.strip())
req = urllib.request.Request("http://127.0.0.1:17331/collections/cluster-test/points/count",
                             data=b'{"exact": true}', headers={"content-type": "application/json"})
count = json.load(urllib.request.urlopen(req))["result"]["count"]
print(f"{lines} lines, {acknowledged} acknowledged by the import, {count} in the cluster with node 3 down")
assert count >= acknowledged, "acknowledged cases were lost"
PY

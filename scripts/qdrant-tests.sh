#!/usr/bin/env bash
# Runs the store suite and the service walk against a real Qdrant server: starts one node from an
# already-built binary (QDRANT_BIN; Qdrant is not in any package registry these machines reach, so
# build it yourself from github.com/qdrant/qdrant, tag v1.16.3) on loopback ports with its storage in
# a temp dir, runs the tests with QDRANT_URL set (they are ignored by default, so `--ignored`), and
# stops it.
#
#   QDRANT_BIN=/path/to/qdrant scripts/qdrant-tests.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${QDRANT_BIN:?set QDRANT_BIN to a qdrant binary (v1.16.x)}"
WORK="$(mktemp -d)"
HTTP_PORT="${QDRANT_HTTP_PORT:-16333}"
GRPC_PORT="${QDRANT_GRPC_PORT:-16334}"
# From its own directory: Qdrant writes a marker file (.qdrant-initialized) where it runs.
(cd "$WORK" && QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$HTTP_PORT QDRANT__SERVICE__GRPC_PORT=$GRPC_PORT \
  QDRANT__STORAGE__STORAGE_PATH="$WORK/storage" QDRANT__STORAGE__SNAPSHOTS_PATH="$WORK/snapshots" \
  QDRANT__TELEMETRY_DISABLED=true exec "$QDRANT_BIN" --disable-telemetry >"$WORK/qdrant.log" 2>&1) &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
until curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null; do
  kill -0 $SERVER 2>/dev/null || { cat "$WORK/qdrant.log" >&2; exit 1; }
  sleep 0.5
done
echo "qdrant $("$QDRANT_BIN" --version 2>/dev/null | head -1) on 127.0.0.1:$GRPC_PORT"
cd "$ROOT"
export QDRANT_URL="http://127.0.0.1:$GRPC_PORT"
# The whole workspace (one package alone changes feature unification and rebuilds qdrant-edge);
# the filters pick the Qdrant tests, `--ignored` runs them.
cargo test --release --workspace --test integration qdrant -- --ignored --nocapture

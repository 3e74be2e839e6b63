#!/usr/bin/env bash
# Load benchmark of the service: the labeled history (default: the shared data's train.jsonl, 6,696
# cases) in a scratch store, `triage serve` on a loopback port, then `bench-serve` against it:
# requests/s and p50/p95/p99 of POST /v1/triage without draft at 1, 4 and 16 clients for 60- and
# 400-character complaints, shedding at 64 clients, time to the first draft token.
#
#   scripts/bench-serve.sh [bench-serve options, e.g. --seconds 30 --clients 1,4,16]
#   HISTORY=cases.jsonl TEXTS=new.jsonl BENCH_DIR=/tmp/b scripts/bench-serve.sh
#   SERVE_ARGS="--no-audit" scripts/bench-serve.sh   (extra `triage serve` flags; NO_BUILD=1 skips
#   the build, for runs compared with each other)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/data/teddycup2020c"
HISTORY="${HISTORY:-$SHARED/train.jsonl}"
TEXTS="${TEXTS:-$SHARED/dev.jsonl}"
DIR="${BENCH_DIR:-$HOME/.cache/hotline-triage/bench-serve}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
# The whole workspace: building one package alone changes feature unification (and rebuilds
# qdrant-edge).
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --workspace --bins
TRIAGE="$TARGET/release/triage"
if [ ! -f "$DIR/classifier/current" ]; then
  "$TRIAGE" --data-dir "$DIR" import "$HISTORY"
  "$TRIAGE" --data-dir "$DIR" train
fi
# shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
"$TRIAGE" --data-dir "$DIR" serve --bind 127.0.0.1:0 ${SERVE_ARGS:-} >"$DIR/serve.out" 2>"$DIR/serve.err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
until ADDR=$(grep -o '127.0.0.1:[0-9]*' "$DIR/serve.out" 2>/dev/null); do sleep 0.2; done
until curl -sf "http://$ADDR/health" >/dev/null; do
  kill -0 $SERVER 2>/dev/null || { cat "$DIR/serve.err" >&2; exit 1; }
  sleep 0.5
done
echo "server $ADDR ready; history: $(wc -l <"$HISTORY") lines of $HISTORY"
"$TARGET/release/bench-serve" --addr "$ADDR" --texts "$TEXTS" "$@"

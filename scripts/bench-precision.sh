#!/usr/bin/env bash
# int8 against f32 in the same run, the service and batch ratios of issue 17: `POST /v1/triage`
# p50 at 4 clients for 60-character complaints (bench-serve) and batch items/s (`triage batch`
# without drafts), the two precisions alternating for ROUNDS rounds (default 3), then medians,
# min–max and the ratios; the f32 matmul peak (bench-embed) and the load average beside them.
# The store is built once with f32 vectors (the store a deployment has before it switches).
#
#   scripts/bench-precision.sh
#   HISTORY=cases.jsonl BATCH=500 SECONDS_PER=10 ROUNDS=3 NO_BUILD=1 scripts/bench-precision.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/data/teddycup2020c"
HISTORY="${HISTORY:-$SHARED/train.jsonl}"
TEXTS="${TEXTS:-$SHARED/dev.jsonl}"
DIR="${BENCH_DIR:-$HOME/.cache/hotline-triage/bench-precision}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
ROUNDS="${ROUNDS:-3}"
BATCH="${BATCH:-1000}"
SECONDS_PER="${SECONDS_PER:-15}"
cd "$ROOT"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --workspace --bins
TRIAGE="$TARGET/release/triage"
if [ ! -f "$DIR/classifier/current" ]; then
  TRIAGE_EMBEDDER_PRECISION=f32 "$TRIAGE" --data-dir "$DIR" import "$HISTORY" >&2
  TRIAGE_EMBEDDER_PRECISION=f32 "$TRIAGE" --data-dir "$DIR" train >&2
fi
WORK="$(mktemp -d)"
SERVER=
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
head -n "$BATCH" "$TEXTS" | python3 -c '
import json, sys
for i, l in enumerate(sys.stdin):
    r = json.loads(l)
    print(json.dumps({"id": f"b{i}", "title": r.get("title"), "text": r["text"]}, ensure_ascii=False))
' >"$WORK/in.jsonl"

serve_p50() { # precision → p50 ms at 4 clients, 60 characters
  TRIAGE_EMBEDDER_PRECISION="$1" "$TRIAGE" --data-dir "$DIR" serve --bind 127.0.0.1:0 \
    >"$WORK/serve.out" 2>"$WORK/serve.err" &
  SERVER=$!
  until ADDR=$(grep -o '127.0.0.1:[0-9]*' "$WORK/serve.out" 2>/dev/null); do sleep 0.2; done
  until curl -sf "http://$ADDR/health" >/dev/null; do sleep 0.3; done
  "$TARGET/release/bench-serve" --addr "$ADDR" --texts "$TEXTS" --seconds "$SECONDS_PER" \
    --clients 4 --chars 60 --overload 0 --ttft 0 >"$WORK/bench.out"
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=
  # the table row: | clients | chars | requests/s | p50 ms | ...
  grep -E '^\| *4 *\| *60 *\|' "$WORK/bench.out" | awk -F'|' '{gsub(/ /,"",$5); print $5}'
}
batch_rate() { # precision round → items/s
  TRIAGE_EMBEDDER_PRECISION="$1" "$TRIAGE" --data-dir "$DIR" batch --input "$WORK/in.jsonl" \
    --output "$WORK/out-$1-$2.jsonl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate"])'
}

echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for p in f32 int8; do
    echo "serve $p $(serve_p50 $p)" | tee -a "$WORK/results"
    echo "batch $p $(batch_rate $p $round)" | tee -a "$WORK/results"
  done
  echo "# round $round done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
BENCH_RUNS=1 BENCH_LENGTHS=128 "$TARGET/release/bench-embed" \
  "${TRIAGE_MODELS_DIR:-$HOME/.cache/hotline-triage/models}" "$TEXTS" f32 | grep -E "matmul_peak" || true
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def values(kind, p):
    return [float(r[2]) for r in rows if r[0] == kind and r[1] == p and len(r) == 3]
for kind, unit, better in (("serve", "p50 ms (4 clients, 60 chars)", "lower"), ("batch", "items/s", "higher")):
    f, i = values(kind, "f32"), values(kind, "int8")
    if not f or not i:
        print(f"{kind}: no numbers"); continue
    mf, mi = statistics.median(f), statistics.median(i)
    print(f"{kind} {unit}: f32 {mf:.1f} ({min(f):.1f}-{max(f):.1f}), int8 {mi:.1f} ({min(i):.1f}-{max(i):.1f}), int8/f32 {mi / mf:.2f}x")
PY
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Batch reclassification throughput: 10,000 complaints (the shared data recycled, unique ids)
# against the history of scripts/bench-serve.sh (train.jsonl in a scratch store), without drafts:
# the full pipeline and --fast, with the share of wall time per stage, and the embedder's own
# tokenization and embedding rates at the same 128 tokens for comparison.
#
#   scripts/bench-batch.sh [N]        # N complaints, default 10000
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/data/teddycup2020c"
DIR="${BENCH_DIR:-$HOME/.cache/hotline-triage/bench-serve}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
N="${1:-10000}"
cd "$ROOT"
cargo build --release -q -p triage-server -p triage-models --bins
TRIAGE="$TARGET/release/triage"
if [ ! -f "$DIR/classifier/current" ]; then
  "$TRIAGE" --data-dir "$DIR" import "$SHARED/train.jsonl"
  "$TRIAGE" --data-dir "$DIR" train
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 - "$SHARED" "$N" >"$WORK/in.jsonl" <<'PY'
import itertools, json, sys
shared, n = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for f in ("unlabeled", "dev", "train") for l in open(f"{shared}/{f}.jsonl")]
for i, r in enumerate(itertools.islice(itertools.cycle(rows), n)):
    print(json.dumps({"id": f"b{i}", "title": r.get("title"), "text": r["text"]}, ensure_ascii=False))
PY
report() {
  python3 -c '
import json, sys
s = json.load(sys.stdin); c = s["counts"]
shares = ", ".join(f"{k} {100 * v / s['"'"'seconds'"'"']:.1f}%" for k, v in sorted(c["stage_seconds"].items()))
print(f"| {sys.argv[1]} | {c['"'"'classified'"'"']} | {s['"'"'seconds'"'"']:.1f} | {s['"'"'rate'"'"']:.1f} | {shares} |")' "$1"
}
echo "| mode | classified | seconds | items/s | share of wall time |"
echo "|---|---:|---:|---:|---|"
"$TRIAGE" --data-dir "$DIR" batch --fast --input "$WORK/in.jsonl" --output "$WORK/fast.jsonl" --json | report "--fast"
"$TRIAGE" --data-dir "$DIR" batch --input "$WORK/in.jsonl" --output "$WORK/full.jsonl" --json | report "full"
echo
echo "the embedder alone (bench-embed, same machine, right after):"
"$TARGET/release/bench-embed" "${TRIAGE_MODELS_DIR:-$HOME/.cache/hotline-triage/models}" "$SHARED/dev.jsonl" | grep -E "128tok|matmul"

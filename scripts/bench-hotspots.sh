#!/usr/bin/env bash
# Hotspot mining at scale: N stored cases (default 100,000) recycled from unlabeled.jsonl, each copy
# shifted in time by the file's span and stored with the original's vector plus noise (cosine ≈ 0.99;
# embedding 100k texts would take hours here, and the mining is what is measured). Reports wall
# time and peak RSS of `triage hotspots` (and of `triage alerts`, the causal replay) reading the
# store page by page, from /usr/bin/time -v.
#
#   scripts/bench-hotspots.sh [N]          # the store is built once under $BENCH_DIR and reused
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$ROOT/../shared/data/teddycup2020c"
N="${1:-100000}"
DIR="${BENCH_DIR:-$HOME/.cache/hotline-triage/bench-hotspots}/store-$N"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
cargo build --release -q -p triage-server --bins
"$TARGET/release/bench-hotspots" --input "$SHARED/unlabeled.jsonl" --data-dir "$DIR" --n "$N"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
measure() {
  local name="$1"; shift
  /usr/bin/time -v "$@" >"$OUT/$name.out" 2>"$OUT/$name.time"
  local wall rss
  wall="$(grep 'Elapsed (wall clock)' "$OUT/$name.time" | awk '{print $NF}')"
  rss="$(grep 'Maximum resident set size' "$OUT/$name.time" | awk '{print $NF}')"
  printf '| %s | %s | %s | %.0f MiB |\n' "$name" "$N" "$wall" "$(echo "$rss / 1024" | bc -l)"
}
echo "| command | stored cases | wall (m:ss) | peak RSS |"
echo "|---|---:|---:|---:|"
measure hotspots "$TARGET/release/triage" --data-dir "$DIR" hotspots --out "$OUT/hotspots"
measure "alerts (replay)" "$TARGET/release/triage" --data-dir "$DIR" alerts --out "$OUT/alerts"
grep -E "hotspots with|mining" "$OUT/hotspots.out" || true

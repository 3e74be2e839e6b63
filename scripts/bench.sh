#!/usr/bin/env bash
# One table of model speed: ours (bench-embed, bench-generate) and, side by side in the same run,
# the peers on the same files (sentence-transformers/PyTorch, llama.cpp) when installed, with ratios.
#   scripts/bench.sh            (pip install torch sentence-transformers llama-cpp-python for the peers)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="${TRIAGE_MODELS_DIR:-$HOME/.cache/hotline-triage/models}"
DEV="${BENCH_TEXTS:-$ROOT/../shared/data/teddycup2020c/dev.jsonl}"
[ -f "$DEV" ] || DEV="$ROOT/data/sample/cases.jsonl"
cd "$ROOT" && cargo build --release -q -p triage-models --bins || exit 1
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
OUT="$(mktemp)"
export RAYON_NUM_THREADS="${BENCH_THREADS:-2}"
echo "# CPU features: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512bw|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')" >&2
# f32 and int8 encoders taking turns, medians of BENCH_RUNS (3); '#' lines (kernel, min-max) to the terminal.
"$TARGET/release/bench-embed" "$MODELS" "$DEV" both | while IFS= read -r line; do
  case "$line" in "#"*) echo "$line" >&2 ;; *) echo "$line" >> "$OUT" ;; esac
done
"$TARGET/release/bench-generate" "$MODELS" >> "$OUT"
python3 -c "import sentence_transformers" 2>/dev/null && python3 scripts/peers/bench_st.py "$MODELS" "$DEV" >> "$OUT" || echo "(peer skipped: sentence-transformers not installed)" >&2
python3 -c "import llama_cpp" 2>/dev/null && python3 scripts/peers/bench_llamacpp.py "$MODELS" >> "$OUT" || echo "(peer skipped: llama-cpp-python not installed)" >&2
python3 - "$OUT" <<'PY'
import sys
ours_of = {"torch": "embed", "llamacpp": "llm"}
rows = {}
for line in open(sys.argv[1]):
    bench, metric, value, unit = line.rstrip("\n").split("\t")
    group = ours_of.get(bench, bench)
    rows.setdefault((group, metric), {})["peer" if bench in ours_of else "ours"] = (float(value), unit)
print(f"{'group':<6} {'metric':<24} {'ours':>10} {'peer':>10} {'ratio':>7}  unit")
for (group, metric), by in rows.items():
    ours, peer = by.get("ours"), by.get("peer")
    if ours is None:
        continue
    ratio = f"{ours[0] / peer[0]:.2f}x" if peer and peer[0] else ""
    print(f"{group:<6} {metric:<24} {ours[0]:>10.2f} {(f'{peer[0]:.2f}' if peer else '-'):>10} {ratio:>7}  {ours[1]}")
PY
rm -f "$OUT"

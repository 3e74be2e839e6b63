#!/usr/bin/env bash
# One table of model speed: ours (bench-embed, bench-generate) and, side by side in the same run,
# the peers on the same files (sentence-transformers/PyTorch, llama.cpp) when installed, with ratios.
#   scripts/bench.sh            (pip install torch sentence-transformers llama-cpp-python for the peers)
#   BENCH_ONLY=llm scripts/bench.sh   (or embed: one half of the table); BENCH_RUNS=3, BENCH_THREADS=2,
#   BENCH_GENERATE=path/to/bench-generate (another build of it, with BENCH_ONLY=llm: no build)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="${TRIAGE_MODELS_DIR:-$HOME/.cache/hotline-triage/models}"
DEV="${BENCH_TEXTS:-$ROOT/../shared/data/teddycup2020c/dev.jsonl}"
[ -f "$DEV" ] || DEV="$ROOT/data/sample/cases.jsonl"
ONLY="${BENCH_ONLY:-all}"
cd "$ROOT" || exit 1
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
# BENCH_GENERATE: another bench-generate binary (say, built at an earlier commit) against the same peer.
GENERATE="${BENCH_GENERATE:-$TARGET/release/bench-generate}"
# --workspace: the features the workspace builds with (-p alone would rebuild dependencies).
[ -n "${BENCH_GENERATE:-}" ] && [ "$ONLY" = llm ] || cargo build --release -q --workspace --bin bench-embed --bin bench-generate || exit 1
OUT="$(mktemp)"
export RAYON_NUM_THREADS="${BENCH_THREADS:-2}"
echo "# CPU features: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512bw|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')" >&2
# f32 and int8 encoders taking turns, medians of BENCH_RUNS (3); '#' lines (kernel, min-max) to the terminal.
if [ "$ONLY" != llm ]; then
"$TARGET/release/bench-embed" "$MODELS" "$DEV" both | while IFS= read -r line; do
  case "$line" in "#"*) echo "$line" >&2 ;; *) echo "$line" >> "$OUT" ;; esac
done
python3 -c "import sentence_transformers" 2>/dev/null && python3 scripts/peers/bench_st.py "$MODELS" "$DEV" >> "$OUT" || echo "(peer skipped: sentence-transformers not installed)" >&2
fi
if [ "$ONLY" != embed ]; then
# The LLM and llama.cpp taking turns, BENCH_RUNS (3) each, so that a change in the machine's
# load hits both sides; the table gives medians and min-max. Each run is a fresh process
# (load, cold prompt, decode, cached prefix).
LLAMA=1; python3 -c "import llama_cpp" 2>/dev/null || { LLAMA=0; echo "(peer skipped: llama-cpp-python not installed)" >&2; }
echo "# load before the LLM runs: $(uptime | sed 's/.*load/load/')" >&2
for run in $(seq "${BENCH_RUNS:-3}"); do
  "$GENERATE" "$MODELS" >> "$OUT"
  [ "$LLAMA" = 1 ] && BENCH_THREADS="$RAYON_NUM_THREADS" python3 scripts/peers/bench_llamacpp.py "$MODELS" >> "$OUT"
done
echo "# load after the LLM runs: $(uptime | sed 's/.*load/load/')" >&2
fi
python3 - "$OUT" <<'PY'
import statistics, sys
ours_of = {"torch": "embed", "llamacpp": "llm"}
rows = {}
for line in open(sys.argv[1]):
    bench, metric, value, unit = line.rstrip("\n").split("\t")
    group = ours_of.get(bench, bench)
    side = "peer" if bench in ours_of else "ours"
    rows.setdefault((group, metric), {}).setdefault(side, ([], unit))[0].append(float(value))
def cell(values):
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} ({min(values):.2f}-{max(values):.2f})"
print(f"{'group':<6} {'metric':<24} {'ours (min-max)':>30} {'peer (min-max)':>30} {'ratio':>7}  unit")
for (group, metric), by in rows.items():
    ours, peer = by.get("ours"), by.get("peer")
    if ours is None:
        continue
    o = statistics.median(ours[0])
    p = statistics.median(peer[0]) if peer else None
    ratio = f"{o / p:.2f}x" if p else ""
    print(f"{group:<6} {metric:<24} {cell(ours[0]):>30} {(cell(peer[0]) if peer else '-'):>30} {ratio:>7}  {ours[1]}")
print("(ratio: ours / peer of the medians; llm rows are BENCH_RUNS runs of each side taking turns)")
PY
rm -f "$OUT"

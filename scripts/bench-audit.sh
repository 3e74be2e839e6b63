#!/usr/bin/env bash
# What the audit trail costs: POST /v1/triage (no draft, served with --no-draft; 4 clients,
# 60-character complaints) on the same store with the trail (the default) and with --no-audit,
# alternated ROUNDS times so that drift in the machine's load falls on both; prints every run and
# the medians side by side.
#
#   scripts/bench-audit.sh            (ROUNDS=3 SECONDS_PER_RUN=30 BENCH_DIR=... as bench-serve.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
SECS="${SECONDS_PER_RUN:-30}"
OUT="$(mktemp)"
# One build for every run: they compare one binary with itself.
(cd "$ROOT" && cargo build --release -q --workspace --bins)
export NO_BUILD=1
trap 'rm -f "$OUT"' EXIT
for round in $(seq "$ROUNDS"); do
  for mode in audit no-audit; do
    args=""
    [ "$mode" = no-audit ] && args="--no-audit"
    rate=$(SERVE_ARGS="--no-draft $args" "$ROOT/scripts/bench-serve.sh" --clients 4 --chars 60 --overload 0 --ttft 0 \
      --seconds "$SECS" | awk -F'|' '$2 ~ /^ *4 *$/ {gsub(/ /, "", $4); print $4}')
    echo "round $round $mode: $rate requests/s"
    echo "$mode $rate" >>"$OUT"
  done
done
python3 - "$OUT" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, rate = line.split()
    runs.setdefault(mode, []).append(float(rate))
a, b = statistics.median(runs["audit"]), statistics.median(runs["no-audit"])
print(f"| | requests/s (median of {len(runs['audit'])}) | runs |")
print("|---|---:|---|")
print(f"| with the audit trail | {a:.1f} | {', '.join(f'{r:.1f}' for r in runs['audit'])} |")
print(f"| --no-audit | {b:.1f} | {', '.join(f'{r:.1f}' for r in runs['no-audit'])} |")
print(f"throughput with auditing: {a / b:.3f} of without ({(1 - a / b) * 100:+.1f}% loss)")
PY

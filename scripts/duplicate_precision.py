#!/usr/bin/env python3
"""Precision of the duplicate flag's similarity threshold on a labeled corpus.

    python3 scripts/duplicate_precision.py CASES.jsonl VECTORS.json

VECTORS.json holds the cases' embeddings in file order (`[[...], ...]`, as the service embeds
them: e5 passages of title + text, 128 tokens). For each case, its nearest other case is a
*flagged* pair when their cosine is at or above a threshold. A pair counts as a true repeat when
the two texts share at least half of their character 3-grams (Jaccard ≥ 0.5) — the repeated
postings in the shared data are reposts, lightly edited. Prints precision and count per threshold.
"""
import json, sys
import numpy as np

cases = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
vectors = np.array(json.load(open(sys.argv[2]))[0], dtype=np.float32)[: len(cases)]
texts = [((c.get("title") or "") + (c.get("text") or "")) for c in cases]
grams = [set(t[i : i + 3] for i in range(len(t) - 2)) for t in texts]

sims = vectors @ vectors.T
np.fill_diagonal(sims, -1)
nearest = sims.argmax(1)
best = sims[np.arange(len(cases)), nearest]

def repeat(i, j):
    a, b = grams[i], grams[j]
    return len(a & b) / max(1, len(a | b)) >= 0.5

print("threshold\tflagged\tprecision")
for t in [0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]:
    flagged = [(i, int(nearest[i])) for i in range(len(cases)) if best[i] >= t]
    true = sum(repeat(i, j) for i, j in flagged)
    print(f"{t:.2f}\t{len(flagged)}\t{true / max(1, len(flagged)):.3f}")

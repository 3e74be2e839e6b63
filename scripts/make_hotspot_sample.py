#!/usr/bin/env python3
"""Writes data/eval/hotspots-sample.jsonl: 300 lines of teddycup2020c unlabeled.jsonl holding two
gold hotspots whole (H13 凉塘路 old-town renewal, H20 月亮岛路 110 kV line) and 282 other messages
drawn at random (seeded), in file order. The integration test mines it with the real model.

    python3 scripts/make_hotspot_sample.py ../shared/data/teddycup2020c/unlabeled.jsonl
"""
import json, os, random, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "../shared/data/teddycup2020c/unlabeled.jsonl")
gold = {c["cluster"]: c for c in map(json.loads, open(os.path.join(ROOT, "data/eval/hotspots-gold.jsonl")))}
keep = set(gold["H13"]["ids"]) | set(gold["H20"]["ids"])
lines = [l for l in open(src, encoding="utf-8") if l.strip()]
others = [i for i, l in enumerate(lines) if str(json.loads(l)["id"]) not in keep]
random.seed(15)
chosen = set(random.sample(others, 300 - len(keep)))
with open(os.path.join(ROOT, "data/eval/hotspots-sample.jsonl"), "w", encoding="utf-8") as out:
    for i, l in enumerate(lines):
        if i in chosen or str(json.loads(l)["id"]) in keep:
            out.write(l if l.endswith("\n") else l + "\n")

#!/usr/bin/env python3
"""The ceiling of unit routing on the standard run (issue 14): the share of held-out replies whose
gold unit could be suggested at all, from the sources the router draws its candidates from.

    target/release/examples/extract_units replies.jsonl > units.jsonl
    python3 -c '...'  # complaints as replies, see below
    scripts/unit_ceiling.py replies.jsonl units.jsonl complaint_units.jsonl [seed] [fraction]

`units.jsonl` is the extractor's reading of each reply (gold = its handlers); `complaint_units.jsonl`
is the same extractor run on a copy of replies.jsonl whose `reply` is the complaint's title and text
(the units the complaint itself names, which the router makes candidates). The split is
`triage eval --hold-out`'s: cases ordered by FNV-1a of "{seed}:{id}", the first `fraction` held out.
A held-out gold is reachable when one of its units is a directory unit (`data/units.toml`
templates), a handler of a grounding reply (the learned directory), a district's government (always
a candidate for the complaint's district), or a unit the complaint names with its district.
"""
import json
import re
import sys


def fnv1a(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main() -> None:
    replies, units_path, complaint_path = sys.argv[1:4]
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 17
    fraction = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    ids = [json.loads(line)["id"] for line in open(replies, encoding="utf-8")]
    ordered = sorted(ids, key=lambda i: (fnv1a(f"{seed}:{i}"), i))
    cut = round(len(ordered) * fraction)
    held, grounding = set(ordered[:cut]), set(ordered[cut:])

    units = {}
    for line in open(units_path, encoding="utf-8"):
        d = json.loads(line)
        units[d["id"]] = d["units"]
    named = {}
    for line in open(complaint_path, encoding="utf-8"):
        d = json.loads(line)
        named[d["id"]] = {u["id"] for u in d["units"] if u.get("district")}
    learned = {u["id"] for i in grounding for u in units[i] if u["role"] == "handler"}
    toml = open("data/units.toml", encoding="utf-8").read()
    templates = set(re.findall(r'^id = "\{district\}(-[a-z-]+)"', toml, re.M))

    def configured(u: str) -> bool:
        return bool(re.match(r"^[A-Z]\d*[市区县]-", u)) and any(u.endswith(t) for t in templates)

    steps = [0, 0, 0, 0]
    n = 0
    for i in held:
        gold = {u["id"] for u in units[i] if u["role"] == "handler"}
        if not gold:
            continue
        n += 1
        reach = any(configured(u) for u in gold)
        steps[0] += reach
        reach = reach or bool(gold & learned)
        steps[1] += reach
        reach = reach or any(u.endswith("人民政府") for u in gold)
        steps[2] += reach
        reach = reach or bool(gold & named[i])
        steps[3] += reach
    print(f"held-out replies with a gold unit: {n}")
    for label, k in zip(
        [
            "directory",
            "+ handlers of grounding replies",
            "+ district governments",
            "+ units the complaint names",
        ],
        steps,
    ):
        print(f"{label:36} {k / n:.3f} ({k})")


if __name__ == "__main__":
    main()

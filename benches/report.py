#!/usr/bin/env python3
"""Prints criterion's point estimates (ns/iteration) per benchmark group, with each line's ratio
to a baseline measured in the same run.

    benches/report.py [CRITERION_DIR] [--baseline NAME]...

CRITERION_DIR defaults to target/criterion (honours CARGO_TARGET_DIR). The ratio column is
baseline time / this time for every baseline name present in the group (>1: faster than it).
"""
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
baselines = []
while "--baseline" in args:
    i = args.index("--baseline")
    baselines.append(args[i + 1])
    del args[i : i + 2]
root = Path(args[0]) if args else Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion"
groups = {}
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    t = json.loads(est.read_text())["median"]["point_estimate"]
    groups.setdefault(bench["group_id"], {})[bench["function_id"] or bench.get("value_str") or ""] = t
for g in sorted(groups):
    rows = groups[g]
    base = {b: rows[b] for b in baselines if b in rows}
    print(g)
    for name, t in sorted(rows.items(), key=lambda kv: kv[1]):
        ratio = "  ".join(f"{base[b] / t:5.2f}x vs {b}" for b in base if b != name)
        print(f"  {name:40} {t:9.2f} ns  {ratio}")

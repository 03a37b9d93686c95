#!/usr/bin/env python3
"""Differential test of `xunwind pe probe` against Wine's own RtlVirtualUnwind.

For every file: choose probe pcs with `xunwind pe probe FILE --emit-pcs` (optionally keeping
every K-th), run them through the Wine-side harness (corpus/oracle/wine-probe, one wine start
for all files), and through xunwind twice:

* with `--wine8`, which reproduces Wine 8.0's documented deviations
  (corpus/oracle/wine-deviations.md): every line must be identical, or the file fails;
* in Windows mode (the default): lines that differ are Wine deviations, counted per file.

Lines where either side faulted compare only the fault flag (CONFORMANCE.md section 3). Wine
hangs (it follows in-function jumps without bound) are counted, not compared.

usage: conform_probe.py [--xunwind BIN] [--every K] [--max-files N] (--set SET | FILE...)
Prints one line per file and a final 'N passed, M failed'; exits 1 on any failure.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def fields(line):
    parts = line.split()
    return parts[0], dict(p.split("=", 1) for p in parts[1:] if "=" in p)


def same(wine, ours):
    """Whether two probe lines agree under the fault rule."""
    if wine == ours:
        return True
    tw, fw = fields(wine)
    to, fo = fields(ours)
    if tw != "U" or to != "U":
        return False
    key = ("func", "pc")
    if any(fw.get(k) != fo.get(k) for k in key):
        return False
    if fw.get("fault") == "1" or fo.get("fault") == "1":
        return fw.get("fault") == fo.get("fault")
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xunwind", default=os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/xunwind"))
    ap.add_argument("--every", type=int, default=1, help="keep every K-th probe")
    ap.add_argument("--max-files", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    files = list(a.files)
    for s in a.set:
        out = subprocess.run([os.path.join(HERE, "fetch"), "--list", s], check=True,
                             capture_output=True, text=True).stdout
        files += [l for l in out.splitlines() if l.strip()]
    files = [f for f in files if open(f, "rb").read(2) == b"MZ"]
    if a.max_files:
        files = files[: a.max_files]
    tmp = tempfile.mkdtemp(prefix="xunwind-conform-")
    spec_lines, jobs = [], []
    for i, f in enumerate(files):
        r = subprocess.run([a.xunwind, "pe", "probe", f, "--emit-pcs"], capture_output=True, text=True)
        if r.returncode != 0:
            continue  # not an x64 PE (Wine ships a few PE32 files): nothing to probe
        pcs = r.stdout.splitlines()[:: a.every]
        if not pcs:
            continue
        base = os.path.join(tmp, str(i))
        with open(base + ".pcs", "w") as fh:
            fh.write("\n".join(pcs) + "\n")
        spec_lines.append(f"{f}\t{base}.pcs\t{base}.wine")
        jobs.append((f, base))
    spec = os.path.join(tmp, "spec")
    with open(spec, "w") as fh:
        fh.write("\n".join(spec_lines) + "\n")
    subprocess.run([os.path.join(HERE, "oracle/wine-probe/run.sh"), "--ptrs", "--quiet", "--batch", spec],
                   check=False, stdout=subprocess.DEVNULL)
    passed = failed = 0
    totals = dict(probes=0, deviations=0, faults=0, hangs=0)
    for f, base in jobs:
        try:
            wine = open(base + ".wine").read().splitlines()
        except OSError:
            wine = []
        runs = {}
        for mode, extra in (("wine8", ["--wine8"]), ("windows", [])):
            r = subprocess.run([a.xunwind, "pe", "probe", f, "--pcs", base + ".pcs", "--ptrs"] + extra,
                               capture_output=True, text=True)
            runs[mode] = r.stdout.splitlines()
        name = os.path.relpath(f, ROOT) if f.startswith(ROOT) else f
        if len(wine) != len(runs["wine8"]):
            failed += 1
            print(f"FAIL {name}: wine printed {len(wine)} lines, xunwind {len(runs['wine8'])}")
            continue
        bad, dev, faults, hangs = [], 0, 0, 0
        for w, o8, ow in zip(wine, runs["wine8"], runs["windows"]):
            if "error=wine-hang" in w:
                hangs += 1
                continue
            if " fault=1" in w:
                faults += 1
            if not same(w, o8):
                bad.append((w, o8))
            if not same(w, ow):
                dev += 1
        n = len(wine)
        totals["probes"] += n
        totals["deviations"] += dev
        totals["faults"] += faults
        totals["hangs"] += hangs
        if bad:
            failed += 1
            print(f"FAIL {name}: {len(bad)} of {n} probes differ from Wine 8.0")
            for w, o in bad[:3]:
                print(f"  wine:    {w}\n  xunwind: {o}")
        else:
            passed += 1
            print(f"OK {name} probes={n} wine_deviations={dev} faults={faults} wine_hangs={hangs}")
    print(f"total: probes={totals['probes']} wine_deviations={totals['deviations']} "
          f"faults={totals['faults']} wine_hangs={totals['hangs']}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not (passed + failed) else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""conform_dump.py — checks `xunwind pe dump FILE --json` against independent oracles, field by field.

Usage:
  corpus/conform_dump.py [options] FILE...
  corpus/conform_dump.py [options] --set wine|mingw|fixtures|...   (files from `corpus/fetch --list`)

For every file it runs xunwind and corpus/oracle/dump_oracle.py (llvm-readobj 14, else
llvm-readobj-22, else LIEF), then compares every field the oracle supplies for every .pdata entry
(fields an oracle cannot supply are absent from its output and not compared; see dump_oracle.py).
The number of entries must match too. Per file it prints

  OK <file> entries=N oracle=<oracle> checked_fields=M
  FAIL <file> entries=N oracle=<oracle> mismatches=K      followed by the first few mismatches
  ERROR <file> <reason>                                     (xunwind or every oracle failed)

and at the end `N passed, M failed` (errors count as failed). Exit status 1 on any failure.

Options:
  --xunwind PATH        the xunwind binary (default: target/release/xunwind, or $XUNWIND)
  --xunwind-json PATH   compare against saved `pe dump --json` output instead of running xunwind
                        (one FILE only; for testing this script)
  --oracle NAME         force one oracle: llvm-readobj, llvm-readobj-22 or lief (default: auto)
  --versus NAME         instead of xunwind, compare the chosen oracle with oracle NAME, on the fields
                        both supply (cross-checks the oracles themselves)
  --jobs N              worker processes (default: number of CPUs)
  --show N              mismatches printed per failing file (default 5)
  --record PATH         write a TSV: file, status, entries, oracle, checked_fields
  -q, --quiet           print only failures and the summary
  --self-test           check the comparison itself on hand-made corruptions of the oracle's
                        output for corpus/fixtures/msvc/msvc.dll (no xunwind needed)
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "oracle"))

import dump_oracle  # noqa: E402

XUNWIND_TIMEOUT = 600


# Keys whose values are unwind code objects (or lists of them), which oracles supply in full.
CODE_KEYS = ("codes", "epilog_first", "codes_except_epilog")


class Mismatch(Exception):
    pass


def derived(x_entry, key):
    """Values the LIEF oracle supplies in a derived form, computed from xunwind's own fields."""
    codes = x_entry.get("codes")
    if not isinstance(codes, list):
        return KeyError
    if key == "epilog_first":
        epi = [c for c in codes if isinstance(c, dict) and c.get("op") == "EPILOG"]
        return epi[0] if epi else None
    if key == "codes_except_epilog":
        return [c for c in codes if not (isinstance(c, dict) and c.get("op") == "EPILOG")]
    return KeyError


def compare(o, x, path, out, both_only=False, exact=False):
    """Compares oracle value o with xunwind value x. Dicts: only the oracle's keys (or, with
    both_only, keys present on both sides); with `exact` (unwind code objects, which every oracle
    gives in full) the key sets must be equal too. Appends mismatches to `out`; returns the number
    of leaf values compared."""
    if isinstance(o, dict):
        if not isinstance(x, dict):
            out.append("%s: oracle %s, xunwind %s" % (path, js(o), js(x)))
            return 1
        n = 0
        if exact and not both_only:
            extra = sorted(set(x) - set(o))
            if extra:
                out.append("%s: xunwind has fields the oracle does not: %s in %s"
                           % (path, ",".join(extra), js(x)))
                n += 1
        for k, v in o.items():
            if k not in x:
                if both_only:
                    continue
                out.append("%s.%s: oracle %s, missing in xunwind" % (path, k, js(v)))
                n += 1
                continue
            n += compare(v, x[k], "%s.%s" % (path, k), out, both_only, exact)
        return n
    if isinstance(o, list):
        if not isinstance(x, list):
            out.append("%s: oracle %s, xunwind %s" % (path, js(o), js(x)))
            return 1
        if len(o) != len(x):
            out.append("%s: oracle has %d items, xunwind %d: oracle %s, xunwind %s"
                       % (path, len(o), len(x), js(o), js(x)))
            return 1
        return sum(compare(a, b, "%s[%d]" % (path, i), out, both_only, exact)
                   for i, (a, b) in enumerate(zip(o, x)))
    # Scalars: same value and same kind (True is not 1, null is not 0).
    if type(o) is not type(x) or o != x:
        if not (isinstance(o, int) and isinstance(x, int)
                and not isinstance(o, bool) and not isinstance(x, bool) and o == x):
            out.append("%s: oracle %s, xunwind %s" % (path, js(o), js(x)))
    return 1


def js(v):
    s = json.dumps(v, separators=(",", ":"))
    return s if len(s) <= 300 else s[:297] + "..."


def compare_entries(oracle_entries, x_entries, both_only=False):
    mismatches, checked = [], 0
    if len(oracle_entries) != len(x_entries):
        mismatches.append("entry count: oracle %d, xunwind %d"
                          % (len(oracle_entries), len(x_entries)))
    for o, x in zip(oracle_entries, x_entries):
        where = "entry %d (begin %s)" % (o.get("index"), hexs(o.get("begin")))
        for k, v in o.items():
            if k in ("epilog_first", "codes_except_epilog"):
                xv = derived(x, k)
                if xv is KeyError:
                    if both_only and k not in x:
                        continue
                    mismatches.append("%s %s: xunwind has no codes list" % (where, k))
                    checked += 1
                    continue
            elif k not in x:
                if both_only:
                    continue
                mismatches.append("%s %s: oracle %s, missing in xunwind" % (where, k, js(v)))
                checked += 1
                continue
            else:
                xv = x[k]
            checked += compare(v, xv, "%s %s" % (where, k), mismatches, both_only,
                               exact=k in CODE_KEYS)
    return checked, mismatches


def hexs(v):
    return hex(v) if isinstance(v, int) else str(v)


def parse_json_lines(text, what):
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            v = json.loads(line)
        except ValueError as e:
            raise Mismatch("%s line %d is not JSON (%s): %s" % (what, n, e, line[:200]))
        if not isinstance(v, dict):
            raise Mismatch("%s line %d is not an object" % (what, n))
        out.append(v)
    return out


def run_xunwind(exe, path):
    try:
        p = subprocess.run([exe, "pe", "dump", path, "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=XUNWIND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Mismatch("xunwind timed out")
    except OSError as e:
        raise Mismatch("cannot run %s: %s" % (exe, e))
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise Mismatch("xunwind exited with %d: %s" % (p.returncode, (err[-1] if err else "")[:300]))
    return parse_json_lines(p.stdout.decode("utf-8", "replace"), "xunwind output")


def check_file(job):
    """Worker: returns a result dict for one file (never raises)."""
    try:
        return _check_file(job)
    except Exception as e:  # a bug here must not take the whole pool down
        return {"file": job[0], "status": "ERROR", "entries": 0, "oracle": "-", "checked": 0,
                "mismatches": [], "notes": [], "reason": "internal error: %r" % (e,)}


def _check_file(job):
    path, opts = job
    res = {"file": path, "status": "ERROR", "entries": 0, "oracle": "-", "checked": 0,
           "mismatches": [], "notes": [], "reason": ""}
    try:
        name, oentries, notes = dump_oracle.oracle_dump(path, opts["oracle"])
    except (dump_oracle.OracleError, OSError) as e:
        res["reason"] = "no oracle could read it: %s" % e
        return res
    res.update(oracle=name, entries=len(oentries), notes=notes)
    try:
        if opts["versus"]:
            vname, xentries, _ = dump_oracle.oracle_dump(path, opts["versus"])
            res["oracle"] = "%s-vs-%s" % (name, vname)
        elif opts["xunwind_json"]:
            with open(opts["xunwind_json"], encoding="utf-8") as f:
                xentries = parse_json_lines(f.read(), opts["xunwind_json"])
        else:
            xentries = run_xunwind(opts["xunwind"], path)
    except (Mismatch, dump_oracle.OracleError, OSError) as e:
        res["reason"] = str(e)
        return res
    checked, mism = compare_entries(oentries, xentries, both_only=bool(opts["versus"]))
    res["checked"] = checked
    res["mismatches"] = mism
    res["status"] = "OK" if not mism else "FAIL"
    return res


def self_test():
    """Checks the comparison itself: a copy of the oracle's own output for the msvc fixture must
    pass, and each hand-made corruption of it must be caught. Returns an exit status."""
    import copy
    fixture = os.path.join(HERE, "fixtures", "msvc", "msvc.dll")
    name, oentries, _ = dump_oracle.oracle_dump(fixture)
    good = []
    for e in oentries:
        x = copy.deepcopy(e)
        x.setdefault("frame_offset", 0)  # fields only xunwind prints
        x["error"] = None
        good.append(x)

    def first(pred):
        return next(i for i, e in enumerate(good) if pred(e))

    i_alloc = first(lambda e: any(c["op"] == "ALLOC_LARGE" for c in e.get("codes", [])))
    i_push = first(lambda e: any(c["op"] == "PUSH_NONVOL" for c in e.get("codes", [])))
    i_hand = first(lambda e: e.get("handler"))
    i_chain = first(lambda e: e.get("chained"))
    i_ind = first(lambda e: e.get("indirect") and "unwind" in e)
    i_fp = first(lambda e: e.get("frame_reg"))

    def code(g, i, op):
        return next(c for c in g[i]["codes"] if c["op"] == op)

    cases = [
        ("identical", lambda g: None, False),
        ("ALLOC_LARGE size", lambda g: code(g, i_alloc, "ALLOC_LARGE").update(size=8), True),
        ("register", lambda g: code(g, i_push, "PUSH_NONVOL").update(reg="r11"), True),
        ("extra field in a code", lambda g: code(g, i_push, "PUSH_NONVOL").update(size=8), True),
        ("extra code", lambda g: g[i_push]["codes"].append({"offset": 0, "op": "SET_FPREG"}), True),
        ("flags", lambda g: g[i_hand].update(flags=["EHANDLER"]), True),
        ("handler", lambda g: g[i_hand].update(handler=g[i_hand]["handler"] + 1), True),
        ("handler_data", lambda g: g[i_hand].update(handler_data=g[i_hand]["handler_data"] + 4), True),
        ("chained.end", lambda g: g[i_chain]["chained"].update(end=0), True),
        ("chained null", lambda g: g[i_chain].update(chained=None), True),
        ("indirect", lambda g: g[i_ind].update(indirect=None), True),
        ("frame_offset", lambda g: g[i_fp].update(frame_offset=g[i_fp]["frame_offset"] + 16), True),
        ("prolog as bool", lambda g: g[0].update(prolog=True), True),
        ("null vs 0", lambda g: g[0].update(handler=0), True),
        ("missing key", lambda g: g[0].pop("version"), True),
        ("one entry fewer", lambda g: g.pop(), True),
        ("xunwind-only fields differ", lambda g: g[0].update(error="x", frame_offset=16)
         if g[0].get("frame_reg") is None else None, False),
    ]
    bad = 0
    for label, mutate, should_fail in cases:
        g = copy.deepcopy(good)
        mutate(g)
        checked, mism = compare_entries(oentries, g)
        ok = bool(mism) == should_fail
        bad += not ok
        print("%s self-test %-28s %s (%d fields, %d mismatches)"
              % ("OK" if ok else "FAIL", label, "caught" if mism else "passed", checked, len(mism)))
    print("%d passed, %d failed" % (len(cases) - bad, bad))
    return 1 if bad else 0


def files_of_set(name):
    p = subprocess.run([os.path.join(HERE, "fetch"), "--list", name], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("conform_dump: corpus/fetch --list %s failed: %s"
                 % (name, p.stderr.decode().strip()))
    return [l for l in p.stdout.decode().splitlines() if l.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--xunwind", default=os.environ.get("XUNWIND",
                                                        os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/xunwind")))
    ap.add_argument("--xunwind-json")
    ap.add_argument("--oracle", default="auto",
                    choices=["auto", "llvm-readobj", "llvm-readobj-22", "lief"])
    ap.add_argument("--versus", choices=["llvm-readobj", "llvm-readobj-22", "lief"])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--show", type=int, default=5)
    ap.add_argument("--record")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()

    files = list(args.files)
    for s in args.set:
        files += files_of_set(s)
    if not files:
        ap.error("no files (give FILEs or --set NAME)")
    if args.xunwind_json and len(files) != 1:
        ap.error("--xunwind-json takes exactly one FILE")
    if not (args.versus or args.xunwind_json) and not os.access(args.xunwind, os.X_OK):
        sys.exit("conform_dump: no xunwind binary at %s (cargo build --release, or --xunwind PATH)"
                 % args.xunwind)
    opts = {"oracle": args.oracle, "versus": args.versus, "xunwind_json": args.xunwind_json,
            "xunwind": os.path.abspath(args.xunwind)}

    # Largest files first, so that the pool does not end waiting on one big file.
    order = sorted(files, key=lambda f: -os.path.getsize(f) if os.path.exists(f) else 0)
    results = {}
    jobs = [(f, opts) for f in order]
    if args.jobs <= 1 or len(jobs) == 1:
        it = map(check_file, jobs)
        for r in it:
            results[r["file"]] = r
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for r in pool.map(check_file, jobs, chunksize=1):
                results[r["file"]] = r

    passed = failed = 0
    total_entries = total_checked = 0
    by_oracle = {}
    rec_lines = []
    for f in files:  # report in the order given
        r = results[f]
        rel = os.path.relpath(f, ROOT) if f.startswith(ROOT) else f
        if r["status"] == "OK":
            passed += 1
            if not args.quiet:
                print("OK %s entries=%d oracle=%s checked_fields=%d"
                      % (rel, r["entries"], r["oracle"], r["checked"]))
        elif r["status"] == "FAIL":
            failed += 1
            print("FAIL %s entries=%d oracle=%s checked_fields=%d mismatches=%d"
                  % (rel, r["entries"], r["oracle"], r["checked"], len(r["mismatches"])))
            for m in r["mismatches"][:args.show]:
                print("    " + m)
        else:
            failed += 1
            print("ERROR %s %s" % (rel, r["reason"]))
        total_entries += r["entries"]
        total_checked += r["checked"]
        by_oracle[r["oracle"]] = by_oracle.get(r["oracle"], 0) + 1
        rec_lines.append("%s\t%s\t%d\t%s\t%d" % (rel, r["status"], r["entries"], r["oracle"],
                                                   r["checked"]))
    if args.record:
        with open(args.record, "w", encoding="utf-8") as f:
            f.write("# file\tstatus\tentries\toracle\tchecked_fields\n")
            f.write("\n".join(rec_lines) + "\n")
    print("files=%d entries=%d checked_fields=%d oracles: %s" % (
        len(files), total_entries, total_checked,
        ", ".join("%s=%d" % kv for kv in sorted(by_oracle.items()))))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""dump_oracle.py — an independent reference for `xunwind pe dump FILE --json`.

Prints one JSON object per line, one line per .pdata entry, with the field names and value
conventions of CONFORMANCE.md section 1, built from tools we did not write:

  llvm-readobj (LLVM 14, /usr/bin/llvm-readobj)   `--unwind` text output, parsed here
  llvm-readobj-22 (Debian package llvm-22)         the same, for files LLVM 14 cannot read: it knows
                                                   unwind version 2 EPILOG codes (LLVM 14 aborts on them)
  LIEF (PyPI `lief`, 1.0)                          `lief.PE.parse(..., parse_exceptions=True)`, last resort

Which oracle was used is printed on stderr (`oracle=NAME file=... entries=N`).

A field an oracle cannot supply is left out of the object (the key is absent), never guessed, so a
comparison checks only what the oracle really said. Known gaps, all documented in corpus/README.md:

* llvm-readobj prints FrameOffset as `-` when FrameRegister is 0: `frame_offset` is then absent.
* llvm-readobj never prints the handler data; `handler_data` is derived from two fields it does print
  (UnwindInfoAddress and UnwindCodeCount) by the layout rule LLVM itself uses to find the language
  data: unwind + 4 + 2 * (count rounded up to even) + 4.
* With both CHAININFO and a handler flag set, readobj/LIEF show only the handler while the format
  (and xunwind) read a chained entry: `handler`, `handler_data` and `chained` are then absent.
* An entry whose UnwindData has bit 0 set (indirect) is printed by readobj and LIEF as if the odd RVA
  were an UNWIND_INFO (garbage). The oracle reports `indirect` and takes `unwind` and every info
  field from the oracle's own entry for the RUNTIME_FUNCTION pointed to, when that lies in the table.
* LIEF: `frame_offset` is never supplied (LIEF 1.0 reads the FrameOffset nibble from the wrong byte);
  a chained parent is reported as the table entry with the same BeginAddress, so only
  `chained.begin` is supplied; version-2 EPILOG codes are read two slots at a time, so for version 2
  the oracle supplies `epilog_first` ({offset,size,at_end} of the first EPILOG code) and
  `codes_except_epilog` (the codes list without EPILOG codes) instead of `codes`. LIEF's code list is
  used only when the raw code slots (LIEF's `raw_opcodes`) show that LIEF decoded exactly the codes
  that are there; raw bytes never supply a value.

Run as a program (`dump_oracle.py [--oracle auto|llvm-readobj|llvm-readobj-22|lief] FILE`) or import
`oracle_dump(path, oracle="auto") -> (oracle_name, [entry dicts], notes)`.
"""

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

REGS = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
FLAG_NAMES = [(1, "EHANDLER"), (2, "UHANDLER"), (4, "CHAININFO")]
READOBJ_TIMEOUT = 600


class OracleError(Exception):
    """The oracle could not read the file (crash, parse failure, mismatch with the table)."""


# ---------------------------------------------------------------------------------------------
# PE headers: only what is needed to interpret the oracles' output (image base, where the
# exception directory is, section table). No unwind data is read here.

class PeHeaders:
    def __init__(self, data):
        if len(data) < 0x40 or data[:2] != b"MZ":
            raise OracleError("not an MZ file")
        pe = struct.unpack_from("<I", data, 0x3C)[0]
        if pe + 24 > len(data) or data[pe:pe + 4] != b"PE\0\0":
            raise OracleError("no PE signature")
        self.pe = pe
        self.machine, nsec, _, self.symptr, self.nsyms, optsize, _ = struct.unpack_from(
            "<HHIIIHH", data, pe + 4)
        opt = pe + 24
        magic = struct.unpack_from("<H", data, opt)[0]
        if magic != 0x20B:
            raise OracleError("not PE32+ (optional header magic %#x)" % magic)
        self.image_base = struct.unpack_from("<Q", data, opt + 24)[0]
        ndirs = struct.unpack_from("<I", data, opt + 108)[0]
        if ndirs > 3 and opt + 112 + 4 * 8 <= len(data):
            self.exc_rva, self.exc_size = struct.unpack_from("<II", data, opt + 112 + 3 * 8)
        else:
            self.exc_rva, self.exc_size = 0, 0
        self.sections = []
        sec = opt + optsize
        for i in range(nsec):
            off = sec + 40 * i
            if off + 40 > len(data):
                break
            name = data[off:off + 8].rstrip(b"\0").decode("latin-1")
            vsize, va, rawsize, rawptr = struct.unpack_from("<IIII", data, off + 8)
            self.sections.append((name, va, vsize, rawsize, rawptr))

    @property
    def count(self):
        return self.exc_size // 12


# ---------------------------------------------------------------------------------------------
# llvm-readobj

def find_readobj(name):
    """Path of `llvm-readobj` (LLVM 14) or `llvm-readobj-22`, or None."""
    env = {"llvm-readobj": "XUNWIND_READOBJ", "llvm-readobj-22": "XUNWIND_READOBJ22"}[name]
    if os.environ.get(env):
        return os.environ[env]
    if name == "llvm-readobj":
        for cand in ("llvm-readobj-14", "/usr/lib/llvm-14/bin/llvm-readobj"):
            p = shutil.which(cand)
            if p:
                return p
        return shutil.which("llvm-readobj")
    return shutil.which(name) or (os.path.exists("/usr/lib/llvm-22/bin/llvm-readobj")
                                  and "/usr/lib/llvm-22/bin/llvm-readobj") or None


def run_readobj(exe, path, data, hdr):
    """Runs `exe --unwind` and returns its stdout.

    llvm-readobj looks up a symbol for every address it prints by a linear scan of the COFF symbol
    table, which takes minutes on DLLs with large tables (libgnat: 12 s, 47k symbols). Symbols only
    decorate the output, so the file is handed over with PointerToSymbolTable and NumberOfSymbols
    zeroed (a temporary copy); every byte that describes unwind data is untouched."""
    tmp = None
    target = path
    if hdr.symptr or hdr.nsyms:
        patched = bytearray(data)
        struct.pack_into("<II", patched, hdr.pe + 12, 0, 0)
        fd, tmp = tempfile.mkstemp(suffix=".dll", prefix="xunwind-oracle-",
                                   dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        with os.fdopen(fd, "wb") as f:
            f.write(patched)
        target = tmp
    try:
        p = subprocess.run([exe, "--unwind", target], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=READOBJ_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise OracleError("%s timed out" % exe)
    except OSError as e:
        raise OracleError("cannot run %s: %s" % (exe, e))
    finally:
        if tmp:
            os.unlink(tmp)
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        first = next((l for l in err if l.strip()), "")
        raise OracleError("%s exited with %d%s" % (os.path.basename(exe), p.returncode,
                                                    (": " + first[:200]) if first else ""))
    out = p.stdout.decode("utf-8", "replace")
    if "corrupt unwind data" in p.stderr.decode("utf-8", "replace"):
        out += "\n#corrupt\n"
    return out


_ADDR = re.compile(r"\((0x[0-9A-Fa-f]+)\)\s*$")
_CODE = re.compile(r"^0x([0-9A-Fa-f]+): ([A-Z_0-9]+)(?: (.*))?$")


def _addr(text, image_base):
    """An address as readobj prints it -> RVA. readobj prints ImageBase+RVA, except that a zero
    RVA is printed as the field's offset inside its own section (always below ImageBase)."""
    m = _ADDR.search(text)
    if not m:
        raise OracleError("cannot read an address in %r" % text)
    v = int(m.group(1), 16)
    if image_base == 0:
        return None  # ambiguous: cannot tell an RVA from a section offset
    if v < image_base:
        return 0
    rva = v - image_base
    if rva > 0xFFFFFFFF:
        raise OracleError("address %#x is not ImageBase + u32" % v)
    return rva


def parse_readobj(text, image_base):
    """Parses `llvm-readobj --unwind` output into raw records (one per RuntimeFunction)."""
    funcs = []
    cur = None      # current RuntimeFunction record
    info = None     # its UnwindInfo dict
    where = None    # "rf", "info", "codes", "flags", "chained"
    chained = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line == "#corrupt":
            if info is not None:
                info["corrupt"] = True
            continue
        if line == "RuntimeFunction {":
            cur = {"begin": None, "end": None, "unwind": None, "info": None}
            funcs.append(cur)
            info, where, chained = None, "rf", None
            continue
        if cur is None:
            continue
        if where == "codes":
            if line == "]":
                where = "info"
                continue
            m = _CODE.match(line)
            if not m:
                raise OracleError("unexpected unwind code line %r" % line)
            info["codes"].append((int(m.group(1), 16), m.group(2), m.group(3) or ""))
            continue
        if where == "flags":
            if line == "]":
                where = "info"
            continue
        if where == "chained":
            if line == "}":
                where = "info"
                continue
            key, _, val = line.partition(": ")
            chained[{"StartAddress": "begin", "EndAddress": "end",
                     "UnwindInfoAddress": "unwind"}[key]] = _addr(val, image_base)
            continue
        key, _, val = line.partition(":")
        val = val.strip()
        if where == "rf":
            if key == "StartAddress":
                cur["begin"] = _addr(val, image_base)
            elif key == "EndAddress":
                cur["end"] = _addr(val, image_base)
            elif key == "UnwindInfoAddress":
                cur["unwind"] = _addr(val, image_base)
            elif line == "UnwindInfo {":
                info = {"codes": [], "handler": None, "chained": None, "corrupt": False,
                        "frame_reg": None, "frame_offset": None}
                cur["info"] = info
                where = "info"
            elif line == "}":
                cur = None
            continue
        if where == "info":
            if line == "}":
                where = "rf"
            elif key == "Version":
                info["version"] = int(val)
            elif line.startswith("Flags ["):
                m = re.search(r"\((0x[0-9A-Fa-f]+)\)", line)
                info["flags"] = int(m.group(1), 16)
                where = "flags"
            elif key == "PrologSize":
                info["prolog"] = int(val)
            elif key == "FrameRegister":
                info["frame_reg"] = None if val == "-" else val.split()[0].lower()
            elif key == "FrameOffset":
                info["frame_offset"] = None if val == "-" else int(val, 16)
            elif key == "UnwindCodeCount":
                info["count"] = int(val)
            elif line == "UnwindCodes [":
                where = "codes"
            elif key == "Handler":
                info["handler"] = _addr(val, image_base)
            elif line == "Chained {":
                chained = {}
                info["chained"] = chained
                where = "chained"
            continue
    return funcs


def _kv(args):
    out = {}
    for part in args.split(","):
        part = part.strip()
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
        elif part:
            out[part] = True
    return out


def _reg(name):
    n = name.lower()
    if n not in REGS:
        raise OracleError("unknown register %r" % name)
    return n


def readobj_code(off, op, args, state):
    """One readobj code line -> (json dict, slots used, or a tuple of possible slot counts)."""
    kv = _kv(args)
    c = {"offset": off, "op": op}
    if op == "PUSH_NONVOL":
        c["reg"] = _reg(kv["reg"])
        return c, (1,)
    if op == "ALLOC_SMALL":
        c["size"] = int(kv["size"])
        return c, (1,)
    if op == "ALLOC_LARGE":
        c["size"] = size = int(kv["size"])
        # Both forms print alike: 2 slots (16-bit count of 8-byte units) or 3 (32-bit bytes).
        return c, ((2, 3) if size % 8 == 0 and size <= 0xFFFF * 8 else (3,))
    if op == "SET_FPREG":
        return c, (1,)
    if op in ("SAVE_NONVOL", "SAVE_NONVOL_FAR"):
        c["reg"] = _reg(kv["reg"])
        c["stack_offset"] = int(kv["offset"], 16)
        return c, ((2,) if op == "SAVE_NONVOL" else (3,))
    if op in ("SAVE_XMM128", "SAVE_XMM128_FAR"):
        r = kv["reg"]
        if not r.startswith("XMM"):
            raise OracleError("bad xmm register %r" % r)
        c["xmm"] = int(r[3:])
        c["stack_offset"] = int(kv["offset"], 16)
        return c, ((2,) if op == "SAVE_XMM128" else (3,))
    if op == "PUSH_MACHFRAME":
        c["error_code"] = kv["errcode"] == "yes"
        return c, (1,)
    if op == "EPILOG":  # llvm-readobj 21+ only: one slot each
        if not state.get("seen_epilog"):
            state["seen_epilog"] = True
            c["size"] = int(kv["length"], 16)
            c["at_end"] = kv["atend"] == "yes"
        elif kv.get("padding"):
            c["distance"] = 0
        else:
            c["distance"] = int(kv["offset"], 16)
        return c, (1,)
    raise OracleError("unknown unwind op %r" % op)


def _slots_fit(options, count):
    """True if some choice of slot counts (one tuple per code) adds up to exactly `count`."""
    totals = {0}
    for opt in options:
        totals = {t + o for t in totals for o in opt}
    return count in totals


def flag_names(flags):
    return [n for bit, n in FLAG_NAMES if flags & bit]


def handler_data_rva(unwind, count):
    # Language data follows the handler RVA, which follows the code slots padded to an even count.
    return unwind + 4 + 2 * ((count + 1) & ~1) + 4


def info_fields_readobj(rec):
    """The JSON fields of one readobj UnwindInfo (everything after `indirect`)."""
    out = {}
    info = rec["info"]
    if info is None or rec["unwind"] is None:
        return out
    version = info.get("version")
    out["version"] = version
    if version not in (1, 2):
        return out  # xunwind reports an error and no more; readobj's layout does not apply
    flags = info["flags"]
    out["flags"] = flag_names(flags)
    out["prolog"] = info["prolog"]
    out["frame_reg"] = info["frame_reg"]
    if info["frame_reg"] is not None:
        out["frame_offset"] = info["frame_offset"] * 16
    codes, options, state = [], [], {}
    ok = not info["corrupt"]
    try:
        for off, op, args in info["codes"]:
            c, slots = readobj_code(off, op, args, state)
            codes.append(c)
            options.append(slots)
    except (OracleError, KeyError, ValueError):
        ok = False
    # readobj walks codes while the slot index is below the count, so a last code whose slots
    # run past the count is printed from the bytes after it: such a list is not reliable.
    if ok and _slots_fit(options, info["count"]):
        out["codes"] = codes
    has_handler = bool(flags & 3)
    has_chain = bool(flags & 4)
    if has_handler and has_chain:
        pass  # readobj shows the handler, the format says chained: supply neither
    elif has_handler:
        if info["handler"] is not None and not info["corrupt"]:
            out["handler"] = info["handler"]
            out["handler_data"] = handler_data_rva(rec["unwind"], info["count"])
        out["chained"] = None
    elif has_chain:
        out["handler"] = None
        out["handler_data"] = None
        ch = info["chained"]
        if ch is not None and not info["corrupt"] and None not in ch.values() and len(ch) == 3:
            out["chained"] = {"begin": ch["begin"], "end": ch["end"], "unwind": ch["unwind"]}
    else:
        out["handler"] = None
        out["handler_data"] = None
        out["chained"] = None
    return out


def table_check(hdr, n_oracle, what):
    """The oracle must have listed (at least) the exception directory's entries."""
    if hdr.exc_size % 12:
        raise OracleError("exception directory size %#x is not a multiple of 12" % hdr.exc_size)
    if n_oracle < hdr.count:
        raise OracleError("%s listed %d entries, the exception directory has %d"
                          % (what, n_oracle, hdr.count))


def readobj_entries(exe, path, data, hdr):
    if hdr.count == 0:
        return []
    # readobj dumps the sections named .pdata / .pdata$*; that must be where the directory is.
    pdatas = [s for s in hdr.sections if s[0] == ".pdata" or s[0].startswith(".pdata$")]
    if len(pdatas) != 1 or pdatas[0][1] != hdr.exc_rva:
        raise OracleError("the exception directory (%#x) is not the start of a single .pdata "
                          "section, which is all llvm-readobj dumps" % hdr.exc_rva)
    funcs = parse_readobj(run_readobj(exe, path, data, hdr), hdr.image_base)
    table_check(hdr, len(funcs), os.path.basename(exe))
    funcs = funcs[:hdr.count]
    out = []
    for i, rec in enumerate(funcs):
        e = {"index": i}
        for k in ("begin", "end", "unwind"):
            if rec[k] is not None:
                e[k] = rec[k]
        e.update(indirect_or_info(i, rec, funcs, hdr, info_fields_readobj))
        out.append(e)
    return out


def indirect_or_info(i, rec, funcs, hdr, info_fields):
    """The fields after begin/end for entry i: resolves indirect entries through the oracle's own
    record of the target RUNTIME_FUNCTION."""
    u = rec.get("unwind")
    if u is None:
        return {}
    if not u & 1:
        out = {"indirect": None}
        out.update(info_fields(rec))
        return out
    target = u & ~1
    out = {"indirect": target}
    rel = target - hdr.exc_rva
    if rel < 0 or rel % 12 or rel // 12 >= len(funcs):
        return {"indirect": target, "_drop_unwind": True}
    t = funcs[rel // 12]
    if t.get("unwind") is None or t["unwind"] & 1:
        return {"indirect": target, "_drop_unwind": True}
    out["unwind"] = t["unwind"]
    out.update(info_fields(t))
    return out


# ---------------------------------------------------------------------------------------------
# LIEF

# Slots per op for the raw-slot check of LIEF's decoding (v2 EPILOG: LIEF reads 2, see above).
def _lief_slots(op, info, version):
    if op in (0, 2, 3, 10):
        return 1
    if op == 1:
        return 2 if info == 0 else 3
    if op in (4, 8):
        return 2
    if op in (5, 9):
        return 3
    if op == 6:
        return 2  # v1: LIEF turns it into SAVE_XMM128 (rejected below); v2: LIEF reads 2
    if op == 7:
        return 3
    return None


LIEF_OPNAMES = {0: "PUSH_NONVOL", 1: "ALLOC_LARGE", 2: "ALLOC_SMALL", 3: "SET_FPREG",
                4: "SAVE_NONVOL", 5: "SAVE_NONVOL_FAR", 6: "EPILOG", 8: "SAVE_XMM128",
                9: "SAVE_XMM128_FAR", 10: "PUSH_MACHFRAME"}


def _lief_enum_name(v):
    s = str(v)
    return s.split(".")[-1]


def lief_codes(u):
    """LIEF's decoded codes as JSON dicts, or None when they cannot be trusted."""
    raw = bytes(u.raw_opcodes)
    count = u.count_opcodes
    version = u.version
    ops = list(u.opcodes)
    # Walk the raw slots the way LIEF does and require that LIEF produced one op per code with
    # the op number found there, and that the codes exactly fill `count` slots.
    if len(raw) < 2 * count:
        return None
    nibble = [raw[2 * k + 1] & 0xF for k in range(count)]
    pos, expect = 0, []
    if version == 2:
        # EPILOG codes lead; LIEF reads them in pairs, which keeps it aligned only for an even run.
        while pos < count and nibble[pos] == 6:
            pos += 1
        if pos % 2:
            return None
        expect = [6] * (pos // 2)
    while pos < count:
        op, info = nibble[pos], raw[2 * pos + 1] >> 4
        n = _lief_slots(op, info, version)
        if n is None or op in (6, 7):
            return None  # LIEF gives these a meaning the format does not (or stops)
        expect.append(op)
        pos += n
    if pos != count:
        return None
    if len(ops) < len(expect):
        return None
    out = []
    for op_num, o in zip(expect, ops):
        name = _lief_enum_name(o.opcode)
        if name != LIEF_OPNAMES.get(op_num):
            return None
        c = {"offset": o.position, "op": name}
        kind = type(o).__name__
        if kind == "PushNonVol":
            c["reg"] = _lief_enum_name(o.reg).lower()
        elif kind == "Alloc":
            c["size"] = o.size
        elif kind == "SetFPReg":
            pass
        elif kind == "SaveNonVolatile":
            c["reg"] = _lief_enum_name(o.reg).lower()
            c["stack_offset"] = o.offset
        elif kind == "SaveXMM128":
            c["xmm"] = o.num
            c["stack_offset"] = o.offset
        elif kind == "PushMachFrame":
            c["error_code"] = bool(o.value)
        elif kind == "Epilog":
            c["offset"] = o.size  # LIEF stores the offset byte as `size`, the info as `flags`
            c["size"] = o.size
            c["at_end"] = bool(o.flags() & 1 if callable(o.flags) else o.flags & 1)
        else:
            return None
        out.append(c)
    return out


def lief_entries(path, hdr):
    try:
        import lief  # noqa: WPS433 (optional dependency)
    except ImportError:
        raise OracleError("LIEF is not installed (pip install lief)")
    try:
        lief.logging.disable()
    except Exception:  # pragma: no cover - older LIEF
        pass
    cfg = lief.PE.ParserConfig()
    cfg.parse_exceptions = True
    b = lief.PE.parse(path, cfg)
    if b is None:
        raise OracleError("LIEF could not parse the file")
    funcs_l = list(b.exceptions)
    table_check(hdr, len(funcs_l), "LIEF")
    funcs_l = funcs_l[:hdr.count]
    recs = [{"begin": f.rva_start, "end": f.rva_end, "unwind": f.unwind_rva, "lief": f}
            for f in funcs_l]

    def info_fields(rec):
        out = {}
        u = rec["lief"].unwind_info
        if u is None:
            return out
        out["version"] = u.version
        if u.version not in (1, 2):
            return out
        flags = u.flags
        out["flags"] = flag_names(flags)
        out["prolog"] = u.sizeof_prologue
        out["frame_reg"] = REGS[u.frame_reg] if u.frame_reg else None
        # frame_offset: not supplied (LIEF 1.0 reads it from the version/flags byte).
        codes = lief_codes(u)
        if codes is not None:
            if u.version == 2:
                epi = [c for c in codes if c["op"] == "EPILOG"]
                if epi:
                    out["epilog_first"] = epi[0]
                out["codes_except_epilog"] = [c for c in codes if c["op"] != "EPILOG"]
            else:
                out["codes"] = codes
        has_handler, has_chain = bool(flags & 3), bool(flags & 4)
        if has_handler and has_chain:
            pass
        elif has_handler:
            if u.handler is not None:
                out["handler"] = u.handler
                out["handler_data"] = handler_data_rva(rec["unwind"], u.count_opcodes)
            out["chained"] = None
        elif has_chain:
            out["handler"] = None
            out["handler_data"] = None
            if u.chained is not None:
                out["chained"] = {"begin": u.chained.rva_start}
        else:
            out["handler"] = None
            out["handler_data"] = None
            out["chained"] = None
        return out

    out = []
    for i, rec in enumerate(recs):
        e = {"index": i, "begin": rec["begin"], "end": rec["end"], "unwind": rec["unwind"]}
        e.update(indirect_or_info(i, rec, recs, hdr, info_fields))
        out.append(e)
    return out


# ---------------------------------------------------------------------------------------------

KEY_ORDER = ["index", "begin", "end", "unwind", "indirect", "version", "flags", "prolog",
             "frame_reg", "frame_offset", "codes", "epilog_first", "codes_except_epilog",
             "handler", "handler_data", "chained", "error"]


def _finish(entries):
    out = []
    for e in entries:
        if e.pop("_drop_unwind", False):
            e.pop("unwind", None)
        out.append({k: e[k] for k in KEY_ORDER if k in e})
    return out


def _has_v2(entries):
    return any(e.get("version") == 2 for e in entries)


def oracle_dump(path, oracle="auto"):
    """Returns (oracle name, entries, notes). Raises OracleError when no oracle can read the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        hdr = PeHeaders(data)
    except struct.error:
        raise OracleError("truncated PE headers")
    if hdr.machine != 0x8664:
        raise OracleError("machine %#x is not x86-64" % hdr.machine)
    notes = []
    order = {"auto": ["llvm-readobj", "llvm-readobj-22", "lief"],
             "llvm-readobj": ["llvm-readobj"], "llvm-readobj-22": ["llvm-readobj-22"],
             "lief": ["lief"]}[oracle]
    for name in order:
        try:
            if name == "lief":
                entries = lief_entries(path, hdr)
            else:
                exe = find_readobj(name)
                if not exe:
                    raise OracleError("%s is not installed" % name)
                entries = readobj_entries(exe, path, data, hdr)
                # LLVM 14 has no notion of version 2 EPILOG codes (it aborts on them, and the
                # abort is undefined behaviour, not a check): version 2 goes to a newer reader.
                if name == "llvm-readobj" and _has_v2(entries) and oracle == "auto":
                    raise OracleError("version 2 unwind info: left to a reader that knows it")
            return name, _finish(entries), notes
        except OracleError as e:
            notes.append("%s: %s" % (name, e))
    raise OracleError("; ".join(notes))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--oracle", default="auto",
                    choices=["auto", "llvm-readobj", "llvm-readobj-22", "lief"],
                    help="which oracle to use (auto: llvm-readobj 14, then -22, then LIEF)")
    args = ap.parse_args(argv)
    try:
        name, entries, notes = oracle_dump(args.file, args.oracle)
    except (OracleError, OSError) as e:
        print("dump_oracle: %s: no oracle could read it: %s" % (args.file, e), file=sys.stderr)
        return 2
    for n in notes:
        print("dump_oracle: skipped %s" % n, file=sys.stderr)
    print("oracle=%s file=%s entries=%d" % (name, args.file, len(entries)), file=sys.stderr)
    w = sys.stdout.write
    for e in entries:
        w(json.dumps(e, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(0)

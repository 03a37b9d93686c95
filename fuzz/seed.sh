#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>/, ignored by git) from real PE files: the
# unpacked corpus (corpus/fetch), the fixtures, and any files or folders given as arguments.
#
#   fuzz/seed.sh [PATH...]
#
# pe_parse gets whole small PE files; pe_parts their sections mapped flat at their RVAs behind
# the 8-byte .pdata directory header the target reads; pe_lookup their raw .pdata; range_table
# their function ranges in its two encodings. Files over 128 KiB are skipped: large inputs slow
# every execution and teach the fuzzer nothing the small ones don't; the smallest come first.
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$fuzz")"
if [ $# -eq 0 ]; then
  set -- "$root/corpus/unpacked" "$root/corpus/fixtures"
fi
exec python3 - "$fuzz/corpus" "$@" <<'EOF'
import hashlib, os, struct, sys

out, paths = sys.argv[1], sys.argv[2:]
MAX_FILE = 128 * 1024
PER_TARGET = 300


def pe_files():
    """Candidate files, smallest first: small inputs keep executions fast."""
    found = set()
    for p in paths:
        if os.path.isfile(p):
            found.add(p)
        for d, _, names in os.walk(p):
            for n in names:
                if n.lower().endswith((".dll", ".exe", ".sys", ".drv", ".ocx", ".cpl", ".pyd")):
                    found.add(os.path.join(d, n))
    sized = []
    for f in found:
        try:
            sized.append((os.path.getsize(f), f))
        except OSError:
            pass
    return [f for size, f in sorted(sized) if size <= MAX_FILE]


def parse(data):
    """(sections [(va, vsize, raw_off, raw_size)], pdata_rva, pdata_size) of a PE32+ x64 file."""
    if data[:2] != b"MZ" or len(data) < 0x40:
        return None
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0" or struct.unpack_from("<H", data, pe + 4)[0] != 0x8664:
        return None
    nsec, = struct.unpack_from("<H", data, pe + 6)
    optsz, = struct.unpack_from("<H", data, pe + 20)
    opt = pe + 24
    if struct.unpack_from("<H", data, opt)[0] != 0x20B:
        return None
    ndirs, = struct.unpack_from("<I", data, opt + 108)
    if ndirs <= 3:
        return None
    prva, psize = struct.unpack_from("<II", data, opt + 112 + 3 * 8)
    secs = []
    for i in range(nsec):
        s = opt + optsz + 40 * i
        vsize, va, rsize, roff = struct.unpack_from("<IIII", data, s + 8)
        secs.append((va, vsize, roff, rsize))
    return secs, prva, psize


def mapped(data, secs):
    size = max((va + max(vs, rs) for va, vs, _, rs in secs), default=0)
    if size > MAX_FILE:
        return None
    img = bytearray(size)
    hdr = min(len(data), secs[0][0] if secs else 0x400, 0x1000)
    img[:hdr] = data[:hdr]
    for va, vs, ro, rs in secs:
        n = min(rs, vs or rs)
        img[va:va + n] = data[ro:ro + n]
    return bytes(img)


def ranges_inputs(pdata):
    entries = [struct.unpack_from("<II", pdata, i) for i in range(0, len(pdata) - 11, 12)][:500]
    raw = b"\x01" + b"".join(struct.pack("<QQ", b, e) for b, e in entries)
    delta, prev = bytearray([0x02]), 0x1000
    for b, e in entries:
        gap, ln = b - prev, e - b
        if gap < 0 or ln < 0:
            break
        flags, scale = 0, 0
        if gap >= 256:
            flags, gap, scale = 1, min(gap >> 8, 255), gap & 255
        if ln >= 256:
            flags, ln = flags | 8, min(ln >> 8, 255)
        delta += bytes([gap, ln, flags, scale])
        prev = e
    return [raw, bytes(delta)]


def save(target, blob):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if len(os.listdir(d)) >= PER_TARGET:
        return
    with open(os.path.join(d, hashlib.sha1(blob).hexdigest()), "wb") as f:
        f.write(blob)


count = 0
for path in pe_files():
    try:
        data = open(path, "rb").read()
        info = parse(data)
    except (OSError, struct.error):
        continue
    if not info or not info[2]:
        continue
    secs, prva, psize = info
    img = mapped(data, secs)
    if img is None:
        continue
    pdata = img[prva:prva + psize]
    save("pe_parse", data)
    save("pe_parts", struct.pack("<II", prva, psize) + img)
    save("pe_lookup", pdata[:6000])
    for blob in ranges_inputs(pdata):
        save("range_table", blob)
    count += 1
print(f"seeded fuzz corpora from {count} PE files into {out}")


def note(kind, name, desc):
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def elf_core(threads, with_file, with_siginfo):
    """A small x86-64 ELF core built from scratch: NT_PRSTATUS per thread (rip/rsp/rbp in a
    PT_LOAD stack holding a frame-pointer chain), optionally NT_FILE naming a missing file and
    NT_SIGINFO, so the fuzzer starts past the header checks (random bytes never get there)."""
    stack_base, stack = 0x7ffd0000, bytearray(512)
    for i in range(0, 256, 16):  # rbp chain: [rbp] = next rbp, [rbp+8] = a return address
        struct.pack_into("<QQ", stack, i, stack_base + i + 16, 0x401000 + i)
    notes = b""
    for t in range(threads):
        regs = [0] * 27
        regs[4], regs[16], regs[19] = stack_base, 0x401234 + t, stack_base  # rbp, rip, rsp
        pr = bytearray(336)
        struct.pack_into("<I", pr, 32, 1000 + t)  # pr_pid
        struct.pack_into("<27Q", pr, 112, *regs)
        notes += note(1, b"CORE\0", bytes(pr))
    if with_siginfo:
        notes += note(0x53494749, b"CORE\0", struct.pack("<iii4xQ", 11, 0, 1, 0x10) + bytes(104))
    if with_file:
        name = b"/nonexistent/xunwind-seed.so\0"
        notes += note(0x46494C45, b"CORE\0", struct.pack("<QQQQQ", 1, 4096, 0x400000, 0x402000, 0) + name)
    ehsize, phsize = 64, 56
    note_off = ehsize + 2 * phsize
    load_off = note_off + len(notes)
    ph_note = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(notes), 0, 4)
    ph_load = struct.pack("<IIQQQQQQ", 1, 6, load_off, stack_base, 0, len(stack), len(stack), 4096)
    eh = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize, 2, 64, 0, 0)
    return eh + ph_note + ph_load + notes + bytes(stack)


for threads, with_file, with_siginfo in [(1, False, False), (2, True, True), (1, True, False)]:
    save("elf_core", elf_core(threads, with_file, with_siginfo))
print(f"seeded elf_core with synthetic cores into {out}")
# dwarf_cfi, raw mode: byte 0 (bit 0 raw, bit 1 .debug_frame), 4 probe addresses (u16), then the
# section. A hand-built .debug_frame (CIE version 1, one FDE over [0x2000, 0x2040)) and the
# .eh_frame / .debug_frame of a small program of ours built by gcc, when gcc is here.
def entry(body):
    return struct.pack("<I", len(body)) + body


cie = entry(b"\xff\xff\xff\xff\x01\x00\x01\x78\x10" + bytes([0x0c, 7, 8, 0x90, 1]))
fde = entry(struct.pack("<IQQ", 0, 0x2000, 0x40) + bytes([0x41, 0x0e, 16, 0x86, 2, 0x43, 0x0d, 6]))
probes = struct.pack("<4H", 0x2000, 0x2001, 0x2005, 0x203F)
save("dwarf_cfi", b"\x03" + probes + cie + fde)
import shutil, subprocess, tempfile
if shutil.which("gcc") and shutil.which("objcopy"):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "s.c")
        with open(src, "w") as f:
            f.write("int g(int x){volatile int v[8]; v[x&7]=x; return v[3];}\n"
                    "int f(int x){return g(x)+g(x+1);}\n")
        for flags, section, mode in [([], ".eh_frame", 1), (["-fno-asynchronous-unwind-tables"], ".debug_frame", 3)]:
            obj, raw = os.path.join(tmp, "s.o"), os.path.join(tmp, "s.bin")
            ok = subprocess.run(["gcc", "-O1", "-g", "-c", *flags, "-o", obj, src]).returncode == 0
            ok = ok and subprocess.run(["objcopy", "-O", "binary", "--only-section=" + section, obj, raw]).returncode == 0
            if ok and os.path.getsize(raw) > 0:
                with open(raw, "rb") as f:
                    # Relocatable: FDEs start at 0; probe the first bytes.
                    save("dwarf_cfi", bytes([mode]) + struct.pack("<4H", 0, 1, 4, 9) + f.read())
print(f"seeded dwarf_cfi into {out}")

EOF

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
EOF

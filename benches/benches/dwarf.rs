//! DWARF CFI on real system libraries: finding the FDE for an address, and a whole cold step.
//!
//! - `lookup/*`: the FDE candidate for an address. `xunwind` is the dense-key index
//!   (`RangeTable` over `.eh_frame_hdr`'s initial locations); `gimli_hdr` is gimli's
//!   `EhHdrTable::lookup` over the same header; `std_partition_point` is the standard library's
//!   binary search over a copy of the header's sorted initial locations.
//! - `step/*`: one frame unwound in place (`FrameWalker::unwind`, no context pointers) from
//!   nothing cached but the CIEs: `xunwind` is `DwarfUnwinder` with its rule cache off (lookup,
//!   our own FDE parse and CFA-program interpretation, register recovery from memory);
//!   `xunwind_gimli_path` the same with the fast path off too (gimli parses and evaluates the
//!   row, which is then applied); `xunwind_warm_lines` the `xunwind` line over the 64 addresses
//!   of the next one (data in CPU caches: parse and evaluation without memory latency);
//!   `xunwind_rule_cache` a hit in the rule cache (64 cached rows);
//!   `regs_copy` is the copy of the input registers every in-place line above includes (so that
//!   each iteration unwinds the same frame); `gimli` is `EhHdrTable::unwind_info_for_address`
//!   (lookup, FDE and CIE parse, row evaluation) with a reused `UnwindContext`, without even
//!   applying the row.
//!
//! Addresses are 4096 pseudo-random points inside the FDEs of the library, visited in a fixed
//! order, one lookup or step per criterion iteration (ns per lookup/step).
//! Libraries: libc.so.6 and the largest of libLLVM-15/14 and libstdc++ found (override with
//! `XUNWIND_DWARF_LIBS=path:path`).
//!
//! Run: `cargo bench -p xunwind-benches --bench dwarf -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use gimli::{EhFrame, EhFrameHdr, LittleEndian, UnwindContext, UnwindSection};
use object::{Object, ObjectSection};
use std::hint::black_box;
use xunwind::core::{PcKind, Reg, Regs, SliceMemory};
use xunwind::FrameWalker;
use xunwind_dwarf::DwarfUnwinder;

const N: usize = 4096;

fn libraries() -> Vec<String> {
    if let Ok(v) = std::env::var("XUNWIND_DWARF_LIBS") {
        return v.split(':').map(str::to_string).collect();
    }
    let dir = "/lib/x86_64-linux-gnu/";
    let mut out = vec![format!("{dir}libc.so.6")];
    for big in ["libLLVM-15.so.1", "libLLVM-14.so.1", "libstdc++.so.6"] {
        if std::path::Path::new(&format!("{dir}{big}")).exists() {
            out.push(format!("{dir}{big}"));
            break;
        }
    }
    out
}

/// SplitMix64, so runs compare.
fn rng(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bench_library(c: &mut Criterion, path: &str) {
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!("skipping {path}: not found");
        return;
    };
    let short = path.rsplit('/').next().unwrap_or(path);
    let obj = object::File::parse(&*bytes).unwrap();
    let sec = |n: &str| obj.section_by_name(n).unwrap();
    let (eh_sec, hdr_sec) = (sec(".eh_frame"), sec(".eh_frame_hdr"));
    let mut u = DwarfUnwinder::new(&bytes, 0).unwrap();
    // Cold steps: every step parses its FDE and evaluates its row.
    u.set_rule_cache(false);
    let mut via_gimli = DwarfUnwinder::new(&bytes, 0).unwrap();
    via_gimli.set_rule_cache(false);
    via_gimli.set_fast_path(false);
    let cached = DwarfUnwinder::new(&bytes, 0).unwrap();
    let bases = u.bases().clone();
    let mut eh_frame = EhFrame::new(eh_sec.data().unwrap(), LittleEndian);
    eh_frame.set_address_size(8);
    let hdr = EhFrameHdr::new(hdr_sec.data().unwrap(), LittleEndian)
        .parse(&bases, 8)
        .unwrap();
    let table = hdr.table().unwrap();

    // The header's table, for the std baseline and for picking addresses inside FDEs.
    let mut starts = Vec::new();
    let mut fdes = Vec::new();
    let mut it = table.iter(&bases);
    while let Some((s, f)) = it.next().unwrap() {
        starts.push(s.pointer());
        fdes.push(f.pointer());
    }
    let mut ranges = Vec::new();
    for &f in &fdes {
        let off = (f - eh_sec.address()) as usize;
        if let Ok(fde) = eh_frame.fde_from_offset(&bases, off.into(), EhFrame::cie_from_offset) {
            if fde.len() > 0 {
                ranges.push((fde.initial_address(), fde.len()));
            }
        }
    }
    let mut seed = 0x5eed;
    let addrs: Vec<u64> = (0..N)
        .map(|_| {
            let (s, l) = ranges[(rng(&mut seed) % ranges.len() as u64) as usize];
            s + rng(&mut seed) % l
        })
        .collect();
    eprintln!(
        "{short}: {} FDEs in .eh_frame_hdr, index {} KiB",
        starts.len(),
        u.eh_index().heap_bytes() / 1024
    );

    // Results must agree before they are timed.
    for &a in &addrs {
        let ours = u
            .eh_index()
            .candidate(a)
            .map(|o| o as u64 + eh_sec.address());
        let theirs = table.lookup(a, &bases).ok().map(|p| p.pointer());
        assert_eq!(ours, theirs, "{short} {a:#x}");
    }

    let mut g = c.benchmark_group(format!("dwarf_lookup/{short}"));
    let mut i = 0usize;
    g.bench_function("xunwind", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            black_box(u.eh_index().candidate(black_box(addrs[i])))
        })
    });
    g.bench_function("gimli_hdr", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            black_box(table.lookup(black_box(addrs[i]), &bases).ok())
        })
    });
    g.bench_function("std_partition_point", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            let a = black_box(addrs[i]);
            black_box(
                starts
                    .partition_point(|&s| s <= a)
                    .checked_sub(1)
                    .map(|k| fdes[k]),
            )
        })
    });
    g.finish();

    // A stack whose every slot is readable, rsp and rbp in the middle of it.
    let base = 0x1000_0000u64;
    let stack = vec![0x55u8; 0x20000];
    let mem = SliceMemory::new(base, &stack);
    let mut gpr = [0u64; 16];
    gpr[Reg::Rsp as usize] = base + 0x8000;
    gpr[Reg::Rbp as usize] = base + 0x9000;
    let regs: Vec<Regs> = addrs.iter().map(|&a| Regs::with_gprs(a, gpr)).collect();
    let ok = regs
        .iter()
        .filter(|r| u.step(r, PcKind::Exact, &mem).is_ok())
        .count();
    eprintln!("{short}: {ok} of {N} steps succeed");

    // The fast path and gimli's agree on every address before either is timed.
    for r in &regs {
        let a = u.step(r, PcKind::Exact, &mem).map(|s| format!("{s:?}"));
        let b = via_gimli
            .step(r, PcKind::Exact, &mem)
            .map(|s| format!("{s:?}"));
        assert_eq!(a, b, "{short} {:#x}", r.rip().unwrap());
    }

    let mut g = c.benchmark_group(format!("dwarf_step/{short}"));
    let mut scratch = Regs::new();
    g.bench_function("xunwind", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            scratch.clone_from(black_box(&regs[i]));
            black_box(u.unwind(&mut scratch, PcKind::Exact, &mem, None).ok())
        })
    });
    g.bench_function("xunwind_gimli_path", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            scratch.clone_from(black_box(&regs[i]));
            black_box(
                via_gimli
                    .unwind(&mut scratch, PcKind::Exact, &mem, None)
                    .ok(),
            )
        })
    });
    g.bench_function("regs_copy", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            scratch.clone_from(black_box(&regs[i]));
            black_box(&scratch);
        })
    });
    // Warm: 64 addresses whose rows the rule cache keeps, stepped over and over.
    for r in &regs[..256] {
        let _ = cached.step(r, PcKind::Exact, &mem);
    }
    // Rows present together occupy distinct slots: every step below is a hit.
    let hot: Vec<Regs> = regs[..256]
        .iter()
        .filter(|r| cached.is_rule_cached(r.rip().unwrap()))
        .take(64)
        .cloned()
        .collect();
    assert!(hot.iter().all(|r| cached.is_rule_cached(r.rip().unwrap())));
    eprintln!("{short}: {} hot rows", hot.len());
    // The cold path again, on the 64 hot addresses: their index, FDE and stack lines stay in
    // the CPU's caches, so this is the parse and evaluation without the memory latency.
    g.bench_function("xunwind_warm_lines", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            scratch.clone_from(black_box(&hot[i % hot.len()]));
            black_box(u.unwind(&mut scratch, PcKind::Exact, &mem, None).ok())
        })
    });
    g.bench_function("xunwind_rule_cache", |b| {
        b.iter(|| {
            i = (i + 1) & 63;
            scratch.clone_from(black_box(&hot[i % hot.len()]));
            black_box(cached.unwind(&mut scratch, PcKind::Exact, &mem, None).ok())
        })
    });
    let mut ctx = UnwindContext::new();
    g.bench_function("gimli", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            let row = table.unwind_info_for_address(
                &eh_frame,
                &bases,
                &mut ctx,
                black_box(addrs[i]),
                EhFrame::cie_from_offset,
            );
            black_box(row.map(|r| r.start_address()).ok())
        })
    });
    g.finish();
}

fn dwarf(c: &mut Criterion) {
    for lib in libraries() {
        bench_library(c, &lib);
    }
}

criterion_group!(benches, dwarf);
criterion_main!(benches);

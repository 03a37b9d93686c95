//! DWARF CFI on real system libraries: finding the FDE for an address, and a whole cold step.
//!
//! - `lookup/*`: the FDE candidate for an address. `xunwind` is the dense-key index
//!   (`RangeTable` over `.eh_frame_hdr`'s initial locations); `gimli_hdr` is gimli's
//!   `EhHdrTable::lookup` over the same header; `std_partition_point` is the standard library's
//!   binary search over a copy of the header's sorted initial locations.
//! - `step/*`: one frame unwound in place (`FrameWalker::unwind`, no context pointers) at a pc
//!   no cache keyed by pc has seen (`DwarfUnwinder` with its rule cache off):
//!   - `xunwind`: the default path. The FDE's rows were compiled on its first step (after the
//!     warm-up, every FDE the addresses touch is), so a step is the FDE lookup, a search of the
//!     FDE's row offsets and register recovery from memory;
//!   - `xunwind_first_touch`: a fresh unwinder's first 4096 steps, which compile each FDE on its
//!     first step (about a third of them land in an FDE stepped before);
//!   - `xunwind_interpreted`: compiled rows off, so every step parses the FDE and interprets its
//!     CFA program up to the address (our own parser and interpreter);
//!   - `xunwind_gimli_path`: the fast path off too (gimli parses and evaluates the row, which is
//!     then applied);
//!   - `xunwind_warm_lines` / `xunwind_interpreted_warm_lines`: the two lines above over the 64
//!     addresses of the next one (data in CPU caches: the work without the memory latency);
//!   - `xunwind_rule_cache`: a hit in the rule cache (64 cached rows);
//!   - `regs_copy`: restoring the input registers, which every line above includes (a copy from
//!     one template in L1 and the address);
//!   - `gimli`: `EhHdrTable::unwind_info_for_address` (lookup, FDE and CIE parse, row
//!     evaluation) with a reused `UnwindContext`, without even applying the row.
//!
//! Addresses are 4096 pseudo-random points inside the FDEs of the library, visited in a fixed
//! order, one lookup or step per criterion iteration (ns per lookup/step).
//! Libraries: libc.so.6 and the largest of libLLVM-15/14 and libstdc++ found (override with
//! `XUNWIND_DWARF_LIBS=path:path`).
//!
//! Run: `cargo bench -p xunwind-benches --bench dwarf -- --warm-up-time 1 --measurement-time 3`.

use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use gimli::{EhFrame, EhFrameHdr, LittleEndian, UnwindContext, UnwindSection};
use object::{Object, ObjectSection};
use std::hint::black_box;
use std::time::{Duration, Instant};
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
    // Cold steps: no pc seen before; the FDE's rows are compiled (after warm-up, every FDE's).
    u.set_rule_cache(false);
    // Cold steps that parse the FDE and interpret its program every time.
    let mut interp = DwarfUnwinder::new(&bytes, 0).unwrap();
    interp.set_rule_cache(false);
    interp.set_compiled_rows(false);
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

    // The fast path (compiled and interpreted) and gimli's agree on every address before any
    // is timed.
    for r in &regs {
        let a = u.step(r, PcKind::Exact, &mem).map(|s| format!("{s:?}"));
        let b = via_gimli
            .step(r, PcKind::Exact, &mem)
            .map(|s| format!("{s:?}"));
        let c = interp
            .step(r, PcKind::Exact, &mem)
            .map(|s| format!("{s:?}"));
        assert_eq!(a, b, "{short} {:#x}", r.rip().unwrap());
        assert_eq!(a, c, "{short} {:#x}", r.rip().unwrap());
    }

    // Every line restores the same input registers before its step (an in-place unwind
    // rewrites them): a copy from one template in L1 plus the address, timed alone as
    // `regs_copy`.
    let template = Regs::with_gprs(0, gpr);
    let mut g = c.benchmark_group(format!("dwarf_step/{short}"));
    let mut scratch = Regs::new();
    step_line(&mut g, "xunwind", &u, &addrs, &template, &mem);
    step_line(
        &mut g,
        "xunwind_interpreted",
        &interp,
        &addrs,
        &template,
        &mem,
    );
    // A fresh unwinder's first N steps (each FDE compiled on its first step, about a third of
    // the steps land in an FDE stepped before); the unwinder's construction is not timed.
    g.bench_function("xunwind_first_touch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let mut fresh = DwarfUnwinder::new(&bytes, 0).unwrap();
                fresh.set_rule_cache(false);
                let n = (iters - done).min(N as u64) as usize;
                let t = Instant::now();
                for &a in &addrs[..n] {
                    scratch.clone_from(&template);
                    scratch.set_rip(black_box(a));
                    black_box(fresh.unwind(&mut scratch, PcKind::Exact, &mem, None).ok());
                }
                total += t.elapsed();
                done += n as u64;
            }
            total
        })
    });
    step_line(
        &mut g,
        "xunwind_gimli_path",
        &via_gimli,
        &addrs,
        &template,
        &mem,
    );
    let mut k = 0;
    g.bench_function("regs_copy", |b| {
        b.iter(|| {
            k = next(k, N);
            scratch.clone_from(&template);
            scratch.set_rip(black_box(addrs[k]));
            black_box(&scratch);
        })
    });
    let (fdes_compiled, compiled_bytes) = u.compiled_stats();
    eprintln!("{short}: {fdes_compiled} FDEs compiled, {compiled_bytes} bytes");
    // Warm: 64 addresses whose rows the rule cache keeps, stepped over and over.
    for r in &regs[..256] {
        let _ = cached.step(r, PcKind::Exact, &mem);
    }
    // Rows present together occupy distinct slots: every step below is a hit.
    let hot: Vec<u64> = addrs[..256]
        .iter()
        .copied()
        .filter(|&a| cached.is_rule_cached(a))
        .take(64)
        .collect();
    assert!(hot.iter().all(|&a| cached.is_rule_cached(a)));
    eprintln!("{short}: {} hot rows", hot.len());
    // The cold path again, on the 64 hot addresses: their index, FDE and stack lines stay in
    // the CPU's caches, so this is the parse and evaluation without the memory latency.
    step_line(&mut g, "xunwind_warm_lines", &u, &hot, &template, &mem);
    step_line(
        &mut g,
        "xunwind_interpreted_warm_lines",
        &interp,
        &hot,
        &template,
        &mem,
    );
    step_line(&mut g, "xunwind_rule_cache", &cached, &hot, &template, &mem);
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

/// The next index of a cycle through `len` items (a predictable branch, no division).
#[inline]
fn next(i: usize, len: usize) -> usize {
    if i + 1 >= len {
        0
    } else {
        i + 1
    }
}

/// One step line: `u` unwinds in place at each of `addrs` in turn, from `template`'s registers
/// (the copy is `regs_copy`'s).
fn step_line<M: Measurement>(
    g: &mut BenchmarkGroup<'_, M>,
    name: &str,
    u: &DwarfUnwinder<'_>,
    addrs: &[u64],
    template: &Regs,
    mem: &SliceMemory<'_>,
) {
    let mut scratch = Regs::new();
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = next(i, addrs.len());
            scratch.clone_from(template);
            scratch.set_rip(black_box(addrs[i]));
            black_box(u.unwind(&mut scratch, PcKind::Exact, mem, None).ok())
        })
    });
}

fn dwarf(c: &mut Criterion) {
    for lib in libraries() {
        bench_library(c, &lib);
    }
}

criterion_group!(benches, dwarf);
criterion_main!(benches);

//! Kernel tables on Debian's real kernel: the exact `__ex_table` lookup and the ORC lookup.
//!
//! - `extable/*`: `ExTable::lookup` (RangeTable-indexed) against `search_extable`'s plain binary
//!   search, on vmlinux's table (600 entries) and kvm-intel.ko's (677, placed and sorted),
//!   with half the probes hitting an insn and half random text addresses (misses).
//! - `orc/*`: 384,849 entries; `find` (the kernel's `orc_lookup` accelerator), `find_full`
//!   (binary search of the whole table, the kernel's path without the accelerator),
//!   `find_indexed` (RangeTable) and a plain `partition_point`, at random text addresses.
//!
//! Every iteration is one lookup (ns/lookup). The kernel comes from `XUNWIND_VMLINUZ` and
//! `XUNWIND_KVM_INTEL`, or the corpus (corpus/fetch); without it the benchmarks are skipped.
//!
//! Run: `cargo bench -p xunwind-benches --bench extable -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use xunwind_extable::orc::OrcTable;
use xunwind_extable::{ExTable, KernelFile, ModuleLayout};

const PACKAGE: &str = "corpus/unpacked/linux-image-6.1.0-56-amd64";
const VMLINUZ: &str = "boot/vmlinuz-6.1.0-56-amd64";
const KVM_INTEL: &str = "lib/modules/6.1.0-56-amd64/kernel/arch/x86/kvm/kvm-intel.ko";
/// Probe addresses per table; a power of two so the cycling index is a mask.
const PROBES: usize = 1 << 14;

fn path(var: &str, rel: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(PACKAGE)
            .join(rel)
    })
}

/// xorshift64*: the same probes on every run.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Half the table's insns, half random addresses in `[lo, hi)`, shuffled together.
fn probes(t: &ExTable, lo: u64, hi: u64) -> Vec<u64> {
    let mut r = rng(0x5eed);
    let e = t.entries();
    (0..PROBES)
        .map(|i| {
            if i % 2 == 0 {
                e[(r() % e.len() as u64) as usize].insn
            } else {
                lo + r() % (hi - lo)
            }
        })
        .collect()
}

fn bench_extable(c: &mut Criterion, name: &str, t: &ExTable) {
    let lo = t.entries()[0].insn;
    let hi = t.entries()[t.len() - 1].insn + 1;
    let addrs = probes(t, lo, hi);
    let insns: Vec<u64> = t.entries().iter().map(|e| e.insn).collect();
    let mut g = c.benchmark_group(format!("extable/{name}"));
    let mut i = 0usize;
    g.bench_function("ExTable::lookup", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(t.lookup(black_box(addrs[i])))
        })
    });
    g.bench_function("lookup_bsearch", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(t.lookup_bsearch(black_box(addrs[i])))
        })
    });
    g.bench_function("std binary_search", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(insns.binary_search(&black_box(addrs[i])).ok())
        })
    });
    g.finish();
}

fn bench_orc(c: &mut Criterion, t: &OrcTable) {
    let (lo, hi) = t.text();
    let mut r = rng(0x0dc);
    let addrs: Vec<u64> = (0..PROBES).map(|_| lo + r() % (hi - lo)).collect();
    let ips = t.ips();
    let mut g = c.benchmark_group("orc/vmlinux");
    let mut i = 0usize;
    g.bench_function("find (orc_lookup)", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(t.find(black_box(addrs[i])))
        })
    });
    g.bench_function("find_full", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(t.find_full(black_box(addrs[i])))
        })
    });
    g.bench_function("find_indexed (RangeTable)", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            black_box(t.find_indexed(black_box(addrs[i])))
        })
    });
    g.bench_function("std binary_search", |b| {
        b.iter(|| {
            i = (i + 1) & (PROBES - 1);
            let pc = black_box(addrs[i]);
            black_box(match ips.binary_search(&pc) {
                Ok(mut k) => {
                    // Rightmost of equal ips, as the kernel's search takes.
                    while k + 1 < ips.len() && ips[k + 1] == pc {
                        k += 1;
                    }
                    Some(k)
                }
                Err(k) => k.checked_sub(1),
            })
        })
    });
    g.finish();
}

fn kernel(c: &mut Criterion) {
    let Ok(data) = std::fs::read(path("XUNWIND_VMLINUZ", VMLINUZ)) else {
        eprintln!("extable benches skipped: no kernel (run corpus/fetch)");
        return;
    };
    let kf = KernelFile::parse(&data).expect("vmlinuz parses");
    bench_extable(c, "vmlinux", &kf.vmlinux_table().unwrap());
    if let Some(orc) = &kf.orc {
        bench_orc(c, &OrcTable::from_sections(orc, kf.version).unwrap());
    }
    if let Ok(ko) = std::fs::read(path("XUNWIND_KVM_INTEL", KVM_INTEL)) {
        let m = KernelFile::parse(&ko).expect("kvm-intel.ko parses");
        let layout = ModuleLayout::loader_default(&m, 0xffff_ffff_c000_0000, 0xffff_ffff_e000_0000);
        bench_extable(c, "kvm-intel", &m.module_table(&layout).unwrap());
    }
}

criterion_group!(benches, kernel);
criterion_main!(benches);

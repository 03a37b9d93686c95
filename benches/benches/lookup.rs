//! "Which function holds this address": xunwind's `RangeTable` against the standard library's
//! binary searches, an Eytzinger layout and the `pe-unwind-info` crate.
//!
//! Every benchmark iteration is one lookup, so criterion's time is ns/lookup. Two modes:
//! - `independent`: addresses come from a precomputed batch, so lookups overlap in the CPU
//!   (throughput, as when symbolizing many samples);
//! - `dependent`: the next address cannot be formed before the previous lookup's result is
//!   known (latency, as in a stack walk, where the next pc is read from a frame the previous
//!   entry described). The result is folded in through a zero the compiler cannot see, so both
//!   modes run the same address sequence.
//!
//! Two patterns: `random` (uniform over the table's span) and `sequential` (the same addresses
//! sorted). Tables: synthetic `.pdata`-shaped tables of 1k, 10k, 100k and 1M functions, and the
//! `.pdata` of Wine's ntdll.dll (`XUNWIND_NTDLL`, or the corpus path; skipped when absent).
//! The `proto_*` entries are prototypes of a faster `RangeTable::lookup`, measured beside it.
//!
//! Run: `cargo bench -p xunwind-benches --bench lookup -- --warm-up-time 1 --measurement-time 3`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xunwind::pe::PeImage;
use xunwind::RangeTable;
use xunwind_benches::proto::{FixedStepTable, Search};
use xunwind_benches::{
    random_addrs, sequential_addrs, std_binary_search_by, std_partition_point, synthetic_table,
    Eytzinger, BATCH,
};

/// Where `corpus/fetch wine` unpacks Wine's ntdll.dll, relative to the workspace root.
const NTDLL: &str =
    "corpus/unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/ntdll.dll";

#[derive(Clone, Copy)]
enum Mode {
    Independent,
    Dependent,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Independent => "independent",
            Mode::Dependent => "dependent",
        }
    }
}

/// Benchmarks `lookup` over `addrs` in `mode`, one lookup per criterion iteration.
fn bench<F>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    addrs: &[u64; BATCH],
    mode: Mode,
    lookup: F,
) where
    F: Fn(u64) -> Option<usize>,
{
    const MASK: usize = BATCH - 1;
    match mode {
        Mode::Independent => g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut acc = 0usize;
                let start = Instant::now();
                for i in 0..iters as usize {
                    acc = acc.wrapping_add(lookup(addrs[i & MASK]).unwrap_or(0));
                }
                let t = start.elapsed();
                black_box(acc);
                t
            })
        }),
        Mode::Dependent => g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let zero = black_box(0usize);
                let mut r = 0usize;
                let start = Instant::now();
                for i in 0..iters as usize {
                    r = lookup(addrs[(i + (r & zero)) & MASK]).unwrap_or(usize::MAX);
                }
                let t = start.elapsed();
                black_box(r);
                t
            })
        }),
    };
}

fn patterns(table: &[(u32, u32)], seed: u64) -> [(&'static str, Box<[u64; BATCH]>); 2] {
    let random = random_addrs(table, seed);
    let sequential = sequential_addrs(&random);
    [("random", random), ("sequential", sequential)]
}

/// Prototypes of a change to `RangeTable::lookup` (see `xunwind_benches::proto`): today's
/// block search with its select forced to a conditional move, and, with blocks half today's
/// size, the block search as a fixed number of steps (`window4`: at most 4 entries, a loop
/// LLVM compiles to branches; `unrolled16`: unrolled conditional moves).
fn prototypes(label: &str, table: &[(u32, u32)]) -> Vec<(String, FixedStepTable)> {
    let v = vec![
        (
            "proto_variable_cmov_finer0".to_string(),
            FixedStepTable::new(table, 0, 16, Search::Variable),
        ),
        (
            "proto_window4_finer1".to_string(),
            FixedStepTable::new(table, 1, 4, Search::Window),
        ),
        (
            "proto_unrolled16_finer1".to_string(),
            FixedStepTable::new(table, 1, 16, Search::Unrolled),
        ),
    ];
    for (name, p) in &v {
        let (width, shift) = p.shape();
        eprintln!(
            "{label}: {name}: block 2^{shift} bytes, window {width}, {} bytes",
            p.heap_bytes()
        );
    }
    v
}

fn synthetic(c: &mut Criterion) {
    for (label, n) in [
        ("1k", 1_000),
        ("10k", 10_000),
        ("100k", 100_000),
        ("1M", 1_000_000),
    ] {
        let table = synthetic_table(n, 0x5eed + n as u64);
        let ours = RangeTable::<u32>::new(table.iter().map(|&(b, e)| (b as u64, e as u64)))
            .expect("synthetic tables are sorted");
        let ey = Eytzinger::new(&table);
        eprintln!(
            "{label}: rangetable: block 2^{} bytes, {} bytes",
            ours.block_shift(),
            ours.heap_bytes()
        );
        let protos = prototypes(label, &table);
        for (pattern, addrs) in patterns(&table, n as u64) {
            for mode in [Mode::Independent, Mode::Dependent] {
                let mut g = c.benchmark_group(format!("{label}/{pattern}/{}", mode.name()));
                bench(&mut g, "rangetable", &addrs, mode, |a| ours.lookup(a));
                bench(&mut g, "std_binary_search_by", &addrs, mode, |a| {
                    std_binary_search_by(&table, a)
                });
                bench(&mut g, "std_partition_point", &addrs, mode, |a| {
                    std_partition_point(&table, a)
                });
                bench(&mut g, "eytzinger", &addrs, mode, |a| ey.lookup(a));
                for (name, p) in &protos {
                    bench(&mut g, name, &addrs, mode, |a| p.lookup(a));
                }
                g.finish();
            }
        }
    }
}

fn ntdll_path() -> PathBuf {
    match std::env::var_os("XUNWIND_NTDLL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(NTDLL),
    }
}

fn real_dll(c: &mut Criterion) {
    let path = ntdll_path();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "skipping the real-DLL benchmarks: {}: {e} (run `corpus/fetch wine` or set XUNWIND_NTDLL)",
                path.display()
            );
            return;
        }
    };
    let img = match PeImage::parse(&data) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("skipping the real-DLL benchmarks: {}: {e}", path.display());
            return;
        }
    };
    let functions = img.functions();
    if functions.range_table().is_none() {
        eprintln!(
            "note: {}'s .pdata is not sorted ({:?}); xunwind falls back to Windows' search",
            path.display(),
            functions.order_error()
        );
    }
    let (pdata_rva, pdata_size) = img.pdata_directory();
    let pdata = &img.bytes_at(pdata_rva)[..functions.len() * 12];
    assert!(pdata.len() <= pdata_size as usize);
    let peu = pe_unwind_info::x86_64::FunctionTableEntries::parse(pdata);
    let table: Vec<(u32, u32)> = functions
        .iter()
        .filter(|f| f.begin < f.end)
        .map(|f| (f.begin, f.end))
        .collect();
    let ey = Eytzinger::new(&table);
    if let Some(t) = functions.range_table() {
        eprintln!(
            "ntdll: rangetable: block 2^{} bytes, {} bytes",
            t.block_shift(),
            t.heap_bytes()
        );
    }
    let protos = prototypes("ntdll", &table);
    eprintln!(
        "{}: {} functions, span {:#x}..{:#x}",
        path.display(),
        functions.len(),
        table[0].0,
        table[table.len() - 1].1
    );
    for (pattern, addrs) in patterns(&table, 0xd11) {
        for mode in [Mode::Independent, Mode::Dependent] {
            let mut g = c.benchmark_group(format!("ntdll/{pattern}/{}", mode.name()));
            bench(&mut g, "xunwind_find", &addrs, mode, |a| {
                functions.find(a as u32)
            });
            bench(&mut g, "xunwind_lookup_function_entry", &addrs, mode, |a| {
                img.lookup_function_entry(a as u32)
                    .map(|f| f.unwind_data as usize)
            });
            bench(&mut g, "pe_unwind_info", &addrs, mode, |a| {
                peu.lookup(a as u32)
                    .map(|f| f.unwind_info_address.get() as usize)
            });
            bench(&mut g, "std_partition_point", &addrs, mode, |a| {
                std_partition_point(&table, a)
            });
            bench(&mut g, "eytzinger", &addrs, mode, |a| ey.lookup(a));
            for (name, p) in &protos {
                bench(&mut g, name, &addrs, mode, |a| p.lookup(a));
            }
            g.finish();
        }
    }
}

criterion_group! {
    name = lookups;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = synthetic, real_dll
}
criterion_main!(lookups);

//! One `RtlVirtualUnwind` step (lookup included) on real functions, at prolog, body and epilog
//! pcs, against pe-unwind-info's `unwind_frame` on the same inputs. Ours also records context
//! pointers and restores xmm registers; both look the function up first.
//!
//! Lines: `xunwind` is the reference `virtual_unwind` (re-reads UNWIND_INFO each call),
//! `xunwind_cached` is `PeUnwinder::virtual_unwind` (rules decoded once per function, warm
//! cache), `pe_unwind_info` the peer. Groups: `all` probes, and `prolog` (entry and prolog-code
//! pcs), `body` (middle and last byte), `epilog` (each `ret` and the pops/adjustment before it).
//!
//! The DLL comes from `XUNWIND_NTDLL` or the corpus (`corpus/fetch wine`); without it the
//! benchmark says so and does nothing.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pe_unwind_info::x86_64::{FunctionTableEntries, Register, UnwindState, XmmRegister};
use xunwind::core::{ContextPointers, Reg, Regs, SliceMemory};
use xunwind::pe::{
    probe_points, virtual_unwind, PeImage, PeUnwinder, UnwindOptions, UNW_FLAG_EHANDLER,
};

const STACK: u64 = 0x7000_0000;
const STACK_LEN: usize = 0x2_0000;

fn dll_path() -> std::path::PathBuf {
    std::env::var_os("XUNWIND_NTDLL")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
                "../corpus/unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/ntdll.dll",
            )
        })
}

struct PeuiState<'s> {
    regs: [u64; 16],
    stack: &'s [u8],
}

impl UnwindState for PeuiState<'_> {
    fn read_register(&mut self, register: Register) -> u64 {
        self.regs[register as usize]
    }
    fn read_stack(&mut self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(STACK)?).ok()?;
        let b = self.stack.get(off..off + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
    fn write_register(&mut self, register: Register, value: u64) {
        self.regs[register as usize] = value;
    }
    fn write_xmm_register(&mut self, _register: XmmRegister, _value: u128) {}
}

fn bench(c: &mut Criterion) {
    let path = dll_path();
    let Ok(data) = std::fs::read(&path) else {
        eprintln!(
            "unwind bench skipped: {} not found (run corpus/fetch wine)",
            path.display()
        );
        return;
    };
    let img = PeImage::parse(&data).expect("PE32+ image");
    let base = img.image_base();
    // Stack slots hold addresses inside the image so every unwind reads plausible values.
    let stack: Vec<u8> = (0..STACK_LEN as u64 / 8)
        .flat_map(|k| (base + 0x1000 + (k % 512) * 8).to_le_bytes())
        .collect();
    let mut all: Vec<(u32, &'static str)> = Vec::new();
    for f in img.functions().iter() {
        all.extend(probe_points(&img, f).iter().map(|p| (p.pc, p.kind)));
    }
    let mut gpr = [STACK + 0x1_0000; 16];
    gpr[Reg::Rbp as usize] = STACK + 0x1_0800;
    let (pd_rva, pd_size) = img.pdata_directory();
    let pdata = &img.bytes_at(pd_rva)[..pd_size as usize];
    let table = FunctionTableEntries::parse(pdata);
    let unwinder = PeUnwinder::new(img.clone(), base);
    let group = |kinds: &[&str]| -> Vec<u32> {
        all.iter()
            .filter(|(_, k)| kinds.is_empty() || kinds.contains(k))
            .map(|&(pc, _)| pc)
            .collect()
    };
    for (name, probes) in [
        ("all", group(&[])),
        ("prolog", group(&["entry", "prolog"])),
        ("body", group(&["mid", "last"])),
        ("epilog", group(&["ret", "epi"])),
    ] {
        eprintln!("unwind_step/ntdll/{name}: {} probes", probes.len());
        bench_group(c, name, &probes, &img, base, &stack, gpr, &table, &unwinder);
    }
}

#[allow(clippy::too_many_arguments)]
fn bench_group(
    c: &mut Criterion,
    name: &str,
    probes: &[u32],
    img: &PeImage<'_>,
    base: u64,
    stack: &[u8],
    gpr: [u64; 16],
    table: &FunctionTableEntries<'_>,
    unwinder: &PeUnwinder<'_>,
) {
    let mut g = c.benchmark_group(format!("unwind_step/ntdll/{name}"));
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("xunwind", |b| {
        let mem = SliceMemory::new(STACK, stack);
        let opts = UnwindOptions::default();
        b.iter(|| {
            let mut acc = 0u64;
            for &pc in probes {
                let mut regs = Regs::with_gprs(base + pc as u64, gpr);
                let mut ptrs = ContextPointers::new();
                if let Some(f) = img.lookup_function_entry(pc) {
                    let _ = virtual_unwind(
                        img,
                        base,
                        f,
                        base + pc as u64,
                        &mut regs,
                        Some(&mut ptrs),
                        UNW_FLAG_EHANDLER,
                        &mem,
                        &opts,
                    );
                }
                acc = acc.wrapping_add(regs.rip().unwrap_or(0));
            }
            black_box(acc)
        })
    });
    g.bench_function("xunwind_cached", |b| {
        let mem = SliceMemory::new(STACK, stack);
        b.iter(|| {
            let mut acc = 0u64;
            for &pc in probes {
                let mut regs = Regs::with_gprs(base + pc as u64, gpr);
                let mut ptrs = ContextPointers::new();
                let at = base + pc as u64;
                let _ = unwinder.virtual_unwind(
                    at,
                    at,
                    &mut regs,
                    Some(&mut ptrs),
                    UNW_FLAG_EHANDLER,
                    &mem,
                );
                acc = acc.wrapping_add(regs.rip().unwrap_or(0));
            }
            black_box(acc)
        })
    });
    g.bench_function("pe_unwind_info", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for &pc in probes {
                let mut st = PeuiState { regs: gpr, stack };
                // Same RVA-to-bytes mapping for both sides: our image's section map.
                let rip = table.unwind_frame(&mut st, |rva| Some(img.bytes_at(rva)), pc);
                acc = acc.wrapping_add(rip.unwrap_or(0));
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

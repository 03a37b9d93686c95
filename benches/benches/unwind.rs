//! One `RtlVirtualUnwind` step (lookup included) on real functions, at prolog, body and epilog
//! pcs, against pe-unwind-info's `unwind_frame` on the same inputs. Ours also records context
//! pointers and restores xmm registers; both look the function up first.
//!
//! The DLL comes from `XUNWIND_NTDLL` or the corpus (`corpus/fetch wine`); without it the
//! benchmark says so and does nothing.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pe_unwind_info::x86_64::{FunctionTableEntries, Register, UnwindState, XmmRegister};
use xunwind::core::{ContextPointers, Reg, Regs, SliceMemory};
use xunwind::pe::{probe_points, virtual_unwind, PeImage, UnwindOptions, UNW_FLAG_EHANDLER};

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
    let mut probes: Vec<u32> = Vec::new();
    for f in img.functions().iter() {
        probes.extend(probe_points(&img, f).iter().map(|p| p.pc));
    }
    let mut gpr = [STACK + 0x1_0000; 16];
    gpr[Reg::Rbp as usize] = STACK + 0x1_0800;
    let (pd_rva, pd_size) = img.pdata_directory();
    let pdata = &img.bytes_at(pd_rva)[..pd_size as usize];
    let table = FunctionTableEntries::parse(pdata);

    let mut g = c.benchmark_group("unwind_step/ntdll");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("xunwind", |b| {
        let mem = SliceMemory::new(STACK, &stack);
        let opts = UnwindOptions::default();
        b.iter(|| {
            let mut acc = 0u64;
            for &pc in &probes {
                let mut regs = Regs::with_gprs(base + pc as u64, gpr);
                let mut ptrs = ContextPointers::new();
                if let Some(f) = img.lookup_function_entry(pc) {
                    let _ = virtual_unwind(
                        &img,
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
    g.bench_function("pe_unwind_info", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for &pc in &probes {
                let mut st = PeuiState {
                    regs: gpr,
                    stack: &stack,
                };
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

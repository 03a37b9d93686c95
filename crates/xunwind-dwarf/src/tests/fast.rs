//! The fast path (own parser and CFA interpreter) against gimli's path, on real libraries and
//! on hand-built CIE/FDE bytes for every opcode it interprets.

use super::*;
use xunwind_core::MemoryError;

/// Every address reads as a deterministic pattern except a hole, so that personality pointers
/// resolve (their GOT slots are readable) and some stack reads fail.
struct PatternMemory {
    hole: core::ops::Range<u64>,
}

impl MemoryReader for PatternMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        if addr < self.hole.end && addr.wrapping_add(len) > self.hole.start {
            return Err(MemoryError { addr, len });
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.wrapping_add(i as u64);
            *b = (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8;
        }
        Ok(())
    }
}

/// Row boundaries of an FDE as gimli enumerates them: each row's start, and one before it.
fn probe_addresses(u: &DwarfUnwinder<'_>, off: usize, start: u64, end: u64) -> Vec<u64> {
    let eh = u.eh_frame().unwrap();
    let fde = eh
        .fde_from_offset(u.bases(), off.into(), EhFrame::cie_from_offset)
        .unwrap();
    let mut ctx = Box::new(Context::new_in());
    let mut out = vec![start, end - 1];
    if let Ok(mut rows) = fde.rows(eh, u.bases(), &mut ctx) {
        // Rows are bounded by the FDE's instruction bytes.
        while let Ok(Some(row)) = rows.next_row() {
            let s = row.start_address();
            out.push(s);
            out.push(s.wrapping_sub(1));
            if out.len() > 512 {
                break;
            }
        }
    }
    out.retain(|&a| start <= a && a < end);
    out.sort_unstable();
    out.dedup();
    out
}

/// Everything an in-place unwind gives: the result, and the registers/pointers on success.
fn unwound(
    u: &DwarfUnwinder<'_>,
    regs: &Regs,
    mem: &dyn MemoryReader,
    with_pointers: bool,
) -> (Result<StepInfo, UnwindError>, Option<String>) {
    let mut r = regs.clone();
    let mut p = ContextPointers::new();
    // Pointers carried from an earlier frame must survive where this step restores nothing.
    p.set_gpr(Reg::Rbx, 0x1111);
    p.set_gpr(Reg::R9, 0x2222);
    p.set_xmm(3, 0x3333);
    let res = u.unwind(&mut r, PcKind::Exact, mem, with_pointers.then_some(&mut p));
    // Registers compare by what is known: an unknown register's stale bits are not state.
    let state = res.is_ok().then(|| format!("{r:?} {p:?}"));
    (res, state)
}

/// For every FDE of libc, libstdc++ and libLLVM (sampled), at its start, its end - 1 and
/// every row boundary +0/-1: the fast row equals gimli's row whenever the fast path takes it,
/// and the in-place unwind (pointers or not, rule cache cold and hot) is bit-identical to
/// gimli's path in registers, context pointers, step info and errors. More than 99% of rows
/// must take the fast path.
#[test]
fn fast_path_matches_gimli_on_system_libraries() {
    let llvm = ["libLLVM-15.so.1", "libLLVM-14.so.1"]
        .into_iter()
        .find(|n| std::path::Path::new(&format!("/lib/x86_64-linux-gnu/{n}")).exists());
    if llvm.is_none() {
        eprintln!("skipping libLLVM: not installed");
    }
    let mut libs = vec!["libc.so.6", "libstdc++.so.6"];
    libs.extend(llvm);
    for name in libs {
        let Some(bytes) = system_lib(name) else {
            continue;
        };
        let bias = 0x7f12_3400_0000;
        let mut fastu = DwarfUnwinder::new(&bytes, bias).unwrap();
        fastu.set_rule_cache(false);
        let mut refu = DwarfUnwinder::new(&bytes, bias).unwrap();
        refu.set_rule_cache(false);
        refu.set_fast_path(false);
        let cached = DwarfUnwinder::new(&bytes, bias).unwrap();
        let fdes = linear_fdes(&fastu);
        // Keep the run to a few seconds: libLLVM has ~100k FDEs.
        let stride = fdes.len().div_ceil(5000).max(1);
        let stack_base = 0x7ffd_0000_0000u64;
        let mem = PatternMemory { hole: 0..0x1000 };
        let short = PatternMemory {
            hole: stack_base + 0x1010..stack_base + 0x1040,
        };
        let mut g = [0u64; 16];
        for (i, v) in g.iter_mut().enumerate() {
            *v = 0x1000_0000 * (i as u64 + 1) + 0x18;
        }
        g[Reg::Rsp as usize] = stack_base + 0x1000;
        g[Reg::Rbp as usize] = stack_base + 0x1100;
        let (mut rows, mut fast, mut steps, mut handlers) = (0usize, 0usize, 0usize, 0usize);
        for &(start, end, off) in fdes.iter().step_by(stride) {
            for a in probe_addresses(&fastu, off, start, end) {
                let want = refu.reference_row(a);
                let got = fastu.fast_row(a);
                rows += 1;
                match got {
                    RowLookup::Row(r) => {
                        fast += 1;
                        assert_eq!(want, Ok(RowLookup::Row(r)), "{name} {a:#x}");
                    }
                    RowLookup::NotCovered => panic!("{name} {a:#x}: inside an FDE"),
                    RowLookup::Declined => {}
                }
                let mut regs = Regs::with_gprs(a + bias, g);
                regs.set_xmm(1, 0xabcd);
                for m in [&mem, &short] {
                    for with_pointers in [true, false] {
                        let reference = unwound(&refu, &regs, m, with_pointers);
                        handlers += matches!(
                            reference.0,
                            Ok(StepInfo {
                                handler: Some(_),
                                ..
                            })
                        ) as usize;
                        assert_eq!(
                            unwound(&fastu, &regs, m, with_pointers),
                            reference,
                            "{name} {a:#x}"
                        );
                        // Cold, then a hit in the rule cache.
                        assert_eq!(
                            unwound(&cached, &regs, m, with_pointers),
                            reference,
                            "{name} {a:#x}"
                        );
                        assert_eq!(
                            unwound(&cached, &regs, m, with_pointers),
                            reference,
                            "{name} {a:#x}"
                        );
                        steps += 1;
                    }
                }
                // step (the provided method) agrees with the reference too.
                let s = fastu.step(&regs, PcKind::Exact, &mem);
                let r = refu.step(&regs, PcKind::Exact, &mem);
                assert_eq!(format!("{s:?}"), format!("{r:?}"), "{name} {a:#x}");
            }
        }
        let pct = fast as f64 * 100.0 / rows as f64;
        eprintln!(
            "{name}: {} of {} FDEs, {rows} rows probed, {fast} on the fast path ({pct:.2}%), \
             {steps} unwinds compared, {handlers} with a handler",
            fdes.len().div_ceil(stride),
            fdes.len()
        );
        assert!(
            pct > 99.0,
            "{name}: only {pct:.2}% of rows on the fast path"
        );
        // libstdc++ is C++ with exceptions: its personality pointers are indirect (GOT).
        assert!(
            handlers > 0 || name != "libstdc++.so.6",
            "{name}: no handler resolved"
        );
    }
}

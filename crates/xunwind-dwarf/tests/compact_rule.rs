//! `FrameWalker::rule` (what `WalkCache` applies) against `FrameWalker::unwind` on system
//! libraries: at sampled pcs of every FDE, both pc kinds, with the library's bytes mapped (so
//! indirect personality pointers resolve) and a stack of distinct words, the rule applied gives
//! the same step, registers and context pointers, or declines. Also with rbp unknown.
//! Without the libraries the test says so and passes, unless `XUNWIND_REQUIRE_CORPUS` is set.

use gimli::UnwindSection;
use xunwind_core::{unwind_by_rule, ContextPointers, FrameWalker, PcKind, Reg, RegionMemory, Regs};
use xunwind_dwarf::DwarfUnwinder;

const STACK: u64 = 0x7ffd_0000_0000;

#[test]
fn compact_rules_equal_unwind_on_system_libraries() {
    let libs = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libstdc++.so.6",
    ];
    let mut checked = 0;
    for path in libs {
        let Ok(bytes) = std::fs::read(path) else {
            assert!(
                std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
                "{path} missing"
            );
            eprintln!("skipped {path}: not found");
            continue;
        };
        checked += 1;
        let u = DwarfUnwinder::new(&bytes, 0).unwrap();
        let mut mem = RegionMemory::new();
        mem.add(0, bytes.clone());
        mem.add(
            STACK,
            (0..0x2000u64)
                .flat_map(|k| (0x5afe_0000_0000_0000 | (k * 8)).to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let eh = u.eh_frame().expect(".eh_frame");
        let mut entries = eh.entries(u.bases());
        let (mut probes, mut rules, mut handlers) = (0usize, 0usize, 0usize);
        while let Ok(Some(entry)) = entries.next() {
            let gimli::CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
                continue;
            };
            let (start, len) = (fde.initial_address(), fde.len());
            if len == 0 {
                continue;
            }
            let step = (len / 16).max(1);
            for addr in (start..start + len)
                .step_by(step as usize)
                .chain([start + len - 1])
            {
                for (pc, kind) in [(addr, PcKind::Exact), (addr + 1, PcKind::ReturnAddress)] {
                    let rule = u.rule(pc, kind, &mem);
                    probes += 1;
                    rules += rule.is_some() as usize;
                    handlers += rule.is_some_and(|r| format!("{r:?}").contains("address")) as usize;
                    for rbp_known in [true, false] {
                        let mut start_regs = Regs::with_gprs(pc, [0xa000_0000_0000_0000; 16]);
                        start_regs.set(Reg::Rsp, STACK + 0x8000);
                        start_regs.set(Reg::Rbp, STACK + 0x9000);
                        if !rbp_known {
                            start_regs.invalidate(Reg::Rbp);
                        }
                        let (mut r1, mut p1) = (start_regs.clone(), ContextPointers::new());
                        let want = u.unwind(&mut r1, kind, &mem, Some(&mut p1));
                        let (mut r2, mut p2) = (start_regs.clone(), ContextPointers::new());
                        let got = unwind_by_rule(&u, &mut r2, kind, &mem, Some(&mut p2));
                        assert_eq!(got, want, "{path} {pc:#x} {kind:?} rule {rule:?}");
                        if want.is_ok() {
                            assert_eq!((r2, p2), (r1, p1), "{path} {pc:#x} {kind:?}");
                        }
                    }
                }
            }
        }
        eprintln!(
            "{path}: compact rules at {rules} of {probes} probes ({handlers} with a handler)"
        );
        assert!(rules * 100 > probes * 95, "{path}: {rules} of {probes}");
    }
    if checked == 0 {
        eprintln!("skipped: no system libraries");
    }
}

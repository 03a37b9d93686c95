//! Arbitrary unwind-info bytes, an arbitrary register context and arbitrary stack memory:
//! `RtlVirtualUnwind` and the `FrameWalker` step must return, never panic or hang; and the
//! compiled fast path (`CompiledFunction`, `PeUnwinder::virtual_unwind`) must give exactly the
//! reference's result, registers and context pointers; so must a compact rule (`FrameWalker::rule`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_core::{
    unwind_by_rule, ContextPointers, FrameWalker, PcKind, Reg, Regs, SliceMemory,
};
use xunwind_pe::{
    virtual_unwind, CompiledFunction, EpilogFrameRule, PeImage, PeUnwinder, RuntimeFunction,
    UnwindOptions,
};

const BASE: u64 = 0x1_8000_0000;
const STACK: u64 = 0x7fff_0000;

fn u32_at(d: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    // Header: function (begin, end, unwind), pc offset, pdata rva/size, stack split.
    let (head, rest) = data.split_at(64);
    let f = RuntimeFunction {
        begin: u32_at(head, 0) % 0x2000,
        end: u32_at(head, 4) % 0x2000,
        unwind_data: u32_at(head, 8) % 0x2000,
    };
    let pc = BASE + (u32_at(head, 12) % 0x2000) as u64;
    let split = (u32_at(head, 16) as usize) % (rest.len() + 1);
    let (image, stack) = rest.split_at(split);
    let pdata_rva = u32_at(head, 20) % 0x2000;
    let pdata_size = u32_at(head, 24) % 0x400;
    let img = PeImage::from_parts(image, BASE, pdata_rva, pdata_size);
    let mut gpr = [0u64; 16];
    for (n, g) in gpr.iter_mut().enumerate() {
        // Registers point into the stack, near it, or anywhere, as the input says.
        let sel = head[28 + n];
        *g = match sel & 3 {
            0 => STACK + (sel as u64 >> 2) * 8,
            1 => STACK.wrapping_sub(sel as u64),
            _ => u64::from(u32_at(head, 44 + (n % 5) * 4)) << (sel & 32),
        };
    }
    let mem = SliceMemory::new(STACK, stack);
    let compiled = CompiledFunction::new(&img, f);
    let pc_rva = (pc - BASE) as u32;
    let looked_up = img.lookup_function_entry(pc_rva);
    for rule in [EpilogFrameRule::FrameRegister, EpilogFrameRule::ReturnSlot] {
        let opts = UnwindOptions {
            epilog_frame: rule,
            ..UnwindOptions::default()
        };
        let cached = PeUnwinder::new(img.clone(), BASE).with_options(opts);
        // The reference on `entry`: result, registers and context pointers.
        let reference = |entry: RuntimeFunction, ty: u8| {
            let mut regs = Regs::with_gprs(pc, gpr);
            let mut ptrs = ContextPointers::new();
            let r = virtual_unwind(
                &img,
                BASE,
                entry,
                pc,
                &mut regs,
                Some(&mut ptrs),
                ty,
                &mem,
                &opts,
            );
            (r, regs, ptrs)
        };
        for ty in 0..4u8 {
            let (want, regs, ptrs) = reference(f, ty);
            if let Some(c) = &compiled {
                let mut regs2 = Regs::with_gprs(pc, gpr);
                let mut ptrs2 = ContextPointers::new();
                let got = c.unwind(
                    &img,
                    BASE,
                    pc,
                    &mut regs2,
                    Some(&mut ptrs2),
                    ty,
                    &mem,
                    &opts,
                );
                assert_eq!(got, want);
                assert_eq!(regs2, regs);
                assert_eq!(ptrs2, ptrs);
            }
            // The cached unwinder on the entry the pc's lookup finds, twice (cold, then warm).
            if let Some(g) = looked_up {
                let (want, regs, ptrs) = reference(g, ty);
                for _ in 0..2 {
                    let mut regs2 = Regs::with_gprs(pc, gpr);
                    let mut ptrs2 = ContextPointers::new();
                    let got = cached.virtual_unwind(pc, pc, &mut regs2, Some(&mut ptrs2), ty, &mem);
                    assert_eq!(got, want.map(Some));
                    assert_eq!(regs2, regs);
                    assert_eq!(ptrs2, ptrs);
                }
            }
        }
    }
    // A short walk through the generic interface, bounded by construction; at every frame the
    // compact rule a pc-keyed cache would apply gives the unwind's step, registers, pointers.
    let walker = PeUnwinder::new(img, BASE);
    let mut regs = Regs::with_gprs(pc, gpr);
    let mut kind = PcKind::Exact;
    for _ in 0..8 {
        let (mut r2, mut p2) = (regs.clone(), ContextPointers::new());
        let by_rule = unwind_by_rule(&walker, &mut r2, kind, &mem, Some(&mut p2));
        match walker.step(&regs, kind, &mem) {
            Ok(step) => {
                assert_eq!(by_rule, Ok(step.info()));
                assert_eq!((&r2, &p2), (&step.regs, &step.pointers));
                regs = step.regs;
                kind = step.caller_pc;
            }
            Err(e) => {
                assert_eq!(by_rule, Err(e));
                break;
            }
        }
    }
    let _ = regs.get(Reg::Rsp);
});

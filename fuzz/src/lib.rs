//! What the PE fuzz targets do with an image once they have one: touch every parsed view the
//! way the CLI and the unwinder do, so any panic, unbounded loop or unbounded allocation in
//! `xunwind-pe` on hostile input shows up as a crash or a timeout.
#![deny(missing_docs)]

use xunwind_core::{FrameWalker, PcKind, Reg, Regs, SliceMemory};
use xunwind_pe::{PeImage, PeUnwinder, UnwindOp, MAX_CHAIN_DEPTH};

/// Functions that take the costlier paths per input (the unwinder, lookups by begin, which may
/// scan the table, and Windows' search): every function is parsed and looked up, but only this
/// many do more, which keeps large tables fast to fuzz.
pub const MAX_UNWOUND: usize = 64;

/// Walks everything `img` offers: the function table, every UNWIND_INFO with its codes, chain
/// and handler, lookups around every function, and one unwinder step per function at a few
/// pcs, with `stack` as the memory the unwinder reads.
pub fn exercise(img: &PeImage<'_>, stack: &[u8]) {
    let _ = img.pdata_problem();
    let _ = (img.image_base(), img.size_of_image(), img.layout());
    let functions = img.functions();
    let _ = functions.order_error();
    let n = functions.len();
    assert_eq!(functions.iter().len(), n);
    for &i in functions.empty_entries() {
        let f = functions
            .get(i as usize)
            .expect("empty entry index in range");
        assert_eq!(f.begin, f.end);
    }
    if let Some(t) = functions.range_table() {
        assert_eq!(t.len(), n);
    }

    for (i, f) in functions.iter().enumerate() {
        let probes = [
            f.begin,
            f.end.wrapping_sub(1),
            f.begin.wrapping_sub(1),
            f.end,
            f.begin.wrapping_add(f.end.wrapping_sub(f.begin) / 2),
        ];
        // Every entry's first and last byte; the rest (and Windows' search, which the fast
        // path replaces and pe_lookup checks in depth) for the first entries only, so tables
        // of thousands of entries stay fast to fuzz.
        let costly = i < MAX_UNWOUND;
        for &rva in &probes[..if costly { 5 } else { 2 }] {
            if let Some(i) = functions.find(rva) {
                assert!(i < n, "find returned {i} of {n}");
                // Both the fast index and Windows' search only return an entry holding rva.
                assert!(functions.get(i).unwrap().contains(rva));
            }
            let _ = img.lookup_function_entry(rva);
            if costly {
                let _ = functions.windows_search(rva);
            }
        }
        if costly {
            // Linear in the table size when the begin is not where the search looks.
            let _ = img.function_by_begin(f.begin);
        }
        let _ = img.is_executable(f.begin);

        // The UNWIND_INFO, and the chain behind it as the unwinder follows it.
        let mut entry = f;
        for _ in 0..=MAX_CHAIN_DEPTH {
            if entry.is_indirect() {
                match img.runtime_function_at(entry.target_rva()) {
                    Ok(e) => entry = e,
                    Err(_) => break,
                }
            }
            let Ok(info) = img.unwind_info(entry.unwind_data) else {
                break;
            };
            let _ = (info.version(), info.prolog_size(), info.frame_register());
            let _ = (info.frame_offset(), info.tail_rva(), info.code_bytes());
            let mut slots = 0usize;
            for code in info.codes() {
                let Ok(code) = code else { break };
                slots += code.slots as usize;
                // Decoded codes stay within CountOfCodes, give or take the assumed size (up to
                // 3 slots) of an undefined op 6 or 7, whose operands are never read.
                assert!(slots <= info.count_of_codes() as usize + 2);
                if let UnwindOp::PushNonvol(r) = code.op {
                    let _ = r.name();
                }
            }
            let _ = info.validate();
            let _ = info.handler();
            let _ = info.handler_data();
            match info.chained() {
                Ok(Some(parent)) => entry = parent,
                _ => break,
            }
        }
    }

    // One unwinder step at the start, in the prolog, at the end and past a call-like pc of the
    // first functions, with every register pointing into the fuzzer's stack bytes.
    let base = 0x1_4000_0000u64;
    let stack_base = 0x7ff0_0000u64;
    let mem = SliceMemory::new(stack_base, stack);
    let unwinder = PeUnwinder::new(img.clone(), base);
    for f in functions.iter().take(MAX_UNWOUND) {
        let len = f.end.wrapping_sub(f.begin);
        for (off, kind) in [
            (0, PcKind::Exact),
            (2, PcKind::Exact),
            (len / 2, PcKind::ReturnAddress),
            (len.wrapping_sub(1), PcKind::Exact),
        ] {
            let pc = base + f.begin.wrapping_add(off) as u64;
            let mut gpr = [stack_base + 0x40; 16];
            gpr[Reg::Rsp as usize] = stack_base + (off as u64 % 64) * 8;
            let regs = Regs::with_gprs(pc, gpr);
            let _ = unwinder.step(&regs, kind, &mem);
        }
    }
}

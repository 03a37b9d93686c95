//! Arbitrary `.eh_frame` bytes through `DwarfUnwinder`: our own FDE/CIE parser and CFA
//! interpreter (the fast path) must give gimli's row whenever it does not decline, the FDE's
//! compiled rows must give the interpreter's, and an in-place unwind (context pointers or not,
//! rule cache cold and hot, FDE interpreted then compiled) must give exactly what gimli's path
//! gives. Nothing may panic or hang.
//!
//! Input: byte 0 picks raw mode (the rest is the whole `.eh_frame`, or `.debug_frame` when bit 1
//! is set, indexed by a scan) or built
//! mode (a CIE and one FDE over [0x1000, 0x1100) around fuzzer-chosen augmentation, alignment
//! factors and instructions, with an `.eh_frame_hdr` naming the FDE, so that the index holds it
//! even where gimli cannot parse it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_core::{
    ContextPointers, FrameWalker, MemoryError, MemoryReader, PcKind, Reg, Regs, StepInfo,
    UnwindError,
};
use xunwind_dwarf::{CfiSections, DwarfUnwinder, RowLookup, SectionData};

const EH_ADDR: u64 = 0x10_0000;
const HDR_ADDR: u64 = 0x0f_0000;
const BIAS: u64 = 0x7f00_0000_0000;
const FDE_START: u64 = 0x1000;

/// Every address reads as a pattern except a hole that some stack slots fall into.
struct Pattern;

impl MemoryReader for Pattern {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        if (0x7000_0ff0..0x7000_1010).contains(&addr) {
            return Err(MemoryError { addr, len });
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (addr
                .wrapping_add(i as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                >> 56) as u8;
        }
        Ok(())
    }
}

fn push_entry(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// (eh_frame, eh_frame_hdr) from built mode's fields.
fn build(data: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (&flags, rest) = data.split_first()?;
    let (&cie_len, rest) = rest.split_first()?;
    let (&caf, rest) = rest.split_first()?;
    let (&daf, rest) = rest.split_first()?;
    let cie_len = (cie_len as usize % 24).min(rest.len());
    let (cie_insns, fde_insns) = rest.split_at(cie_len);
    let aug: &[u8] = match flags >> 5 {
        0 => b"zR",
        1 => b"zRS",
        2 => b"zPLR",
        3 => b"",
        4 => b"zLR",
        5 => b"zR",
        _ => b"zR",
    };
    let mut eh = Vec::new();
    let mut body = vec![0, 0, 0, 0, if flags & 1 != 0 { 3 } else { 1 }];
    body.extend_from_slice(aug);
    body.push(0);
    body.extend_from_slice(&[caf & 0x7f, daf & 0x7f, 16]);
    if !aug.is_empty() {
        let mut a = Vec::new();
        for &c in &aug[1..] {
            match c {
                b'P' => {
                    a.push(0x9b);
                    a.extend_from_slice(&0x1000i32.to_le_bytes());
                }
                b'L' => a.push(if flags & 2 != 0 { 0x1b } else { 0x00 }),
                b'R' => a.push(if flags & 4 != 0 { 0x1b } else { 0x03 }),
                _ => {}
            }
        }
        body.push(a.len() as u8);
        body.extend_from_slice(&a);
    }
    body.extend_from_slice(cie_insns);
    push_entry(&mut eh, &body);
    let at = eh.len();
    let mut body = Vec::new();
    body.extend_from_slice(&((at + 4) as u32).to_le_bytes());
    let pcrel = flags & 4 != 0 && !aug.is_empty();
    if aug.is_empty() {
        body.extend_from_slice(&FDE_START.to_le_bytes());
        body.extend_from_slice(&0x100u64.to_le_bytes());
    } else if pcrel {
        let field = EH_ADDR + at as u64 + 8;
        body.extend_from_slice(&(FDE_START.wrapping_sub(field) as i32).to_le_bytes());
        body.extend_from_slice(&0x100u32.to_le_bytes());
    } else {
        body.extend_from_slice(&(FDE_START as u32).to_le_bytes());
        body.extend_from_slice(&0x100u32.to_le_bytes());
    }
    if !aug.is_empty() {
        if aug.contains(&b'L') {
            body.push(if flags & 2 != 0 { 4 } else { 8 });
            body.extend_from_slice(&[0x40; 8][..if flags & 2 != 0 { 4 } else { 8 }]);
        } else {
            body.push(0);
        }
    }
    body.extend_from_slice(fde_insns);
    push_entry(&mut eh, &body);
    eh.extend_from_slice(&[0, 0, 0, 0]);
    let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
    hdr.extend_from_slice(&((EH_ADDR - (HDR_ADDR + 4)) as i32).to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    hdr.extend_from_slice(&(FDE_START.wrapping_sub(HDR_ADDR) as i32).to_le_bytes());
    hdr.extend_from_slice(&((EH_ADDR + at as u64).wrapping_sub(HDR_ADDR) as i32).to_le_bytes());
    Some((eh, hdr))
}

/// An unwinder over `eh` as `.eh_frame` (with its header), or as `.debug_frame` when `debug`.
fn unwinder<'d>(eh: &'d [u8], hdr: Option<&'d [u8]>, debug: bool) -> Option<DwarfUnwinder<'d>> {
    let section = SectionData {
        data: eh,
        address: if debug { 0 } else { EH_ADDR },
    };
    DwarfUnwinder::from_sections(
        CfiSections {
            eh_frame: (!debug).then_some(section),
            debug_frame: debug.then_some(section),
            eh_frame_hdr: hdr.map(|data| SectionData {
                data,
                address: HDR_ADDR,
            }),
            text: 0x1000,
            got: 0x20_0000,
            ..Default::default()
        },
        BIAS,
    )
    .ok()
}

/// The known registers and the context pointers after an unwind.
#[derive(Debug, PartialEq)]
struct Known {
    rip: Option<u64>,
    gpr: [Option<u64>; 16],
    xmm: [Option<u128>; 16],
    pointers: ContextPointers,
}

fn unwound(
    u: &DwarfUnwinder<'_>,
    regs: &Regs,
    with_pointers: bool,
) -> (Result<StepInfo, UnwindError>, Option<Known>) {
    let mut r = regs.clone();
    let mut p = ContextPointers::new();
    p.set_gpr(Reg::Rbx, 0x1111);
    let res = u.unwind(
        &mut r,
        PcKind::Exact,
        &Pattern,
        with_pointers.then_some(&mut p),
    );
    // Registers compare by what is known: an unknown register's stale bits are not state.
    let state = res.is_ok().then(|| Known {
        rip: r.rip(),
        gpr: Reg::ALL.map(|g| r.get(g)),
        xmm: core::array::from_fn(|n| r.xmm(n as u8)),
        pointers: p,
    });
    (res, state)
}

fn check(eh: &[u8], hdr: Option<&[u8]>, debug: bool, probes: &[u64]) {
    let (Some(mut fast), Some(mut reference), Some(cached)) = (
        unwinder(eh, hdr, debug),
        unwinder(eh, hdr, debug),
        unwinder(eh, hdr, debug),
    ) else {
        return;
    };
    fast.set_rule_cache(false);
    reference.set_rule_cache(false);
    reference.set_fast_path(false);
    let regs = Regs::with_gprs(0, core::array::from_fn(|i| 0x7000_0000 + 0x100 * i as u64));
    for &a in probes {
        let row = fast.fast_row(a);
        // gimli's row of the `.eh_frame` FDE (reference_row reads no `.debug_frame`).
        if let (RowLookup::Row(_), false) = (row, debug) {
            assert_eq!(reference.reference_row(a), Ok(row), "{a:#x}");
        }
        // Compiled rows (the FDE compiles on its second lookup) give the interpreter's row.
        assert_eq!(fast.compiled_row(a), row, "{a:#x}");
        let mut r = regs.clone();
        r.set_rip(a.wrapping_add(BIAS));
        for with_pointers in [true, false] {
            let want = unwound(&reference, &r, with_pointers);
            assert_eq!(unwound(&fast, &r, with_pointers), want, "{a:#x}");
            assert_eq!(unwound(&cached, &r, with_pointers), want, "{a:#x}");
            assert_eq!(unwound(&cached, &r, with_pointers), want, "{a:#x}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Built mode: addresses across the FDE, its last byte and one past it.
        let Some((eh, hdr)) = build(rest) else {
            return;
        };
        let probes: Vec<u64> = (FDE_START..=FDE_START + 0x100)
            .step_by(37)
            .chain([FDE_START + 1, FDE_START + 0xff])
            .collect();
        check(&eh, Some(&hdr), false, &probes);
    } else {
        // Raw mode: addresses from the first bytes, the section after them.
        if rest.len() < 8 {
            return;
        }
        let probes: Vec<u64> = rest[..8]
            .chunks(2)
            .map(|c| u64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        // Bit 1 of the mode reads the section as `.debug_frame`.
        check(&rest[8..], None, mode & 2 != 0, &probes);
    }
});

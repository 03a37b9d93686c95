//! A rule cache keyed by address, and the in-place application of a compact row.
//!
//! Rows that are "CFA = register + offset, registers saved at CFA + offset, same value or
//! copied from another register" (nearly every row compilers emit) are kept as
//! [`CompactRow`]s, so a repeated lookup skips the FDE search, parse and row evaluation. The
//! frame's handler is kept resolved with the row: its personality pointer is usually indirect,
//! through a GOT slot the dynamic loader fills before the code runs, so the value read when the
//! row was cached stands for the unwinder's lifetime. Rows with expressions or other rules are
//! never cached and always take the full path.

use crate::fast::{CompactRow, Packed};
use xunwind_core::{
    ContextPointers, Handler, MemoryReader, PcKind, Reg, Regs, StepInfo, Trust, UnwindError,
};

/// Direct-mapped slots per unwinder (allocated on the first step).
pub(crate) const SLOTS: usize = 256;

/// The registers the caller keeps unless a rule says otherwise: the psABI's callee-saved set.
/// rip, the other GPRs and every xmm register did not survive the call.
pub(crate) const CALLEE_SAVED_MASK: u64 = Regs::bit(Reg::Rbx)
    | Regs::bit(Reg::Rbp)
    | Regs::bit(Reg::R12)
    | Regs::bit(Reg::R13)
    | Regs::bit(Reg::R14)
    | Regs::bit(Reg::R15);

/// One cache slot: the link-time address it answers for, its row and the resolved handler.
/// Two cache lines, the tag, the CFA rule and the first rules in the first one.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct CachedRow {
    pub(crate) key: u64,
    pub(crate) live: bool,
    pub(crate) row: CompactRow,
    pub(crate) handler: Option<Handler>,
}

impl CachedRow {
    pub(crate) const EMPTY: CachedRow = CachedRow {
        key: 0,
        live: false,
        row: CompactRow::EMPTY,
        handler: None,
    };
}

#[inline]
pub(crate) fn slot(svma: u64) -> usize {
    (svma.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// DWARF register `n` (0-15 GPRs, 16 the pc) of `regs`, if known.
#[inline]
fn reg(regs: &Regs, n: u8) -> Option<u64> {
    if n < 16 {
        regs.get(crate::eval::DWARF_GPR[usize::from(n)])
    } else {
        regs.rip()
    }
}

/// Applies `row` to `regs` in place: the same reads in the same order as gimli's path, all of
/// them before the first write, so an error leaves `regs` and `pointers` untouched.
#[inline]
pub(crate) fn apply(
    row: &CompactRow,
    handler: Option<Handler>,
    regs: &mut Regs,
    mem: &dyn MemoryReader,
    pointers: Option<&mut ContextPointers>,
) -> Result<StepInfo, UnwindError> {
    let base = match reg(regs, row.cfa_reg) {
        Some(v) => v,
        None if row.cfa_reg < 16 => {
            return Err(UnwindError::MissingRegister(
                crate::eval::DWARF_GPR[usize::from(row.cfa_reg)],
            ))
        }
        None => return Err(UnwindError::MissingRip),
    };
    let cfa = base.wrapping_add(row.cfa_off as u64);
    let rules: &[Packed] = row.packed();
    let mut vals = [0u64; crate::fast::MAX_RULES];
    let mut known = 0u32;
    for (i, (p, v)) in rules.iter().zip(vals.iter_mut()).enumerate() {
        let got = match p.kind {
            0 => Some(mem.read_u64(cfa.wrapping_add(p.val as i64 as u64))?),
            1 => reg(regs, p.reg),
            _ => reg(regs, p.val as u8),
        };
        if let Some(x) = got {
            *v = x;
            known |= 1 << i;
        }
    }
    regs.retain(CALLEE_SAVED_MASK);
    regs.set(Reg::Rsp, cfa);
    let mut pointers = pointers;
    for (i, (p, &v)) in rules.iter().zip(vals.iter()).enumerate() {
        if p.reg >= 16 {
            // The return address column: unknown leaves the caller's rip unknown.
            if known & (1 << i) != 0 {
                regs.set_rip(v);
            }
            continue;
        }
        let r = crate::eval::DWARF_GPR[usize::from(p.reg)];
        if known & (1 << i) == 0 {
            regs.invalidate(r);
            continue;
        }
        regs.set(r, v);
        if p.kind == 0 {
            if let Some(ptrs) = pointers.as_deref_mut() {
                ptrs.set_gpr(r, cfa.wrapping_add(p.val as i64 as u64));
            }
        }
    }
    Ok(StepInfo {
        trust: Trust::Cfi,
        frame: cfa,
        handler,
        caller_pc: if row.signal {
            PcKind::Exact
        } else {
            PcKind::ReturnAddress
        },
    })
}

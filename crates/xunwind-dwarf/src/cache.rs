//! A rule cache keyed by address: rows that are "CFA = register + offset, registers saved at
//! CFA + offset" (nearly every row compilers emit) are kept in a compact form, so a repeated
//! lookup skips the FDE search, parse and row evaluation. Rows with expressions or other rules
//! are never cached and always take the full path.

use crate::DwarfUnwinder;
use xunwind_core::{
    ContextPointers, Handler, MemoryReader, PcKind, Reg, Regs, Step, Trust, UnwindError,
};

/// Direct-mapped slots per unwinder (allocated on the first step).
pub(crate) const SLOTS: usize = 256;
/// Most saved registers a cached row holds (16 GPRs but rsp, and the return address).
const MAX_SAVED: usize = 16;

/// One cached row: the rules in the order the full path applies them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachedRow {
    pub(crate) key: u64,
    pub(crate) live: bool,
    pub(crate) signal: bool,
    pub(crate) cfa_reg: u16,
    pub(crate) count: u8,
    pub(crate) cfa_off: i64,
    /// (DWARF register, CFA offset); register 16 is the return address.
    pub(crate) saved: [(u8, i32); MAX_SAVED],
    pub(crate) personality: Option<gimli::Pointer>,
    pub(crate) lsda: Option<gimli::Pointer>,
}

impl CachedRow {
    pub(crate) const EMPTY: CachedRow = CachedRow {
        key: 0,
        live: false,
        signal: false,
        cfa_reg: 0,
        count: 0,
        cfa_off: 0,
        saved: [(0, 0); MAX_SAVED],
        personality: None,
        lsda: None,
    };

    /// Appends a saved register; false when the row does not fit.
    pub(crate) fn push(&mut self, reg: u16, off: i64) -> bool {
        let (Ok(reg), Ok(off)) = (u8::try_from(reg), i32::try_from(off)) else {
            return false;
        };
        match self.saved.get_mut(self.count as usize) {
            Some(slot) => {
                *slot = (reg, off);
                self.count += 1;
                true
            }
            None => false,
        }
    }
}

#[inline]
pub(crate) fn slot(svma: u64) -> usize {
    (svma.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// The step a cached row gives; the same reads in the same order as the full path.
pub(crate) fn apply(
    u: &DwarfUnwinder<'_>,
    row: &CachedRow,
    regs: &Regs,
    mem: &dyn MemoryReader,
) -> Result<Step, UnwindError> {
    let cfa = crate::eval::dwarf_reg(regs, gimli::Register(row.cfa_reg))?
        .wrapping_add(row.cfa_off as u64);
    let mut out = Regs::new();
    for r in crate::eval::CALLEE_SAVED {
        if let Some(v) = regs.get(r) {
            out.set(r, v);
        }
    }
    out.set(Reg::Rsp, cfa);
    let mut pointers = ContextPointers::new();
    for &(reg, off) in &row.saved[..row.count as usize] {
        let addr = cfa.wrapping_add(off as i64 as u64);
        let v = mem.read_u64(addr)?;
        if reg == 16 {
            out.set_rip(v);
        } else {
            let r = crate::eval::DWARF_GPR[reg as usize & 15];
            out.set(r, v);
            pointers.set_gpr(r, addr);
        }
    }
    let handler = match row.personality {
        Some(p) => crate::eval::resolve(u, p, mem).map(|address| Handler {
            address,
            data: row
                .lsda
                .and_then(|l| crate::eval::resolve(u, l, mem))
                .unwrap_or(0),
            flags: 0,
        }),
        None => None,
    };
    Ok(Step {
        regs: out,
        trust: Trust::Cfi,
        frame: cfa,
        pointers,
        handler,
        caller_pc: if row.signal {
            PcKind::Exact
        } else {
            PcKind::ReturnAddress
        },
    })
}

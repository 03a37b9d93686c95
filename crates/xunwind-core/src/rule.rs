//! A frame's unwind rule at one pc, reduced to the form nearly every frame has: the caller's
//! stack pointer (the CFA) is a register plus a constant, and the return address and each saved
//! register lie at constant offsets from it.
//!
//! PE bodies and epilogs, DWARF rows without expressions and ORC entries all reduce to it, so
//! one cache keyed by pc ([`FrameWalker::rule`]) can skip every table lookup on a repeated pc,
//! whatever the unwind information was.

use crate::{
    ContextPointers, FrameWalker, Handler, MemoryReader, PcKind, Reg, Regs, StepInfo, Trust,
};

/// Most saved registers a rule restores (the eight Windows nonvolatile GPRs; SysV has six).
pub const RULE_SAVES: usize = 8;

/// "CFA = `base` + offset; rip = \[CFA + ra\]; each saved register = \[CFA + offset\]".
///
/// Built by a [`FrameWalker`] for one pc; [`CompactRule::apply`] gives the same registers and
/// [`StepInfo`] as that walker's [`FrameWalker::unwind`] would at the pc (when every read
/// succeeds; on a failed read it changes nothing and the caller asks the walker, for its error).
// Laid out by hand, what a cache hit reads first: with a 16-byte cache key in front, the fields
// up to `saved_regs` share a 64-byte line, and the whole rule fits in 112 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CompactRule {
    base: Reg,
    count: u8,
    trust: Trust,
    caller_pc: PcKind,
    ra_off: i32,
    base_off: i64,
    required: u64,
    keep: u64,
    saved_regs: [Reg; RULE_SAVES],
    saved_offs: [i32; RULE_SAVES],
    frame_off: i64,
    handler: Option<Handler>,
}

impl CompactRule {
    /// CFA = `base` + `base_off` becomes the caller's rsp; the caller's rip is at CFA + `ra_off`.
    pub fn new(base: Reg, base_off: i64, ra_off: i32, trust: Trust) -> Self {
        CompactRule {
            base,
            count: 0,
            trust,
            caller_pc: PcKind::ReturnAddress,
            ra_off,
            base_off,
            required: Regs::bit(base),
            keep: !0,
            saved_regs: [Reg::Rax; RULE_SAVES],
            saved_offs: [0; RULE_SAVES],
            frame_off: 0,
            handler: None,
        }
    }

    /// Adds a register restored from CFA + `off`; `None` when the rule is full, the offset does
    /// not fit, or the register is rsp (which the CFA defines).
    pub fn save(mut self, reg: Reg, off: i64) -> Option<Self> {
        if reg == Reg::Rsp {
            return None;
        }
        let off = i32::try_from(off).ok()?;
        let i = self.count as usize;
        *self.saved_regs.get_mut(i)? = reg;
        *self.saved_offs.get_mut(i)? = off;
        self.count += 1;
        Some(self)
    }

    /// The step's frame (establisher frame, CFA) is CFA + `off`.
    pub fn with_frame(mut self, off: i64) -> Self {
        self.frame_off = off;
        self
    }

    /// After the loads, only the registers in `mask` ([`Regs::valid_mask`] layout) stay known.
    pub fn with_keep(mut self, mask: u64) -> Self {
        self.keep = mask;
        self
    }

    /// Registers ([`Regs::valid_mask`] layout) that must be known besides the base, as the
    /// walker's unwind requires them (it fails without them even if it does not read them).
    pub fn with_required(mut self, mask: u64) -> Self {
        self.required |= mask;
        self
    }

    /// The handler the step reports.
    pub fn with_handler(mut self, handler: Option<Handler>) -> Self {
        self.handler = handler;
        self
    }

    /// How the caller's pc is looked up.
    pub fn with_caller_pc(mut self, kind: PcKind) -> Self {
        self.caller_pc = kind;
        self
    }

    /// The register the CFA is computed from.
    pub fn base(&self) -> Reg {
        self.base
    }

    /// The saved registers and their CFA offsets.
    pub fn saved(&self) -> impl ExactSizeIterator<Item = (Reg, i32)> + '_ {
        let n = self.saved_count();
        self.saved_regs[..n]
            .iter()
            .copied()
            .zip(self.saved_offs[..n].iter().copied())
    }

    /// The number of saved registers (at most [`RULE_SAVES`], whatever the bytes say).
    #[inline(always)]
    fn saved_count(&self) -> usize {
        (self.count as usize).min(RULE_SAVES)
    }

    /// Rewrites `regs` into the caller's registers. `None` (and `regs`, `pointers` untouched)
    /// when the base register is unknown or a read fails: the walker's own unwind then gives
    /// the exact error, with the address it failed at.
    // Always inlined: a walk's hit is little more than this, and a call would spill the
    // registers and return the step through memory.
    #[inline(always)]
    pub fn apply<M: MemoryReader + ?Sized>(
        &self,
        regs: &mut Regs,
        mem: &M,
        pointers: Option<&mut ContextPointers>,
    ) -> Option<StepInfo> {
        if regs.valid_mask() & self.required != self.required {
            return None;
        }
        let cfa = regs.get_raw(self.base).wrapping_add(self.base_off as u64);
        let rip = mem
            .read_u64(cfa.wrapping_add(self.ra_off as i64 as u64))
            .ok()?;
        // Every read before any write: a failed read leaves `regs` as it was.
        let n = self.saved_count();
        let mut vals = [0u64; RULE_SAVES];
        for (v, &off) in vals[..n].iter_mut().zip(&self.saved_offs[..n]) {
            *v = mem.read_u64(cfa.wrapping_add(off as i64 as u64)).ok()?;
        }
        for (&v, &r) in vals[..n].iter().zip(&self.saved_regs[..n]) {
            regs.set(r, v);
        }
        if let Some(p) = pointers {
            for (r, off) in self.saved() {
                p.set_gpr(r, cfa.wrapping_add(off as i64 as u64));
            }
        }
        regs.set_rip(rip);
        regs.set(Reg::Rsp, cfa);
        regs.retain(self.keep);
        Some(StepInfo {
            trust: self.trust,
            frame: cfa.wrapping_add(self.frame_off as u64),
            handler: self.handler,
            caller_pc: self.caller_pc,
        })
    }
}

/// The walker's rule at `regs`' pc if it has one, applied; else the walker's own unwind.
///
/// The reference for caches built on [`FrameWalker::rule`]: the two paths must agree.
pub fn unwind_by_rule(
    walker: &dyn FrameWalker,
    regs: &mut Regs,
    pc_kind: PcKind,
    mem: &dyn MemoryReader,
    mut pointers: Option<&mut ContextPointers>,
) -> Result<StepInfo, crate::UnwindError> {
    if let Some(pc) = regs.rip() {
        if let Some(rule) = walker.rule(pc, pc_kind, mem) {
            if let Some(info) = rule.apply(regs, mem, pointers.as_deref_mut()) {
                return Ok(info);
            }
        }
    }
    walker.unwind(regs, pc_kind, mem, pointers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SliceMemory;

    #[test]
    fn apply_reads_then_commits() {
        // Caller rsp = rbp + 16; rip at CFA - 8; rbx at CFA - 16.
        let rule = CompactRule::new(Reg::Rbp, 16, -8, Trust::Cfi)
            .save(Reg::Rbx, -16)
            .unwrap()
            .with_frame(-16)
            .with_keep(!Regs::bit(Reg::Rax));
        let mut stack = [0u8; 32];
        stack[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
        stack[16..24].copy_from_slice(&0x4000u64.to_le_bytes());
        let mem = SliceMemory::new(0x1000, &stack);
        let mut regs = Regs::with_gprs(0x9999, [7; 16]);
        regs.set(Reg::Rbp, 0x1008);
        let mut p = ContextPointers::new();
        let info = rule.apply(&mut regs, &mem, Some(&mut p)).unwrap();
        assert_eq!(regs.rip(), Some(0x4000));
        assert_eq!(regs.rsp(), Some(0x1018));
        assert_eq!(regs.get(Reg::Rbx), Some(0x1234));
        assert_eq!(regs.get(Reg::Rax), None);
        assert_eq!(regs.get(Reg::R12), Some(7));
        assert_eq!(p.gpr(Reg::Rbx), Some(0x1008));
        assert_eq!(info.frame, 0x1008);
        assert_eq!(info.caller_pc, PcKind::ReturnAddress);

        // A failed read leaves everything as it was.
        let mut regs = Regs::with_gprs(0x9999, [7; 16]);
        regs.set(Reg::Rbp, 0x2000);
        let before = regs.clone();
        let mut p = ContextPointers::new();
        assert!(rule.apply(&mut regs, &mem, Some(&mut p)).is_none());
        assert_eq!(regs, before);
        assert_eq!(p, ContextPointers::new());
        // An unknown base register too, or another required one.
        regs.invalidate(Reg::Rbp);
        assert!(rule.apply(&mut regs, &mem, None).is_none());
        let mut regs = Regs::with_gprs(0x9999, [7; 16]);
        regs.set(Reg::Rbp, 0x1008);
        regs.invalidate(Reg::Rsp);
        let needs_rsp = rule.with_required(Regs::bit(Reg::Rsp));
        assert!(needs_rsp.apply(&mut regs, &mem, None).is_none());
        assert!(rule.apply(&mut regs, &mem, None).is_some());
    }

    /// A cache slot (16-byte key and the rule) is two cache lines only while this holds.
    #[test]
    fn rule_fits_a_cache_slot() {
        assert!(core::mem::size_of::<CompactRule>() <= 112);
        assert_eq!(
            core::mem::size_of::<Option<CompactRule>>(),
            core::mem::size_of::<CompactRule>()
        );
    }

    #[test]
    fn rules_refuse_what_they_cannot_hold() {
        let mut r = CompactRule::new(Reg::Rsp, 8, -8, Trust::Pdata);
        assert!(r.save(Reg::Rsp, 0).is_none());
        assert!(r.save(Reg::Rbx, i64::MAX).is_none());
        for reg in [
            Reg::Rbx,
            Reg::Rbp,
            Reg::Rsi,
            Reg::Rdi,
            Reg::R12,
            Reg::R13,
            Reg::R14,
        ] {
            r = r.save(reg, -16).unwrap();
        }
        r = r.save(Reg::R15, -24).unwrap();
        assert_eq!(r.saved().len(), RULE_SAVES);
        assert!(r.save(Reg::Rax, -32).is_none());
    }
}

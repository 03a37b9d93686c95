//! The kernel's ORC unwind tables (`.orc_unwind_ip`, `.orc_unwind`, `.orc_header`), their
//! lookup, and a [`FrameWalker`] that steps kernel frames with them.
//!
//! `.orc_unwind_ip` holds one self-relative `s32` per entry, sorted; `.orc_unwind` the 6-byte
//! rules in the same order. A pc's rule is the rightmost entry with `ip <= pc` (among equal ips
//! a weak section terminator sorts first and so loses). The kernel narrows that search with
//! `orc_lookup`: one `u32` per 256 bytes of `[_stext, _etext)` plus one, slot `i` holding the
//! search result for `_stext + 256 * i`, so a lookup only searches between two slots.

use xunwind_core::{
    CompactRule, ContextPointers, FrameWalker, MemoryReader, PcKind, RangeTable, Reg, Regs, Step,
    StepInfo, Trust, UnwindError,
};

use crate::error::{Error, Result};
use crate::format::KernelVersion;
use crate::kernel::OrcSections;

/// Size of one `.orc_unwind` entry.
pub const ORC_ENTRY_SIZE: usize = 6;
/// Bytes of text per `orc_lookup` slot (`LOOKUP_BLOCK_SIZE`).
pub const LOOKUP_BLOCK_SIZE: u64 = 256;
/// Upper bound on ORC entries read from one table.
pub const MAX_ORC_ENTRIES: usize = 1 << 24;

/// The bit layout of `orc_entry`'s third word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrcLayout {
    /// Before 6.3: sp_reg 0-3, bp_reg 4-7, type 8-9 (CALL, REGS, REGS_PARTIAL), end 10.
    Pre6_3,
    /// 6.3: as before plus `signal` at bit 10, `end` moved to bit 11.
    V6_3,
    /// 6.4+: type in bits 8-10 (UNDEFINED, END_OF_STACK, CALL, REGS, REGS_PARTIAL), signal
    /// bit 11, no end bit; the file has `.orc_header`.
    V6_4,
}

impl OrcLayout {
    /// The layout of a kernel with (or without) `.orc_header` and of `version`.
    pub fn detect(has_header: bool, version: Option<KernelVersion>) -> Self {
        match version {
            _ if has_header => OrcLayout::V6_4,
            Some(v) if v.at_least(6, 4) => OrcLayout::V6_4,
            Some(v) if v.at_least(6, 3) => OrcLayout::V6_3,
            _ => OrcLayout::Pre6_3,
        }
    }
}

/// ORC base registers (`ORC_REG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrcReg {
    /// 0: no rule.
    Undefined,
    /// 1: the previous frame's stack pointer (bp_reg only).
    PrevSp,
    /// 2: %rdx (from pt_regs).
    Dx,
    /// 3: %rdi.
    Di,
    /// 4: %rbp.
    Bp,
    /// 5: %rsp.
    Sp,
    /// 6: %r10.
    R10,
    /// 7: %r13.
    R13,
    /// 8: `[%rbp + offset]`.
    BpIndirect,
    /// 9: `[%rsp] + offset`.
    SpIndirect,
    /// 10-15: not defined.
    Unknown(u8),
}

impl OrcReg {
    fn from_bits(b: u8) -> Self {
        match b {
            0 => OrcReg::Undefined,
            1 => OrcReg::PrevSp,
            2 => OrcReg::Dx,
            3 => OrcReg::Di,
            4 => OrcReg::Bp,
            5 => OrcReg::Sp,
            6 => OrcReg::R10,
            7 => OrcReg::R13,
            8 => OrcReg::BpIndirect,
            9 => OrcReg::SpIndirect,
            n => OrcReg::Unknown(n),
        }
    }
}

/// ORC frame types, normalised across layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrcType {
    /// 6.4+ `ORC_TYPE_UNDEFINED`: no unwind information (an error to unwind through).
    Undefined,
    /// 6.4+ `ORC_TYPE_END_OF_STACK`; before 6.4, `sp_reg == UNDEFINED` with `end` set.
    EndOfStack,
    /// A normal call frame: the return address is at `prev_sp - 8`.
    Call,
    /// A full `pt_regs` at `prev_sp` (entry code, interrupts).
    Regs,
    /// Only the hardware iret frame at `prev_sp`.
    RegsPartial,
    /// A type number the layout does not define.
    Unknown(u8),
}

/// One decoded `orc_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrcEntry {
    /// Offset added to the sp base register.
    pub sp_offset: i16,
    /// Offset added to the bp base register.
    pub bp_offset: i16,
    /// Where the previous frame's stack pointer comes from.
    pub sp_reg: OrcReg,
    /// Where the previous frame's %rbp comes from.
    pub bp_reg: OrcReg,
    /// The frame type.
    pub ty: OrcType,
    /// The `end` bit (before 6.4): the last frame of a stack.
    pub end: bool,
    /// The `signal` bit (6.3+): the caller is looked up at its ip, not ip-1.
    pub signal: bool,
}

impl OrcEntry {
    /// Decodes the 6 bytes of an entry in `layout`.
    pub fn decode(b: &[u8; 6], layout: OrcLayout) -> Self {
        let bits = u16::from_le_bytes([b[4], b[5]]);
        let sp_reg = OrcReg::from_bits((bits & 15) as u8);
        let bp_reg = OrcReg::from_bits(((bits >> 4) & 15) as u8);
        let (ty, end, signal) = match layout {
            OrcLayout::Pre6_3 | OrcLayout::V6_3 => {
                let end = if layout == OrcLayout::Pre6_3 {
                    bits & (1 << 10) != 0
                } else {
                    bits & (1 << 11) != 0
                };
                let signal = layout == OrcLayout::V6_3 && bits & (1 << 10) != 0;
                let ty = match (bits >> 8) & 3 {
                    0 => OrcType::Call,
                    1 => OrcType::Regs,
                    2 => OrcType::RegsPartial,
                    n => OrcType::Unknown(n as u8),
                };
                // Before 6.4 a missing sp rule is the stack's end when `end` is set.
                let ty = if sp_reg == OrcReg::Undefined && end {
                    OrcType::EndOfStack
                } else {
                    ty
                };
                (ty, end, signal)
            }
            OrcLayout::V6_4 => {
                let ty = match (bits >> 8) & 7 {
                    0 => OrcType::Undefined,
                    1 => OrcType::EndOfStack,
                    2 => OrcType::Call,
                    3 => OrcType::Regs,
                    4 => OrcType::RegsPartial,
                    n => OrcType::Unknown(n as u8),
                };
                (ty, false, bits & (1 << 11) != 0)
            }
        };
        OrcEntry {
            sp_offset: i16::from_le_bytes([b[0], b[1]]),
            bp_offset: i16::from_le_bytes([b[2], b[3]]),
            sp_reg,
            bp_reg,
            ty,
            end,
            signal,
        }
    }

    /// A weak section terminator: no sp rule and not the end of the stack. Sorts first among
    /// equal ips, so a real entry at the same ip wins.
    pub fn is_weak_terminator(&self, layout: OrcLayout) -> bool {
        match layout {
            OrcLayout::V6_4 => self.ty == OrcType::Undefined,
            _ => self.sp_reg == OrcReg::Undefined && !self.end,
        }
    }
}

/// A sorted ORC table with the kernel's lookups.
#[derive(Clone, Debug)]
pub struct OrcTable {
    ips: Box<[u64]>,
    raw: Box<[[u8; 6]]>,
    layout: OrcLayout,
    /// `[_stext, _etext)`, what `orc_lookup` covers.
    text: (u64, u64),
    lookup: Box<[u32]>,
    index: RangeTable<u32>,
}

impl OrcTable {
    /// Builds the vmlinux table from its sections.
    pub fn from_sections(s: &OrcSections, version: Option<KernelVersion>) -> Result<Self> {
        if !s.ip.len().is_multiple_of(4) || !s.unwind.len().is_multiple_of(ORC_ENTRY_SIZE) {
            return Err(Error::BadOrc("section sizes are not whole entries"));
        }
        let n = s.ip.len() / 4;
        if n != s.unwind.len() / ORC_ENTRY_SIZE {
            return Err(Error::BadOrc(
                ".orc_unwind_ip and .orc_unwind differ in length",
            ));
        }
        if n > MAX_ORC_ENTRIES {
            return Err(Error::TooLarge("ORC entries"));
        }
        let ips = s.ip.chunks_exact(4).enumerate().map(|(i, b)| {
            let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (s.ip_address + 4 * i as u64).wrapping_add(v as i64 as u64)
        });
        let raw = s
            .unwind
            .chunks_exact(ORC_ENTRY_SIZE)
            .map(|b| [b[0], b[1], b[2], b[3], b[4], b[5]]);
        let layout = OrcLayout::detect(s.header.is_some(), version);
        Self::new(ips.zip(raw).collect(), layout, s.text)
    }

    /// Builds a table from `(ip, entry bytes)` pairs, sorting them as `sorttable`/the module
    /// loader do (by ip; a weak terminator before a real entry at the same ip).
    pub fn new(
        mut pairs: Vec<(u64, [u8; 6])>,
        layout: OrcLayout,
        text: (u64, u64),
    ) -> Result<Self> {
        if pairs.len() > MAX_ORC_ENTRIES {
            return Err(Error::TooLarge("ORC entries"));
        }
        let weak = |raw: &[u8; 6]| OrcEntry::decode(raw, layout).is_weak_terminator(layout);
        let sorted = pairs
            .windows(2)
            .all(|w| w[0].0 < w[1].0 || (w[0].0 == w[1].0 && (weak(&w[0].1) || !weak(&w[1].1))));
        if !sorted {
            pairs.sort_by_key(|(ip, raw)| (*ip, !weak(raw)));
        }
        let ips: Box<[u64]> = pairs.iter().map(|p| p.0).collect();
        let raw: Box<[[u8; 6]]> = pairs.iter().map(|p| p.1).collect();
        let end = ips.last().map_or(0, |&l| l.saturating_add(1)).max(text.1);
        let index = RangeTable::from_starts(ips.iter().copied(), end)?;
        let mut t = OrcTable {
            ips,
            raw,
            layout,
            text,
            lookup: Box::new([]),
            index,
        };
        t.lookup = t.build_lookup();
        Ok(t)
    }

    /// `unwind_init`'s `orc_lookup`: slot `i` = the search result for `_stext + 256*i`, the
    /// last slot the result for `_etext`; `ceil(text / 256) + 1` slots in all.
    fn build_lookup(&self) -> Box<[u32]> {
        let (start, stop) = self.text;
        if stop <= start || self.ips.is_empty() {
            return Box::new([]);
        }
        let blocks = (stop - start).div_ceil(LOOKUP_BLOCK_SIZE) as usize + 1;
        let mut out = Vec::with_capacity(blocks);
        for i in 0..blocks - 1 {
            let ip = start + LOOKUP_BLOCK_SIZE * i as u64;
            out.push(self.kernel_orc_find(0, self.ips.len(), ip) as u32);
        }
        out.push(self.kernel_orc_find(0, self.ips.len(), stop) as u32);
        out.into_boxed_slice()
    }

    /// `__orc_find` over `ips[lo..hi]`: the rightmost entry with ip <= pc, or `lo` when none
    /// is (the kernel returns the first entry rather than nothing).
    fn kernel_orc_find(&self, lo: usize, hi: usize, pc: u64) -> usize {
        let w = &self.ips[lo..hi];
        lo + w.partition_point(|&ip| ip <= pc).saturating_sub(1)
    }

    /// The entry layout.
    pub fn layout(&self) -> OrcLayout {
        self.layout
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The sorted absolute ips.
    pub fn ips(&self) -> &[u64] {
        &self.ips
    }

    /// The `orc_lookup` slots.
    pub fn lookup_table(&self) -> &[u32] {
        &self.lookup
    }

    /// `[_stext, _etext)`.
    pub fn text(&self) -> (u64, u64) {
        self.text
    }

    /// Entry `i`, decoded.
    pub fn entry(&self, i: usize) -> Option<OrcEntry> {
        self.raw.get(i).map(|r| OrcEntry::decode(r, self.layout))
    }

    /// The kernel's `orc_find` for vmlinux: inside `[_stext, _etext)` search only between
    /// `orc_lookup[idx]` and `orc_lookup[idx + 1] + 1`; elsewhere the whole table. `None` below
    /// the first entry (where the kernel would return the first).
    #[inline]
    pub fn find(&self, pc: u64) -> Option<usize> {
        let (start, stop) = self.text;
        if pc >= start && pc < stop && !self.lookup.is_empty() {
            let idx = ((pc - start) / LOOKUP_BLOCK_SIZE) as usize;
            if idx + 1 >= self.lookup.len() {
                return None;
            }
            let lo = self.lookup[idx] as usize;
            let hi = (self.lookup[idx + 1] as usize + 1).min(self.ips.len());
            if lo >= hi {
                return None;
            }
            let i = self.kernel_orc_find(lo, hi, pc);
            return (self.ips[i] <= pc).then_some(i);
        }
        self.find_full(pc)
    }

    /// The rightmost entry with ip <= pc by a binary search of the whole table.
    #[inline]
    pub fn find_full(&self, pc: u64) -> Option<usize> {
        self.ips.partition_point(|&ip| ip <= pc).checked_sub(1)
    }

    /// The same answer through the project's [`RangeTable`] (the entry's range ends at the next
    /// distinct ip; the last at `_etext` or just past the last ip).
    #[inline]
    pub fn find_indexed(&self, pc: u64) -> Option<usize> {
        self.index.lookup(pc)
    }

    /// The rule for `pc`, looked up as `kind` says (`ip - 1` for return addresses).
    pub fn rule(&self, pc: u64, kind: PcKind) -> Option<OrcEntry> {
        self.entry(self.find(kind.lookup_address(pc))?)
    }
}

/// x86-64 `struct pt_regs` offsets of the registers, in [`Reg`] order (ax cx dx bx sp bp si di
/// r8..r15); sp is the saved user/previous sp.
const PT_REGS_OFFSET: [u64; 16] = [
    80, 88, 96, 40, 152, 32, 104, 112, 72, 64, 56, 48, 24, 16, 8, 0,
];
/// `offsetof(struct pt_regs, ip)`: where the hardware iret frame starts.
const PT_REGS_IP: u64 = 128;

/// What one ORC step found.
#[derive(Clone, Debug)]
// A step is returned by value once per frame; boxing it would allocate on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum OrcStep {
    /// The caller's frame.
    Frame(Step),
    /// The rule says this is the last frame (`END_OF_STACK`, or `end` with no sp rule).
    EndOfStack,
}

impl OrcTable {
    /// Unwinds one kernel frame as `unwind_next_frame` does: find the caller's sp from the
    /// sp rule, then its ip (CALL: the return address below sp; REGS: `pt_regs` at sp;
    /// REGS_PARTIAL: the iret frame at sp), then its bp. Registers ORC does not describe
    /// become unknown.
    pub fn unwind_frame(
        &self,
        regs: &Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> core::result::Result<OrcStep, UnwindError> {
        let pc = regs.rip().ok_or(UnwindError::MissingRip)?;
        let sp = regs.rsp().ok_or(UnwindError::MissingRegister(Reg::Rsp))?;
        let e = self
            .rule(pc, pc_kind)
            .ok_or(UnwindError::NoUnwindInfo { pc })?;
        let bad = |reason| UnwindError::BadUnwindInfo { addr: pc, reason };
        match e.ty {
            OrcType::EndOfStack => return Ok(OrcStep::EndOfStack),
            OrcType::Undefined => return Err(bad("ORC_TYPE_UNDEFINED: no unwind rule here")),
            OrcType::Unknown(_) => return Err(bad("unknown ORC type")),
            _ => {}
        }
        let get = |r: Reg| regs.get(r).ok_or(UnwindError::MissingRegister(r));
        let off = e.sp_offset as i64 as u64;
        let mut pointers = ContextPointers::new();
        let prev_sp = match e.sp_reg {
            OrcReg::Sp => sp.wrapping_add(off),
            OrcReg::Bp => get(Reg::Rbp)?.wrapping_add(off),
            OrcReg::SpIndirect => mem.read_u64(sp)?.wrapping_add(off),
            OrcReg::BpIndirect => mem.read_u64(get(Reg::Rbp)?.wrapping_add(off))?,
            OrcReg::R10 => get(Reg::R10)?,
            OrcReg::R13 => get(Reg::R13)?,
            OrcReg::Di => get(Reg::Rdi)?,
            OrcReg::Dx => get(Reg::Rdx)?,
            OrcReg::Undefined => return Err(bad("no sp rule and not the end of the stack")),
            OrcReg::PrevSp | OrcReg::Unknown(_) => return Err(bad("bad sp base register")),
        };
        let mut out = Regs::new();
        let caller_pc = match e.ty {
            OrcType::Call => {
                let ra_at = prev_sp.wrapping_sub(8);
                out.set_rip(mem.read_u64(ra_at)?);
                out.set(Reg::Rsp, prev_sp);
                if let Some(bp) = regs.get(Reg::Rbp) {
                    out.set(Reg::Rbp, bp);
                }
                // 6.3+: a CALL entry with `signal` resumes at its ip (not a return address).
                if e.signal {
                    PcKind::Exact
                } else {
                    PcKind::ReturnAddress
                }
            }
            OrcType::Regs => {
                for r in Reg::ALL {
                    let at = prev_sp.wrapping_add(PT_REGS_OFFSET[r as usize]);
                    out.set(r, mem.read_u64(at)?);
                    pointers.set_gpr(r, at);
                }
                out.set_rip(mem.read_u64(prev_sp + PT_REGS_IP)?);
                PcKind::Exact
            }
            OrcType::RegsPartial => {
                // Only ip..ss are there; the rest of pt_regs below them is not.
                out.set_rip(mem.read_u64(prev_sp)?);
                let at = prev_sp.wrapping_add(24);
                out.set(Reg::Rsp, mem.read_u64(at)?);
                pointers.set_gpr(Reg::Rsp, at);
                if let Some(bp) = regs.get(Reg::Rbp) {
                    out.set(Reg::Rbp, bp);
                }
                PcKind::Exact
            }
            _ => return Err(bad("unknown ORC type")),
        };
        let bp_off = e.bp_offset as i64 as u64;
        match e.bp_reg {
            // Kept (CALL, REGS_PARTIAL) or read from pt_regs (REGS) above.
            OrcReg::Undefined => {}
            OrcReg::PrevSp => {
                let at = prev_sp.wrapping_add(bp_off);
                out.set(Reg::Rbp, mem.read_u64(at)?);
                pointers.set_gpr(Reg::Rbp, at);
            }
            OrcReg::Bp => {
                let at = get(Reg::Rbp)?.wrapping_add(bp_off);
                out.set(Reg::Rbp, mem.read_u64(at)?);
                pointers.set_gpr(Reg::Rbp, at);
            }
            _ => return Err(bad("bad bp base register")),
        }
        Ok(OrcStep::Frame(Step {
            regs: out,
            trust: Trust::Orc,
            frame: prev_sp,
            pointers,
            handler: None,
            caller_pc,
        }))
    }
}

impl FrameWalker for OrcTable {
    /// CALL entries whose sp is rsp or rbp plus an offset and whose bp is kept or saved
    /// relative to the caller's sp: nearly every entry of a kernel's text.
    fn rule(&self, pc: u64, pc_kind: PcKind, _: &dyn MemoryReader) -> Option<CompactRule> {
        let e = OrcTable::rule(self, pc, pc_kind)?;
        if e.ty != OrcType::Call {
            return None;
        }
        let base = match e.sp_reg {
            OrcReg::Sp => Reg::Rsp,
            OrcReg::Bp => Reg::Rbp,
            _ => return None,
        };
        let mut rule = CompactRule::new(base, e.sp_offset.into(), -8, Trust::Orc)
            .with_required(Regs::bit(Reg::Rsp))
            .with_keep(Regs::bit(Reg::Rsp) | Regs::bit(Reg::Rbp) | Regs::rip_bit())
            .with_caller_pc(if e.signal {
                PcKind::Exact
            } else {
                PcKind::ReturnAddress
            });
        match e.bp_reg {
            OrcReg::Undefined => {}
            OrcReg::PrevSp => rule = rule.save(Reg::Rbp, e.bp_offset.into())?,
            _ => return None,
        }
        Some(rule)
    }

    fn unwind(
        &self,
        regs: &mut Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
        pointers: Option<&mut ContextPointers>,
    ) -> core::result::Result<StepInfo, UnwindError> {
        Ok(self.step(regs, pc_kind, mem)?.into_place(regs, pointers))
    }

    /// One ORC step. The end of the stack is reported as a caller with rip 0 (the walkers'
    /// end-of-stack convention); use [`OrcTable::unwind_frame`] to tell it apart.
    fn step(
        &self,
        regs: &Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> core::result::Result<Step, UnwindError> {
        match self.unwind_frame(regs, pc_kind, mem)? {
            OrcStep::Frame(s) => Ok(s),
            OrcStep::EndOfStack => {
                let mut r = Regs::new();
                r.set_rip(0);
                if let Some(sp) = regs.rsp() {
                    r.set(Reg::Rsp, sp);
                }
                Ok(Step {
                    regs: r,
                    trust: Trust::Orc,
                    frame: regs.rsp().unwrap_or(0),
                    pointers: ContextPointers::new(),
                    handler: None,
                    caller_pc: PcKind::ReturnAddress,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xunwind_core::SliceMemory;

    fn raw(sp_off: i16, bp_off: i16, sp_reg: u16, bp_reg: u16, ty: u16, hi: u16) -> [u8; 6] {
        let bits = sp_reg | (bp_reg << 4) | (ty << 8) | hi;
        let mut b = [0; 6];
        b[0..2].copy_from_slice(&sp_off.to_le_bytes());
        b[2..4].copy_from_slice(&bp_off.to_le_bytes());
        b[4..6].copy_from_slice(&bits.to_le_bytes());
        b
    }

    #[test]
    fn layouts_decode() {
        // 6.1: sp = rsp + 16, bp = [prev_sp - 16], CALL.
        let e = OrcEntry::decode(&raw(16, -16, 5, 1, 0, 0), OrcLayout::Pre6_3);
        assert_eq!(
            (e.sp_reg, e.bp_reg, e.ty, e.end),
            (OrcReg::Sp, OrcReg::PrevSp, OrcType::Call, false)
        );
        assert_eq!((e.sp_offset, e.bp_offset), (16, -16));
        let e = OrcEntry::decode(&raw(0, 0, 0, 0, 0, 1 << 10), OrcLayout::Pre6_3);
        assert_eq!((e.ty, e.end), (OrcType::EndOfStack, true));
        let e = OrcEntry::decode(&raw(0, 0, 0, 0, 0, 0), OrcLayout::Pre6_3);
        assert!(e.is_weak_terminator(OrcLayout::Pre6_3));
        assert_eq!(
            OrcEntry::decode(&raw(8, 0, 5, 0, 1, 0), OrcLayout::Pre6_3).ty,
            OrcType::Regs
        );
        assert_eq!(
            OrcEntry::decode(&raw(8, 0, 5, 0, 2, 0), OrcLayout::Pre6_3).ty,
            OrcType::RegsPartial
        );
        // 6.3: signal at bit 10, end at 11.
        let e = OrcEntry::decode(&raw(8, 0, 5, 0, 0, 1 << 10), OrcLayout::V6_3);
        assert_eq!((e.signal, e.end, e.ty), (true, false, OrcType::Call));
        let e = OrcEntry::decode(&raw(0, 0, 0, 0, 0, 1 << 11), OrcLayout::V6_3);
        assert_eq!(e.ty, OrcType::EndOfStack);
        // 6.4: 3-bit type, signal at 11.
        for (t, want) in [
            (0, OrcType::Undefined),
            (1, OrcType::EndOfStack),
            (2, OrcType::Call),
            (3, OrcType::Regs),
            (4, OrcType::RegsPartial),
            (5, OrcType::Unknown(5)),
        ] {
            assert_eq!(
                OrcEntry::decode(&raw(8, 0, 5, 0, t, 0), OrcLayout::V6_4).ty,
                want
            );
        }
        assert!(OrcEntry::decode(&raw(8, 0, 5, 0, 2, 1 << 11), OrcLayout::V6_4).signal);
        assert_eq!(OrcLayout::detect(true, None), OrcLayout::V6_4);
        assert_eq!(
            OrcLayout::detect(false, Some(KernelVersion::new(6, 3, 0))),
            OrcLayout::V6_3
        );
        assert_eq!(
            OrcLayout::detect(false, Some(KernelVersion::new(6, 1, 0))),
            OrcLayout::Pre6_3
        );
    }

    fn table() -> OrcTable {
        let call = raw(8, 0, 5, 0, 0, 0);
        let weak = raw(0, 0, 0, 0, 0, 0);
        let pairs = vec![
            (0x1000, call),
            (0x1100, raw(16, -16, 5, 1, 0, 0)),
            (0x1200, call),
            (0x1200, weak), // out of order: the weak one must sort first and lose
            (0x1300, raw(0, 0, 5, 0, 1, 0)),
            (0x1400, raw(0, 0, 5, 0, 2, 0)),
            (0x1500, raw(0, 0, 0, 0, 0, 1 << 10)),
        ];
        OrcTable::new(pairs, OrcLayout::Pre6_3, (0x1000, 0x1600)).unwrap()
    }

    #[test]
    fn lookups_agree() {
        let t = table();
        assert_eq!(t.lookup_table().len(), 0x600 / 256 + 1);
        assert_eq!(t.entry(t.find(0x1200).unwrap()).unwrap().sp_reg, OrcReg::Sp);
        for pc in 0xf00..0x1700u64 {
            let want = t.ips().partition_point(|&ip| ip <= pc).checked_sub(1);
            assert_eq!(t.find_full(pc), want, "{pc:#x}");
            if pc < 0x1600 {
                assert_eq!(t.find(pc), want, "{pc:#x}");
                assert_eq!(t.find_indexed(pc), want, "{pc:#x}");
            }
        }
    }

    #[test]
    fn walks_call_regs_partial_and_end() {
        let t = table();
        let base = 0x8000u64;
        let mut stack = vec![0u8; 0x400];
        let put = |s: &mut Vec<u8>, a: u64, v: u64| {
            let o = (a - base) as usize;
            s[o..o + 8].copy_from_slice(&v.to_le_bytes());
        };
        // Frame 0 at 0x1010 (sp+8 CALL): return address 0x1105 at [sp].
        put(&mut stack, base, 0x1105);
        // Frame 1 at 0x1105-1 (sp+16, bp from prev_sp-16): ra at base+16, saved bp at base+8.
        put(&mut stack, base + 8, 0xbbbb);
        put(&mut stack, base + 16, 0x1301);
        // Frame 2 at 0x1300 REGS at sp+0 = base+24: a pt_regs.
        let regs_at = base + 24;
        for (i, off) in PT_REGS_OFFSET.iter().enumerate() {
            put(&mut stack, regs_at + off, 0x100 + i as u64);
        }
        put(&mut stack, regs_at + PT_REGS_IP, 0x1400);
        put(&mut stack, regs_at + 152, base + 0x200);
        // Frame 3 at 0x1400 REGS_PARTIAL at sp+0 = base+0x200: iret frame.
        put(&mut stack, base + 0x200, 0x1500);
        put(&mut stack, base + 0x200 + 24, base + 0x300);
        let mem = SliceMemory::new(base, &stack);

        let mut r = Regs::new();
        r.set_rip(0x1010);
        r.set(Reg::Rsp, base);
        r.set(Reg::Rbp, 0xaaaa);
        let s = t.step(&r, PcKind::Exact, &mem).unwrap();
        assert_eq!(
            (s.regs.rip(), s.regs.rsp(), s.regs.get(Reg::Rbp)),
            (Some(0x1105), Some(base + 8), Some(0xaaaa))
        );
        assert_eq!(s.caller_pc, PcKind::ReturnAddress);
        assert_eq!(s.regs.get(Reg::Rbx), None);

        let s = t.step(&s.regs, s.caller_pc, &mem).unwrap();
        assert_eq!(
            (s.regs.rip(), s.regs.rsp(), s.regs.get(Reg::Rbp)),
            (Some(0x1301), Some(base + 24), Some(0xbbbb))
        );
        assert_eq!(s.pointers.gpr(Reg::Rbp), Some(base + 8));

        // 0x1301 - 1 = 0x1300: REGS.
        let s = t.step(&s.regs, s.caller_pc, &mem).unwrap();
        assert_eq!(
            (s.regs.rip(), s.regs.rsp()),
            (Some(0x1400), Some(base + 0x200))
        );
        assert_eq!(s.regs.get(Reg::R15), Some(0x100 + 15));
        assert_eq!(s.pointers.gpr(Reg::Rax), Some(regs_at + 80));
        assert_eq!(s.caller_pc, PcKind::Exact);

        let s = t.step(&s.regs, s.caller_pc, &mem).unwrap();
        assert_eq!(
            (s.regs.rip(), s.regs.rsp()),
            (Some(0x1500), Some(base + 0x300))
        );
        assert_eq!(s.regs.get(Reg::Rax), None);

        assert!(matches!(
            t.unwind_frame(&s.regs, s.caller_pc, &mem),
            Ok(OrcStep::EndOfStack)
        ));
        assert_eq!(
            t.step(&s.regs, s.caller_pc, &mem).unwrap().regs.rip(),
            Some(0)
        );

        // Errors are typed: no rule, weak terminator, unreadable stack.
        r.set_rip(0x10);
        assert_eq!(
            t.step(&r, PcKind::Exact, &mem).unwrap_err(),
            UnwindError::NoUnwindInfo { pc: 0x10 }
        );
        r.set(Reg::Rsp, 0x10);
        r.set_rip(0x1010);
        assert!(matches!(
            t.step(&r, PcKind::Exact, &mem),
            Err(UnwindError::Memory(_))
        ));
        let weak_only = OrcTable::new(
            vec![(0x1000, raw(0, 0, 0, 0, 0, 0))],
            OrcLayout::Pre6_3,
            (0x1000, 0x1100),
        )
        .unwrap();
        assert!(matches!(
            weak_only.step(&r, PcKind::Exact, &mem),
            Err(UnwindError::BadUnwindInfo { .. })
        ));
    }
}

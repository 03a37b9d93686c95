//! One step of a stack walk, whatever the unwind information is.

use crate::{MemoryError, MemoryReader, Reg, Regs};
use core::fmt;

/// How a frame's instruction pointer relates to the code that is executing.
///
/// A return address points after the call, possibly past the end of the function (a call to a
/// noreturn function), so unwind tables are searched at `pc - 1` for it. The first frame and a
/// frame interrupted by a trap, signal or machine frame point at the instruction itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PcKind {
    /// The instruction that was executing or faulting: look up at `pc`.
    Exact,
    /// A return address read from the stack: look up at `pc - 1`.
    ReturnAddress,
}

impl PcKind {
    /// The address to search unwind tables with.
    #[inline]
    pub fn lookup_address(self, pc: u64) -> u64 {
        match self {
            PcKind::Exact => pc,
            PcKind::ReturnAddress => pc.wrapping_sub(1),
        }
    }
}

/// How a frame was recovered, from most to least trustworthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trust {
    /// Given by the thread context (frame 0).
    Context,
    /// Windows `.pdata`/`.xdata` unwind info.
    Pdata,
    /// DWARF call-frame information.
    Cfi,
    /// The Linux kernel's ORC tables.
    Orc,
    /// A frame-pointer chain.
    FramePointer,
    /// A stack scan found something that looks like a return address.
    Scan,
}

impl Trust {
    /// The name used in JSON output (`context`, `pdata`, `cfi`, `orc`, `frame_pointer`, `scan`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Trust::Context => "context",
            Trust::Pdata => "pdata",
            Trust::Cfi => "cfi",
            Trust::Orc => "orc",
            Trust::FramePointer => "frame_pointer",
            Trust::Scan => "scan",
        }
    }
}

/// Where each restored register was read from (Windows' KNONVOLATILE_CONTEXT_POINTERS).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextPointers {
    gpr: [u64; 16],
    xmm: [u64; 16],
    valid: u32,
}

impl ContextPointers {
    /// No register restored from memory.
    pub const fn new() -> Self {
        ContextPointers {
            gpr: [0; 16],
            xmm: [0; 16],
            valid: 0,
        }
    }

    /// The address `reg` was restored from, if it was.
    #[inline]
    pub fn gpr(&self, reg: Reg) -> Option<u64> {
        (self.valid & (1 << reg as u32) != 0).then_some(self.gpr[reg as usize])
    }

    /// Records that `reg` was restored from `addr`.
    #[inline]
    pub fn set_gpr(&mut self, reg: Reg, addr: u64) {
        self.gpr[reg as usize] = addr;
        self.valid |= 1 << reg as u32;
    }

    /// The address xmm `n` was restored from, if it was.
    #[inline]
    pub fn xmm(&self, n: u8) -> Option<u64> {
        let n = (n & 15) as u32;
        (self.valid & (1 << (16 + n)) != 0).then_some(self.xmm[n as usize])
    }

    /// Records that xmm `n` was restored from `addr`.
    #[inline]
    pub fn set_xmm(&mut self, n: u8, addr: u64) {
        let n = (n & 15) as u32;
        self.xmm[n as usize] = addr;
        self.valid |= 1 << (16 + n);
    }
}

impl ContextPointers {
    /// Takes every pointer `newer` records, keeping ours for the registers it does not.
    pub fn merge(&mut self, newer: &ContextPointers) {
        for i in 0..16 {
            if newer.valid & (1 << i) != 0 {
                self.gpr[i] = newer.gpr[i];
            }
            if newer.valid & (1 << (16 + i)) != 0 {
                self.xmm[i] = newer.xmm[i];
            }
        }
        self.valid |= newer.valid;
    }
}

impl fmt::Debug for ContextPointers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for r in Reg::ALL {
            if let Some(a) = self.gpr(r) {
                m.entry(&r.name(), &format_args!("{a:#x}"));
            }
        }
        for n in 0..16 {
            if let Some(a) = self.xmm(n) {
                m.entry(&format_args!("xmm{n}"), &format_args!("{a:#x}"));
            }
        }
        m.finish()
    }
}

/// A language handler a frame carries (Windows exception/termination handler, DWARF personality).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handler {
    /// Address of the handler routine.
    pub address: u64,
    /// Address of its language-specific data.
    pub data: u64,
    /// Windows' UNW_FLAG_EHANDLER (1) / UNW_FLAG_UHANDLER (2) bits the handler serves; 0 elsewhere.
    pub flags: u8,
}

/// The result of unwinding one frame.
#[derive(Clone, Debug)]
pub struct Step {
    /// The caller's registers; what could not be recovered is marked unknown.
    pub regs: Regs,
    /// How the caller's registers were found.
    pub trust: Trust,
    /// Windows' establisher frame or DWARF's CFA of the unwound frame.
    pub frame: u64,
    /// Where each restored register was read from.
    pub pointers: ContextPointers,
    /// The unwound frame's handler, when the walker was asked for it and one applies at the pc.
    pub handler: Option<Handler>,
    /// How to look up the caller's pc: `Exact` after a machine/trap/signal frame.
    pub caller_pc: PcKind,
}

/// Why a frame could not be unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnwindError {
    /// Memory that the unwind needs could not be read.
    Memory(MemoryError),
    /// This walker has no unwind information for the pc.
    NoUnwindInfo {
        /// The pc that was looked up.
        pc: u64,
    },
    /// The unwind information is malformed.
    BadUnwindInfo {
        /// Address of the offending record.
        addr: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Chained unwind info nests deeper than allowed (or loops).
    ChainTooDeep {
        /// Address of the unwind info where the limit was hit.
        addr: u64,
    },
    /// A register that the unwind rule needs is unknown.
    MissingRegister(Reg),
    /// The instruction pointer is unknown.
    MissingRip,
}

impl From<MemoryError> for UnwindError {
    fn from(e: MemoryError) -> Self {
        UnwindError::Memory(e)
    }
}

impl fmt::Display for UnwindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UnwindError::Memory(e) => e.fmt(f),
            UnwindError::NoUnwindInfo { pc } => write!(f, "no unwind information for {pc:#x}"),
            UnwindError::BadUnwindInfo { addr, reason } => {
                write!(f, "bad unwind information at {addr:#x}: {reason}")
            }
            UnwindError::ChainTooDeep { addr } => {
                write!(
                    f,
                    "chained unwind information too deep or cyclic at {addr:#x}"
                )
            }
            UnwindError::MissingRegister(r) => write!(f, "register {r} is unknown"),
            UnwindError::MissingRip => f.write_str("the instruction pointer is unknown"),
        }
    }
}

impl std::error::Error for UnwindError {}

/// What a step found besides the caller's registers (see [`FrameWalker::unwind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepInfo {
    /// How the caller's registers were found.
    pub trust: Trust,
    /// Windows' establisher frame or DWARF's CFA of the unwound frame.
    pub frame: u64,
    /// The unwound frame's handler, when one applies at the pc.
    pub handler: Option<Handler>,
    /// How to look up the caller's pc: `Exact` after a machine/trap/signal frame.
    pub caller_pc: PcKind,
}

impl Step {
    /// A step from the caller's registers, the context pointers and what [`FrameWalker::unwind`] said.
    #[inline]
    pub fn from_parts(regs: Regs, pointers: ContextPointers, info: StepInfo) -> Step {
        Step {
            regs,
            trust: info.trust,
            frame: info.frame,
            pointers,
            handler: info.handler,
            caller_pc: info.caller_pc,
        }
    }

    /// Moves the step into a caller's in-place state, as [`FrameWalker::unwind`] leaves it:
    /// `regs` becomes the caller's registers, `pointers` takes the ones this step recorded.
    #[inline]
    pub fn into_place(self, regs: &mut Regs, pointers: Option<&mut ContextPointers>) -> StepInfo {
        if let Some(p) = pointers {
            p.merge(&self.pointers);
        }
        let info = self.info();
        *regs = self.regs;
        info
    }

    /// What the step found besides the registers.
    #[inline]
    pub fn info(&self) -> StepInfo {
        StepInfo {
            trust: self.trust,
            frame: self.frame,
            handler: self.handler,
            caller_pc: self.caller_pc,
        }
    }
}

/// Unwinds one frame: from a frame's registers and the thread's memory to its caller's registers.
///
/// Implemented by the PE unwinder (`.pdata`/`.xdata`), DWARF CFI, the kernel's ORC tables and the
/// frame-pointer and scan fallbacks. Implementations must not allocate per step and must bound
/// every loop over their input.
///
/// [`FrameWalker::unwind`] is the primitive: it rewrites a register set in place, the way
/// `RtlVirtualUnwind` does, so a walk moves no more than it must (a [`Regs`] with its xmm file
/// is 400 bytes, and [`ContextPointers`] another 264). [`FrameWalker::step`] is the convenient
/// form that leaves its input alone and returns everything.
pub trait FrameWalker {
    /// Unwinds in place: `regs` holds the frame's registers and, on success, the caller's
    /// (unknown where they could not be recovered). `pointers`, when given, is updated for each
    /// register the step restores from memory and left alone for the rest, as
    /// `RtlVirtualUnwind` does, so one set carried through a walk says where every register's
    /// current value lives; skipping them is cheaper. On error the contents of `regs` and
    /// `pointers` are unspecified: a caller that falls back keeps a copy.
    fn unwind(
        &self,
        regs: &mut Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
        pointers: Option<&mut ContextPointers>,
    ) -> Result<StepInfo, UnwindError>;

    /// The rule at `pc` as a [`crate::CompactRule`], when it reduces to one, for caches keyed by
    /// pc; `None` (the default) when it does not or the walker does not say. Applying the rule
    /// to memory like `mem` must give what [`FrameWalker::unwind`] gives at that pc whenever
    /// its reads succeed. `mem` is only for values the loader fixed before the code ran (a
    /// DWARF personality routine read through its GOT slot), which the rule keeps.
    fn rule(&self, pc: u64, pc_kind: PcKind, mem: &dyn MemoryReader) -> Option<crate::CompactRule> {
        let _ = (pc, pc_kind, mem);
        None
    }

    /// Unwinds the frame whose registers are `regs`; `pc_kind` says how to look up its pc.
    fn step(
        &self,
        regs: &Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> Result<Step, UnwindError> {
        let mut caller = regs.clone();
        let mut pointers = ContextPointers::new();
        let info = self.unwind(&mut caller, pc_kind, mem, Some(&mut pointers))?;
        Ok(Step::from_parts(caller, pointers, info))
    }
}

impl<W: FrameWalker + ?Sized> FrameWalker for &W {
    #[inline]
    fn unwind(
        &self,
        regs: &mut Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
        pointers: Option<&mut ContextPointers>,
    ) -> Result<StepInfo, UnwindError> {
        (**self).unwind(regs, pc_kind, mem, pointers)
    }

    fn step(
        &self,
        regs: &Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> Result<Step, UnwindError> {
        (**self).step(regs, pc_kind, mem)
    }

    fn rule(&self, pc: u64, pc_kind: PcKind, mem: &dyn MemoryReader) -> Option<crate::CompactRule> {
        (**self).rule(pc, pc_kind, mem)
    }
}

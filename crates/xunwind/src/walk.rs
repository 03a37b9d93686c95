//! Whole-stack walks: unwind info first, then the frame pointer, then a scan.

use crate::space::{AddressSpace, Module, ModuleId};
use xunwind_core::{MemoryError, MemoryReader, PcKind, Reg, Regs, Trust, UnwindError};

/// Why a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// A zero return address: the conventional end of a stack.
    EndOfStack,
    /// The frame limit was reached.
    FrameLimit,
    /// The caller's stack pointer was not above the callee's: a corrupt or cyclic stack.
    StackNotIncreasing,
    /// Memory the walk needed could not be read.
    Unreadable(MemoryError),
    /// No method could find a caller.
    NoCaller,
    /// The registers lacked the instruction or stack pointer.
    MissingRegisters,
    /// The caller's pc lies in no module and in no readable memory: the unwind went astray
    /// (or the dump lacks the module), so nothing past it can be trusted.
    UnmappedReturnAddress(u64),
}

impl StopReason {
    /// A short name for output (`end_of_stack`, `frame_limit`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::EndOfStack => "end_of_stack",
            StopReason::FrameLimit => "frame_limit",
            StopReason::StackNotIncreasing => "stack_not_increasing",
            StopReason::Unreadable(_) => "unreadable_memory",
            StopReason::NoCaller => "no_caller",
            StopReason::MissingRegisters => "missing_registers",
            StopReason::UnmappedReturnAddress(_) => "unmapped_return_address",
        }
    }
}

/// One frame of a walk.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Frame 0: the context's rip; later frames: the return address as read (not minus one).
    pub pc: u64,
    /// The frame's stack pointer.
    pub sp: u64,
    /// How the frame was found.
    pub trust: Trust,
    /// The module holding the pc.
    pub module: Option<ModuleId>,
    /// The frame's registers (unknown where they could not be recovered).
    pub regs: Regs,
}

/// A finished walk: the frames found, and why it stopped.
#[derive(Clone, Debug)]
pub struct Walk {
    /// Frames, innermost first.
    pub frames: Vec<Frame>,
    /// Why there are no more.
    pub stop: StopReason,
}

/// Options of [`StackWalker`].
#[derive(Clone, Copy, Debug)]
pub struct StackWalker {
    /// Most frames to return.
    pub max_frames: usize,
    /// Fall back to the rbp chain when unwind info is missing or fails.
    pub frame_pointer: bool,
    /// Fall back to scanning the stack for return addresses into executable code (off for
    /// kernel stacks, where it finds stale addresses).
    pub scan: bool,
    /// How many stack words a scan looks at.
    pub scan_words: usize,
}

impl Default for StackWalker {
    fn default() -> Self {
        StackWalker {
            max_frames: 1024,
            frame_pointer: true,
            scan: true,
            scan_words: 512,
        }
    }
}

impl StackWalker {
    /// Walks the stack whose innermost frame has registers `regs`.
    pub fn walk(&self, space: &AddressSpace<'_>, regs: &Regs, mem: &dyn MemoryReader) -> Walk {
        let mut frames = Vec::new();
        let (Some(pc), Some(sp)) = (regs.rip(), regs.rsp()) else {
            return Walk {
                frames,
                stop: StopReason::MissingRegisters,
            };
        };
        // The module owning each frame's pc is found once: it names the frame and unwinds it.
        let mut module = space.module_at(pc).map(|(id, _)| id);
        frames.push(Frame {
            pc,
            sp,
            trust: Trust::Context,
            module,
            regs: regs.clone(),
        });
        // `cur` is unwound in place; the frame just pushed keeps the registers a fallback
        // needs when the unwind fails half-way.
        let mut cur = regs.clone();
        let mut kind = PcKind::Exact;
        let stop = loop {
            if frames.len() >= self.max_frames {
                break StopReason::FrameLimit;
            }
            let last = frames.last().expect("frame 0 was pushed");
            let (pc, sp) = (last.pc, last.sp);
            let owner = module.and_then(|id| space.module(id));
            let (next_kind, trust) = match self.step(space, owner, &mut cur, &last.regs, kind, mem)
            {
                Ok(s) => s,
                Err(stop) => break stop,
            };
            let Some(nsp) = cur.rsp() else {
                break StopReason::MissingRegisters;
            };
            // Unwind info that leaves the caller's pc undefined marks the outermost frame
            // (DWARF's undefined return-address column, as in glibc's _start).
            let Some(npc) = cur.rip() else {
                break StopReason::EndOfStack;
            };
            if npc == 0 {
                break StopReason::EndOfStack;
            }
            module = space
                .module_at(next_kind.lookup_address(npc))
                .map(|(id, _)| id);
            if module.is_none() && mem.read(npc, &mut [0u8]).is_err() {
                break StopReason::UnmappedReturnAddress(npc);
            }
            // The stack grows down, so callers live higher; equal or lower means a loop,
            // except across a trap frame, which may switch stacks.
            if nsp <= sp && !(next_kind == PcKind::Exact && npc != pc) {
                break StopReason::StackNotIncreasing;
            }
            frames.push(Frame {
                pc: npc,
                sp: nsp,
                trust,
                module,
                regs: cur.clone(),
            });
            kind = next_kind;
        };
        Walk { frames, stop }
    }

    /// Unwinds `cur` (whose registers are also `regs`, kept intact) into its caller's.
    fn step(
        &self,
        space: &AddressSpace<'_>,
        owner: Option<&Module<'_>>,
        cur: &mut Regs,
        regs: &Regs,
        kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> Result<(PcKind, Trust), StopReason> {
        regs.rip().ok_or(StopReason::MissingRegisters)?;
        let sp = regs.rsp().ok_or(StopReason::MissingRegisters)?;
        let mut last_err = StopReason::NoCaller;
        if let Some(m) = owner {
            match m.walker.unwind(cur, kind, mem, None) {
                Ok(s) => return Ok((s.caller_pc, s.trust)),
                Err(UnwindError::Memory(e)) => last_err = StopReason::Unreadable(e),
                Err(_) => {}
            }
        }
        if self.frame_pointer {
            if let Some(r) = frame_pointer_step(space, regs, sp, mem) {
                *cur = r;
                return Ok((PcKind::ReturnAddress, Trust::FramePointer));
            }
        }
        if self.scan {
            for i in 0..self.scan_words as u64 {
                let at = sp.wrapping_add(8 * i);
                let Ok(v) = mem.read_u64(at) else { break };
                if space.is_code(v) {
                    let mut r = callee_saved_only(regs);
                    r.set_rip(v);
                    r.set(Reg::Rsp, at.wrapping_add(8));
                    *cur = r;
                    return Ok((PcKind::ReturnAddress, Trust::Scan));
                }
            }
        }
        Err(last_err)
    }
}

/// The caller's view of the registers after a call: volatile ones are unknown.
fn callee_saved_only(regs: &Regs) -> Regs {
    let mut r = regs.clone();
    for v in [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
    ] {
        r.invalidate(v);
    }
    r
}

/// `push rbp; mov rbp, rsp` frames: [rbp] is the caller's rbp, [rbp+8] the return address.
fn frame_pointer_step(
    space: &AddressSpace<'_>,
    regs: &Regs,
    sp: u64,
    mem: &dyn MemoryReader,
) -> Option<Regs> {
    let bp = regs.get(Reg::Rbp)?;
    if bp < sp || bp % 8 != 0 {
        return None;
    }
    let ra = mem.read_u64(bp.checked_add(8)?).ok()?;
    let caller_bp = mem.read_u64(bp).ok()?;
    // Without unwind info the chain is a guess: only follow it into code we know.
    if !space.is_code(ra) {
        return None;
    }
    let mut r = callee_saved_only(regs);
    r.set_rip(ra);
    r.set(Reg::Rsp, bp + 16);
    r.set(Reg::Rbp, caller_bp);
    Some(r)
}

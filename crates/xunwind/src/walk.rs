//! Whole-stack walks: unwind info first, then the frame pointer, then a scan.

use crate::space::{AddressSpace, Module, ModuleId};
use core::fmt;
use xunwind_core::{
    CompactRule, MemoryError, MemoryReader, PcKind, Reg, Regs, SpanReader, Trust, UnwindError,
};

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

/// Compact rules of recently walked pcs, for walks that repeat (profilers, debuggers stepping):
/// a hit skips the module lookup and the unwind-table lookups, and applies the rule in place.
///
/// Two-way set-associative (two pcs that hash alike both stay), keyed by pc and how it is
/// looked up; filled from [`FrameWalker::rule`] and
/// emptied when used with another [`AddressSpace`] or after the space changed. Results are the
/// same as [`StackWalker::walk`]'s (a rule whose reads fail defers to the module's unwinder).
/// One cache serves one process: a rule may keep a value the loader fixed in its memory (a
/// DWARF personality routine's GOT slot), as the unwinders' own caches do.
///
/// [`FrameWalker::rule`]: xunwind_core::FrameWalker::rule
#[derive(Clone)]
pub struct WalkCache {
    /// The space (id, generation) the entries were filled from.
    owner: (u64, u64),
    /// `63 - log2(sets)`: the hash's top bits index the sets of two slots (shifted once by
    /// one more, as a one-set cache would need a shift by 64, which is no shift).
    shift: u32,
    entries: Box<[Entry]>,
}

/// One slot: two cache lines, the key and the rule's hot fields in the first.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    pc: u64,
    /// The module's index shifted left by 2, bit 0 "exact", bit 1 "live".
    meta: u64,
    rule: Option<CompactRule>,
}

const EMPTY: Entry = Entry {
    pc: 0,
    meta: 0,
    rule: None,
};

impl Entry {
    #[inline(always)]
    fn flags(&self) -> u8 {
        (self.meta & 3) as u8
    }

    #[inline(always)]
    fn module(&self) -> ModuleId {
        ModuleId((self.meta >> 2) as usize)
    }
}

impl Default for WalkCache {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl fmt::Debug for WalkCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalkCache")
            .field("slots", &self.entries.len())
            .field("live", &self.len())
            .finish()
    }
}

impl WalkCache {
    /// A cache of 1024 pcs.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache of at least `slots` pcs (rounded up to a power of two, at least 2, at most
    /// 2^20).
    pub fn with_capacity(slots: usize) -> Self {
        let n = slots.clamp(2, 1 << 20).next_power_of_two();
        WalkCache {
            owner: (0, 0),
            shift: 63 - (n / 2).trailing_zeros(),
            entries: vec![EMPTY; n].into_boxed_slice(),
        }
    }

    /// Number of pcs held.
    pub fn len(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.flags() & LIVE != 0)
            .count()
    }

    /// Whether no pc is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every pc.
    pub fn clear(&mut self) {
        self.entries.fill(EMPTY);
    }

    /// The rule this cache holds for `pc` (looked up as `kind` says), if it was filled from
    /// `space` as it is now: a debugger's "which rule covers this pc" without a table lookup.
    ///
    /// `None` when the pc is not held, when its module's walker gave no [`CompactRule`] for it,
    /// or when the cache was last used with another space or before `space` changed (it never
    /// answers with another space's rule). Probing does not fill: see [`WalkCache::fill`].
    #[inline]
    pub fn rule(&self, space: &AddressSpace<'_>, pc: u64, kind: PcKind) -> Option<&CompactRule> {
        if self.owner != (space.id(), space.generation()) {
            return None;
        }
        let (set, _) = self.set(pc);
        let flags = key_flags(kind);
        let e = self.entries.get(set..set + 2)?;
        let e = e.iter().find(|e| e.pc == pc && e.flags() == flags)?;
        e.rule.as_ref()
    }

    /// The module owning `pc` (looked up as `kind` says) and the rule its walker gives there,
    /// from the cache or, on a miss, from the module (and then kept, evicting the slot's
    /// previous pc). `mem` is the process's memory, for values a rule keeps (see
    /// [`FrameWalker::rule`]). `None` when no module owns the pc. Starts over when the cache
    /// was last used with another space or before `space` changed.
    ///
    /// [`FrameWalker::rule`]: xunwind_core::FrameWalker::rule
    pub fn fill(
        &mut self,
        space: &AddressSpace<'_>,
        pc: u64,
        kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> Option<(ModuleId, Option<&CompactRule>)> {
        self.own(space);
        let (module, rule) = self.find(space, pc, kind, mem);
        Some((module?, rule))
    }

    /// Empties the cache if it was filled from another space or state of `space`.
    #[inline]
    fn own(&mut self, space: &AddressSpace<'_>) {
        let owner = (space.id(), space.generation());
        if self.owner != owner {
            self.clear();
            self.owner = owner;
        }
    }

    /// The module owning `pc` (looked up as `kind` says) and its rule, filling the slot on a
    /// miss. The caller has called [`WalkCache::own`].
    #[inline]
    fn find(
        &mut self,
        space: &AddressSpace<'_>,
        pc: u64,
        kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> (Option<ModuleId>, Option<&CompactRule>) {
        if let Some(i) = self.way(pc, key_flags(kind)) {
            // Indexed here, not in `way`: a borrow returned from there would also cover the
            // miss path.
            let e = &self.entries[i];
            return (Some(e.module()), e.rule.as_ref());
        }
        self.fill_slot(space, pc, kind, mem)
    }

    /// The slot holding `pc` with `flags`, if one does.
    #[inline(always)]
    fn way(&self, pc: u64, flags: u8) -> Option<usize> {
        let (set, _) = self.set(pc);
        let hit = |i: usize| {
            let e = self.entries.get(i)?;
            (e.pc == pc && e.flags() == flags).then_some(i)
        };
        hit(set).or_else(|| hit(set + 1))
    }

    /// A miss: the module's answer, kept in a free slot of the pc's set, else in the one a
    /// bit of its hash picks.
    #[inline(never)]
    fn fill_slot(
        &mut self,
        space: &AddressSpace<'_>,
        pc: u64,
        kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> (Option<ModuleId>, Option<&CompactRule>) {
        let Some((id, m)) = space.module_at(kind.lookup_address(pc)) else {
            return (None, None);
        };
        let (set, pick) = self.set(pc);
        let free = |i: usize| self.entries.get(i).is_some_and(|e| e.flags() & LIVE == 0);
        let i = if free(set) {
            set
        } else if free(set + 1) {
            set + 1
        } else {
            set + pick
        };
        let Some(e) = self.entries.get_mut(i) else {
            return (Some(id), None);
        };
        // Module indices are vector positions: far below 2^62.
        *e = Entry {
            pc,
            meta: (id.0 as u64) << 2 | u64::from(key_flags(kind)),
            rule: m.walker.rule(pc, kind, mem),
        };
        (Some(id), e.rule.as_ref())
    }

    /// The first slot of `pc`'s set, and which of its two slots a full set gives up for it.
    #[inline(always)]
    fn set(&self, pc: u64) -> (usize, usize) {
        let h = pc.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (2 * (h >> 1 >> self.shift) as usize, (h >> 31) as usize & 1)
    }
}

/// Frames allocated up front: most stacks fit, so a walk does not copy its frames (~430 bytes
/// each) while growing.
const INITIAL_FRAMES: usize = 64;

const EXACT: u8 = 1;
const LIVE: u8 = 2;

/// The flags of a live entry for a pc looked up as `kind` says.
#[inline]
fn key_flags(kind: PcKind) -> u8 {
    LIVE | if kind == PcKind::Exact { EXACT } else { 0 }
}

/// Where a frame's module and rule come from: the cache when there is one, else the space.
struct Lookup<'c> {
    cache: Option<&'c mut WalkCache>,
}

impl Lookup<'_> {
    /// The module owning `pc` (looked up as `kind` says) and its cached rule.
    #[inline]
    fn find(
        &mut self,
        space: &AddressSpace<'_>,
        pc: u64,
        kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> (Option<ModuleId>, Option<&CompactRule>) {
        match self.cache.as_deref_mut() {
            Some(cache) => cache.find(space, pc, kind, mem),
            None => (
                space.module_at(kind.lookup_address(pc)).map(|(id, _)| id),
                None,
            ),
        }
    }
}

/// Receives a walk's frames.
trait Sink {
    fn push(&mut self, pc: u64, sp: u64, trust: Trust, module: Option<ModuleId>, regs: &Regs);
    fn len(&self) -> usize;
    /// The last frame's registers, if the sink keeps them.
    fn last_regs(&self) -> Option<&Regs>;
}

impl Sink for Vec<Frame> {
    #[inline]
    fn push(&mut self, pc: u64, sp: u64, trust: Trust, module: Option<ModuleId>, regs: &Regs) {
        Vec::push(
            self,
            Frame {
                pc,
                sp,
                trust,
                module,
                regs: regs.clone(),
            },
        );
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn last_regs(&self) -> Option<&Regs> {
        self.last().map(|f| &f.regs)
    }
}

/// Only the pcs, for profilers.
struct Pcs<'v>(&'v mut Vec<u64>, usize);

impl Sink for Pcs<'_> {
    #[inline]
    fn push(&mut self, pc: u64, _: u64, _: Trust, _: Option<ModuleId>, _: &Regs) {
        self.0.push(pc);
        self.1 += 1;
    }
    fn len(&self) -> usize {
        self.1
    }
    fn last_regs(&self) -> Option<&Regs> {
        None
    }
}

impl StackWalker {
    /// Walks the stack whose innermost frame has registers `regs`.
    pub fn walk(&self, space: &AddressSpace<'_>, regs: &Regs, mem: &dyn MemoryReader) -> Walk {
        let mut frames = Vec::with_capacity(self.max_frames.min(INITIAL_FRAMES));
        let stop = self.run(space, regs, mem, Lookup { cache: None }, &mut frames);
        Walk { frames, stop }
    }

    /// [`StackWalker::walk`] through `cache`: the same frames and stop reason, faster when the
    /// walk passes pcs the cache has seen.
    pub fn walk_cached(
        &self,
        space: &AddressSpace<'_>,
        regs: &Regs,
        mem: &dyn MemoryReader,
        cache: &mut WalkCache,
    ) -> Walk {
        let mut frames = Vec::with_capacity(self.max_frames.min(INITIAL_FRAMES));
        let stop = self.run(space, regs, mem, Self::lookup(space, cache), &mut frames);
        Walk { frames, stop }
    }

    /// The pcs of [`StackWalker::walk_cached`]'s frames, appended to `pcs` (a profiler's
    /// sample: no register sets are kept), and why the walk stopped.
    pub fn pcs_cached(
        &self,
        space: &AddressSpace<'_>,
        regs: &Regs,
        mem: &dyn MemoryReader,
        cache: &mut WalkCache,
        pcs: &mut Vec<u64>,
    ) -> StopReason {
        self.run(
            space,
            regs,
            mem,
            Self::lookup(space, cache),
            &mut Pcs(pcs, 0),
        )
    }

    fn lookup<'c>(space: &AddressSpace<'_>, cache: &'c mut WalkCache) -> Lookup<'c> {
        cache.own(space);
        Lookup { cache: Some(cache) }
    }

    fn run<S: Sink>(
        &self,
        space: &AddressSpace<'_>,
        regs: &Regs,
        mem: &dyn MemoryReader,
        mut lookup: Lookup<'_>,
        sink: &mut S,
    ) -> StopReason {
        let (Some(mut pc), Some(mut sp)) = (regs.rip(), regs.rsp()) else {
            return StopReason::MissingRegisters;
        };
        // Nearly every read of a walk is of the stack the context's rsp points into: served
        // from its bytes when the reader holds them, the rules' reads compile to slice loads.
        let stack = SpanReader::new(mem, sp);
        let mem = &stack;
        // The module owning each frame's pc is found once: it names the frame and unwinds it.
        let (mut module, mut rule) = lookup.find(space, pc, PcKind::Exact, mem);
        sink.push(pc, sp, Trust::Context, module, regs);
        // `cur` is unwound in place; a failed unwind falls back from the frame's registers as
        // the sink kept them, or from a copy taken before the unwind when it keeps none.
        let mut cur = regs.clone();
        let mut kind = PcKind::Exact;
        loop {
            if sink.len() >= self.max_frames {
                return StopReason::FrameLimit;
            }
            let fast = match rule {
                Some(rule) => rule
                    .apply(&mut cur, mem, None)
                    .map(|i| (i.caller_pc, i.trust)),
                None => None,
            };
            let (next_kind, trust) = match fast {
                Some(s) => s,
                None => {
                    let owner = module.and_then(|id| space.module(id));
                    let r = match sink.last_regs() {
                        Some(last) => self.step(space, owner, &mut cur, last, kind, mem),
                        None => {
                            let last = cur.clone();
                            self.step(space, owner, &mut cur, &last, kind, mem)
                        }
                    };
                    match r {
                        Ok(s) => s,
                        Err(stop) => return stop,
                    }
                }
            };
            let Some(nsp) = cur.rsp() else {
                return StopReason::MissingRegisters;
            };
            // Unwind info that leaves the caller's pc undefined marks the outermost frame
            // (DWARF's undefined return-address column, as in glibc's _start).
            let Some(npc) = cur.rip() else {
                return StopReason::EndOfStack;
            };
            if npc == 0 {
                return StopReason::EndOfStack;
            }
            (module, rule) = lookup.find(space, npc, next_kind, mem);
            if module.is_none() && mem.read(npc, &mut [0u8]).is_err() {
                return StopReason::UnmappedReturnAddress(npc);
            }
            // The stack grows down, so callers live higher; equal or lower means a loop,
            // except across a trap frame, which may switch stacks.
            if nsp <= sp && !(next_kind == PcKind::Exact && npc != pc) {
                return StopReason::StackNotIncreasing;
            }
            sink.push(npc, nsp, trust, module, &cur);
            (pc, sp, kind) = (npc, nsp, next_kind);
        }
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
    r.retain(
        !(Regs::bit(Reg::Rax)
            | Regs::bit(Reg::Rcx)
            | Regs::bit(Reg::Rdx)
            | Regs::bit(Reg::R8)
            | Regs::bit(Reg::R9)
            | Regs::bit(Reg::R10)
            | Regs::bit(Reg::R11)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cache lines per slot, key first.
    #[test]
    fn slot_is_two_cache_lines() {
        assert_eq!(core::mem::size_of::<Entry>(), 128);
        assert_eq!(core::mem::align_of::<Entry>(), 64);
    }

    /// Gives the same compact rule everywhere.
    struct Leaf;

    impl xunwind_core::FrameWalker for Leaf {
        fn unwind(
            &self,
            _: &mut Regs,
            _: PcKind,
            _: &dyn MemoryReader,
            _: Option<&mut xunwind_core::ContextPointers>,
        ) -> Result<xunwind_core::StepInfo, UnwindError> {
            Err(UnwindError::MissingRip)
        }

        fn rule(&self, _: u64, _: PcKind, _: &dyn MemoryReader) -> Option<CompactRule> {
            Some(CompactRule::new(Reg::Rsp, 8, -8, Trust::Pdata))
        }
    }

    /// Two pcs of one set both stay; a third evicts one of them, and every pc is held once.
    #[test]
    fn a_set_holds_two_pcs() {
        let mut space = AddressSpace::new();
        space
            .add_module(crate::Module {
                name: "m".into(),
                base: 0x10000,
                size: 0x10000,
                walker: Box::new(Leaf),
                executable: vec![],
            })
            .unwrap();
        let mem = xunwind_core::SliceMemory::new(0, &[]);
        let mut c = WalkCache::new();
        let set = c.set(0x10000).0;
        let same: Vec<u64> = (0x10001..0x20000u64)
            .filter(|&pc| c.set(pc).0 == set)
            .take(2)
            .collect();
        let (a, b, d) = (0x10000, same[0], same[1]);
        for pc in [a, b] {
            assert!(c.fill(&space, pc, PcKind::Exact, &mem).unwrap().1.is_some());
        }
        let held = |c: &WalkCache, pc| c.rule(&space, pc, PcKind::Exact).is_some();
        assert!(held(&c, a) && held(&c, b));
        assert_ne!(
            c.way(a, key_flags(PcKind::Exact)),
            c.way(b, key_flags(PcKind::Exact))
        );
        // Hits fill nothing.
        c.fill(&space, a, PcKind::Exact, &mem);
        c.fill(&space, b, PcKind::Exact, &mem);
        assert_eq!(c.len(), 2);
        c.fill(&space, d, PcKind::Exact, &mem);
        assert_eq!(c.len(), 2);
        assert!(held(&c, d) && (held(&c, a) != held(&c, b)));
        assert!(!held(&c, a) || !held(&c, b));
        // The other kind of lookup is another key.
        assert!(c.rule(&space, d, PcKind::ReturnAddress).is_none());
    }

    /// Every capacity indexes inside its slots, the smallest included, and uses most sets.
    #[test]
    fn sets_stay_in_bounds() {
        for n in [0, 1, 2, 3, 1024, 1 << 20] {
            let c = WalkCache::with_capacity(n);
            let len = c.entries.len();
            assert!(len >= n.max(2) && len.is_power_of_two());
            let mut seen = vec![false; len];
            for pc in (0..4096u64).map(|i| i.wrapping_mul(0x1234_5678_9abc_def1)) {
                let (set, pick) = c.set(pc);
                assert!(set % 2 == 0 && set + 1 < len && pick < 2);
                seen[set] = true;
            }
            if len <= 1024 {
                assert!(seen.iter().filter(|&&s| s).count() > len / 4, "{n} slots");
            }
        }
    }
}

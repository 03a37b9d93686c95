//! `WalkCache`'s probe (`rule`, `fill`) and the walk's direct reads of the stack span.

mod common;
use common::walk_all_ways;
use xunwind::core::{
    CompactRule, ContextPointers, FrameWalker, MemoryReader, PcKind, RegionMemory, StepInfo,
    UnwindError,
};
use xunwind::{AddressSpace, Module, Reg, Regs, SliceMemory, StackWalker, StopReason, Trust};
use xunwind::{ModuleId, WalkCache};

const BASE: u64 = 0x1_4000_0000;
const STACK: u64 = 0x7000_0000;

/// A module whose every pc unwinds by one rule; the flag says whether the walker gives it
/// as a compact rule too.
struct Fixed(CompactRule, bool);

impl FrameWalker for Fixed {
    fn unwind(
        &self,
        regs: &mut Regs,
        _: PcKind,
        mem: &dyn MemoryReader,
        pointers: Option<&mut ContextPointers>,
    ) -> Result<StepInfo, UnwindError> {
        let rsp = regs.rsp().ok_or(UnwindError::MissingRegister(Reg::Rsp))?;
        // The words the rule reads (saved registers, then the return address), for the
        // exact error.
        for i in 0..=self.0.saved().len() as u64 {
            mem.read_u64(rsp.wrapping_add(8 * i))?;
        }
        self.0
            .apply(regs, mem, pointers)
            .ok_or(UnwindError::MissingRip)
    }

    fn rule(&self, _: u64, _: PcKind, _: &dyn MemoryReader) -> Option<CompactRule> {
        self.1.then_some(self.0)
    }
}

/// `pop rbx; ret`-shaped frames: rbx at [rsp], the return address at [rsp + 8].
fn pop_ret() -> CompactRule {
    CompactRule::new(Reg::Rsp, 16, -8, Trust::Pdata)
        .save(Reg::Rbx, -16)
        .unwrap()
        .with_frame(-16)
}

/// `ret`-shaped frames (a leaf).
fn ret() -> CompactRule {
    CompactRule::new(Reg::Rsp, 8, -8, Trust::Pdata).with_frame(-8)
}

fn module(base: u64, rule: CompactRule, compact: bool) -> Module<'static> {
    Module {
        name: format!("m{base:x}"),
        base,
        size: 0x1000,
        walker: Box::new(Fixed(rule, compact)),
        executable: vec![(base, base + 0x1000)],
    }
}

fn space(rule: CompactRule) -> AddressSpace<'static> {
    let mut s = AddressSpace::new();
    s.add_module(module(BASE, rule, true)).unwrap();
    s
}

fn put(stack: &mut [u8], addr: u64, v: u64) {
    let o = (addr - STACK) as usize;
    stack[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Three `pop rbx; ret` frames, then a zero return address.
fn three_frames() -> (Vec<u8>, Regs) {
    let mut st = vec![0u8; 0x100];
    put(&mut st, STACK + 0x08, BASE + 0x120);
    put(&mut st, STACK + 0x18, BASE + 0x130);
    put(&mut st, STACK + 0x28, 0);
    let mut regs = Regs::with_gprs(BASE + 0x110, [0; 16]);
    regs.set(Reg::Rsp, STACK);
    (st, regs)
}

#[test]
fn probe_hits_what_a_walk_filled_and_misses_the_rest() {
    let sp = space(pop_ret());
    let (st, regs) = three_frames();
    let mem = SliceMemory::new(STACK, &st);
    let mut cache = WalkCache::new();
    assert_eq!(cache.rule(&sp, BASE + 0x110, PcKind::Exact), None, "empty");
    let w = StackWalker::default().walk_cached(&sp, &regs, &mem, &mut cache);
    assert_eq!(w.frames.len(), 3);
    assert_eq!(w.stop, StopReason::EndOfStack);
    assert_eq!(
        cache.rule(&sp, BASE + 0x110, PcKind::Exact),
        Some(&pop_ret())
    );
    assert_eq!(
        cache.rule(&sp, BASE + 0x120, PcKind::ReturnAddress),
        Some(&pop_ret())
    );
    // The same pc looked up the other way, a pc never walked, a pc in no module.
    assert_eq!(cache.rule(&sp, BASE + 0x110, PcKind::ReturnAddress), None);
    assert_eq!(cache.rule(&sp, BASE + 0x120, PcKind::Exact), None);
    assert_eq!(cache.rule(&sp, BASE + 0x140, PcKind::Exact), None);
    assert_eq!(cache.rule(&sp, 0x10, PcKind::Exact), None);
}

#[test]
fn probe_never_answers_for_another_space() {
    let a = space(pop_ret());
    // Same module address, same generation, another rule.
    let b = space(ret());
    assert_eq!(a.generation(), b.generation());
    let (st, regs) = three_frames();
    let mem = SliceMemory::new(STACK, &st);
    let mut cache = WalkCache::new();
    StackWalker::default().walk_cached(&a, &regs, &mem, &mut cache);
    assert!(cache.rule(&a, BASE + 0x110, PcKind::Exact).is_some());
    assert_eq!(cache.rule(&b, BASE + 0x110, PcKind::Exact), None);
    // Filling for `b` starts over: `a`'s rules are gone, `b`'s are answered.
    let (id, rule) = cache
        .fill(&b, BASE + 0x110, PcKind::Exact, &mem)
        .expect("a module owns the pc");
    assert_eq!(id, b.module_at(BASE).unwrap().0);
    assert_eq!(rule, Some(&ret()));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.rule(&b, BASE + 0x110, PcKind::Exact), Some(&ret()));
    assert_eq!(cache.rule(&a, BASE + 0x110, PcKind::Exact), None);
}

#[test]
fn probe_misses_after_the_space_changes() {
    let mut sp = space(pop_ret());
    let (st, regs) = three_frames();
    let mem = SliceMemory::new(STACK, &st);
    let mut cache = WalkCache::new();
    StackWalker::default().walk_cached(&sp, &regs, &mem, &mut cache);
    assert!(cache.rule(&sp, BASE + 0x110, PcKind::Exact).is_some());
    sp.add_module(module(BASE + 0x1000, ret(), false)).unwrap();
    assert_eq!(cache.rule(&sp, BASE + 0x110, PcKind::Exact), None);
    // Refilled from the changed space; a module without compact rules is held without one.
    StackWalker::default().walk_cached(&sp, &regs, &mem, &mut cache);
    assert_eq!(
        cache.rule(&sp, BASE + 0x110, PcKind::Exact),
        Some(&pop_ret())
    );
    let got: Option<(ModuleId, Option<&CompactRule>)> =
        cache.fill(&sp, BASE + 0x1010, PcKind::Exact, &mem);
    assert_eq!(got.map(|(_, r)| r), Some(None));
    assert_eq!(cache.rule(&sp, BASE + 0x1010, PcKind::Exact), None);
    assert!(cache.fill(&sp, 0x10, PcKind::Exact, &mem).is_none());
}

/// A stack split over two adjacent regions, with a return address and a saved rbx each
/// straddling the seam: the walk's direct reads of the first region must hand those reads to
/// the region reader, which stitches them, and walk exactly as the plain walk does.
#[test]
fn reads_across_the_stack_span_end_are_stitched() {
    let sp = space(pop_ret());
    let (st, regs) = three_frames();
    let mut st = st;
    put(&mut st, STACK + 0x10, 0x1122_3344_5566_7788);
    for seam in [0x0c, 0x14, 0x1c, 0x20, 0x24] {
        let mut mem = RegionMemory::new();
        mem.add(STACK, st[..seam].to_vec());
        mem.add(STACK + seam as u64, st[seam..].to_vec());
        let w = walk_all_ways(&StackWalker::default(), &sp, &regs, &mem);
        let pcs: Vec<u64> = w.frames.iter().map(|f| f.pc).collect();
        assert_eq!(
            pcs,
            [BASE + 0x110, BASE + 0x120, BASE + 0x130],
            "seam {seam:#x}"
        );
        assert_eq!(w.stop, StopReason::EndOfStack);
        assert_eq!(w.frames[2].regs.get(Reg::Rbx), Some(0x1122_3344_5566_7788));
        // With a hole instead of a seam, the read fails: the same way every way.
        let mut hole = RegionMemory::new();
        hole.add(STACK, st[..seam].to_vec());
        hole.add(STACK + seam as u64 + 8, st[seam + 8..].to_vec());
        let w = walk_all_ways(&StackWalker::default(), &sp, &regs, &hole);
        assert!(
            w.frames.len() < 3
                || w.stop != StopReason::EndOfStack
                || w.frames[2].regs.get(Reg::Rbx) != Some(0x1122_3344_5566_7788),
            "seam {seam:#x}"
        );
    }
}

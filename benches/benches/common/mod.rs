//! The two walk loops both whole-walk benchmarks time (`walk`: PE, `dwarf_walk`: DWARF): the
//! stacks are the same type, so the loops are too.

use criterion::measurement::Measurement;
use criterion::{black_box, BenchmarkGroup};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{FrameAddress, Unwinder};
use xunwind::core::{PcKind, Reg, SliceMemory};
use xunwind::{AddressSpace, StackWalker, WalkCache};
use xunwind_benches::stacks::{PeStack, STACK_BASE};

/// Frames per stack.
pub const FRAMES: usize = 32;

/// framehop's walk: the pcs of every frame, innermost first.
pub fn framehop_walk(
    unwinder: &UnwinderX86_64<&[u8]>,
    cache: &mut CacheX86_64,
    stack: &PeStack,
) -> Vec<u64> {
    let mem = &stack.stack;
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let o = usize::try_from(addr.checked_sub(STACK_BASE).ok_or(())?).map_err(|_| ())?;
        let b = mem.get(o..o.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
    };
    let pc = stack.regs.rip().unwrap_or(0);
    let mut regs = UnwindRegsX86_64::new(
        pc,
        stack.regs.rsp().unwrap_or(0),
        stack.regs.get(Reg::Rbp).unwrap_or(0),
    );
    let mut pcs = Vec::with_capacity(FRAMES);
    pcs.push(pc);
    let mut addr = FrameAddress::from_instruction_pointer(pc);
    // Bounded like xunwind's walk: a frame limit.
    while pcs.len() < 2 * FRAMES {
        match unwinder.unwind_frame(addr, &mut regs, cache, &mut read_stack) {
            Ok(Some(ra)) => {
                pcs.push(ra);
                match FrameAddress::from_return_address(ra) {
                    Some(a) => addr = a,
                    None => break,
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    pcs
}

/// xunwind's unwinders run directly (`FrameWalker::unwind` in place, no context pointers),
/// collecting only the pcs as framehop does: the cost of the lookups and unwinds without
/// `StackWalker`'s per-frame register sets and fallbacks.
pub fn xunwind_steps(space: &AddressSpace<'_>, stack: &PeStack, mem: &SliceMemory<'_>) -> Vec<u64> {
    let mut regs = stack.regs.clone();
    let mut kind = PcKind::Exact;
    let mut pcs = Vec::with_capacity(FRAMES);
    pcs.push(regs.rip().unwrap_or(0));
    while pcs.len() < 2 * FRAMES {
        let pc = regs.rip().unwrap_or(0);
        let Some((_, m)) = space.module_at(kind.lookup_address(pc)) else {
            break;
        };
        let Ok(step) = m.walker.unwind(&mut regs, kind, mem, None) else {
            break;
        };
        kind = step.caller_pc;
        match regs.rip() {
            Some(0) | None => break,
            Some(pc) => pcs.push(pc),
        }
    }
    pcs
}

/// The cache probe alone: how many of a stack's pcs (frame 0 exact, then return addresses)
/// `cache` holds a rule for.
#[inline(never)]
pub fn probe_all(space: &AddressSpace<'_>, cache: &WalkCache, pcs: &[u64]) -> usize {
    let mut kind = PcKind::Exact;
    let mut hits = 0;
    for &pc in pcs {
        hits += usize::from(cache.rule(space, pc, kind).is_some());
        kind = PcKind::ReturnAddress;
    }
    hits
}

/// The warm groups' lines over `stacks` (one stack, or many cycled through), the same for PE and
/// DWARF: `xunwind` (`walk`), `xunwind_cached`, `xunwind_pcs`, `probe` (the cache probe alone),
/// `xunwind_steps` and `framehop` with its cache kept across iterations.
pub fn warm_lines<M: Measurement>(
    g: &mut BenchmarkGroup<'_, M>,
    group: &str,
    space: &AddressSpace<'_>,
    unwinder: &UnwinderX86_64<&[u8]>,
    cache: &mut CacheX86_64,
    stacks: &[PeStack],
) {
    let walker = StackWalker::default();
    let n = stacks.len();
    let mems: Vec<_> = stacks.iter().map(|s| s.memory()).collect();
    let mut i = 0usize;
    g.bench_function("xunwind", |b| {
        b.iter(|| {
            let k = i % n;
            i = i.wrapping_add(1);
            black_box(walker.walk(space, black_box(&stacks[k].regs), &mems[k]))
        })
    });
    let mut i = 0usize;
    let mut wcache = WalkCache::new();
    g.bench_function("xunwind_cached", |b| {
        b.iter(|| {
            let k = i % n;
            i = i.wrapping_add(1);
            black_box(walker.walk_cached(space, black_box(&stacks[k].regs), &mems[k], &mut wcache))
        })
    });
    let mut i = 0usize;
    let mut pcs = Vec::with_capacity(2 * FRAMES);
    g.bench_function("xunwind_pcs", |b| {
        b.iter(|| {
            let k = i % n;
            i = i.wrapping_add(1);
            pcs.clear();
            let stop = walker.pcs_cached(
                space,
                black_box(&stacks[k].regs),
                &mems[k],
                &mut wcache,
                &mut pcs,
            );
            black_box((stop, pcs.len()))
        })
    });
    let mut i = 0usize;
    // The walk lines left the cache as a run of them does; filtered to this line, fill
    // it the same way.
    for (s, m) in stacks.iter().zip(&mems) {
        walker.pcs_cached(space, &s.regs, m, &mut wcache, &mut pcs);
    }
    let held: usize = stacks
        .iter()
        .map(|s| probe_all(space, &wcache, &s.pcs))
        .sum();
    eprintln!(
        "{group}: the cache holds rules for {held} of {} pcs",
        n * FRAMES
    );
    g.bench_function("probe", |b| {
        b.iter(|| {
            let k = i % n;
            i = i.wrapping_add(1);
            black_box(probe_all(space, &wcache, black_box(&stacks[k].pcs)))
        })
    });
    let mut i = 0usize;
    g.bench_function("xunwind_steps", |b| {
        b.iter(|| {
            let k = i % n;
            i = i.wrapping_add(1);
            black_box(xunwind_steps(space, black_box(&stacks[k]), &mems[k]))
        })
    });
    let mut i = 0usize;
    g.bench_function("framehop", |b| {
        b.iter(|| {
            let k = i % n;
            i = i.wrapping_add(1);
            black_box(framehop_walk(unwinder, cache, black_box(&stacks[k])))
        })
    });
}

//! Shared by the walk tests: every walk is also run through a [`WalkCache`], cold and warm, and
//! as a profiler's pc list, and must come out the same each way.

use xunwind::core::{MemoryReader, Regs};
use xunwind::{AddressSpace, StackWalker, Walk, WalkCache};

/// `walker.walk(...)`, checked against the cached walks (a tiny cache too, so slots collide).
pub fn walk_all_ways(
    walker: &StackWalker,
    space: &AddressSpace<'_>,
    regs: &Regs,
    mem: &dyn MemoryReader,
) -> Walk {
    let walk = walker.walk(space, regs, mem);
    let want = format!("{:?}", (&walk.frames, walk.stop));
    for mut cache in [WalkCache::new(), WalkCache::with_capacity(2)] {
        for round in ["cold", "warm"] {
            let cached = walker.walk_cached(space, regs, mem, &mut cache);
            assert_eq!(
                format!("{:?}", (&cached.frames, cached.stop)),
                want,
                "walk_cached ({round} cache) differs from walk"
            );
            let mut pcs = Vec::new();
            let stop = walker.pcs_cached(space, regs, mem, &mut cache, &mut pcs);
            let want_pcs: Vec<u64> = walk.frames.iter().map(|f| f.pc).collect();
            assert_eq!(
                (pcs, stop),
                (want_pcs, walk.stop),
                "pcs_cached ({round} cache)"
            );
        }
    }
    walk
}

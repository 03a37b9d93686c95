//! Whole 32-frame stack walks over a realistic module map (Wine's PE DLLs, each at its own
//! base), xunwind's `StackWalker` against framehop's x86_64 unwinder on the same stacks.
//!
//! Stacks come from `xunwind_benches::stacks`: real return addresses in real push/alloc-only
//! functions, laid out as their unwind codes say. Setup asserts that both unwinders find exactly
//! the intended 32 frames before anything is timed. Throughput is per frame.
//!
//! Lines: `xunwind` is `StackWalker::walk` (default options; returns every frame's full
//! register set) over `PeUnwinder`s, whose compiled rules are warm after the first walk;
//! `xunwind_cached` is `StackWalker::walk_cached` with one `WalkCache` kept across iterations
//! (the same frames, full register sets included); `xunwind_pcs` is `pcs_cached` with the same
//! cache (only the pcs, a profiler's sample: framehop's output); `probe` is the cache probe
//! alone (`WalkCache::rule` on each of the stack's pcs, with the cache those lines left: the
//! cost of a hit without applying the rule);
//! `framehop` calls `unwind_frame` frame by frame with one `CacheX86_64` kept across
//! iterations (warm), collecting the pcs into a `Vec`; `xunwind_steps` steps each module's
//! `FrameWalker` directly and collects only the pcs, the same work framehop's line does.
//! Groups: `one_stack` walks the same stack every time (every cache hot), `many_stacks` cycles
//! through 64 stacks (2048 frames from up to 2048 functions, more than framehop's rule cache
//! holds).
//!
//! Stacks framehop walks differently from xunwind are not timed; setup prints how many there
//! were and at which frame they first differed.
//!
//! The DLLs come from the corpus (`corpus/fetch wine`); without them the benchmark says so and
//! does nothing.

mod common;
use common::{framehop_walk, xunwind_steps, FRAMES};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use framehop::x86_64::{CacheX86_64, UnwinderX86_64};
use framehop::{ModuleSectionInfo, Unwinder};
use std::ops::Range;
use xunwind::{StackWalker, WalkCache};
use xunwind_benches::stacks::{
    build_stack, call_sites, pe_space, place, read_dlls, wine_dll_dir, LoadedPe, PeStack,
    SITES_PER_MODULE,
};
use xunwind_benches::SplitMix64;

/// The sections framehop's PE support asks for, as the file holds them.
struct PeSectionInfo<'a> {
    image_base: u64,
    pdata: Option<&'a [u8]>,
    /// (name, rva range, raw bytes) of each section.
    sections: Vec<([u8; 8], Range<u32>, &'a [u8])>,
}

impl<'a> PeSectionInfo<'a> {
    fn new(data: &'a [u8], m: &LoadedPe<'a>) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
        let pe = u32_at(0x3c) as usize;
        let count = u16_at(pe + 6);
        let table = pe + 24 + u16_at(pe + 20);
        let sections = (0..count)
            .map(|i| {
                let h = table + 40 * i;
                let name: [u8; 8] = data[h..h + 8].try_into().unwrap();
                let (vsize, va) = (u32_at(h + 8), u32_at(h + 12));
                let (raw_size, raw_off) = (u32_at(h + 16) as usize, u32_at(h + 20) as usize);
                let len = raw_size.min(vsize as usize);
                let bytes = data.get(raw_off..raw_off + len).unwrap_or(&[]);
                (name, va..va + len as u32, bytes)
            })
            .collect();
        let (pd_rva, pd_size) = m.image.pdata_directory();
        let pdata = m.image.bytes_at(pd_rva).get(..pd_size as usize);
        PeSectionInfo {
            image_base: m.image.image_base(),
            pdata,
            sections,
        }
    }

    fn section(&self, name: &[u8]) -> Option<&([u8; 8], Range<u32>, &'a [u8])> {
        self.sections
            .iter()
            .find(|(n, _, _)| n.split(|&b| b == 0).next() == Some(name))
    }
}

impl<'a> ModuleSectionInfo<&'a [u8]> for PeSectionInfo<'a> {
    fn base_svma(&self) -> u64 {
        self.image_base
    }
    fn section_svma_range(&mut self, name: &[u8]) -> Option<Range<u64>> {
        let (_, r, _) = self.section(name)?;
        Some(self.image_base + u64::from(r.start)..self.image_base + u64::from(r.end))
    }
    fn section_data(&mut self, name: &[u8]) -> Option<&'a [u8]> {
        if name == b".pdata" {
            return self.pdata;
        }
        self.section(name).map(|&(_, _, b)| b)
    }
}

fn bench(c: &mut Criterion) {
    let files = read_dlls(&wine_dll_dir(), usize::MAX);
    if files.is_empty() {
        eprintln!(
            "walk bench skipped: no DLLs in {} (run corpus/fetch wine)",
            wine_dll_dir().display()
        );
        return;
    }
    let modules = place(&files);
    let space = pe_space(&modules);
    let mut unwinder: UnwinderX86_64<&[u8]> = UnwinderX86_64::new();
    for m in &modules {
        let data = &files
            .iter()
            .find(|(n, _)| *n == m.name)
            .expect("placed from files")
            .1;
        let size = u64::from(m.image.size_of_image());
        unwinder.add_module(framehop::Module::new(
            m.name.clone(),
            m.base..m.base + size,
            m.base,
            PeSectionInfo::new(data, m),
        ));
    }
    let mut sites = call_sites(&modules, SITES_PER_MODULE);
    let pool = sites.len();
    let mut rng = SplitMix64::new(0x5eed_0005);
    let mut cache = CacheX86_64::new();
    // Stacks on which framehop finds other frames than xunwind (and the codes) are counted
    // and left out: timing a walk that stops early would flatter it.
    let mut stacks: Vec<PeStack> = Vec::new();
    let mut framehop_wrong: Vec<usize> = Vec::new();
    for _ in 0..512 {
        if stacks.len() == 64 {
            break;
        }
        let s = build_stack(&space, &mut sites, FRAMES, &mut rng).expect("a 32-frame stack");
        let ours = StackWalker::default().walk(&space, &s.regs, &s.memory());
        let pcs: Vec<u64> = ours.frames.iter().map(|f| f.pc).collect();
        assert_eq!(pcs, s.pcs, "xunwind disagrees with a checked stack");
        assert_eq!(xunwind_steps(&space, &s, &s.memory()), s.pcs);
        let mut c = WalkCache::new();
        for _ in 0..2 {
            let mut pcs = Vec::new();
            StackWalker::default().pcs_cached(&space, &s.regs, &s.memory(), &mut c, &mut pcs);
            assert_eq!(pcs, s.pcs, "the cached walk disagrees");
        }
        let fh = framehop_walk(&unwinder, &mut cache, &s);
        let fh = fh.strip_suffix(&[0]).unwrap_or(&fh);
        match fh.iter().zip(&s.pcs).position(|(a, b)| a != b) {
            None if fh.len() == s.pcs.len() => stacks.push(s),
            // The first frame that differs (or is missing).
            d => framehop_wrong.push(d.unwrap_or(fh.len().min(s.pcs.len()))),
        }
    }
    assert_eq!(stacks.len(), 64, "too few stacks framehop walks correctly");
    eprintln!(
        "walk: {} modules, {} call sites ({} dropped as not walking like their codes), {} stacks of {FRAMES} frames; framehop walked {} other stacks wrongly, first wrong frame index: {:?}",
        modules.len(),
        pool,
        pool - sites.len(),
        stacks.len(),
        framehop_wrong.len(),
        framehop_wrong
    );

    for (group, n) in [("pe_walk/one_stack", 1usize), ("pe_walk/many_stacks", 64)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(FRAMES as u64));
        common::warm_lines(&mut g, group, &space, &unwinder, &mut cache, &stacks[..n]);
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

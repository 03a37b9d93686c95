//! Whole 32-frame stack walks over a realistic module map of ELF shared objects (up to 300 of
//! the system's own, each at its own base), xunwind's `StackWalker` over `DwarfUnwinder`s
//! against framehop's x86_64 unwinder (gimli underneath) on the same stacks.
//!
//! Stacks come from `xunwind_benches::elf_stacks`: real return addresses (after real `call`s)
//! in functions whose CFI row there is simple, laid out as the row says. Setup asserts that both
//! xunwind lines find exactly the intended 32 frames before anything is timed; stacks framehop
//! walks differently are counted, printed and left out. Throughput is per frame.
//!
//! Lines: `xunwind` is `StackWalker::walk` (default options; returns every frame's full
//! register set); `xunwind_cached` is `StackWalker::walk_cached` with one `WalkCache` kept
//! across iterations (the same frames, full register sets included); `xunwind_pcs` is
//! `pcs_cached` with the same cache (only the pcs, a profiler's sample: framehop's output);
//! `probe` is the cache probe alone (`WalkCache::rule` on each of the stack's pcs, with the
//! cache those lines left: the cost of a hit without applying the rule); `xunwind_steps` unwinds in place with each module's `FrameWalker::unwind`
//! (no context pointers) and collects only the pcs, the same work framehop's line does; `framehop` calls `unwind_frame` frame by frame
//! with one `CacheX86_64` kept across iterations, collecting the pcs into a `Vec`.
//! Groups: `one_stack` walks the same stack every time (every cache hot, though two of its 32
//! pcs share a slot of framehop's cache); `many_stacks` cycles through 64 stacks (2048 frames
//! over 260 modules: more than framehop's 509-slot cache or a 1024-slot `WalkCache` holds, while
//! xunwind's per-module rule caches, 256 rows each, hold nearly all of them); `cold` cycles
//! through the same 64 stacks with xunwind's rule cache and compiled FDEs off and a fresh
//! framehop cache for every walk (made outside the timed part), so every step finds its FDE and
//! interprets its program up to the pc. The other groups keep compiled FDEs on (the default):
//! the uncached lines (`xunwind`, `xunwind_steps`) then search an FDE's rows.
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! machine shared with other work, wall time also counts the slices other processes ran in,
//! unevenly from one line to the next, which made same-run ratios swing by 2x. Set
//! `XUNWIND_BENCH_WALL=1` to time wall-clock instead.
//!
//! `XUNWIND_INTERLEAVE=<rounds>` also prints medians per frame measured round-robin (each
//! line one batch of 8 x 64 walks in turn, `rounds` times): ratios that every line's share of a
//! noisy machine affects alike.
//!
//! Run: `cargo bench -p xunwind-benches --bench dwarf_walk -- --warm-up-time 1
//! --measurement-time 3`. Override the library directory with `XUNWIND_ELF_DIR`.

mod common;
use common::{framehop_walk, xunwind_steps, FRAMES};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use framehop::x86_64::{CacheX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Unwinder};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xunwind::{AddressSpace, StackWalker, WalkCache};
use xunwind_benches::elf_stacks::{
    build_stack, call_sites, dwarf_space, place, read_shared_objects, system_lib_dir, LoadedElf,
    Stack, SITES_PER_MODULE,
};
use xunwind_benches::SplitMix64;

const MODULES: usize = 300;
const STACKS: usize = 64;

/// The module as framehop takes it: the sections its ELF support reads, at link-time addresses
/// (an ELF's base SVMA is 0; the load bias is the module's base AVMA).
fn framehop_module<'a>(m: &LoadedElf<'a>) -> framehop::Module<&'a [u8]> {
    let l = &m.layout;
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: Some(l.text.range()),
        text: Some(l.text.data),
        got_svma: l.got.map(|(b, e)| b..e),
        eh_frame_svma: Some(l.eh_frame.range()),
        eh_frame: Some(l.eh_frame.data),
        eh_frame_hdr_svma: Some(l.eh_frame_hdr.range()),
        eh_frame_hdr: Some(l.eh_frame_hdr.data),
        ..Default::default()
    };
    framehop::Module::new(m.name.clone(), m.base..m.base + l.size, m.base, info)
}

/// The first frame at which framehop's pcs differ from the intended ones (`None`: the same).
fn framehop_divergence(fh: &[u64], want: &[u64]) -> Option<usize> {
    let fh = fh.strip_suffix(&[0]).unwrap_or(fh);
    match fh.iter().zip(want).position(|(a, b)| a != b) {
        None if fh.len() == want.len() => None,
        d => Some(d.unwrap_or(fh.len().min(want.len()))),
    }
}

/// The calling thread's CPU time, or the wall clock's time when `wall` is set.
struct Clock {
    wall: bool,
    epoch: Instant,
}

impl Clock {
    fn from_env() -> Self {
        Clock {
            wall: std::env::var_os("XUNWIND_BENCH_WALL").is_some(),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        if self.wall {
            return self.epoch.elapsed();
        }
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .expect("CLOCK_THREAD_CPUTIME_ID unavailable");
        Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
    }
}

impl Measurement for Clock {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        self.now()
    }
    fn end(&self, start: Duration) -> Duration {
        self.now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// A line: walks stack `k`.
type Line<'a> = Box<dyn FnMut(usize) + 'a>;

/// Passes over the 64 stacks (or 64 walks of the one stack) per timed batch: the first pass
/// refetches what the other lines' batches evicted from the CPU caches, the rest run as in
/// criterion's steady state.
const PASSES: usize = 8;

/// Every line of a group timed in turn, `rounds` times over, so that all lines see the same
/// machine (other processes come and go on a shared one); prints the median per frame and each
/// line's ratio to framehop. Run with `XUNWIND_INTERLEAVE=<rounds>`.
fn interleaved(
    rounds: usize,
    space: &AddressSpace<'_>,
    cold_space: &AddressSpace<'_>,
    unwinder: &UnwinderX86_64<&[u8]>,
    stacks: &[Stack],
) {
    let clock = Clock::from_env();
    let walker = StackWalker::default();
    let mems: Vec<_> = stacks.iter().map(|s| s.memory()).collect();
    let mems = &mems;
    for (group, n, cold) in [
        ("one_stack", 1usize, false),
        ("many_stacks", STACKS, false),
        ("cold", STACKS, true),
    ] {
        let sp = if cold { cold_space } else { space };
        let mut warm = CacheX86_64::new();
        let mut wcache = WalkCache::new();
        let mut pcs = Vec::with_capacity(2 * FRAMES);
        let mut lines: Vec<(&str, Line<'_>)> = vec![
            (
                "xunwind",
                Box::new(move |k| {
                    black_box(walker.walk(sp, &stacks[k].regs, &mems[k]));
                }),
            ),
            (
                "xunwind_steps",
                Box::new(move |k| {
                    black_box(xunwind_steps(sp, &stacks[k], &mems[k]));
                }),
            ),
        ];
        if !cold {
            lines.push((
                "xunwind_pcs",
                Box::new(move |k| {
                    pcs.clear();
                    black_box(walker.pcs_cached(
                        sp,
                        &stacks[k].regs,
                        &mems[k],
                        &mut wcache,
                        &mut pcs,
                    ));
                }),
            ));
            lines.push((
                "framehop",
                Box::new(move |k| {
                    black_box(framehop_walk(unwinder, &mut warm, &stacks[k]));
                }),
            ));
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); lines.len() + 1];
        for _ in 0..rounds {
            for (t, (_, f)) in times.iter_mut().zip(lines.iter_mut()) {
                let t0 = clock.now();
                for j in 0..PASSES * STACKS {
                    f(j % n);
                }
                t.push((clock.now() - t0).as_nanos() as f64);
            }
            if cold {
                // Fresh caches, made outside the timed part.
                let mut fresh: Vec<CacheX86_64> =
                    (0..PASSES * STACKS).map(|_| CacheX86_64::new()).collect();
                let t0 = clock.now();
                for (j, c) in fresh.iter_mut().enumerate() {
                    black_box(framehop_walk(unwinder, c, &stacks[j % n]));
                }
                times[lines.len()].push((clock.now() - t0).as_nanos() as f64);
            }
        }
        let mut names: Vec<&str> = lines.iter().map(|l| l.0).collect();
        if cold {
            names.push("framehop");
        } else {
            times.pop();
        }
        let per_frame: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2] / (PASSES * STACKS * FRAMES) as f64
            })
            .collect();
        let fh = per_frame[names
            .iter()
            .position(|&n| n == "framehop")
            .expect("a framehop line")];
        for (name, ns) in names.iter().zip(&per_frame) {
            eprintln!(
                "interleaved dwarf_walk/{group:12} {name:14} {ns:8.1} ns/frame  {:5.2}x vs framehop",
                fh / ns
            );
        }
    }
}

fn bench(c: &mut Criterion<Clock>) {
    let t0 = Instant::now();
    let dir = std::env::var_os("XUNWIND_ELF_DIR").map_or_else(system_lib_dir, PathBuf::from);
    let files = read_shared_objects(&dir, MODULES, u64::MAX);
    if files.len() < 32 {
        eprintln!(
            "dwarf_walk bench skipped: {} usable shared objects in {}",
            files.len(),
            dir.display()
        );
        return;
    }
    let modules = place(&files);
    let space = dwarf_space(&modules, true);
    let cold_space = dwarf_space(&modules, false);
    let mut unwinder: UnwinderX86_64<&[u8]> = UnwinderX86_64::new();
    for m in &modules {
        unwinder.add_module(framehop_module(m));
    }
    let mut sites = call_sites(&modules, SITES_PER_MODULE);
    let pool = sites.len();
    let mut rng = SplitMix64::new(0x5eed_0006);
    let mut cache = CacheX86_64::new();
    // Stacks on which framehop finds other frames than xunwind (and the rows) are counted and
    // left out: timing a walk that stops early would flatter it.
    let mut stacks: Vec<Stack> = Vec::new();
    let mut framehop_wrong: Vec<usize> = Vec::new();
    let walker = StackWalker::default();
    for _ in 0..512 {
        if stacks.len() == STACKS {
            break;
        }
        let s = build_stack(&space, &mut sites, FRAMES, &mut rng).expect("a 32-frame stack");
        let mem = s.memory();
        for sp in [&space, &cold_space] {
            let ours = walker.walk(sp, &s.regs, &mem);
            let pcs: Vec<u64> = ours.frames.iter().map(|f| f.pc).collect();
            assert_eq!(pcs, s.pcs, "xunwind disagrees with a checked stack");
            assert_eq!(xunwind_steps(sp, &s, &mem), s.pcs);
            // Cold and warm cache.
            let mut c = WalkCache::new();
            for _ in 0..2 {
                let mut pcs = Vec::new();
                walker.pcs_cached(sp, &s.regs, &mem, &mut c, &mut pcs);
                assert_eq!(pcs, s.pcs, "the cached walk disagrees");
                let w = walker.walk_cached(sp, &s.regs, &mem, &mut c);
                assert_eq!(w.frames.len(), s.pcs.len(), "the cached walk disagrees");
                assert!(w.frames.iter().zip(&s.pcs).all(|(f, &pc)| f.pc == pc));
            }
        }
        let warm = framehop_walk(&unwinder, &mut cache, &s);
        let fresh = framehop_walk(&unwinder, &mut CacheX86_64::new(), &s);
        match framehop_divergence(&warm, &s.pcs).or(framehop_divergence(&fresh, &s.pcs)) {
            None => stacks.push(s),
            Some(d) => framehop_wrong.push(d),
        }
    }
    assert_eq!(
        stacks.len(),
        STACKS,
        "too few stacks framehop walks correctly"
    );
    let mut used: Vec<usize> = stacks
        .iter()
        .flat_map(|s| &s.pcs)
        .filter_map(|&pc| {
            modules
                .iter()
                .position(|m| m.base <= pc && pc < m.base + m.layout.size)
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    eprintln!(
        "dwarf_walk: {} modules ({} MiB), {} call sites ({} dropped as not walking like their rows), {} stacks of {FRAMES} frames over {} modules; framehop walked {} other stacks wrongly, first wrong frame index: {:?}; setup {:.1} s",
        modules.len(),
        files.iter().map(|f| f.1.len()).sum::<usize>() >> 20,
        pool,
        pool - sites.len(),
        stacks.len(),
        used.len(),
        framehop_wrong.len(),
        framehop_wrong,
        t0.elapsed().as_secs_f64()
    );

    // framehop's rule cache is keyed by address: how often its warm walks hit it.
    for n in [1, STACKS] {
        let mut fresh = CacheX86_64::new();
        for s in &stacks[..n] {
            framehop_walk(&unwinder, &mut fresh, s);
        }
        let before = fresh.stats();
        for s in &stacks[..n] {
            framehop_walk(&unwinder, &mut fresh, s);
        }
        let after = fresh.stats();
        let hits = after.hit_count - before.hit_count;
        let total = after.total() - before.total();
        eprintln!("dwarf_walk: framehop's warm rule cache over {n} stack(s): {hits} hits in {total} lookups");
    }

    let mems: Vec<_> = stacks.iter().map(|s| s.memory()).collect();
    if let Some(rounds) = std::env::var("XUNWIND_INTERLEAVE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        interleaved(rounds, &space, &cold_space, &unwinder, &stacks);
    }
    for (group, n) in [
        ("dwarf_walk/one_stack", 1usize),
        ("dwarf_walk/many_stacks", STACKS),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(FRAMES as u64));
        common::warm_lines(&mut g, group, &space, &unwinder, &mut cache, &stacks[..n]);
        g.finish();
    }

    let mut g = c.benchmark_group("dwarf_walk/cold");
    g.throughput(Throughput::Elements(FRAMES as u64));
    let mut i = 0usize;
    g.bench_function("xunwind", |b| {
        b.iter(|| {
            let k = i % STACKS;
            i = i.wrapping_add(1);
            black_box(walker.walk(&cold_space, black_box(&stacks[k].regs), &mems[k]))
        })
    });
    let mut i = 0usize;
    g.bench_function("xunwind_steps", |b| {
        b.iter(|| {
            let k = i % STACKS;
            i = i.wrapping_add(1);
            black_box(xunwind_steps(&cold_space, black_box(&stacks[k]), &mems[k]))
        })
    });
    let mut i = 0usize;
    g.bench_function("framehop", |b| {
        b.iter_batched_ref(
            CacheX86_64::new,
            |fresh| {
                let k = i % STACKS;
                i = i.wrapping_add(1);
                black_box(framehop_walk(&unwinder, fresh, black_box(&stacks[k])))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(Clock::from_env());
    targets = bench
}

criterion_main!(benches);

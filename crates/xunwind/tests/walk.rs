//! Whole-stack walks over a synthetic PE module and stack.

mod common;
use xunwind::pe::{PeImage, PeUnwinder};
use xunwind::{AddressSpace, Module, Reg, Regs, SliceMemory, StackWalker, StopReason, Trust};

const BASE: u64 = 0x1_4000_0000;
const STACK: u64 = 0x7000_0000;

/// Function A (0x1000..0x1040): push rbx; sub rsp,0x20. Function B (0x1100..0x1140):
/// sub rsp,0x28. Code between 0x1200 and 0x1300 has no entry (leaf rule).
fn image() -> Vec<u8> {
    let mut b = vec![0x90u8; 0x4000];
    b[0x1000..0x1005].copy_from_slice(&[0x53, 0x48, 0x83, 0xec, 0x20]);
    b[0x1100..0x1104].copy_from_slice(&[0x48, 0x83, 0xec, 0x28]);
    b[0x2000..0x2008].copy_from_slice(&[0x01, 5, 2, 0, 5, 0x32, 1, 0x30]);
    b[0x2010..0x2014].copy_from_slice(&[0x01, 4, 1, 0]);
    b[0x2014..0x2016].copy_from_slice(&[4, 0x42]);
    let pdata: Vec<u8> = [[0x1000u32, 0x1040, 0x2000], [0x1100, 0x1140, 0x2010]]
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b[0x3000..0x3018].copy_from_slice(&pdata);
    b
}

fn space(img: &[u8]) -> AddressSpace<'_> {
    let mut s = AddressSpace::new();
    let pe = PeImage::from_parts(img, BASE, 0x3000, 24);
    s.add_module(Module {
        name: "test.dll".into(),
        base: BASE,
        size: img.len() as u64,
        walker: Box::new(PeUnwinder::new(pe, BASE)),
        executable: vec![(BASE + 0x1000, BASE + 0x2000)],
    })
    .unwrap();
    s
}

fn put(stack: &mut [u8], addr: u64, v: u64) {
    let o = (addr - STACK) as usize;
    stack[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn pdata_frames_then_leaf_then_end() {
    let img = image();
    let sp = space(&img);
    let mut st = vec![0u8; 0x400];
    // A's frame: 0x20 locals, saved rbx, return into B.
    put(&mut st, STACK + 0x20, 0xbbbb);
    put(&mut st, STACK + 0x28, BASE + 0x1120);
    // B's frame: 0x28 locals, return into the entry-less code.
    put(&mut st, STACK + 0x58, BASE + 0x1250);
    // The leaf-rule frame returns to 0: the end.
    put(&mut st, STACK + 0x60, 0);
    let mem = SliceMemory::new(STACK, &st);
    let mut regs = Regs::with_gprs(BASE + 0x1010, [0; 16]);
    regs.set(Reg::Rsp, STACK);
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &regs, &mem);
    let pcs: Vec<u64> = walk.frames.iter().map(|f| f.pc).collect();
    assert_eq!(pcs, [BASE + 0x1010, BASE + 0x1120, BASE + 0x1250]);
    let sps: Vec<u64> = walk.frames.iter().map(|f| f.sp).collect();
    assert_eq!(sps, [STACK, STACK + 0x30, STACK + 0x60]);
    let trust: Vec<Trust> = walk.frames.iter().map(|f| f.trust).collect();
    assert_eq!(trust, [Trust::Context, Trust::Pdata, Trust::Pdata]);
    assert_eq!(walk.frames[1].regs.get(Reg::Rbx), Some(0xbbbb));
    assert_eq!(
        walk.frames[1].regs.get(Reg::Rax),
        None,
        "volatile registers are unknown"
    );
    assert_eq!(walk.stop, StopReason::EndOfStack);
}

#[test]
fn outside_modules_frame_pointer_then_scan() {
    let img = image();
    let sp = space(&img);
    let mut st = vec![0u8; 0x400];
    // rbp chain: [0x100] = caller rbp (0x200), [0x108] = return into A.
    put(&mut st, STACK + 0x100, STACK + 0x200);
    put(&mut st, STACK + 0x108, BASE + 0x1030);
    // A's frame at 0x110: locals, rbx, then a return address pointing nowhere known.
    put(&mut st, STACK + 0x138, 0x1234);
    let mem = SliceMemory::new(STACK, &st);
    let mut regs = Regs::with_gprs(0x9999_0000, [0; 16]);
    regs.set(Reg::Rsp, STACK + 0x10);
    regs.set(Reg::Rbp, STACK + 0x100);
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &regs, &mem);
    assert_eq!(walk.frames[1].trust, Trust::FramePointer);
    assert_eq!(walk.frames[1].pc, BASE + 0x1030);
    assert_eq!(walk.frames[1].sp, STACK + 0x110);
    // A unwinds by pdata to 0x1234, which no module and no memory maps: the walk stops
    // there (CONFORMANCE 5) rather than scanning on from a frame that cannot be real.
    assert_eq!(walk.frames.len(), 2);
    assert_eq!(walk.stop, StopReason::UnmappedReturnAddress(0x1234));

    // Without a frame pointer, the scan finds the first code address above rsp.
    put(&mut st, STACK + 0x180, BASE + 0x1111);
    let mem = SliceMemory::new(STACK, &st);
    regs.set(Reg::Rbp, 0);
    regs.set(Reg::Rsp, STACK + 0x140);
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &regs, &mem);
    assert_eq!(walk.frames[1].trust, Trust::Scan);
    assert_eq!(walk.frames[1].pc, BASE + 0x1111);
    assert_eq!(walk.frames[1].sp, STACK + 0x188);
    let no_scan = StackWalker {
        scan: false,
        ..StackWalker::default()
    };
    let walk = common::walk_all_ways(&no_scan, &sp, &regs, &mem);
    assert_eq!((walk.frames.len(), walk.stop), (1, StopReason::NoCaller));
}

#[test]
fn cyclic_and_truncated_stacks_stop_with_a_reason() {
    let img = image();
    let sp = space(&img);
    // A leaf whose return address points back to itself with the same stack: each leaf step
    // moves rsp up by 8, so the walk ends at the end of readable memory, not in a loop.
    let st: Vec<u8> = (0..0x40u64)
        .flat_map(|_| (BASE + 0x1250).to_le_bytes())
        .collect();
    let mem = SliceMemory::new(STACK, &st);
    let mut regs = Regs::with_gprs(BASE + 0x1250, [0; 16]);
    regs.set(Reg::Rsp, STACK);
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &regs, &mem);
    assert_eq!(walk.frames.len(), 0x41);
    assert!(
        matches!(walk.stop, StopReason::Unreadable(_)),
        "{:?}",
        walk.stop
    );
    let limited = StackWalker {
        max_frames: 5,
        ..StackWalker::default()
    };
    assert_eq!(
        common::walk_all_ways(&limited, &sp, &regs, &mem).stop,
        StopReason::FrameLimit
    );
    // Missing registers.
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &Regs::new(), &mem);
    assert_eq!(walk.stop, StopReason::MissingRegisters);
}

#[test]
fn overlapping_modules_are_refused_and_removal_works() {
    let img = image();
    let mut sp = space(&img);
    let pe = PeImage::from_parts(&img, BASE, 0x3000, 24);
    let err = sp.add_module(Module {
        name: "overlap".into(),
        base: BASE + 0x100,
        size: 0x100,
        walker: Box::new(PeUnwinder::new(pe.clone(), BASE)),
        executable: vec![],
    });
    assert!(err.is_err());
    assert_eq!(sp.len(), 1);
    let id = sp
        .add_module(Module {
            name: "second".into(),
            base: BASE + 0x10000,
            size: 0x1000,
            walker: Box::new(PeUnwinder::new(pe, BASE + 0x10000)),
            executable: vec![],
        })
        .unwrap();
    assert_eq!(sp.module_at(BASE + 0x10010).unwrap().1.name, "second");
    let g = sp.generation();
    assert!(sp.remove_module(id).is_some());
    assert!(sp.module_at(BASE + 0x10010).is_none());
    assert!(sp.generation() > g);
    assert_eq!(sp.module_at(BASE + 5).unwrap().1.name, "test.dll");
}

#[test]
fn a_return_address_in_no_module_and_no_memory_ends_the_walk() {
    let img = image();
    let sp = space(&img);
    let mut st = vec![0u8; 0x400];
    // A's frame returns into B; B's frame returns to an address nothing maps.
    put(&mut st, STACK + 0x20, 0xbbbb);
    put(&mut st, STACK + 0x28, BASE + 0x1120);
    put(&mut st, STACK + 0x58, 0x4);
    let mem = SliceMemory::new(STACK, &st);
    let mut regs = Regs::with_gprs(BASE + 0x1010, [0; 16]);
    regs.set(Reg::Rsp, STACK);
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &regs, &mem);
    assert_eq!(walk.frames.len(), 2, "{:?}", walk.frames);
    assert_eq!(walk.stop, StopReason::UnmappedReturnAddress(0x4));
    assert_eq!(walk.stop.as_str(), "unmapped_return_address");
    // The same address in readable memory (JIT code outside every module) is walked into.
    let mut st2 = st.clone();
    put(&mut st2, STACK + 0x58, STACK + 0x300);
    let mem2 = SliceMemory::new(STACK, &st2);
    let walk = common::walk_all_ways(&StackWalker::default(), &sp, &regs, &mem2);
    assert_eq!(walk.frames.get(2).map(|f| f.pc), Some(STACK + 0x300));
}

#[test]
fn add_modules_builds_once_and_leaves_out_overlaps() {
    let img = image();
    let mut sp = space(&img);
    let pe = PeImage::from_parts(&img, BASE, 0x3000, 24);
    let module = |name: &str, base: u64, size: u64| Module {
        name: name.into(),
        base,
        size,
        walker: Box::new(PeUnwinder::new(pe.clone(), base)),
        executable: vec![],
    };
    let g = sp.generation();
    let (added, rejected) = sp.add_modules([
        module("c", BASE + 0x30000, 0x1000),
        module("overlaps test.dll", BASE + 0x3fff, 0x10),
        module("b", BASE + 0x20000, 0x1000),
        module("overlaps b", BASE + 0x20fff, 0x10),
        module("empty", BASE + 0x40000, 0),
        module("between", BASE + 0x21000, 0x100),
    ]);
    assert_eq!(added.len(), 3);
    let names: Vec<_> = rejected.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["overlaps test.dll", "overlaps b", "empty"]);
    assert_eq!(sp.generation(), g + 1, "one rebuild");
    assert_eq!(sp.len(), 4);
    assert_eq!(sp.module_at(BASE + 0x20fff).unwrap().1.name, "b");
    assert_eq!(sp.module_at(BASE + 0x21000).unwrap().1.name, "between");
    assert_eq!(sp.module_at(BASE + 0x30800).unwrap().1.name, "c");
    assert_eq!(sp.module_at(BASE + 5).unwrap().1.name, "test.dll");
    assert!(sp.module_at(BASE + 0x21100).is_none());
}

/// A WalkCache filled from one space is not taken for another, even one at the same
/// generation with a module at the same address; and a change to a space empties it.
#[test]
fn walk_cache_follows_its_space() {
    use xunwind::WalkCache;
    let img = image();
    let with_pdata = space(&img);
    // The same bytes without .pdata: every pc takes the leaf rule.
    let mut leaf_only = AddressSpace::new();
    leaf_only
        .add_module(Module {
            name: "test.dll".into(),
            base: BASE,
            size: img.len() as u64,
            walker: Box::new(PeUnwinder::new(
                PeImage::from_parts(&img, BASE, 0x3000, 0),
                BASE,
            )),
            executable: vec![(BASE + 0x1000, BASE + 0x2000)],
        })
        .unwrap();
    assert_eq!(with_pdata.generation(), leaf_only.generation());
    assert_ne!(with_pdata.id(), leaf_only.id());
    let mut st = vec![0u8; 0x400];
    put(&mut st, STACK + 0x20, 0xbbbb);
    put(&mut st, STACK + 0x28, BASE + 0x1120);
    put(&mut st, STACK + 0x58, BASE + 0x1250);
    let mem = SliceMemory::new(STACK, &st);
    let mut regs = Regs::with_gprs(BASE + 0x1010, [0; 16]);
    regs.set(Reg::Rsp, STACK);
    let walker = StackWalker::default();
    let mut cache = WalkCache::new();
    let a = walker.walk_cached(&with_pdata, &regs, &mem, &mut cache);
    let b = walker.walk_cached(&leaf_only, &regs, &mem, &mut cache);
    let want_b = walker.walk(&leaf_only, &regs, &mem);
    let pcs = |w: &xunwind::Walk| w.frames.iter().map(|f| f.pc).collect::<Vec<_>>();
    assert_eq!(pcs(&a)[1], BASE + 0x1120);
    assert_eq!(pcs(&b), pcs(&want_b));
    assert_ne!(pcs(&a), pcs(&b), "the two spaces walk differently");
    // After a change to the space, the cache starts over.
    assert!(!cache.is_empty());
    let mut changed = space(&img);
    walker.walk_cached(&changed, &regs, &mem, &mut cache);
    let filled = cache.len();
    changed.remove_module(changed.module_at(BASE).unwrap().0);
    let w = walker.walk_cached(&changed, &regs, &mem, &mut cache);
    assert!(filled > 0 && cache.is_empty());
    assert_eq!(w.frames.len(), 1);
}

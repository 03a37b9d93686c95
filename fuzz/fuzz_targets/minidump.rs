//! A minidump from arbitrary bytes: reading it, building its address space (PE images the dump's
//! memory holds are parsed in their mapped layout), walking the default thread and naming every
//! frame must never panic or hang.
//!
//! The first four bytes are forced to `MDMP`, so every input reaches the minidump reader even
//! from an empty corpus. No module or symbol directories are given: the dump's own bytes are the
//! whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind::{LoadOptions, StackWalker, Target, WalkCache};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mut bytes = data.to_vec();
    bytes[..4].copy_from_slice(b"MDMP");
    let options = LoadOptions::default();
    let Ok(target) = Target::from_bytes(bytes, &options) else {
        return;
    };
    let space = target.address_space();
    let symbols = target.symbols(&options);
    let walker = StackWalker {
        max_frames: 128,
        ..StackWalker::default()
    };
    let Some(thread) = target.default_thread() else {
        return;
    };
    let regs = target
        .exception
        .as_ref()
        .filter(|e| e.thread_id == thread.id)
        .and_then(|e| e.context.clone())
        .unwrap_or_else(|| thread.regs.clone());
    let walk = walker.walk(&space, &regs, &target.memory);
    assert!(walk.frames.len() <= 128);
    // The pc-keyed rule cache changes nothing, cold or warm.
    let mut cache = WalkCache::with_capacity(64);
    for _ in 0..2 {
        let cached = walker.walk_cached(&space, &regs, &target.memory, &mut cache);
        assert_eq!(
            format!("{:?}", (&cached.frames, cached.stop)),
            format!("{:?}", (&walk.frames, walk.stop))
        );
    }
    for f in &walk.frames {
        let _ = symbols.lookup(f.pc);
        let _ = symbols.lookup(f.pc.wrapping_sub(1));
    }
});

//! Arbitrary bytes as an ELF core file: reading it as a `Target`, building its address space
//! (DWARF unwinders for the modules it names), walking its default thread and naming the
//! frames must return, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind::{LoadOptions, StackWalker, Target, WalkCache};

fuzz_target!(|data: &[u8]| {
    // Steer every input to the core reader: the magic is the only thing it must not vary.
    let mut bytes = b"\x7fELF".to_vec();
    bytes.extend_from_slice(data.get(4..).unwrap_or_default());
    let Ok(target) = Target::from_bytes(bytes, &LoadOptions::default()) else {
        return;
    };
    let space = target.address_space();
    let symbols = target.symbols(&LoadOptions::default());
    let walker = StackWalker {
        max_frames: 256,
        ..StackWalker::default()
    };
    for thread in target.threads.iter().take(4) {
        let walk = walker.walk(&space, &thread.regs, &target.memory);
        assert!(walk.frames.len() <= 256);
        // The pc-keyed rule cache changes nothing, cold or warm.
        let mut cache = WalkCache::with_capacity(64);
        for _ in 0..2 {
            let cached = walker.walk_cached(&space, &thread.regs, &target.memory, &mut cache);
            assert_eq!(
                format!("{:?}", (&cached.frames, cached.stop)),
                format!("{:?}", (&walk.frames, walk.stop))
            );
        }
        for f in &walk.frames {
            let _ = symbols.lookup(f.pc);
        }
    }
});

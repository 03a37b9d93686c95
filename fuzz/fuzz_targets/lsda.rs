//! Arbitrary bytes as exception-handling language data: a GCC LSDA (call sites, actions, type
//! table, the personality's search), an MSVC FH3 FuncInfo, and a whole dispatch over an image
//! whose every handler is named `__C_specific_handler`, `__gxx_personality_seh0` or
//! `__CxxFrameHandler3` in turn. Everything must return, never panic, hang or allocate without
//! bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind::dispatch::{Decisions, DispatchOptions, ExceptionResolver, Fault};
use xunwind::pe::{cxx_search, FuncInfo, Lsda, PeImage};
use xunwind::{CodeImages, PeModule, Reg, Regs, SliceMemory};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    // LSDA at the start, addresses anywhere.
    let read = |a: u64| Some(a.rotate_left(7));
    if let Ok(l) = Lsda::parse(data, word(0) as u64, word(4) as u64) {
        for cs in l.call_sites().flatten().take(64) {
            let _ = l.actions(cs.action, &read);
        }
        let _ = cxx_search(&l, word(8) as u64, &read, &|t| Some(t & 1 == 0));
        let _ = l.spec_types(-(data[12] as i64) - 1);
    }
    let img = PeImage::from_parts(data, 0x1_4000_0000, word(8) % 0x1000, word(12) % 0x600);
    if let Ok(fi) = FuncInfo::parse(&img, word(4) % 0x1000) {
        let s = fi.state_at(word(0));
        let _ = fi.try_blocks_at(s).count();
        let _ = fi.unwind_actions(s, -1);
    }
    // A dispatch: the image's .pdata from word(8), a stack made of the data itself.
    let base = 0x1_4000_0000u64;
    for (k, name) in ["__C_specific_handler", "__gxx_personality_seh0", "__CxxFrameHandler3"]
        .iter()
        .enumerate()
    {
        let mut m = PeModule::from_image("fuzz.exe", base, img.clone());
        for rva in (0..data.len() as u32).step_by(0x40).take(64) {
            m.add_symbol(rva, name);
        }
        let mut images = CodeImages::new();
        images.add(m);
        let mut regs = Regs::new();
        regs.set_rip(base + (word(0) as u64 % data.len() as u64));
        regs.set(Reg::Rsp, 0x10_0000);
        let stack = SliceMemory::new(0x10_0000, data);
        let fault = Fault {
            regs,
            code: [0xc000_0005, 0x2047_4343, 0xe06d_7363][k],
            flags: 0,
            parameters: vec![0x10_0000, 0x10_0010, base + 0x100, base],
        };
        let opts = DispatchOptions {
            max_frames: 64,
            ..DispatchOptions::default()
        };
        let mut decisions = Decisions::default();
        decisions.thrown_type = Some(base + word(4) as u64 % 0x1000);
        if let Ok(d) = ExceptionResolver::new(&images, opts).dispatch(&fault, &stack, &decisions) {
            assert!(d.frames.len() <= 64);
        }
    }
});

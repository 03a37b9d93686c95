//! Arbitrary bytes as a PE32+ file, in both the file and the mapped layout: parse, then walk
//! every function, its unwind info, codes, chain and handler, look up around it and unwind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_pe::{Layout, PeImage};

fuzz_target!(|data: &[u8]| {
    for layout in [Layout::File, Layout::Mapped] {
        if let Ok(img) = PeImage::parse_with(data, layout) {
            xunwind_fuzz::exercise(&img, data);
        }
    }
});

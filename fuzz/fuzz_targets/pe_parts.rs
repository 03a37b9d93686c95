//! Arbitrary bytes as a flat mapped image without headers (`PeImage::from_parts`), the
//! `.pdata` directory taken from the input: tables and unwind info at any RVA, overlapping,
//! truncated or pointing past the end.
//!
//! Input: `pdata_rva: u32 LE`, `pdata_size: u32 LE`, then the image bytes (RVA 0 onwards).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_pe::PeImage;

fuzz_target!(|data: &[u8]| {
    let Some((head, image)) = data.split_first_chunk::<8>() else {
        return;
    };
    let rva = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    // The top bit keeps the raw values (out-of-image directories); otherwise fold them into the
    // image, where the fuzzer finds tables far sooner.
    let (rva, size) = if rva & 0x8000_0000 != 0 {
        (rva, size)
    } else {
        let len = image.len() as u32;
        (rva % (len + 1), size % (len + 13))
    };
    let img = PeImage::from_parts(image, 0x1_8000_0000, rva, size);
    xunwind_fuzz::exercise(&img, image);
});

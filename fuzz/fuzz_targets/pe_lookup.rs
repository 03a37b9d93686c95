//! Differential: `FunctionTable::find` (the `RangeTable` fast path when the table validates)
//! against a re-implementation of Windows' own binary search, on arbitrary `.pdata` bytes.
//! `find` promises Windows' answer for every table, sorted or not.
//!
//! Input: the `.pdata` bytes (12 per RUNTIME_FUNCTION). Probes: around every entry and a few
//! fixed RVAs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_pe::{FunctionTable, RuntimeFunction};

/// RtlLookupFunctionEntry's search over the table (signed indices, min/max narrowing).
fn windows(entries: &[RuntimeFunction], rva: u32) -> Option<usize> {
    let (mut lo, mut hi) = (0i64, entries.len() as i64 - 1);
    while lo <= hi {
        let mid = (lo + hi) / 2;
        let f = entries[mid as usize];
        if rva < f.begin {
            hi = mid - 1;
        } else if rva >= f.end {
            lo = mid + 1;
        } else {
            return Some(mid as usize);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let t = FunctionTable::new(data);
    let entries: Vec<RuntimeFunction> = t.iter().collect();
    let mut probes = vec![0, 1, u32::MAX];
    for f in &entries {
        probes.extend([
            f.begin,
            f.begin.wrapping_sub(1),
            f.end,
            f.end.wrapping_sub(1),
            f.begin.wrapping_add(f.end.wrapping_sub(f.begin) / 2),
        ]);
    }
    for rva in probes {
        let want = windows(&entries, rva);
        assert_eq!(
            t.find(rva),
            want,
            "rva {rva:#x}, fast path {}, table {entries:x?}",
            t.range_table().is_some()
        );
        assert_eq!(t.windows_search(rva), want, "rva {rva:#x}");
    }
});

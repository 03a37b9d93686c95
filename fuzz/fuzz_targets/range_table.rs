//! Differential: `RangeTable` (both key widths, `new` and `from_starts`) against a linear scan
//! on arbitrary ranges, sorted or not. A table that builds must answer every probe as the scan
//! does; a table that does not build must name the input's first real defect (inverted,
//! unsorted, overlapping, too wide), as an independent validator written from the
//! `RangeTableError` docs finds it.
//!
//! Input: a mode byte, then entries. Even modes: 4 bytes per entry `[gap, len, flags, scale]`
//! stepping forward from a base (flags step back, invert, or widen the gap), so most tables are
//! sorted with gaps, empties and near-misses. Odd modes: raw `(begin, end)` u64 pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_core::{RangeKey, RangeTable, RangeTableError};

const MAX_ENTRIES: usize = 512;

fn decode(mode: u8, rest: &[u8]) -> Vec<(u64, u64)> {
    if mode & 1 == 1 {
        return rest
            .chunks_exact(16)
            .take(MAX_ENTRIES)
            .map(|c| {
                let b = u64::from_le_bytes(c[..8].try_into().unwrap());
                let e = u64::from_le_bytes(c[8..].try_into().unwrap());
                (b, e)
            })
            .collect();
    }
    // Bases near the ends of the address space too, where offsets could wrap.
    let mut at: u64 = match (mode >> 1) & 3 {
        0 => 0,
        1 => 0x1000,
        2 => u32::MAX as u64 - 0x800,
        _ => u64::MAX - 0x10000,
    };
    rest.chunks_exact(4)
        .take(MAX_ENTRIES)
        .map(|c| {
            let (gap, len, flags, scale) = (c[0] as u64, c[1] as u64, c[2], c[3] as u64);
            let gap = match flags & 3 {
                0 => gap,
                1 => gap << 8 | scale,
                2 => gap << 16 | scale << 8,
                _ => (gap << 32) | scale,
            };
            at = if flags & 4 != 0 {
                at.wrapping_sub(gap)
            } else {
                at.wrapping_add(gap)
            };
            let len = if flags & 8 != 0 { len << 8 } else { len };
            let r = if flags & 16 != 0 {
                (at, at.wrapping_sub(len))
            } else {
                (at, at.wrapping_add(len))
            };
            if flags & 32 == 0 {
                at = r.1;
            }
            r
        })
        .collect()
}

/// The first defect of `ranges` in input order, per the `RangeTableError` docs.
fn first_defect(ranges: &[(u64, u64)], max_span: u64) -> Option<RangeTableError> {
    let mut prev: Option<(u64, u64)> = None;
    let mut first_begin = None;
    for (index, &(begin, end)) in ranges.iter().enumerate() {
        if end < begin {
            return Some(RangeTableError::Inverted { index, begin, end });
        }
        if end == begin {
            continue;
        }
        if let Some((prev_begin, prev_end)) = prev {
            if begin < prev_begin {
                return Some(RangeTableError::Unsorted {
                    index,
                    begin,
                    prev_begin,
                });
            }
            if begin < prev_end {
                return Some(RangeTableError::Overlap {
                    index,
                    begin,
                    prev_end,
                });
            }
        }
        first_begin.get_or_insert(begin);
        prev = Some((begin, end));
    }
    let span = match (first_begin, prev) {
        (Some(b), Some((_, e))) => e - b,
        _ => 0,
    };
    (span > max_span).then_some(RangeTableError::SpanTooLarge { span })
}

fn probes(ranges: &[(u64, u64)], extra: &[u8]) -> Vec<u64> {
    let mut p = vec![0, 1, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX];
    for &(b, e) in ranges {
        p.extend([
            b.wrapping_sub(1),
            b,
            b.wrapping_add(1),
            e.wrapping_sub(1),
            e,
            b.wrapping_add(e.wrapping_sub(b) / 2),
        ]);
    }
    p.extend(
        extra
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
    );
    p
}

fn check<K: RangeKey>(ranges: &[(u64, u64)], probes: &[u64]) {
    let built = RangeTable::<K>::new(ranges.iter().copied());
    let t = match (built, first_defect(ranges, K::MAX_SPAN)) {
        (Ok(t), None) => t,
        (Err(got), want) => {
            assert_eq!(Some(got), want, "ranges {ranges:x?}");
            return;
        }
        (Ok(_), Some(want)) => panic!("accepted {ranges:x?}, which has {want:?}"),
    };
    for &a in probes {
        let want = ranges.iter().position(|&(b, e)| b <= a && a < e);
        assert_eq!(t.lookup(a), want, "addr {a:#x} in {ranges:x?}");
    }
    assert_eq!(t.len(), ranges.len());
    assert_eq!(t.is_empty(), ranges.is_empty());
    let empties: Vec<u32> = (0..ranges.len() as u32)
        .filter(|&i| ranges[i as usize].0 == ranges[i as usize].1)
        .collect();
    assert_eq!(t.empty_ranges(), &empties[..]);
    let kept: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.0 != r.1).collect();
    assert_eq!(t.searchable_len(), kept.len());
    for (i, &r) in kept.iter().enumerate() {
        assert_eq!(t.searchable_range(i), Some(r));
    }
    assert_eq!(t.searchable_range(kept.len()), None);
    // The block index costs at most about one u32 per entry; one sentinel entry follows.
    let key = core::mem::size_of::<K>();
    let bound = (kept.len() + 1) * 2 * key + 4 * (kept.len() + 3) + 8 * ranges.len();
    assert!(
        t.heap_bytes() <= bound,
        "{} > {bound} bytes",
        t.heap_bytes()
    );
}

/// `from_starts`: entry `i` covers `[starts[i], starts[i + 1])`, the last one up to `end`, and
/// among equal starts the rightmost wins.
fn check_starts<K: RangeKey>(starts: &[u64], end: u64, probes: &[u64]) {
    let built = RangeTable::<K>::from_starts(starts.iter().copied(), end);
    if let Some(i) = starts.windows(2).position(|w| w[1] < w[0]) {
        assert_eq!(
            built.unwrap_err(),
            RangeTableError::Unsorted {
                index: i + 1,
                begin: starts[i + 1],
                prev_begin: starts[i],
            }
        );
        return;
    }
    let limit = |i: usize| starts.get(i + 1).copied().unwrap_or(end.max(starts[i]));
    let t = match built {
        Ok(t) => t,
        Err(e) => {
            // Sorted starts can only be too wide.
            let first = (0..starts.len()).find(|&i| starts[i] < limit(i));
            let span = first.map_or(0, |i| end.max(starts[starts.len() - 1]) - starts[i]);
            assert_eq!(e, RangeTableError::SpanTooLarge { span });
            assert!(span > K::MAX_SPAN);
            return;
        }
    };
    for &a in probes {
        let want = starts
            .iter()
            .rposition(|&s| s <= a)
            .filter(|&i| a < limit(i));
        assert_eq!(
            t.lookup(a),
            want,
            "addr {a:#x} starts {starts:x?} end {end:#x}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The entries take the front, probes the last 64 bytes when the input is long enough.
    let (body, extra) = rest.split_at(rest.len().saturating_sub(64).max(rest.len() / 2));
    let ranges = decode(mode, body);
    let probes = probes(&ranges, extra);
    check::<u32>(&ranges, &probes);
    check::<u64>(&ranges, &probes);
    let starts: Vec<u64> = ranges.iter().map(|r| r.0).collect();
    let end = ranges.last().map_or(0, |r| r.1);
    check_starts::<u32>(&starts, end, &probes);
    check_starts::<u64>(&starts, end, &probes);
});

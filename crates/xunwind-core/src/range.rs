//! The hot path of the project: "which table entry covers this address".
//!
//! `.pdata`, `__ex_table`, ORC, `.eh_frame_hdr` and the module map are all sorted tables of code
//! ranges. [`RangeTable`] validates such a table once and then answers lookups without allocating.
//!
//! Layout: begin and end offsets (relative to the first begin) are stored interleaved, so the
//! final candidate's end sits in the same cache line as its begin. A block index in the style of
//! the kernel's `orc_lookup` holds, for every `2^shift` bytes of the covered span, how many
//! entries begin before that block; a lookup reads one index pair and then runs a short
//! branchless search over just the entries that begin inside the block. The block size is chosen
//! from the table's density so the index costs at most about one `u32` per entry.

use core::fmt;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// The width of the stored offsets: `u32` for tables spanning under 4 GiB (images, kernels),
/// `u64` for whole address spaces (module maps).
pub trait RangeKey: Copy + Ord + Default + fmt::Debug + sealed::Sealed {
    /// The largest span (last end minus first begin) this width can hold.
    const MAX_SPAN: u64;
    /// Truncates an offset known to be at most `MAX_SPAN`.
    fn from_u64(v: u64) -> Self;
    /// Widens to u64.
    fn to_u64(self) -> u64;
}

impl RangeKey for u32 {
    const MAX_SPAN: u64 = u32::MAX as u64;
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v as u32
    }
    #[inline(always)]
    fn to_u64(self) -> u64 {
        self as u64
    }
}

impl RangeKey for u64 {
    const MAX_SPAN: u64 = u64::MAX;
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v
    }
    #[inline(always)]
    fn to_u64(self) -> u64 {
        self
    }
}

/// Why a table cannot be searched as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeTableError {
    /// An entry ends before it begins.
    Inverted {
        /// Index of the entry in the input.
        index: usize,
        /// Its begin address.
        begin: u64,
        /// Its end address.
        end: u64,
    },
    /// An entry begins before the previous non-empty entry.
    Unsorted {
        /// Index of the entry in the input.
        index: usize,
        /// Its begin address.
        begin: u64,
        /// Begin of the previous non-empty entry.
        prev_begin: u64,
    },
    /// An entry begins before the previous non-empty entry ends.
    Overlap {
        /// Index of the entry in the input.
        index: usize,
        /// Its begin address.
        begin: u64,
        /// End of the previous non-empty entry.
        prev_end: u64,
    },
    /// The ranges span more than the key width can hold.
    SpanTooLarge {
        /// Last end minus first begin.
        span: u64,
    },
    /// More entries than a `u32` index can count.
    TooMany {
        /// Number of entries given.
        count: usize,
    },
}

impl fmt::Display for RangeTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RangeTableError::Inverted { index, begin, end } => {
                write!(f, "entry {index}: end {end:#x} is before begin {begin:#x}")
            }
            RangeTableError::Unsorted {
                index,
                begin,
                prev_begin,
            } => write!(
                f,
                "entry {index}: begin {begin:#x} is before the previous begin {prev_begin:#x} (table not sorted)"
            ),
            RangeTableError::Overlap {
                index,
                begin,
                prev_end,
            } => write!(
                f,
                "entry {index}: begin {begin:#x} overlaps the previous entry ending at {prev_end:#x}"
            ),
            RangeTableError::SpanTooLarge { span } => {
                write!(f, "ranges span {span:#x} bytes, too many for the key width")
            }
            RangeTableError::TooMany { count } => write!(f, "{count} entries are too many"),
        }
    }
}

impl std::error::Error for RangeTableError {}

/// A validated, sorted table of half-open address ranges `[begin, end)`.
///
/// Built once from ranges in ascending order; [`RangeTable::lookup`] then returns the index (in
/// the input order) of the range holding an address. Unsorted, overlapping and inverted input is
/// an error at build time. Empty ranges (`begin == end`, which real `.pdata` contains) can never
/// hold an address: they are accepted, left out of the search, and listed by
/// [`RangeTable::empty_ranges`].
#[derive(Clone, Debug)]
pub struct RangeTable<K: RangeKey = u32> {
    base: u64,
    /// Offset just past the last end: anything at or beyond it misses without a search.
    limit: u64,
    entries: Box<[[K; 2]]>,
    /// `index[i]` = number of entries whose begin offset is below `i << shift`.
    index: Box<[u32]>,
    shift: u32,
    /// Search position to input index, present only when empty ranges were left out.
    remap: Option<Box<[u32]>>,
    empties: Box<[u32]>,
    input_len: usize,
}

impl<K: RangeKey> Default for RangeTable<K> {
    fn default() -> Self {
        RangeTable {
            base: 0,
            limit: 0,
            entries: Box::new([]),
            index: Box::new([0, 0]),
            shift: 63,
            remap: None,
            empties: Box::new([]),
            input_len: 0,
        }
    }
}

impl<K: RangeKey> RangeTable<K> {
    /// Builds the table from `(begin, end)` pairs in ascending order.
    pub fn new<I>(ranges: I) -> Result<Self, RangeTableError>
    where
        I: IntoIterator<Item = (u64, u64)>,
    {
        let ranges = ranges.into_iter();
        let mut kept: Vec<(u64, u64)> = Vec::with_capacity(ranges.size_hint().0);
        let mut remap: Vec<u32> = Vec::new();
        let mut empties: Vec<u32> = Vec::new();
        let mut input_len = 0usize;
        for (index, (begin, end)) in ranges.enumerate() {
            input_len = index + 1;
            if index >= u32::MAX as usize {
                return Err(RangeTableError::TooMany { count: index + 1 });
            }
            if end < begin {
                return Err(RangeTableError::Inverted { index, begin, end });
            }
            if end == begin {
                if empties.is_empty() {
                    remap.extend(0..kept.len() as u32);
                }
                empties.push(index as u32);
                continue;
            }
            if let Some(&(pb, pe)) = kept.last() {
                if begin < pb {
                    return Err(RangeTableError::Unsorted {
                        index,
                        begin,
                        prev_begin: pb,
                    });
                }
                if begin < pe {
                    return Err(RangeTableError::Overlap {
                        index,
                        begin,
                        prev_end: pe,
                    });
                }
            }
            if !empties.is_empty() {
                remap.push(index as u32);
            }
            kept.push((begin, end));
        }
        let mut table = Self::from_sorted(&kept)?;
        table.input_len = input_len;
        if !empties.is_empty() {
            table.remap = Some(remap.into_boxed_slice());
            table.empties = empties.into_boxed_slice();
        }
        Ok(table)
    }

    /// Builds a table from sorted start addresses: entry `i` covers `[starts[i], starts[i+1])` and
    /// the last one `[starts[n-1], end)`. Among equal starts the last one wins, as in the
    /// kernel's ORC search ("rightmost entry with start <= address").
    pub fn from_starts<I>(starts: I, end: u64) -> Result<Self, RangeTableError>
    where
        I: IntoIterator<Item = u64>,
    {
        let mut starts = starts.into_iter().peekable();
        let mut pairs = Vec::with_capacity(starts.size_hint().0);
        let mut index = 0usize;
        while let Some(s) = starts.next() {
            let e = match starts.peek() {
                Some(&n) if n < s => {
                    return Err(RangeTableError::Unsorted {
                        index: index + 1,
                        begin: n,
                        prev_begin: s,
                    })
                }
                Some(&n) => n,
                None => end.max(s),
            };
            pairs.push((s, e));
            index += 1;
        }
        Self::new(pairs)
    }

    fn from_sorted(kept: &[(u64, u64)]) -> Result<Self, RangeTableError> {
        let (Some(&(base, _)), Some(&(_, last_end))) = (kept.first(), kept.last()) else {
            return Ok(Self::default());
        };
        let span = last_end - base;
        if span > K::MAX_SPAN {
            return Err(RangeTableError::SpanTooLarge { span });
        }
        // Smallest block size with no more blocks than entries: the index then costs at most a
        // u32 per entry, and a uniformly dense table has about one entry per block.
        let n = kept.len() as u64;
        let mut shift = 0u32;
        while shift < 63 && (span >> shift) >= n {
            shift += 1;
        }
        let blocks = (span >> shift) as usize + 1;
        let mut index = Vec::with_capacity(blocks + 1);
        let mut count = 0usize;
        for b in 0..=blocks as u128 {
            let block_start = b << shift;
            while count < kept.len() && ((kept[count].0 - base) as u128) < block_start {
                count += 1;
            }
            index.push(count as u32);
        }
        // One sentinel after the last entry: it begins after every key (keys are below the
        // span, the sentinel at the largest offset), so the search's last step may read one
        // past a block that ends the table without a bounds case of its own.
        let sentinel = K::from_u64(K::MAX_SPAN);
        let entries = kept
            .iter()
            .map(|&(b, e)| [K::from_u64(b - base), K::from_u64(e - base)])
            .chain([[sentinel, sentinel]])
            .collect();
        Ok(RangeTable {
            base,
            limit: span,
            entries,
            index: index.into_boxed_slice(),
            shift,
            remap: None,
            empties: Box::new([]),
            input_len: kept.len(),
        })
    }

    /// The input index of the range holding `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<usize> {
        let off = addr.wrapping_sub(self.base);
        if off >= self.limit {
            return None;
        }
        let block = (off >> self.shift) as usize;
        let (lo, hi) = match (self.index.get(block), self.index.get(block + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => return None,
        };
        let key = K::from_u64(off);
        let e = &*self.entries;
        // The last entry of the block beginning at or before `key`, or the block's first
        // entry when none does; a fixed dependency chain of conditional moves.
        let mut at = lo;
        let mut size = hi.saturating_sub(lo);
        while size > 1 {
            let half = size / 2;
            // The comparison is a coin flip for random addresses: force a conditional move,
            // which LLVM does not choose by itself inside this loop (measured: ~40% faster
            // at 10k).
            at = core::hint::select_unpredictable(e.get(at + half)?[0] <= key, at + half, at);
            size -= half;
        }
        // Nothing in the block begins at or before `key` (or the block is empty): the
        // candidate is the entry before it. Entry 0 begins at offset 0, so this never
        // steps below it; `at` is at most the sentinel's index.
        let pos = at.checked_sub((e.get(at)?[0] > key) as usize)?;
        let [_, end] = *e.get(pos)?;
        if key < end {
            Some(match &self.remap {
                None => pos,
                Some(m) => m[pos] as usize,
            })
        } else {
            None
        }
    }

    /// Number of entries given at build time, empty ones included.
    pub fn len(&self) -> usize {
        self.input_len
    }

    /// Whether no entries were given.
    pub fn is_empty(&self) -> bool {
        self.input_len == 0
    }

    /// Input indices of the empty ranges, which no address can hit.
    pub fn empty_ranges(&self) -> &[u32] {
        &self.empties
    }

    /// Number of searchable (non-empty) ranges.
    pub fn searchable_len(&self) -> usize {
        // Less the sentinel.
        self.entries.len().saturating_sub(1)
    }

    /// The `(begin, end)` of the `i`-th searchable range (not an input index).
    pub fn searchable_range(&self, i: usize) -> Option<(u64, u64)> {
        if i >= self.searchable_len() {
            return None;
        }
        let [b, e] = *self.entries.get(i)?;
        Some((self.base + b.to_u64(), self.base + e.to_u64()))
    }

    /// Bytes of heap memory the table holds.
    pub fn heap_bytes(&self) -> usize {
        core::mem::size_of_val(&*self.entries)
            + core::mem::size_of_val(&*self.index)
            + self.remap.as_ref().map_or(0, |m| m.len() * 4)
            + self.empties.len() * 4
    }

    /// Log2 of the block size of the index.
    pub fn block_shift(&self) -> u32 {
        self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear(ranges: &[(u64, u64)], addr: u64) -> Option<usize> {
        ranges.iter().position(|&(b, e)| b <= addr && addr < e)
    }

    #[test]
    fn basic() {
        let r = [(0x1000, 0x1010), (0x1010, 0x1020), (0x1100, 0x1200)];
        let t = RangeTable::<u32>::new(r).unwrap();
        assert_eq!(t.lookup(0xfff), None);
        assert_eq!(t.lookup(0x1000), Some(0));
        assert_eq!(t.lookup(0x100f), Some(0));
        assert_eq!(t.lookup(0x1010), Some(1));
        assert_eq!(t.lookup(0x1020), None);
        assert_eq!(t.lookup(0x10ff), None);
        assert_eq!(t.lookup(0x11ff), Some(2));
        assert_eq!(t.lookup(0x1200), None);
        assert_eq!(t.lookup(u64::MAX), None);
        assert_eq!(t.lookup(0), None);
    }

    #[test]
    fn empty_ranges_are_skipped_and_reported() {
        let r = [
            (0x10, 0x10),
            (0x10, 0x20),
            (0x20, 0x20),
            (0x20, 0x30),
            (0x40, 0x40),
        ];
        let t = RangeTable::<u32>::new(r).unwrap();
        assert_eq!(t.empty_ranges(), &[0, 2, 4]);
        assert_eq!(t.lookup(0x10), Some(1));
        assert_eq!(t.lookup(0x20), Some(3));
        assert_eq!(t.lookup(0x40), None);
        assert_eq!(t.len(), 5);
        assert_eq!(t.searchable_len(), 2);
    }

    #[test]
    fn errors() {
        assert_eq!(
            RangeTable::<u32>::new([(0x20, 0x30), (0x10, 0x18)]).unwrap_err(),
            RangeTableError::Unsorted {
                index: 1,
                begin: 0x10,
                prev_begin: 0x20
            }
        );
        assert_eq!(
            RangeTable::<u32>::new([(0x20, 0x30), (0x28, 0x38)]).unwrap_err(),
            RangeTableError::Overlap {
                index: 1,
                begin: 0x28,
                prev_end: 0x30
            }
        );
        assert_eq!(
            RangeTable::<u32>::new([(0x20, 0x10)]).unwrap_err(),
            RangeTableError::Inverted {
                index: 0,
                begin: 0x20,
                end: 0x10
            }
        );
        assert_eq!(
            RangeTable::<u32>::new([(0, 1), (1 << 33, (1 << 33) + 1)]).unwrap_err(),
            RangeTableError::SpanTooLarge {
                span: (1 << 33) + 1
            }
        );
        let wide = RangeTable::<u64>::new([(0, 1), (u64::MAX - 1, u64::MAX)]).unwrap();
        assert_eq!(wide.lookup(u64::MAX - 1), Some(1));
        assert_eq!(wide.lookup(u64::MAX), None);
        assert_eq!(wide.lookup(0), Some(0));
    }

    #[test]
    fn empty_table() {
        let t = RangeTable::<u32>::new([]).unwrap();
        assert_eq!(t.lookup(0), None);
        assert!(t.is_empty());
        let t = RangeTable::<u64>::new([(5, 5)]).unwrap();
        assert_eq!(t.lookup(5), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn starts_rightmost_wins() {
        let t = RangeTable::<u32>::from_starts([0x100, 0x100, 0x180, 0x200], 0x300).unwrap();
        assert_eq!(t.lookup(0xff), None);
        assert_eq!(t.lookup(0x100), Some(1));
        assert_eq!(t.lookup(0x17f), Some(1));
        assert_eq!(t.lookup(0x180), Some(2));
        assert_eq!(t.lookup(0x2ff), Some(3));
        assert_eq!(t.lookup(0x300), None);
        assert!(RangeTable::<u32>::from_starts([2, 1], 5).is_err());
    }

    fn sorted_ranges() -> impl Strategy<Value = Vec<(u64, u64)>> {
        // Gaps and lengths from a skewed distribution so blocks hold 0, 1 or many entries.
        proptest::collection::vec((0u64..3, 0u64..40, 0u64..3), 0..300).prop_map(|v| {
            let mut at = 0x4000u64;
            v.into_iter()
                .map(|(gk, g, lk)| {
                    let gap = [0, g, g * 1000][gk as usize];
                    let len = [0, g + 1, g * 97 + 1][lk as usize];
                    at += gap;
                    let r = (at, at + len);
                    at += len;
                    r
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn matches_linear_scan(ranges in sorted_ranges(), probes in proptest::collection::vec(any::<u64>(), 50)) {
            let t = RangeTable::<u32>::new(ranges.iter().copied()).unwrap();
            let t64 = RangeTable::<u64>::new(ranges.iter().copied()).unwrap();
            let mut addrs: Vec<u64> = probes.iter().map(|p| 0x3000 + p % 0x200_0000).collect();
            for &(b, e) in &ranges {
                addrs.extend([b.wrapping_sub(1), b, e.wrapping_sub(1), e]);
            }
            for a in addrs {
                prop_assert_eq!(t.lookup(a), linear(&ranges, a), "addr {:#x}", a);
                prop_assert_eq!(t64.lookup(a), linear(&ranges, a), "addr {:#x}", a);
            }
            prop_assert!(t.heap_bytes() <= 8 * ranges.len() + 4 * ranges.len() + 4 * ranges.len() + 16 + 4 * ranges.len());
        }

        #[test]
        fn rejects_what_it_cannot_answer(ranges in proptest::collection::vec((0u64..1000, 0u64..50), 0..40)) {
            let ranges: Vec<(u64, u64)> = ranges.into_iter().map(|(b, l)| (b, b + l)).collect();
            match RangeTable::<u32>::new(ranges.iter().copied()) {
                Ok(t) => {
                    for a in 0..1100 {
                        prop_assert_eq!(t.lookup(a), linear(&ranges, a));
                    }
                }
                Err(_) => {
                    let ne: Vec<_> = ranges.iter().filter(|r| r.0 != r.1).collect();
                    prop_assert!(ne.windows(2).any(|w| w[1].0 < w[0].1));
                }
            }
        }
    }
}

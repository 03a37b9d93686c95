//! A prototype of a change to `RangeTable::lookup`, kept here to measure it against the real
//! one on the same tables (see the benchmark report): the search inside a block takes a fixed
//! number of branch-free halving steps instead of one per halving of that block's occupancy.
//!
//! Why: the current search runs `while size > 1` over the entries of the block the address
//! falls in, so its trip count changes from block to block. With random addresses that loop
//! exit is mispredicted on a good share of lookups, which costs more than the search itself on
//! small tables. Here every block is searched as a window of `width` (a power of two) entries
//! starting at its first entry: the entries after the block begin at or after the next block,
//! so they compare greater than the key and do no harm, and `width` sentinel entries pad the
//! end. Blocks holding more than `width` entries (dense clusters of tiny functions) take a
//! predictable branch to the variable-length search.

/// How a block is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// A window of `width` entries from the block's first entry, `log2(width)` steps.
    Window,
    /// As `Window`, but the steps unrolled for the table's width so they compile to
    /// conditional moves (LLVM turns a select inside a loop into a branch), the window taken
    /// as one fixed-size slice (one bounds check), and `width` covering 99% of the blocks
    /// rather than all: fuller blocks take the variable-length search.
    Unrolled,
    /// Today's search (halving over exactly the block's entries, so the trip count follows
    /// the block) with the select forced to a conditional move by
    /// `core::hint::select_unpredictable` (Rust 1.88).
    Variable,
}

/// A sorted table of non-empty, non-overlapping `u32`-offset ranges with a block index
/// (as `RangeTable`) and a fixed-width in-block search.
pub struct FixedStepTable {
    kind: Search,
    /// As in `RangeTable` (search position to input index when empty ranges were left out);
    /// always `None` here, but kept so the code after the search is the same as the real one.
    remap: Option<Box<[u32]>>,
    base: u64,
    limit: u64,
    /// `[begin, end]` offsets, then `width` sentinels `[u32::MAX, u32::MAX]`.
    entries: Vec<[u32; 2]>,
    index: Vec<u32>,
    shift: u32,
    width: usize,
}

impl FixedStepTable {
    /// Builds from sorted, non-empty, non-overlapping ranges; `finer` halves the block size
    /// that many times relative to `RangeTable`'s choice (at most one block per entry).
    pub fn new(ranges: &[(u32, u32)], finer: u32, max_width: usize, kind: Search) -> Self {
        let base = ranges[0].0 as u64;
        let span = ranges[ranges.len() - 1].1 as u64 - base;
        let n = ranges.len() as u64;
        let mut shift = 0u32;
        while shift < 63 && (span >> shift) >= n {
            shift += 1;
        }
        let shift = shift.saturating_sub(finer);
        let blocks = (span >> shift) as usize + 1;
        let mut index = Vec::with_capacity(blocks + 1);
        let mut count = 0usize;
        for b in 0..=blocks as u64 {
            while count < ranges.len() && ((ranges[count].0 as u64 - base) >> shift) < b {
                count += 1;
            }
            index.push(count as u32);
        }
        let max_occupancy = index
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        let width = match kind {
            Search::Window | Search::Variable => max_occupancy,
            Search::Unrolled => {
                // The occupancy that 99% of the blocks do not exceed.
                let mut occ: Vec<u32> = index.windows(2).map(|w| w[1] - w[0]).collect();
                occ.sort_unstable();
                occ.get(occ.len() * 99 / 100).map_or(1, |&o| o as usize)
            }
        };
        let width = width.next_power_of_two().min(max_width);
        let mut entries: Vec<[u32; 2]> = ranges
            .iter()
            .map(|&(b, e)| [(b as u64 - base) as u32, (e as u64 - base) as u32])
            .collect();
        entries.extend(std::iter::repeat_n([u32::MAX, u32::MAX], width));
        FixedStepTable {
            base,
            limit: span,
            entries,
            index,
            shift,
            width,
            kind,
            remap: None,
        }
    }

    /// The sorted index of the range holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<usize> {
        let off = addr.wrapping_sub(self.base);
        if off >= self.limit {
            return None;
        }
        let key = off as u32;
        let block = (off >> self.shift) as usize;
        let (lo, hi) = match (self.index.get(block), self.index.get(block + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => return None,
        };
        let e = &self.entries;
        let mut at = lo;
        if self.kind == Search::Variable {
            let mut size = hi - lo;
            while size > 1 {
                let half = size / 2;
                at = core::hint::select_unpredictable(e[at + half][0] <= key, at + half, at);
                size -= half;
            }
        } else if hi - lo <= self.width && self.kind == Search::Unrolled {
            at += match self.width {
                1 => 0,
                2 => window::<2>(e, lo, key),
                4 => window::<4>(e, lo, key),
                8 => window::<8>(e, lo, key),
                _ => window::<16>(e, lo, key),
            };
        } else if hi - lo <= self.width {
            // The last entry in [lo, lo + width) beginning at or before key; the trip count is
            // the table's, not the block's, so the loop branch is always predicted, and the
            // step is taken by a mask, not a branch.
            let mut step = self.width;
            while step > 1 {
                step /= 2;
                at += step & ((e[at + step][0] <= key) as usize).wrapping_neg();
            }
        } else {
            let mut size = hi - lo;
            while size > 1 {
                let half = size / 2;
                at += half & ((e[at + half][0] <= key) as usize).wrapping_neg();
                size -= half;
            }
        }
        // Nothing in the block begins at or before key: the candidate is the entry before it
        // (entry 0 begins at offset 0, so `at` is never 0 here).
        let pos = at - (e[at][0] > key) as usize;
        if key < e[pos][1] {
            Some(match &self.remap {
                None => pos,
                Some(m) => m[pos] as usize,
            })
        } else {
            None
        }
    }

    /// The window width (entries searched per lookup) and the block shift chosen.
    pub fn shape(&self) -> (usize, u32) {
        (self.width, self.shift)
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.len() * 8 + self.index.len() * 4
    }
}

/// Index (from `lo`) of the last of `e[lo..lo + W]` beginning at or before `key`, or 0, by
/// `log2(W)` unrolled conditional moves.
#[inline(always)]
fn window<const W: usize>(e: &[[u32; 2]], lo: usize, key: u32) -> usize {
    let w: &[[u32; 2]; W] = e[lo..lo + W].try_into().expect("W entries");
    let mut at = 0;
    let mut step = W;
    while step > 1 {
        step /= 2;
        at = if w[at + step][0] <= key {
            at + step
        } else {
            at
        };
    }
    at
}

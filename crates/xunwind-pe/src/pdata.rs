//! `.pdata`: RUNTIME_FUNCTION entries and `RtlLookupFunctionEntry`.

use xunwind_core::{RangeTable, RangeTableError};

/// Size of one RUNTIME_FUNCTION in bytes.
pub const RUNTIME_FUNCTION_SIZE: usize = 12;

/// A RUNTIME_FUNCTION: the code range `[begin, end)` and where its unwind data is (RVAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuntimeFunction {
    /// BeginAddress.
    pub begin: u32,
    /// EndAddress (exclusive).
    pub end: u32,
    /// UnwindData: the UNWIND_INFO RVA, or with bit 0 set the RVA of another RUNTIME_FUNCTION.
    pub unwind_data: u32,
}

impl RuntimeFunction {
    /// Decodes 12 little-endian bytes.
    #[inline]
    pub fn from_bytes(b: &[u8; 12]) -> Self {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        RuntimeFunction {
            begin: u(0),
            end: u(4),
            unwind_data: u(8),
        }
    }

    /// Whether UnwindData points at another RUNTIME_FUNCTION (bit 0 set).
    #[inline]
    pub fn is_indirect(&self) -> bool {
        self.unwind_data & 1 != 0
    }

    /// The RVA UnwindData points to, without its indirection bit.
    #[inline]
    pub fn target_rva(&self) -> u32 {
        self.unwind_data & !1
    }

    /// Whether `rva` lies in `[begin, end)`.
    #[inline]
    pub fn contains(&self, rva: u32) -> bool {
        self.begin <= rva && rva < self.end
    }
}

/// The function table of an image: `.pdata` bytes plus a validated search index.
///
/// Lookups go through [`RangeTable`] when the table is sorted and free of overlaps. When it is
/// not (hostile or broken images), lookups reproduce Windows' own binary search step by step, so
/// the answer is still the one Windows would give, and [`FunctionTable::order_error`] says why the
/// fast path was not taken.
#[derive(Clone, Debug)]
pub struct FunctionTable<'a> {
    bytes: &'a [u8],
    index: Result<RangeTable<u32>, RangeTableError>,
}

impl<'a> FunctionTable<'a> {
    /// Wraps `.pdata` bytes (any trailing partial entry is ignored).
    pub fn new(bytes: &'a [u8]) -> Self {
        let bytes = &bytes[..bytes.len() / RUNTIME_FUNCTION_SIZE * RUNTIME_FUNCTION_SIZE];
        let mut t = FunctionTable {
            bytes,
            index: Ok(RangeTable::default()),
        };
        t.index = Self::windows_order(&t)
            .and_then(|()| RangeTable::new(t.iter().map(|f| (f.begin as u64, f.end as u64))));
        t
    }

    /// Windows' binary search steers by every entry it probes, empty ones included: the fast
    /// index gives the same answers only if the whole table, empty entries too, is in order
    /// (`RangeTable` alone would accept an out-of-place empty entry, which misleads Windows).
    fn windows_order(t: &FunctionTable<'_>) -> Result<(), RangeTableError> {
        let mut prev: Option<RuntimeFunction> = None;
        for (index, f) in t.iter().enumerate() {
            let (begin, end) = (f.begin as u64, f.end as u64);
            if end < begin {
                return Err(RangeTableError::Inverted { index, begin, end });
            }
            if let Some(p) = prev {
                if f.begin < p.begin {
                    return Err(RangeTableError::Unsorted {
                        index,
                        begin,
                        prev_begin: p.begin as u64,
                    });
                }
                if f.begin < p.end {
                    return Err(RangeTableError::Overlap {
                        index,
                        begin,
                        prev_end: p.end as u64,
                    });
                }
            }
            prev = Some(f);
        }
        Ok(())
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / RUNTIME_FUNCTION_SIZE
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Entry `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<RuntimeFunction> {
        let off = i.checked_mul(RUNTIME_FUNCTION_SIZE)?;
        let b = self.bytes.get(off..off + RUNTIME_FUNCTION_SIZE)?;
        Some(RuntimeFunction::from_bytes(b.try_into().ok()?))
    }

    /// All entries in table order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RuntimeFunction> + 'a {
        self.bytes
            .chunks_exact(RUNTIME_FUNCTION_SIZE)
            .map(|c| RuntimeFunction::from_bytes(c.try_into().expect("chunk of 12")))
    }

    /// Why the table cannot use the fast index (unsorted or overlapping), if so.
    pub fn order_error(&self) -> Option<RangeTableError> {
        self.index.as_ref().err().copied()
    }

    /// Indices of entries with `begin == end`, which no address can hit.
    pub fn empty_entries(&self) -> &[u32] {
        self.index.as_ref().map_or(&[], |t| t.empty_ranges())
    }

    /// The validated index, when the table is sorted.
    pub fn range_table(&self) -> Option<&RangeTable<u32>> {
        self.index.as_ref().ok()
    }

    /// Index of the entry Windows' binary search finds for `rva` (no indirection followed).
    #[inline]
    pub fn find(&self, rva: u32) -> Option<usize> {
        match &self.index {
            Ok(t) => t.lookup(rva as u64),
            Err(_) => self.windows_search(rva),
        }
    }

    /// Windows' binary search exactly (min/max over signed indices), for tables that are not
    /// sorted: its answer there depends on the probe sequence, which we therefore reproduce.
    pub fn windows_search(&self, rva: u32) -> Option<usize> {
        let (mut lo, mut hi) = (0i64, self.len() as i64 - 1);
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let f = self.get(mid as usize)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(u32, u32, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(b, e, u)| [b, e, u])
            .flat_map(u32::to_le_bytes)
            .collect()
    }

    #[test]
    fn sorted_table_uses_index_and_agrees_with_windows() {
        let bytes = table(&[
            (0x1000, 0x1010, 0x5000),
            (0x1010, 0x1010, 0x5010),
            (0x1010, 0x1040, 0x5020),
            (0x1100, 0x1200, 0x5031),
        ]);
        let t = FunctionTable::new(&bytes);
        assert!(t.order_error().is_none());
        assert_eq!(t.empty_entries(), &[1]);
        for rva in 0xff0..0x1210 {
            assert_eq!(t.find(rva), t.windows_search(rva), "rva {rva:#x}");
        }
        assert_eq!(t.find(0x1010), Some(2));
        assert!(t.get(3).unwrap().is_indirect());
        assert_eq!(t.get(3).unwrap().target_rva(), 0x5030);
    }

    #[test]
    fn unsorted_table_follows_windows_probe_order() {
        // Windows probes the middle entry first and never sees entry 0 for this rva.
        let bytes = table(&[
            (0x3000, 0x3100, 0),
            (0x1000, 0x1100, 0),
            (0x2000, 0x2100, 0),
        ]);
        let t = FunctionTable::new(&bytes);
        assert!(matches!(
            t.order_error(),
            Some(RangeTableError::Unsorted { index: 1, .. })
        ));
        assert_eq!(t.find(0x1050), Some(1));
        assert_eq!(t.find(0x3050), None);
        assert_eq!(t.find(0x2050), Some(2));
    }

    #[test]
    fn misplaced_empty_entry_falls_back_to_windows_search() {
        // The empty entry is out of order: Windows probes it first and goes left, missing
        // the entry that holds 0x1850. The answer must be Windows' (found by fuzzing).
        let bytes = table(&[
            (0x1000, 0x1010, 0),
            (0x1840, 0x1880, 0),
            (0xffff_ffff, 0xffff_ffff, 0),
            (0x1900, 0x1910, 0),
            (0x1920, 0x1930, 0),
        ]);
        let t = FunctionTable::new(&bytes);
        assert!(t.order_error().is_some());
        assert_eq!(t.find(0x1850), t.windows_search(0x1850));
        assert_eq!(t.find(0x1925), t.windows_search(0x1925));
    }

    #[test]
    fn partial_trailing_entry_is_ignored() {
        let mut bytes = table(&[(0x1000, 0x1010, 0x5000)]);
        bytes.extend([1, 2, 3]);
        let t = FunctionTable::new(&bytes);
        assert_eq!(t.len(), 1);
        assert_eq!(t.find(0x1000), Some(0));
    }
}

//! Finding the FDE for an address: a dense-key search over sorted initial locations.

use crate::{DwarfError, Reader, SectionData};
use gimli::{BaseAddresses, CieOrFde, EhFrame, EhFrameHdr, LittleEndian, Pointer, UnwindSection};
use xunwind_core::RangeTable;

/// Sorted FDE start addresses (link-time) and the section offset of each FDE.
///
/// A lookup returns the FDE with the greatest start at or below the address — the same
/// candidate as a binary search over `.eh_frame_hdr` — which the caller then bound-checks
/// against the FDE's own range.
#[derive(Clone, Debug, Default)]
pub struct FdeIndex {
    table: RangeTable<u32>,
    offsets: Box<[u32]>,
}

impl FdeIndex {
    fn from_pairs(mut pairs: Vec<(u64, u32)>, end: u64, sort: bool) -> Result<Self, DwarfError> {
        if sort {
            pairs.sort_unstable();
        }
        let table = RangeTable::from_starts(pairs.iter().map(|p| p.0), end)
            .map_err(|_| DwarfError::Malformed("FDE start addresses unsorted or too far apart"))?;
        Ok(FdeIndex {
            table,
            offsets: pairs.into_iter().map(|p| p.1).collect(),
        })
    }

    /// Reads `.eh_frame_hdr`'s search table; fails if it is absent, unsorted, or points outside
    /// `.eh_frame`.
    pub(crate) fn from_eh_frame_hdr(
        hdr: SectionData<'_>,
        eh: SectionData<'_>,
        bases: &BaseAddresses,
        eh_frame: &EhFrame<Reader<'_>>,
    ) -> Result<Self, DwarfError> {
        let malformed = DwarfError::Malformed;
        let parsed = EhFrameHdr::new(hdr.data, LittleEndian)
            .parse(bases, 8)
            .map_err(|_| malformed(".eh_frame_hdr header"))?;
        if parsed.eh_frame_ptr() != Pointer::Direct(eh.address) {
            return Err(malformed(".eh_frame_hdr names another .eh_frame"));
        }
        let table = parsed
            .table()
            .ok_or(malformed(".eh_frame_hdr has no search table"))?;
        let mut iter = table.iter(bases);
        let mut pairs = Vec::new();
        // Each entry takes at least two bytes of the header, which bounds the loop.
        for _ in 0..=hdr.data.len() / 2 {
            let Some((start, fde)) = iter
                .next()
                .map_err(|_| malformed(".eh_frame_hdr table entry"))?
            else {
                break;
            };
            let (Pointer::Direct(start), Pointer::Direct(fde)) = (start, fde) else {
                return Err(malformed("indirect pointer in .eh_frame_hdr"));
            };
            let off = fde
                .checked_sub(eh.address)
                .filter(|&o| o < eh.data.len() as u64)
                .ok_or(malformed(".eh_frame_hdr points outside .eh_frame"))?;
            pairs.push((start, off as u32));
        }
        let end = match pairs.last() {
            Some(&(start, off)) => eh_frame
                .fde_from_offset(bases, (off as usize).into(), EhFrame::cie_from_offset)
                .map_or(start + 1, |f| f.end_address().max(start + 1)),
            None => 0,
        };
        Self::from_pairs(pairs, end, false)
    }

    /// Indexes every FDE of a section (built once: the header is missing or unusable, or the
    /// section is `.debug_frame`). Stops at the first malformed entry, keeping those before it.
    pub(crate) fn scan<'d, S>(
        section: &S,
        section_len: usize,
        bases: &BaseAddresses,
    ) -> Result<Self, DwarfError>
    where
        S: UnwindSection<Reader<'d>>,
        S::Offset: gimli::UnwindOffset<usize>,
    {
        let mut entries = section.entries(bases);
        let mut pairs = Vec::new();
        let mut end = 0u64;
        let mut cies: Vec<(usize, gimli::CommonInformationEntry<Reader<'d>>)> = Vec::new();
        // Every entry has a 4-byte length, which bounds the loop by the section size.
        let limit = section_len / 4 + 1;
        for _ in 0..limit {
            let Ok(Some(entry)) = entries.next() else {
                break;
            };
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let offset = partial.offset();
            let fde = partial.parse(|s, b, o| {
                let key = gimli::UnwindOffset::into(o);
                if let Some((_, c)) = cies.iter().find(|(k, _)| *k == key) {
                    return Ok(c.clone());
                }
                let c = s.cie_from_offset(b, o)?;
                if cies.len() < 64 {
                    cies.push((key, c.clone()));
                }
                Ok(c)
            });
            let Ok(fde) = fde else { break };
            if fde.len() == 0 {
                continue;
            }
            let Ok(offset) = u32::try_from(offset) else {
                break;
            };
            end = end.max(fde.end_address());
            pairs.push((fde.initial_address(), offset));
        }
        Self::from_pairs(pairs, end, true)
    }

    /// The section offset of the FDE whose start is the greatest at or below `svma`.
    #[inline]
    pub fn candidate(&self, svma: u64) -> Option<usize> {
        let i = self.position(svma)?;
        self.offsets.get(i).map(|&o| o as usize)
    }

    /// The position in the index (0..len) of [`FdeIndex::candidate`]'s FDE.
    #[inline]
    pub fn position(&self, svma: u64) -> Option<usize> {
        self.table.lookup(svma)
    }

    /// Number of FDEs indexed.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether no FDE is indexed.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Section offsets of the indexed FDEs, in address order.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Bytes of heap memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.offsets.len() * 4
    }
}

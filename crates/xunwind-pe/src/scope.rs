//! `__C_specific_handler` language data: the SEH scope table of `__try` blocks.

use crate::PeError;

/// `HandlerAddress` value meaning EXCEPTION_EXECUTE_HANDLER without calling a filter.
pub const EXCEPTION_EXECUTE_HANDLER: u32 = 1;

/// What a scope does when an exception passes through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// `__try/__finally`: `handler` is the termination handler, run in the unwind phase.
    Finally {
        /// RVA of the `__finally` body.
        handler: u32,
    },
    /// `__try/__except(EXCEPTION_EXECUTE_HANDLER)`: no filter is called.
    ExceptAll {
        /// RVA where execution resumes (the `__except` body).
        target: u32,
    },
    /// `__try/__except(filter)`: the filter decides.
    Except {
        /// RVA of the filter function.
        filter: u32,
        /// RVA where execution resumes if it returns EXCEPTION_EXECUTE_HANDLER.
        target: u32,
    },
}

/// One scope record: the guarded range `[begin, end)` and its handler (RVAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeRecord {
    /// First guarded byte.
    pub begin: u32,
    /// End of the guarded range (exclusive).
    pub end: u32,
    /// Filter, 1 (EXCEPTION_EXECUTE_HANDLER), or the `__finally` handler.
    pub handler: u32,
    /// `__except` target; 0 for `__finally`.
    pub jump_target: u32,
}

impl ScopeRecord {
    /// The kind of scope, as `__C_specific_handler` reads it.
    pub fn kind(&self) -> ScopeKind {
        match (self.jump_target, self.handler) {
            (0, handler) => ScopeKind::Finally { handler },
            (target, EXCEPTION_EXECUTE_HANDLER) => ScopeKind::ExceptAll { target },
            (target, filter) => ScopeKind::Except { filter, target },
        }
    }

    /// Whether `rva` is guarded by this scope.
    pub fn contains(&self, rva: u32) -> bool {
        self.begin <= rva && rva < self.end
    }
}

/// A parsed scope table: `u32 Count` then `Count` records of four RVAs.
#[derive(Clone, Copy, Debug)]
pub struct ScopeTable<'a> {
    records: &'a [u8],
}

impl<'a> ScopeTable<'a> {
    /// Parses the handler data of a `__C_specific_handler` frame. A count larger than the data
    /// is an error (never an allocation): the records are read in place.
    pub fn parse(data: &'a [u8], data_rva: u32) -> Result<Self, PeError> {
        let count = data
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(PeError::OutOfImage {
                rva: data_rva,
                len: 4,
            })?;
        let len = (count as u64) * 16;
        let records = data
            .get(4..)
            .and_then(|r| r.get(..usize::try_from(len).ok()?))
            .ok_or(PeError::OutOfImage {
                rva: data_rva,
                len: u32::try_from(len + 4).unwrap_or(u32::MAX),
            })?;
        Ok(ScopeTable { records })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len() / 16
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in table order (the order `__C_specific_handler` tries them: innermost first).
    pub fn records(&self) -> impl ExactSizeIterator<Item = ScopeRecord> + 'a {
        self.records.chunks_exact(16).map(|c| {
            let u = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            ScopeRecord {
                begin: u(0),
                end: u(4),
                handler: u(8),
                jump_target: u(12),
            }
        })
    }

    /// The records guarding `rva`, with their indices, in the order they are tried.
    pub fn covering(&self, rva: u32) -> impl Iterator<Item = (usize, ScopeRecord)> + 'a {
        self.records()
            .enumerate()
            .filter(move |(_, r)| r.contains(rva))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_kinds_and_cover() {
        let mut d = 3u32.to_le_bytes().to_vec();
        for r in [
            [0x1010u32, 0x1020, 0x1500, 0x1030], // filter
            [0x1000, 0x1040, 1, 0x1050],         // execute handler
            [0x1000, 0x1060, 0x1600, 0],         // finally
        ] {
            d.extend(r.iter().flat_map(|v| v.to_le_bytes()));
        }
        let t = ScopeTable::parse(&d, 0x4000).unwrap();
        assert_eq!(t.len(), 3);
        let kinds: Vec<_> = t.covering(0x1015).map(|(i, r)| (i, r.kind())).collect();
        assert_eq!(
            kinds,
            [
                (
                    0,
                    ScopeKind::Except {
                        filter: 0x1500,
                        target: 0x1030
                    }
                ),
                (1, ScopeKind::ExceptAll { target: 0x1050 }),
                (2, ScopeKind::Finally { handler: 0x1600 }),
            ]
        );
        assert_eq!(t.covering(0x1045).count(), 1);
        assert_eq!(t.covering(0x1060).count(), 0);
    }

    #[test]
    fn absurd_counts_are_errors() {
        let mut d = u32::MAX.to_le_bytes().to_vec();
        d.extend([0u8; 32]);
        assert!(ScopeTable::parse(&d, 0).is_err());
        assert!(ScopeTable::parse(&[1, 0], 0).is_err());
        let t = ScopeTable::parse(&[0, 0, 0, 0], 0).unwrap();
        assert!(t.is_empty());
    }
}

//! Dynamic function tables: the equivalents of `RtlAddFunctionTable`,
//! `RtlAddGrowableFunctionTable`/`RtlGrowFunctionTable`, `RtlInstallFunctionTableCallback` and
//! `RtlDeleteFunctionTable`, for code that no image describes (JIT compilers).
//!
//! `RtlLookupFunctionEntry` consults these only for a pc outside every loaded image (or in an
//! image without an exception directory); that order is the caller's (the facade's
//! dispatcher). Among dynamic tables the first registered one whose range holds the pc wins.
//!
//! Each table comes with the bytes of its code region (from its base address), because the
//! entries' UnwindData, handler and language-data RVAs are relative to that base and the
//! unwinder reads code bytes there to recognise epilogs.

use crate::{PeImage, RuntimeFunction};
use core::fmt;

/// Identifies a registered dynamic table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DynamicTableId(usize);

/// Why a dynamic table could not be registered or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DynamicTableError {
    /// `RtlInstallFunctionTableCallback` needs a table identifier with both low bits set.
    BadIdentifier(u64),
    /// An entry count above the table's maximum, below its current count, or a range whose end
    /// is not above its start.
    BadCount,
    /// No table with that id (deleted, or of another kind).
    NoSuchTable,
}

impl fmt::Display for DynamicTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DynamicTableError::BadIdentifier(id) => {
                write!(f, "table identifier {id:#x} lacks its two low bits")
            }
            DynamicTableError::BadCount => f.write_str("entry count or range out of bounds"),
            DynamicTableError::NoSuchTable => f.write_str("no such dynamic function table"),
        }
    }
}

impl std::error::Error for DynamicTableError {}

/// The callback of `RtlInstallFunctionTableCallback`: the entry for a pc (RVAs relative to the
/// table's base), or `None`.
pub type FunctionTableCallback<'a> = Box<dyn Fn(u64) -> Option<RuntimeFunction> + 'a>;

enum Kind<'a> {
    /// `RtlAddFunctionTable`: searched by binary search when sorted, else linearly.
    Fixed {
        entries: Vec<RuntimeFunction>,
        sorted: bool,
    },
    /// `RtlAddGrowableFunctionTable`: sorted; only the first `count` entries are live.
    Growable {
        entries: Vec<RuntimeFunction>,
        count: usize,
    },
    /// `RtlInstallFunctionTableCallback`.
    Callback {
        identifier: u64,
        callback: FunctionTableCallback<'a>,
    },
}

struct Table<'a> {
    base: u64,
    /// The pc range the table answers for: [begin, end).
    range: (u64, u64),
    image: PeImage<'a>,
    kind: Kind<'a>,
}

/// A hit in a dynamic table: the entry and where its RVAs point.
#[derive(Clone, Copy, Debug)]
pub struct DynamicEntry<'t, 'a> {
    /// Which table.
    pub table: DynamicTableId,
    /// The base its RVAs are relative to.
    pub base: u64,
    /// The entry, as `RtlLookupFunctionEntry` returns it.
    pub function: RuntimeFunction,
    /// The code region's bytes, as an image mapped at `base` (for unwind info and code).
    pub image: &'t PeImage<'a>,
}

/// The process's dynamic function tables.
#[derive(Default)]
pub struct DynamicFunctionTables<'a> {
    tables: Vec<Option<Table<'a>>>,
}

impl fmt::Debug for DynamicFunctionTables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.tables
                    .iter()
                    .flatten()
                    .map(|t| (t.base, t.range.0, t.range.1)),
            )
            .finish()
    }
}

fn binary_search(entries: &[RuntimeFunction], rva: u32) -> Option<RuntimeFunction> {
    let i = entries.partition_point(|f| f.begin <= rva);
    let f = *entries.get(i.checked_sub(1)?)?;
    f.contains(rva).then_some(f)
}

impl<'a> DynamicFunctionTables<'a> {
    /// No tables.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, t: Table<'a>) -> DynamicTableId {
        self.tables.push(Some(t));
        DynamicTableId(self.tables.len() - 1)
    }

    /// `RtlAddFunctionTable(entries, count, base)`: `code` holds the bytes from `base`
    /// (code, unwind info, language data). The table answers for `[base + least Begin,
    /// base + greatest End)`; an unsorted table is searched linearly, as Windows does.
    pub fn add_function_table(
        &mut self,
        entries: Vec<RuntimeFunction>,
        base: u64,
        code: &'a [u8],
    ) -> DynamicTableId {
        let lo = entries.iter().map(|f| f.begin).min().unwrap_or(0);
        let hi = entries.iter().map(|f| f.end).max().unwrap_or(0);
        let sorted = entries.windows(2).all(|w| w[0].begin <= w[1].begin);
        self.push(Table {
            base,
            range: (base.wrapping_add(lo as u64), base.wrapping_add(hi as u64)),
            image: PeImage::from_parts(code, base, 0, 0),
            kind: Kind::Fixed { entries, sorted },
        })
    }

    /// `RtlAddGrowableFunctionTable(&id, entries, count, entries.len(), range_base,
    /// range_end)`: `entries` is the whole buffer (its length is MaximumEntryCount), sorted;
    /// the first `count` are live. RVAs are relative to `range_base`.
    pub fn add_growable_function_table(
        &mut self,
        entries: Vec<RuntimeFunction>,
        count: usize,
        range_base: u64,
        range_end: u64,
        code: &'a [u8],
    ) -> Result<DynamicTableId, DynamicTableError> {
        if count > entries.len() || range_end <= range_base {
            return Err(DynamicTableError::BadCount);
        }
        Ok(self.push(Table {
            base: range_base,
            range: (range_base, range_end),
            image: PeImage::from_parts(code, range_base, 0, 0),
            kind: Kind::Growable { entries, count },
        }))
    }

    /// The buffer of a growable table, to write entries before [`Self::grow_function_table`].
    pub fn growable_entries_mut(
        &mut self,
        id: DynamicTableId,
    ) -> Result<&mut [RuntimeFunction], DynamicTableError> {
        match self.tables.get_mut(id.0).and_then(Option::as_mut) {
            Some(Table {
                kind: Kind::Growable { entries, .. },
                ..
            }) => Ok(entries),
            _ => Err(DynamicTableError::NoSuchTable),
        }
    }

    /// `RtlGrowFunctionTable(id, new_count)`: the count only grows, up to the maximum.
    pub fn grow_function_table(
        &mut self,
        id: DynamicTableId,
        new_count: usize,
    ) -> Result<(), DynamicTableError> {
        match self.tables.get_mut(id.0).and_then(Option::as_mut) {
            Some(Table {
                kind: Kind::Growable { entries, count },
                ..
            }) => {
                if new_count < *count || new_count > entries.len() {
                    return Err(DynamicTableError::BadCount);
                }
                *count = new_count;
                Ok(())
            }
            _ => Err(DynamicTableError::NoSuchTable),
        }
    }

    /// `RtlInstallFunctionTableCallback(identifier, base, length, callback, ...)`: the
    /// identifier must have both low bits set (Windows' mark of a callback table).
    pub fn install_function_table_callback(
        &mut self,
        identifier: u64,
        base: u64,
        length: u32,
        callback: FunctionTableCallback<'a>,
        code: &'a [u8],
    ) -> Result<DynamicTableId, DynamicTableError> {
        if identifier & 3 != 3 {
            return Err(DynamicTableError::BadIdentifier(identifier));
        }
        Ok(self.push(Table {
            base,
            range: (base, base.wrapping_add(length as u64)),
            image: PeImage::from_parts(code, base, 0, 0),
            kind: Kind::Callback {
                identifier,
                callback,
            },
        }))
    }

    /// `RtlDeleteFunctionTable` / `RtlDeleteGrowableFunctionTable`.
    pub fn delete_function_table(&mut self, id: DynamicTableId) -> Result<(), DynamicTableError> {
        self.tables
            .get_mut(id.0)
            .and_then(Option::take)
            .map(|_| ())
            .ok_or(DynamicTableError::NoSuchTable)
    }

    /// The callback table registered under `identifier`, if any.
    pub fn callback_table(&self, identifier: u64) -> Option<DynamicTableId> {
        self.tables.iter().position(|t| {
            matches!(t, Some(Table { kind: Kind::Callback { identifier: i, .. }, .. }) if *i == identifier)
        }).map(DynamicTableId)
    }

    /// The entry for `pc`: the first table whose range holds it answers (a range hit without
    /// an entry is a leaf, as for an image).
    pub fn lookup(&self, pc: u64) -> Option<DynamicEntry<'_, 'a>> {
        let t = self
            .tables
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.as_ref()?)))
            .find(|(_, t)| t.range.0 <= pc && pc < t.range.1);
        let (i, t) = t?;
        let rva = u32::try_from(pc.wrapping_sub(t.base)).ok()?;
        let f = match &t.kind {
            Kind::Fixed { entries, sorted } => {
                if *sorted {
                    binary_search(entries, rva)?
                } else {
                    *entries.iter().find(|f| f.contains(rva))?
                }
            }
            Kind::Growable { entries, count } => binary_search(&entries[..*count], rva)?,
            Kind::Callback { callback, .. } => callback(pc)?,
        };
        // An indirect entry names the real one by RVA, as in an image.
        let f = if f.is_indirect() {
            t.image.runtime_function_at(f.target_rva()).ok()?
        } else {
            f
        };
        Some(DynamicEntry {
            table: DynamicTableId(i),
            base: t.base,
            function: f,
            image: &t.image,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rf(begin: u32, end: u32) -> RuntimeFunction {
        RuntimeFunction {
            begin,
            end,
            unwind_data: 0x800,
        }
    }

    #[test]
    fn fixed_growable_callback_and_delete() {
        let code = vec![0u8; 0x1000];
        let mut d = DynamicFunctionTables::new();
        let a = d.add_function_table(vec![rf(0x10, 0x20), rf(0x20, 0x40)], 0x1000_0000, &code);
        assert_eq!(d.lookup(0x1000_0015).unwrap().function.begin, 0x10);
        assert_eq!(d.lookup(0x1000_0020).unwrap().function.begin, 0x20);
        assert!(d.lookup(0x1000_000f).is_none());
        assert!(d.lookup(0x1000_0040).is_none());
        // Unsorted: still found, by a linear scan.
        let u = d.add_function_table(vec![rf(0x30, 0x40), rf(0x10, 0x20)], 0x2000_0000, &code);
        assert_eq!(d.lookup(0x2000_0012).unwrap().function.begin, 0x10);
        assert_eq!(d.lookup(0x2000_0012).unwrap().table, u);
        // Growable: entries past the count are not live until grown.
        let mut buf = vec![rf(0x0, 0x10); 4];
        buf[1] = rf(0x10, 0x20);
        let g = d
            .add_growable_function_table(buf, 1, 0x3000_0000, 0x3000_1000, &code)
            .unwrap();
        assert!(d.lookup(0x3000_0015).is_none());
        d.growable_entries_mut(g).unwrap()[2] = rf(0x20, 0x30);
        d.grow_function_table(g, 3).unwrap();
        assert_eq!(d.lookup(0x3000_0015).unwrap().function.begin, 0x10);
        assert_eq!(d.lookup(0x3000_0025).unwrap().function.begin, 0x20);
        assert_eq!(
            d.grow_function_table(g, 2),
            Err(DynamicTableError::BadCount)
        );
        assert_eq!(
            d.grow_function_table(g, 5),
            Err(DynamicTableError::BadCount)
        );
        assert_eq!(
            d.grow_function_table(a, 1),
            Err(DynamicTableError::NoSuchTable)
        );
        // Callback: identifier must carry both low bits.
        assert_eq!(
            d.install_function_table_callback(
                0x4000_0000,
                0x4000_0000,
                0x100,
                Box::new(|_| None),
                &code
            )
            .unwrap_err(),
            DynamicTableError::BadIdentifier(0x4000_0000)
        );
        let c = d
            .install_function_table_callback(
                0x4000_0003,
                0x4000_0000,
                0x100,
                Box::new(|pc| (pc & 0xff < 0x80).then(|| rf(0, 0x80))),
                &code,
            )
            .unwrap();
        assert_eq!(d.callback_table(0x4000_0003), Some(c));
        assert_eq!(d.lookup(0x4000_0010).unwrap().function.end, 0x80);
        assert!(d.lookup(0x4000_0090).is_none());
        assert!(d.lookup(0x4000_0100).is_none());
        d.delete_function_table(a).unwrap();
        assert!(d.lookup(0x1000_0015).is_none());
        assert_eq!(
            d.delete_function_table(a),
            Err(DynamicTableError::NoSuchTable)
        );
    }
}

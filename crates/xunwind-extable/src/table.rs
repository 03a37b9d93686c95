//! Exact lookup of a faulting instruction, in one table and across the kernel's tables.
//!
//! `search_exception_tables(ip)`: the vmlinux table first (whatever the address), then the
//! module whose memory holds `ip`, then the BPF program whose image holds it. Each table is
//! searched for an entry whose `insn` equals `ip` exactly; a table is sorted by `insn` (at build
//! time for vmlinux, at load time for modules).

use xunwind_core::{RangeTable, RangeTableError};

use crate::error::{Error, Result};
use crate::format::ExTableEntry;

/// What a table's `fixup` field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FixupKind {
    /// A resume address (`&fixup + fixup`).
    Address,
    /// x86 BPF JIT: low 8 bits = length of the faulting load, bits 8+ = `pt_regs` offset of its
    /// destination register (`ex_handler_bpf`); not an address.
    BpfX86,
}

#[derive(Clone, Debug)]
enum Index {
    Narrow(RangeTable<u32>),
    Wide(RangeTable<u64>),
}

impl Index {
    fn build(ranges: &[(u64, u64)]) -> Result<Self> {
        match RangeTable::<u32>::new(ranges.iter().copied()) {
            Ok(t) => Ok(Index::Narrow(t)),
            Err(RangeTableError::SpanTooLarge { .. }) => {
                Ok(Index::Wide(RangeTable::new(ranges.iter().copied())?))
            }
            Err(e) => Err(e.into()),
        }
    }

    #[inline]
    fn lookup(&self, addr: u64) -> Option<usize> {
        match self {
            Index::Narrow(t) => t.lookup(addr),
            Index::Wide(t) => t.lookup(addr),
        }
    }
}

/// One sorted exception table with an exact-match index.
#[derive(Clone, Debug)]
pub struct ExTable {
    entries: Vec<ExTableEntry>,
    /// Input index of each sorted entry.
    order: Vec<u32>,
    /// Sorted position of each distinct insn (present only when some insn repeats).
    distinct: Option<Vec<u32>>,
    duplicates: usize,
    was_sorted: bool,
    index: Index,
    kind: FixupKind,
}

impl ExTable {
    /// Sorts the entries by `insn` (as `sort_extable` does; addresses are already absolute, so
    /// the rebasing of relative fields is implicit) and indexes them.
    pub fn new(entries: Vec<ExTableEntry>, kind: FixupKind) -> Result<Self> {
        if entries.len() >= u32::MAX as usize {
            return Err(Error::TooLarge("entries"));
        }
        let was_sorted = entries.windows(2).all(|w| w[0].insn <= w[1].insn);
        let mut order: Vec<u32> = (0..entries.len() as u32).collect();
        if !was_sorted {
            order.sort_by_key(|&i| entries[i as usize].insn);
        }
        let entries: Vec<ExTableEntry> = if was_sorted {
            entries
        } else {
            order.iter().map(|&i| entries[i as usize]).collect()
        };
        let mut ranges = Vec::with_capacity(entries.len());
        let mut distinct = Vec::new();
        let mut duplicates = 0;
        for (pos, e) in entries.iter().enumerate() {
            if pos > 0 && entries[pos - 1].insn == e.insn {
                duplicates += 1;
                continue;
            }
            if e.insn == u64::MAX {
                // insn + 1 would wrap: such an entry cannot be indexed (no code lives there).
                continue;
            }
            ranges.push((e.insn, e.insn + 1));
            distinct.push(pos as u32);
        }
        let distinct = (distinct.len() != entries.len()).then_some(distinct);
        Ok(ExTable {
            index: Index::build(&ranges)?,
            entries,
            order,
            distinct,
            duplicates,
            was_sorted,
            kind,
        })
    }

    /// The entries, sorted by `insn`.
    pub fn entries(&self) -> &[ExTableEntry] {
        &self.entries
    }

    /// The input position of the `i`-th sorted entry.
    pub fn input_index(&self, i: usize) -> Option<usize> {
        self.order.get(i).map(|&o| o as usize)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the input was already sorted by `insn` (vmlinux must be).
    pub fn was_sorted(&self) -> bool {
        self.was_sorted
    }

    /// Number of entries whose `insn` repeats the previous one.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// What the `fixup` field holds.
    pub fn fixup_kind(&self) -> FixupKind {
        self.kind
    }

    /// Sorted position of the entry for exactly `ip` (the first one if several).
    #[inline]
    pub fn lookup_index(&self, ip: u64) -> Option<usize> {
        let i = self.index.lookup(ip)?;
        Some(match &self.distinct {
            None => i,
            Some(d) => d[i] as usize,
        })
    }

    /// The entry for exactly `ip`.
    #[inline]
    pub fn lookup(&self, ip: u64) -> Option<&ExTableEntry> {
        self.lookup_index(ip).map(|i| &self.entries[i])
    }

    /// The same answer by a plain binary search (`search_extable`), for comparison.
    pub fn lookup_bsearch(&self, ip: u64) -> Option<&ExTableEntry> {
        let i = self.entries.partition_point(|e| e.insn < ip);
        self.entries.get(i).filter(|e| e.insn == ip)
    }
}

/// Where a fault's entry was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// The vmlinux table.
    Kernel,
    /// A module's table, by module name.
    Module(&'a str),
    /// A BPF program's table, by name.
    Bpf(&'a str),
}

/// The result of [`ExceptionTables::search`].
#[derive(Clone, Copy, Debug)]
pub struct Found<'a> {
    /// Which table.
    pub source: Source<'a>,
    /// The entry.
    pub entry: &'a ExTableEntry,
    /// What its `fixup` holds.
    pub kind: FixupKind,
}

#[derive(Clone, Debug)]
struct Owner {
    name: String,
    bpf: bool,
    table: ExTable,
}

/// The kernel's set of exception tables: vmlinux, loaded modules, BPF programs.
#[derive(Clone, Debug, Default)]
pub struct ExceptionTables {
    kernel: Option<ExTable>,
    owners: Vec<Owner>,
    /// Memory ranges `(begin, end, owner)` of modules and programs, sorted.
    ranges: Vec<(u64, u64, u32)>,
    map: RangeTable<u64>,
}

impl ExceptionTables {
    /// No tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the vmlinux table.
    pub fn set_kernel(&mut self, table: ExTable) {
        self.kernel = Some(table);
    }

    /// Adds a module whose memory is `ranges` (its core and init allocations).
    pub fn add_module(&mut self, name: &str, ranges: &[(u64, u64)], table: ExTable) -> Result<()> {
        self.add(name, false, ranges, table)
    }

    /// Adds a BPF program whose JIT image is `range`; its table's fixups are BPF-style.
    pub fn add_bpf(&mut self, name: &str, range: (u64, u64), table: ExTable) -> Result<()> {
        self.add(name, true, &[range], table)
    }

    fn add(&mut self, name: &str, bpf: bool, ranges: &[(u64, u64)], table: ExTable) -> Result<()> {
        let id = self.owners.len() as u32;
        let mut all = self.ranges.clone();
        all.extend(ranges.iter().map(|&(b, e)| (b, e, id)));
        all.sort_unstable();
        let map = RangeTable::new(all.iter().map(|&(b, e, _)| (b, e)))?;
        self.ranges = all;
        self.map = map;
        self.owners.push(Owner {
            name: name.to_string(),
            bpf,
            table,
        });
        Ok(())
    }

    /// The entry the kernel's `search_exception_tables` finds for `ip`.
    pub fn search(&self, ip: u64) -> Option<Found<'_>> {
        if let Some(k) = &self.kernel {
            if let Some(entry) = k.lookup(ip) {
                return Some(Found {
                    source: Source::Kernel,
                    entry,
                    kind: k.fixup_kind(),
                });
            }
        }
        let owner = &self.owners[self.ranges[self.map.lookup(ip)?].2 as usize];
        let entry = owner.table.lookup(ip)?;
        Some(Found {
            source: if owner.bpf {
                Source::Bpf(&owner.name)
            } else {
                Source::Module(&owner.name)
            },
            entry,
            kind: owner.table.fixup_kind(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Extra;

    fn e(insn: u64) -> ExTableEntry {
        ExTableEntry {
            insn,
            fixup: insn + 0x100,
            extra: Extra::Data(1),
        }
    }

    #[test]
    fn exact_match_only() {
        let t = ExTable::new(vec![e(0x10), e(0x20), e(0x21)], FixupKind::Address).unwrap();
        assert!(t.was_sorted());
        assert_eq!(t.lookup(0x10).map(|x| x.insn), Some(0x10));
        assert_eq!(t.lookup(0x11), None);
        assert_eq!(t.lookup(0x0f), None);
        assert_eq!(t.lookup(0x21).map(|x| x.insn), Some(0x21));
        assert_eq!(t.lookup(0x22), None);
        for ip in 0..0x30 {
            assert_eq!(t.lookup(ip), t.lookup_bsearch(ip));
        }
    }

    #[test]
    fn lookup_agrees_with_bsearch_on_random_tables() {
        // Clustered and spread addresses, duplicates, an insn at u64::MAX, misses between and
        // around entries, sizes from empty to several index blocks.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in [0usize, 1, 2, 3, 677, 1024, 3000] {
            let mut v: Vec<ExTableEntry> = (0..n)
                .map(|i| e(0xffff_ffff_8100_0000 + (rnd() % (64 * n as u64 + 1)) + (i as u64 & 1)))
                .collect();
            if n == 3 {
                v[2] = e(u64::MAX);
            }
            let t = ExTable::new(v, FixupKind::Address).unwrap();
            for x in t.entries().iter().map(|x| x.insn) {
                // An insn at u64::MAX is never indexed (insn + 1 would wrap; no code is there).
                for ip in [x.wrapping_sub(1), x, x.wrapping_add(1)]
                    .into_iter()
                    .filter(|&ip| ip != u64::MAX)
                {
                    assert_eq!(
                        t.lookup(ip).map(|x| x.insn),
                        t.lookup_bsearch(ip).map(|x| x.insn),
                        "n={n} ip={ip:#x}"
                    );
                }
            }
            assert!(t.lookup(u64::MAX).is_none());
            for _ in 0..2000 {
                let ip = 0xffff_ffff_8100_0000 + rnd() % (64 * n as u64 + 2);
                assert_eq!(
                    t.lookup(ip).map(|x| x.insn),
                    t.lookup_bsearch(ip).map(|x| x.insn)
                );
            }
        }
    }

    #[test]
    fn sorts_and_keeps_duplicates() {
        let t = ExTable::new(vec![e(0x30), e(0x10), e(0x30), e(0x20)], FixupKind::Address).unwrap();
        assert!(!t.was_sorted());
        assert_eq!(t.duplicates(), 1);
        assert_eq!(
            t.entries().iter().map(|x| x.insn).collect::<Vec<_>>(),
            [0x10, 0x20, 0x30, 0x30]
        );
        assert_eq!(t.input_index(0), Some(1));
        assert_eq!(t.lookup_index(0x30), Some(2));
        assert_eq!(t.lookup(0x31), None);
    }

    #[test]
    fn wide_span() {
        let t = ExTable::new(vec![e(0x10), e(0x10_0000_0000)], FixupKind::Address).unwrap();
        assert!(t.lookup(0x10_0000_0000).is_some());
        assert!(t.lookup(0x10_0000_0001).is_none());
    }

    #[test]
    fn search_order() {
        let mut s = ExceptionTables::new();
        s.set_kernel(ExTable::new(vec![e(0x1000)], FixupKind::Address).unwrap());
        s.add_module(
            "m",
            &[(0x8000, 0x9000)],
            ExTable::new(vec![e(0x8010), e(0xa010)], FixupKind::Address).unwrap(),
        )
        .unwrap();
        s.add_bpf(
            "p",
            (0xa000, 0xb000),
            ExTable::new(vec![e(0xa010)], FixupKind::BpfX86).unwrap(),
        )
        .unwrap();
        assert_eq!(s.search(0x1000).unwrap().source, Source::Kernel);
        assert_eq!(s.search(0x8010).unwrap().source, Source::Module("m"));
        // The module's table has 0xa010 but the module does not own that address.
        let f = s.search(0xa010).unwrap();
        assert_eq!((f.source, f.kind), (Source::Bpf("p"), FixupKind::BpfX86));
        assert!(s.search(0x8011).is_none());
        assert!(s.search(0x7000).is_none());
        // Overlapping memory is refused.
        assert!(s
            .add_module(
                "x",
                &[(0x8800, 0x8900)],
                ExTable::new(vec![], FixupKind::Address).unwrap()
            )
            .is_err());
    }
}

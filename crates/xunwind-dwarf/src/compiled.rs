//! Row tables of FDEs, compiled when an FDE is stepped into again.
//!
//! Interpreting an FDE's CFA program up to an address costs most of a cold step (about ten
//! opcodes, each a mispredicted dispatch). A profiler's samples land in the same functions
//! over and over at different pcs, which a cache keyed by pc does not serve, so the first step
//! into a function runs its whole program once and keeps every row: the row starts as offsets
//! from the FDE's start, each naming a row in a pool shared by the module (most functions share
//! their rows: "CFA = rsp + 8" begins nearly every one). Later steps anywhere in the function
//! search those offsets instead of interpreting. The first step into an FDE only interprets: a
//! function stepped into once never pays for compiling; the second compiles.
//!
//! An FDE whose program leaves the fast subset anywhere, even past the addresses looked up, is
//! marked declined and interpreted up to each address as before, so answers never change.
//! Memory grows only with the FDEs stepped through, and at most to a constant times the size of
//! `.eh_frame` (each row takes at least one byte of program); each FDE is compiled once.

use crate::fast::{self, Bases, CieCache, CompactRow, Fast};
use core::hash::{BuildHasher, Hasher};
use gimli::Pointer;
use std::collections::HashMap;

/// Slot states besides "compiled at word `slot - FIRST`".
const UNSEEN: u32 = 0;
/// Stepped into once (interpreted): a function stepped into only once never pays for
/// compiling, which costs about three interpretations.
const SEEN: u32 = 1;
const DECLINED: u32 = 2;
const FIRST: u32 = 3;

/// Header pairs of a compiled FDE: start, (range, rows), flags, LSDA, personality.
const HEAD: usize = 5;

/// Most distinct rows one module's pool holds; FDEs with rows beyond it are interpreted. Real
/// modules have a few hundred (libc 441, libstdc++ 242); the cap bounds the pool's memory and
/// the damage of rows crafted to collide in its hash.
const MAX_ROWS: usize = 4096;

const LSDA: u32 = 1;
const LSDA_INDIRECT: u32 = 2;
const PERSONALITY: u32 = 4;
const PERSONALITY_INDIRECT: u32 = 8;

/// The compiled FDEs of one unwinder's `.eh_frame`.
pub(crate) struct Compiled {
    /// Per FDE (the index's input order): `UNSEEN`, `SEEN`, `DECLINED`, or `FIRST` + its
    /// header's position in `words`. Allocated on first use.
    slots: Vec<u32>,
    /// Per compiled FDE: `HEAD` header pairs, then (row start offset, pool index) pairs in
    /// address order, the first at offset 0. One array, so a lookup touches one place.
    words: Vec<[u32; 2]>,
    /// Distinct rows.
    rows: Vec<CompactRow>,
    pool: HashMap<CompactRow, u32, Seeded>,
}

impl Default for Compiled {
    fn default() -> Self {
        // A per-unwinder random key: which rows collide cannot be chosen in advance.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Compiled {
            slots: Vec::new(),
            words: Vec::new(),
            rows: Vec::new(),
            pool: HashMap::with_hasher(Seeded(seed)),
        }
    }
}

/// A keyed multiply-rotate word hash: a row is a few words, and SipHash over them cost more
/// than compiling the FDE.
#[derive(Clone, Copy)]
struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = WordHasher;
    fn build_hasher(&self) -> WordHasher {
        WordHasher(self.0)
    }
}

struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(23);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let x = self.0;
        (x ^ x >> 29).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ x >> 32
    }
}

impl Compiled {
    /// The row at `svma` from FDE `i` of `fdes` (at section offset `offset()`, read only to
    /// compile), compiling the FDE on its second use. `None` when the FDE is not compiled (the
    /// caller interprets it).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn row_at(
        &mut self,
        fdes: usize,
        i: usize,
        eh: &[u8],
        b: &Bases,
        cies: &mut CieCache,
        offset: impl FnOnce() -> Option<usize>,
        svma: u64,
        row: &mut CompactRow,
    ) -> Option<Fast> {
        if self.slots.len() != fdes {
            self.slots = vec![UNSEEN; fdes];
        }
        let at = match *self.slots.get(i)? {
            UNSEEN => {
                self.slots[i] = SEEN;
                return None;
            }
            SEEN => self.compile_slot(i, eh, b, cies, offset)?,
            DECLINED => return None,
            s => s - FIRST,
        } as usize;
        let head = self.words.get(at..at + HEAD)?;
        let start = u64::from(head[0][0]) | u64::from(head[0][1]) << 32;
        let [range, n] = head[1];
        let off = svma.wrapping_sub(start);
        // Compiled FDEs end below 2^64 (checked), so this is the interpreter's coverage test.
        if off >= u64::from(range) {
            return Some(Fast::NotCovered);
        }
        let pairs = self.words.get(at + HEAD..at + HEAD + n as usize)?;
        let j = pairs
            .partition_point(|p| u64::from(p[0]) <= off)
            .checked_sub(1)?;
        *row = *self.rows.get(pairs[j][1] as usize)?;
        let flags = head[2][0];
        let pointer = |present, indirect, [lo, hi]: [u32; 2]| {
            let v = u64::from(lo) | u64::from(hi) << 32;
            (flags & present != 0).then_some(if flags & indirect != 0 {
                Pointer::Indirect(v)
            } else {
                Pointer::Direct(v)
            })
        };
        Some(Fast::Row(
            pointer(LSDA, LSDA_INDIRECT, head[3]),
            pointer(PERSONALITY, PERSONALITY_INDIRECT, head[4]),
        ))
    }

    /// Compiles FDE `i` of `fdes` unless it was compiled or declined before; whether it is
    /// compiled now.
    pub(crate) fn ensure(
        &mut self,
        fdes: usize,
        i: usize,
        eh: &[u8],
        b: &Bases,
        cies: &mut CieCache,
        offset: impl FnOnce() -> Option<usize>,
    ) -> bool {
        if self.slots.len() != fdes {
            self.slots = vec![UNSEEN; fdes];
        }
        match self.slots.get(i) {
            Some(&(UNSEEN | SEEN)) => self.compile_slot(i, eh, b, cies, offset).is_some(),
            Some(&s) => s >= FIRST,
            None => false,
        }
    }

    /// Compiles FDE `i` and records the outcome in its slot.
    fn compile_slot(
        &mut self,
        i: usize,
        eh: &[u8],
        b: &Bases,
        cies: &mut CieCache,
        offset: impl FnOnce() -> Option<usize>,
    ) -> Option<u32> {
        let at = offset().and_then(|o| self.compile(eh, b, cies, o));
        self.slots[i] = at.map_or(DECLINED, |a| a + FIRST);
        at
    }

    /// Compiles the FDE at `offset` into `words`; its header's position, or `None` (nothing
    /// kept but rows already pooled) when it is outside the fast subset.
    fn compile(&mut self, eh: &[u8], b: &Bases, cies: &mut CieCache, offset: usize) -> Option<u32> {
        let at = self.words.len();
        let Compiled {
            words, rows, pool, ..
        } = self;
        words.resize(at + HEAD, [0; 2]);
        let mut last = None;
        let mut full = false;
        let mut emit = |off: u64, row: &CompactRow| {
            let id = match pool.get(row) {
                Some(&id) => id,
                None if rows.len() >= MAX_ROWS => {
                    full = true;
                    return;
                }
                None => {
                    rows.push(*row);
                    pool.insert(*row, (rows.len() - 1) as u32);
                    (rows.len() - 1) as u32
                }
            };
            // A row equal to the one before it only extends it.
            if last != Some(id) {
                words.push([off as u32, id]);
                last = Some(id);
            }
        };
        let head = fast::compile(eh, b, cies, offset, &mut emit);
        let n = self.words.len() - at - HEAD;
        // Offsets are u32 (the range is checked); positions too, with room for the slot tags.
        let fits = |h: &fast::FdeRows| {
            h.range <= u64::from(u32::MAX)
                && self.words.len() < (u32::MAX - FIRST) as usize
                && self.rows.len() <= u32::MAX as usize
        };
        let Some(h) = head.filter(fits).filter(|_| !full) else {
            self.words.truncate(at);
            return None;
        };
        let mut flags = 0;
        let mut split = |p: Option<Pointer>, present: u32, indirect: u32| match p {
            None => [0; 2],
            Some(Pointer::Direct(v)) => {
                flags |= present;
                [v as u32, (v >> 32) as u32]
            }
            Some(Pointer::Indirect(v)) => {
                flags |= present | indirect;
                [v as u32, (v >> 32) as u32]
            }
        };
        let lsda = split(h.lsda, LSDA, LSDA_INDIRECT);
        let personality = split(h.personality, PERSONALITY, PERSONALITY_INDIRECT);
        self.words[at..at + HEAD].copy_from_slice(&[
            [h.start as u32, (h.start >> 32) as u32],
            [h.range as u32, n as u32],
            [flags, 0],
            lsda,
            personality,
        ]);
        Some(at as u32)
    }

    /// FDEs compiled so far.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|&&s| s >= FIRST).count()
    }

    /// Bytes of heap memory held (the pool's hash table estimated at its capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        let row = core::mem::size_of::<CompactRow>();
        self.slots.capacity() * 4
            + self.words.capacity() * 8
            + self.rows.capacity() * row
            + self.pool.capacity() * (row + 4 + 1)
    }
}

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

/// Header words of a compiled FDE: start (2), range, rows | flags << 28; then the LSDA (2) and
/// the personality (2) when the flags say they are present.
const HEAD: usize = 4;
/// A row word is its start offset above the pool index's bits.
const ROW_BITS: u32 = 12;
/// FDEs over 1 MiB are interpreted: their offsets would not fit a row word.
const MAX_RANGE: u64 = 1 << (32 - ROW_BITS);

/// Most distinct rows one module's pool holds; FDEs with rows beyond it are interpreted. Real
/// modules have a few hundred (libc 441, libstdc++ 242); the cap bounds the pool's memory and
/// the damage of rows crafted to collide in its hash.
const MAX_ROWS: usize = 1 << ROW_BITS;

const LSDA: u32 = 1;
const LSDA_INDIRECT: u32 = 2;
const PERSONALITY: u32 = 4;
const PERSONALITY_INDIRECT: u32 = 8;

/// The compiled FDEs of one unwinder's `.eh_frame`.
pub(crate) struct Compiled {
    /// Per FDE (the index's input order): `UNSEEN`, `SEEN`, `DECLINED`, or `FIRST` + its
    /// header's position in `words`. Allocated on first use.
    slots: Vec<u32>,
    /// Per compiled FDE: the header, then one word per row (start offset << `ROW_BITS` | pool
    /// index) in address order, the first at offset 0. One array, so a lookup touches one
    /// place; about 4 bytes per row.
    words: Vec<u32>,
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
        self.size_slots(fdes);
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
        let start = u64::from(head[0]) | u64::from(head[1]) << 32;
        let (range, n, flags) = (head[2], head[3] & 0x0fff_ffff, head[3] >> 28);
        let off = svma.wrapping_sub(start);
        // Compiled FDEs end below 2^64 (checked), so this is the interpreter's coverage test.
        if off >= u64::from(range) {
            return Some(Fast::NotCovered);
        }
        let mut at = at + HEAD;
        let mut pointer = |present, indirect| {
            if flags & present == 0 {
                return None;
            }
            let w = self.words.get(at..at + 2)?;
            let v = u64::from(w[0]) | u64::from(w[1]) << 32;
            at += 2;
            Some(if flags & indirect != 0 {
                Pointer::Indirect(v)
            } else {
                Pointer::Direct(v)
            })
        };
        let lsda = pointer(LSDA, LSDA_INDIRECT);
        let personality = pointer(PERSONALITY, PERSONALITY_INDIRECT);
        let rows = self.words.get(at..at + n as usize)?;
        let j = rows
            .partition_point(|&w| u64::from(w >> ROW_BITS) <= off)
            .checked_sub(1)?;
        *row = *self.rows.get((rows[j] & (MAX_ROWS as u32 - 1)) as usize)?;
        Some(Fast::Row(lsda, personality))
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
        self.size_slots(fdes);
        match self.slots.get(i) {
            Some(&(UNSEEN | SEEN)) => self.compile_slot(i, eh, b, cies, offset).is_some(),
            Some(&s) => s >= FIRST,
            None => false,
        }
    }

    /// One slot per FDE of the index, allocated on first use.
    #[inline]
    fn size_slots(&mut self, fdes: usize) {
        if self.slots.len() != fdes {
            self.slots = vec![UNSEEN; fdes];
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
        // Row words go after the header's widest form; the header is written when the
        // pointers are known, and the rows moved up to it.
        let body = at + HEAD + 4;
        words.resize(body, 0);
        let mut last = None;
        let mut ok = true;
        let mut emit = |off: u64, row: &CompactRow| {
            let id = match pool.get(row) {
                Some(&id) => id,
                None if rows.len() >= MAX_ROWS => {
                    ok = false;
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
                // Offsets are below the range, itself checked below MAX_RANGE.
                words.push((off as u32) << ROW_BITS | id);
                last = Some(id);
            }
        };
        let head = fast::compile(eh, b, cies, offset, &mut emit);
        let n = self.words.len() - body;
        // Positions fit a slot with room for its tags.
        let fits = |h: &fast::FdeRows| {
            h.range <= MAX_RANGE && self.words.len() < (u32::MAX - FIRST) as usize
        };
        let Some(h) = head.filter(fits).filter(|_| ok) else {
            self.words.truncate(at);
            return None;
        };
        let mut head = [0u32; HEAD + 4];
        head[..3].copy_from_slice(&[h.start as u32, (h.start >> 32) as u32, h.range as u32]);
        let (mut len, mut flags) = (HEAD, 0);
        for (p, present, indirect) in [
            (h.lsda, LSDA, LSDA_INDIRECT),
            (h.personality, PERSONALITY, PERSONALITY_INDIRECT),
        ] {
            let v = match p {
                None => continue,
                Some(Pointer::Direct(v)) => v,
                Some(Pointer::Indirect(v)) => {
                    flags |= indirect;
                    v
                }
            };
            flags |= present;
            head[len..len + 2].copy_from_slice(&[v as u32, (v >> 32) as u32]);
            len += 2;
        }
        head[3] = n as u32 | flags << 28;
        self.words[at..at + len].copy_from_slice(&head[..len]);
        self.words.copy_within(body.., at + len);
        self.words.truncate(at + len + n);
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
            + self.words.capacity() * 4
            + self.rows.capacity() * row
            + self.pool.capacity() * (row + 4 + 1)
    }
}

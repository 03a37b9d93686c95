//! The fast cold path: our own `.eh_frame` and `.debug_frame` FDE/CIE parser and CFA-program
//! interpreter for the subset compilers emit (register + offset CFA, registers saved at CFA + offset, same value,
//! register copies, remember/restore state), yielding the compact row the rule cache stores.
//!
//! Anything outside the subset (expressions, `val_offset`, `set_loc`, xmm or unknown registers,
//! 64-bit entries, unusual augmentations (any in `.debug_frame`), segmented or non-8-byte
//! addresses, deep state stacks, any malformed byte) makes the
//! interpreter decline, and the step takes gimli's path, which stays the reference: declining
//! is always correct, so every doubt declines. Rules are kept in gimli's order (a rule set on a
//! register replaces its old one in place, an undefined rule swap-removes it) so that the rows
//! compare equal and memory is read in the same order as gimli's path reads it.

use gimli::Pointer;

/// Most rules a compact row holds: DWARF registers 0-16 but rsp, one rule each.
pub(crate) const MAX_RULES: usize = 16;
/// Depth of `DW_CFA_remember_state` the interpreter follows; deeper programs decline.
const MAX_REMEMBER: usize = 2;
/// Most CIEs one unwinder keeps parsed (real modules have a handful).
const MAX_CIES: usize = 32;
/// The return-address column on x86-64.
const RA: u8 = 16;

const KIND_OFFSET: u8 = 0;
const KIND_SAME: u8 = 1;
const KIND_REGISTER: u8 = 2;

/// How a compact row recovers one register of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Saved in memory at CFA + this offset.
    Offset(i64),
    /// Unchanged by the call.
    SameValue,
    /// Held in this DWARF register (0-16) of the callee.
    Register(u16),
}

/// One packed rule: 4 bytes, so a row stays small in the cache and cheap to copy (an offset
/// beyond ±32 KiB of the CFA declines to gimli's path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Packed {
    pub(crate) reg: u8,
    pub(crate) kind: u8,
    pub(crate) val: i16,
}

/// A CFI row of the compact form: CFA = DWARF register + offset, and at most one rule per
/// DWARF register 0-16 (rsp excluded; 16 is the return address) in gimli's order. Registers
/// without a rule are undefined (callee-saved ones keep their values, as on the full path).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct CompactRow {
    pub(crate) cfa_off: i64,
    pub(crate) cfa_reg: u8,
    pub(crate) count: u8,
    pub(crate) signal: bool,
    pub(crate) rules: [Packed; MAX_RULES],
}

// Slots past `count` are dead: rows compare and print by their live rules.
impl PartialEq for CompactRow {
    fn eq(&self, other: &Self) -> bool {
        (self.cfa_reg, self.cfa_off, self.signal) == (other.cfa_reg, other.cfa_off, other.signal)
            && self.packed() == other.packed()
    }
}

impl Eq for CompactRow {}

// Consistent with `eq`: only the live rules are hashed, as whole words (rows are hashed when
// FDEs are compiled, once per row, with a word hasher).
impl core::hash::Hash for CompactRow {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.cfa_off as u64);
        h.write_u64(
            u64::from(self.cfa_reg) | u64::from(self.count) << 8 | u64::from(self.signal) << 16,
        );
        for p in self.packed() {
            h.write_u32(u32::from(p.reg) | u32::from(p.kind) << 8 | u32::from(p.val as u16) << 16);
        }
    }
}

impl core::fmt::Debug for CompactRow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CompactRow")
            .field("cfa", &self.cfa())
            .field("signal", &self.signal)
            .field("rules", &self.rules().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for CompactRow {
    fn default() -> Self {
        CompactRow::EMPTY
    }
}

impl CompactRow {
    pub(crate) const EMPTY: CompactRow = CompactRow {
        cfa_off: 0,
        cfa_reg: 0,
        count: 0,
        signal: false,
        rules: [Packed {
            reg: 0,
            kind: 0,
            val: 0,
        }; MAX_RULES],
    };

    /// The CFA rule: DWARF register and offset.
    pub fn cfa(&self) -> (u16, i64) {
        (u16::from(self.cfa_reg), self.cfa_off)
    }

    /// The register rules, in the order they are applied.
    pub fn rules(&self) -> impl Iterator<Item = (u16, Rule)> + '_ {
        self.packed().iter().map(|p| {
            let rule = match p.kind {
                KIND_OFFSET => Rule::Offset(i64::from(p.val)),
                KIND_SAME => Rule::SameValue,
                _ => Rule::Register(p.val as u16),
            };
            (u16::from(p.reg), rule)
        })
    }

    /// Whether the FDE's CIE has the `S` augmentation (a signal frame: the caller's pc is exact).
    pub fn is_signal_frame(&self) -> bool {
        self.signal
    }

    /// Whether the row has a rule for the return address (an outermost frame has none).
    pub fn has_return_address(&self) -> bool {
        self.packed().iter().any(|p| p.reg == RA)
    }

    #[inline]
    pub(crate) fn packed(&self) -> &[Packed] {
        &self.rules[..usize::from(self.count).min(MAX_RULES)]
    }

    /// Builds a row from gimli-style parts; `None` when a rule is outside the compact form.
    pub(crate) fn from_parts(
        cfa_reg: u16,
        cfa_off: i64,
        signal: bool,
        rules: impl Iterator<Item = (u16, Rule)>,
    ) -> Option<CompactRow> {
        let mut row = CompactRow {
            cfa_reg: u8::try_from(cfa_reg).ok().filter(|&r| r <= RA)?,
            cfa_off,
            signal,
            ..CompactRow::EMPTY
        };
        for (reg, rule) in rules {
            let reg = u8::try_from(reg).ok().filter(|&r| r <= RA && r != 7)?;
            let p = pack(reg, rule)?;
            *row.rules.get_mut(usize::from(row.count))? = p;
            row.count += 1;
        }
        Some(row)
    }

    /// gimli's `RegisterRuleMap::set`: replace in place, push, or swap-remove (undefined).
    fn set(&mut self, p: Option<Packed>, reg: u8) -> Option<()> {
        let n = usize::from(self.count).min(MAX_RULES);
        let idx = self.rules[..n].iter().position(|q| q.reg == reg);
        match (p, idx) {
            (None, Some(i)) => {
                self.rules[i] = self.rules[n - 1];
                self.count -= 1;
            }
            (None, None) => {}
            (Some(p), Some(i)) => self.rules[i] = p,
            (Some(p), None) => {
                *self.rules.get_mut(n)? = p;
                self.count += 1;
            }
        }
        Some(())
    }

    fn rule_of(&self, reg: u8) -> Option<Packed> {
        self.packed().iter().copied().find(|p| p.reg == reg)
    }
}

fn pack(reg: u8, rule: Rule) -> Option<Packed> {
    let (kind, val) = match rule {
        Rule::Offset(o) => (KIND_OFFSET, i16::try_from(o).ok()?),
        Rule::SameValue => (KIND_SAME, 0),
        Rule::Register(r) if r <= u16::from(RA) => (KIND_REGISTER, r as i16),
        Rule::Register(_) => return None,
    };
    Some(Packed { reg, kind, val })
}

/// The base addresses `.eh_frame` pointers are relative to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bases {
    /// `.eh_frame`'s link-time address (pcrel).
    pub(crate) eh_frame: u64,
    /// `.text` (textrel), when known.
    pub(crate) text: Option<u64>,
    /// `.got` (datarel), when known.
    pub(crate) data: Option<u64>,
    /// The section is `.debug_frame`: CIE ids are all ones, an FDE's CIE pointer is a section
    /// offset, addresses are absolute 8-byte values and there are no augmentations.
    pub(crate) debug: bool,
}

/// A bounded little-endian reader over one CIE or FDE; `pos` is a section offset.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline]
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b: [u8; N] = self
            .buf
            .get(self.pos..self.pos.checked_add(N)?)?
            .try_into()
            .ok()?;
        self.pos += N;
        Some(b)
    }
    #[inline]
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }
    #[inline]
    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
    /// ULEB128; values that do not fit 64 bits (or long encodings) decline.
    #[inline(always)]
    fn uleb(&mut self) -> Option<u64> {
        // Nearly every operand is one byte: that case stays inline, the rest is called.
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Some(u64::from(b))
            }
            _ => self.uleb_long(),
        }
    }
    #[inline(never)]
    fn uleb_long(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        // At most nine bytes: the loop is bounded by the shift.
        while shift < 63 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
            shift += 7;
        }
        None
    }
    /// SLEB128; as `uleb`, encodings that reach bit 63 decline.
    #[inline]
    fn sleb(&mut self) -> Option<i64> {
        let mut v = 0i64;
        for shift in (0..63).step_by(7) {
            let b = self.u8()?;
            v |= i64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b & 0x40 != 0 {
                    v |= -1i64 << (shift + 7);
                }
                return Some(v);
            }
        }
        None
    }
    fn reg(&mut self) -> Option<u8> {
        u8::try_from(self.uleb()?).ok()
    }
}

/// Reads a value in pointer encoding `enc`'s format (no application).
fn encoded_value(c: &mut Cursor<'_>, enc: u8) -> Option<u64> {
    Some(match enc & 0x0f {
        0x00 => c.u64()?,
        0x01 => c.uleb()?,
        0x02 => u64::from(c.u16()?),
        0x03 => u64::from(c.u32()?),
        0x04 => c.u64()?,
        0x09 => c.sleb()? as u64,
        0x0a => c.u16()? as i16 as u64,
        0x0b => c.u32()? as i32 as u64,
        0x0c => c.u64()?,
        _ => return None,
    })
}

/// Reads an encoded pointer as gimli does; `func` is the base of `DW_EH_PE_funcrel`.
#[inline]
fn encoded_pointer(c: &mut Cursor<'_>, enc: u8, b: &Bases, func: Option<u64>) -> Option<Pointer> {
    // What every x86-64 toolchain emits for FDE addresses and LSDAs: pcrel | sdata4.
    if enc == 0x1b {
        let base = b.eh_frame.wrapping_add(c.pos as u64);
        return Some(Pointer::Direct(base.wrapping_add(c.u32()? as i32 as u64)));
    }
    if enc & 0x70 > 0x40 || enc & 0x0f > 0x0c || enc & 0x08 != 0 && enc & 0x07 == 0 {
        return None;
    }
    let base = match enc & 0x70 {
        0x00 => 0,
        0x10 => b.eh_frame.wrapping_add(c.pos as u64),
        0x20 => b.text?,
        0x30 => b.data?,
        _ => func?,
    };
    let v = base.wrapping_add(encoded_value(c, enc)?);
    Some(if enc & 0x80 != 0 {
        Pointer::Indirect(v)
    } else {
        Pointer::Direct(v)
    })
}

/// What a CIE contributes to its FDEs, parsed once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastCie {
    code_align: u64,
    data_align: i64,
    /// Pointer encoding of FDE addresses (`R`), or 8-byte absolute.
    fde_enc: Option<u8>,
    lsda_enc: Option<u8>,
    augmented: bool,
    pub(crate) personality: Option<Pointer>,
    /// The row after the initial instructions (`signal` set from the `S` augmentation).
    initial: CompactRow,
}

/// The fast path's scratch: parsed CIEs and the `DW_CFA_remember_state` stack (kept here so a
/// step does not clear it).
#[derive(Default)]
pub(crate) struct CieCache {
    table: CieTable,
    stack: [CompactRow; MAX_REMEMBER],
}

/// CIEs parsed so far by section offset; `None` marks one outside the fast subset.
#[derive(Default)]
struct CieTable {
    entries: Vec<(u32, Option<FastCie>)>,
    last: usize,
}

impl CieTable {
    /// The CIE at `offset`, parsed now or before; `scratch` holds one the cache has no room for.
    #[inline]
    fn get<'a>(
        &'a mut self,
        eh: &[u8],
        b: &Bases,
        offset: usize,
        scratch: &'a mut Option<FastCie>,
    ) -> Option<&'a FastCie> {
        let key = u32::try_from(offset).ok()?;
        let hit = match self.entries.get(self.last) {
            Some((k, _)) if *k == key => Some(self.last),
            _ => self.entries.iter().position(|(k, _)| *k == key),
        };
        if let Some(i) = hit {
            self.last = i;
            return self.entries[i].1.as_ref();
        }
        let cie = parse_cie(eh, b, offset);
        if self.entries.len() < MAX_CIES {
            self.last = self.entries.len();
            self.entries.push((key, cie));
            return self.entries[self.last].1.as_ref();
        }
        *scratch = cie;
        scratch.as_ref()
    }
}

/// The length-delimited entry at `offset`: (body start, end); 32-bit format only.
fn entry(eh: &[u8], offset: usize) -> Option<(usize, usize)> {
    let mut c = Cursor {
        buf: eh,
        pos: offset,
    };
    let len = c.u32()?;
    if len == 0 || len == u32::MAX {
        return None;
    }
    let end = c.pos.checked_add(len as usize)?;
    (end <= eh.len()).then_some((c.pos, end))
}

fn parse_cie(eh: &[u8], b: &Bases, offset: usize) -> Option<FastCie> {
    let (body, end) = entry(eh, offset)?;
    let mut c = Cursor {
        buf: &eh[..end],
        pos: body,
    };
    let cie_id = if b.debug { u32::MAX } else { 0 };
    if c.u32()? != cie_id {
        return None;
    }
    let version = c.u8()?;
    // `.debug_frame` CIEs of DWARF 4 and 5 carry version 4 (DWARF 5 kept it).
    if !matches!((version, b.debug), (1 | 3, _) | (4, true)) {
        return None;
    }
    let aug_start = c.pos;
    let aug_len = c.buf.get(aug_start..)?.iter().position(|&x| x == 0)?;
    let aug = &c.buf[aug_start..aug_start + aug_len];
    c.pos = aug_start + aug_len + 1;
    if b.debug && !aug.is_empty() {
        return None;
    }
    if version == 4 {
        // address_size, segment_selector_size: flat 8-byte addresses only.
        if (c.u8()?, c.u8()?) != (8, 0) {
            return None;
        }
    }
    let code_align = c.uleb()?;
    let data_align = c.sleb()?;
    let ra = if version == 1 {
        u64::from(c.u8()?)
    } else {
        c.uleb()?
    };
    if ra != u64::from(RA) {
        return None;
    }
    let mut cie = FastCie {
        code_align,
        data_align,
        fde_enc: None,
        lsda_enc: None,
        augmented: false,
        personality: None,
        initial: CompactRow::EMPTY,
    };
    if let Some((&first, rest)) = aug.split_first() {
        if first != b'z' {
            return None;
        }
        cie.augmented = true;
        let data_len = usize::try_from(c.uleb()?).ok()?;
        let data_end = c.pos.checked_add(data_len).filter(|&e| e <= end)?;
        let mut d = Cursor {
            buf: &eh[..data_end],
            pos: c.pos,
        };
        for &ch in rest {
            match ch {
                b'L' => cie.lsda_enc = Some(d.u8()?),
                b'P' => {
                    let enc = d.u8()?;
                    cie.personality = Some(encoded_pointer(&mut d, enc, b, None)?);
                }
                b'R' => cie.fde_enc = Some(d.u8()?),
                b'S' => cie.initial.signal = true,
                _ => return None,
            }
        }
        c.pos = data_end;
    }
    let mut row = cie.initial;
    run(
        &mut c,
        &cie,
        &mut row,
        0,
        &mut Initial,
        &mut [CompactRow::EMPTY; MAX_REMEMBER],
    )?;
    cie.initial = row;
    Some(cie)
}

/// What the fast path says about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fast {
    /// The row at the address is in the caller's `row`; the FDE's LSDA and its CIE's
    /// personality.
    Row(Option<Pointer>, Option<Pointer>),
    /// The FDE at the index's offset does not cover the address.
    NotCovered,
    /// Outside the fast subset: take gimli's path.
    Decline,
}

/// The compact row at link-time address `svma` of the FDE at section offset `offset`, into `row`.
#[inline]
pub(crate) fn row_at(
    eh: &[u8],
    b: &Bases,
    cies: &mut CieCache,
    offset: usize,
    svma: u64,
    row: &mut CompactRow,
) -> Fast {
    row_at_inner(eh, b, cies, offset, svma, row).unwrap_or(Fast::Decline)
}

/// An FDE's header as the fast path reads it, its CFA program not yet run.
struct Head<'a, 'c> {
    /// At the FDE's first instruction, bounded by the FDE's end.
    insns: Cursor<'a>,
    cie: &'c FastCie,
    start: u64,
    range: u64,
    lsda: Option<Pointer>,
}

/// Parses the FDE at `offset` up to its instructions, its CIE from `table` (or `spare`).
#[inline]
fn head<'a, 'c>(
    eh: &'a [u8],
    b: &Bases,
    table: &'c mut CieTable,
    offset: usize,
    spare: &'c mut Option<FastCie>,
) -> Option<Head<'a, 'c>> {
    let (body, end) = entry(eh, offset)?;
    let mut c = Cursor {
        buf: &eh[..end],
        pos: body,
    };
    let id = c.u32()?;
    let cie_offset = match b.debug {
        false if id != 0 => body.checked_sub(id as usize)?,
        true if id != u32::MAX => id as usize,
        // A CIE where an FDE was expected.
        _ => return None,
    };
    let cie = table.get(eh, b, cie_offset, spare)?;
    let (start, range) = match cie.fde_enc {
        Some(enc) => {
            let start = encoded_pointer(&mut c, enc, b, None)?;
            let start = match start {
                Pointer::Direct(a) | Pointer::Indirect(a) => a,
            };
            (start, encoded_value(&mut c, enc)?)
        }
        None => (c.u64()?, c.u64()?),
    };
    let mut lsda = None;
    if cie.augmented {
        let len = usize::try_from(c.uleb()?).ok()?;
        let data_end = c.pos.checked_add(len).filter(|&e| e <= end)?;
        if let Some(enc) = cie.lsda_enc {
            let mut d = Cursor {
                buf: &eh[..data_end],
                pos: c.pos,
            };
            lsda = Some(encoded_pointer(&mut d, enc, b, Some(start))?);
        }
        c.pos = data_end;
    }
    Some(Head {
        insns: c,
        cie,
        start,
        range,
        lsda,
    })
}

#[inline]
fn row_at_inner(
    eh: &[u8],
    b: &Bases,
    cies: &mut CieCache,
    offset: usize,
    svma: u64,
    row: &mut CompactRow,
) -> Option<Fast> {
    let mut spare = None;
    let CieCache { table, stack } = cies;
    let mut h = head(eh, b, table, offset, &mut spare)?;
    // Only an FDE gimli would parse whole may say "not covered": a malformed one declines, so
    // that gimli's path reports it.
    if !(h.start <= svma && svma < h.start.wrapping_add(h.range)) {
        return Some(Fast::NotCovered);
    }
    *row = h.cie.initial;
    run(&mut h.insns, h.cie, row, h.start, &mut Find(svma), stack)?;
    Some(Fast::Row(h.lsda, h.cie.personality))
}

/// An FDE's whole row table, as [`compile`] gives it.
pub(crate) struct FdeRows {
    /// Link-time address of the FDE's first instruction.
    pub(crate) start: u64,
    /// Bytes of code the FDE covers.
    pub(crate) range: u64,
    /// The FDE's LSDA and its CIE's personality.
    pub(crate) lsda: Option<Pointer>,
    pub(crate) personality: Option<Pointer>,
}

/// Runs the whole CFA program of the FDE at `offset`, handing each non-empty row inside the
/// FDE's range to `emit` (offset of its first byte from the FDE's start, and the row), in
/// address order. `None` when any of it is outside the fast subset: then no row of the FDE is
/// to be taken from `emit`'s output.
pub(crate) fn compile(
    eh: &[u8],
    b: &Bases,
    cies: &mut CieCache,
    offset: usize,
    emit: &mut dyn FnMut(u64, &CompactRow),
) -> Option<FdeRows> {
    let mut spare = None;
    let CieCache { table, stack } = cies;
    let mut h = head(eh, b, table, offset, &mut spare)?;
    let end = h.start.checked_add(h.range)?;
    let mut row = h.cie.initial;
    let mut all = All {
        start: h.start,
        end,
        emit,
    };
    run(&mut h.insns, h.cie, &mut row, h.start, &mut all, stack)?;
    Some(FdeRows {
        start: h.start,
        range: h.range,
        lsda: h.lsda,
        personality: h.cie.personality,
    })
}

/// What a CFA program is run for: where its rows go.
trait Rows {
    /// A CIE's initial instructions: no rows, so an advance or a state operation declines.
    const CIE: bool;
    /// The row `[start, end)` is complete; `true` ends the program there.
    fn row(&mut self, start: u64, end: u64, row: &CompactRow) -> bool;
    /// The program ended with the row that begins at `start`; `false` declines.
    fn last(&mut self, start: u64, row: &CompactRow) -> bool;
}

/// A CIE's initial instructions.
struct Initial;

impl Rows for Initial {
    const CIE: bool = true;
    fn row(&mut self, _: u64, _: u64, _: &CompactRow) -> bool {
        true
    }
    fn last(&mut self, _: u64, _: &CompactRow) -> bool {
        true
    }
}

/// The row covering one address.
struct Find(u64);

impl Rows for Find {
    const CIE: bool = false;
    #[inline]
    fn row(&mut self, start: u64, end: u64, _: &CompactRow) -> bool {
        start <= self.0 && self.0 < end
    }
    #[inline]
    fn last(&mut self, start: u64, _: &CompactRow) -> bool {
        // The last row runs to the FDE's end, which the caller checked covers the address.
        start <= self.0
    }
}

/// Every row inside `[start, end)`, to `emit` as (offset from `start`, row).
struct All<'e> {
    start: u64,
    end: u64,
    emit: &'e mut dyn FnMut(u64, &CompactRow),
}

impl Rows for All<'_> {
    const CIE: bool = false;
    fn row(&mut self, start: u64, end: u64, row: &CompactRow) -> bool {
        if start < end {
            (self.emit)(start - self.start, row);
        }
        // Later rows lie past the FDE's end, where no lookup goes: a lookup inside the FDE
        // stops at or before this row, so what follows must not decline the FDE either.
        end >= self.end
    }
    fn last(&mut self, start: u64, row: &CompactRow) -> bool {
        if start < self.end {
            (self.emit)(start - self.start, row);
        }
        true
    }
}

/// Runs a CFA program from `row` (the CIE's initial row for an FDE), handing its rows to
/// `rows` until that says stop. `None`: outside the subset or malformed.
#[inline]
fn run<R: Rows>(
    c: &mut Cursor<'_>,
    cie: &FastCie,
    row: &mut CompactRow,
    origin: u64,
    rows: &mut R,
    stack: &mut [CompactRow; MAX_REMEMBER],
) -> Option<()> {
    // Where the current row begins: an FDE's rows start at its initial location.
    let mut start = origin;
    let mut depth = 0usize;
    let offset_rule = |factored: i64| -> Option<Packed> {
        let off = factored.wrapping_mul(cie.data_align);
        Some(Packed {
            reg: 0,
            kind: KIND_OFFSET,
            val: i16::try_from(off).ok()?,
        })
    };
    let rule_reg = |r: u8| (r <= RA && r != 7).then_some(r);
    // Each instruction consumes at least one byte, which bounds the loop.
    while c.pos < c.buf.len() {
        let op = c.u8()?;
        // One flat match: a single dispatch per instruction, the most common opcodes first.
        let delta = match op {
            0x40..=0x7f => u64::from(op & 0x3f),
            0x0e => {
                row.cfa_off = c.uleb()? as i64;
                continue;
            }
            0x80..=0xbf => {
                let reg = rule_reg(op & 0x3f)?;
                let p = offset_rule(c.uleb()? as i64)?;
                row.set(Some(Packed { reg, ..p }), reg)?;
                continue;
            }
            0x0c => {
                row.cfa_reg = c.reg().filter(|&r| r <= RA)?;
                row.cfa_off = c.uleb()? as i64;
                continue;
            }
            0x0d => {
                row.cfa_reg = c.reg().filter(|&r| r <= RA)?;
                continue;
            }
            0x0a => {
                if R::CIE {
                    return None;
                }
                *stack.get_mut(depth)? = *row;
                depth += 1;
                continue;
            }
            0x0b => {
                if R::CIE {
                    return None;
                }
                depth = depth.checked_sub(1)?;
                *row = stack[depth];
                continue;
            }
            0xc0..=0xff => {
                // DW_CFA_restore is invalid among a CIE's initial instructions.
                if R::CIE {
                    return None;
                }
                let reg = rule_reg(op & 0x3f)?;
                row.set(cie.initial.rule_of(reg), reg)?;
                continue;
            }
            0x00 => continue,
            0x02 => u64::from(c.u8()?),
            0x03 => u64::from(c.u16()?),
            0x04 => u64::from(c.u32()?),
            0x05 => {
                let reg = rule_reg(c.reg()?)?;
                let p = offset_rule(c.uleb()? as i64)?;
                row.set(Some(Packed { reg, ..p }), reg)?;
                continue;
            }
            0x06 => {
                if R::CIE {
                    return None;
                }
                let reg = rule_reg(c.reg()?)?;
                row.set(cie.initial.rule_of(reg), reg)?;
                continue;
            }
            0x07 => {
                let reg = rule_reg(c.reg()?)?;
                row.set(None, reg)?;
                continue;
            }
            0x08 => {
                let reg = rule_reg(c.reg()?)?;
                let p = Packed {
                    reg,
                    kind: KIND_SAME,
                    val: 0,
                };
                row.set(Some(p), reg)?;
                continue;
            }
            0x09 => {
                let reg = rule_reg(c.reg()?)?;
                let src = c.reg().filter(|&r| r <= RA)?;
                let p = Packed {
                    reg,
                    kind: KIND_REGISTER,
                    val: i16::from(src),
                };
                row.set(Some(p), reg)?;
                continue;
            }
            0x11 => {
                let reg = rule_reg(c.reg()?)?;
                let p = offset_rule(c.sleb()?)?;
                row.set(Some(Packed { reg, ..p }), reg)?;
                continue;
            }
            0x12 => {
                row.cfa_reg = c.reg().filter(|&r| r <= RA)?;
                row.cfa_off = c.sleb()?.wrapping_mul(cie.data_align);
                continue;
            }
            0x13 => {
                row.cfa_off = c.sleb()?.wrapping_mul(cie.data_align);
                continue;
            }
            0x2e => {
                c.uleb()?;
                continue;
            }
            _ => return None,
        };
        // An advance among a CIE's initial instructions is legal but pointless: decline.
        if R::CIE {
            return None;
        }
        let end = start.checked_add(delta.wrapping_mul(cie.code_align))?;
        if rows.row(start, end, row) {
            return Some(());
        }
        start = end;
    }
    rows.last(start, row).then_some(())
}

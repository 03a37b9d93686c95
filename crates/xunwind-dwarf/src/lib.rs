//! ELF DWARF call-frame information: `.eh_frame` found through `.eh_frame_hdr`'s search table,
//! `.debug_frame`, behind xunwind's `FrameWalker`.
//!
//! [`DwarfUnwinder`] borrows an ELF image's bytes and knows where the image was loaded (its load
//! bias). A step ([`FrameWalker::unwind`], in place) is, in order:
//!
//! 1. a hit in the rule cache, keyed by address: the [`CompactRow`] (CFA = register + offset,
//!    registers saved at CFA + offset, same value or copied) and the resolved handler, applied
//!    to the registers in place;
//! 2. else the fast path: a dense-key search ([`xunwind_core::RangeTable`]) over the initial
//!    locations `.eh_frame_hdr` lists (or, without a usable header, over every FDE, sorted once),
//!    then our own parse of that FDE (its CIE parsed once and cached with the row its initial
//!    instructions give) and our own CFA-program interpreter up to the address, which yields
//!    the compact row, cached and applied as above; where `.eh_frame` has no FDE covering the
//!    address, the same over `.debug_frame`'s index. The second step into an FDE runs its whole
//!    program once and keeps all its rows (`compiled.rs`), so later steps into it search those
//!    instead of interpreting;
//! 3. else (anything the interpreter does not take: expressions, `val_offset`, xmm registers,
//!    malformed bytes) gimli's path, the reference: FDE parse and row evaluation
//!    in an [`UnwindContext`] kept across steps, with CIEs cached by offset.
//!
//! The fast path declines whenever in doubt, so its answers are gimli's (tested on every FDE of
//! system libraries and fuzzed).
#![deny(missing_docs)]

mod cache;
mod compiled;
mod eval;
mod fast;
mod index;

use core::cell::RefCell;
use core::fmt;
use gimli::{
    BaseAddresses, CommonInformationEntry, DebugFrame, EhFrame, EndianSlice, FrameDescriptionEntry,
    LittleEndian, UnwindContext, UnwindSection,
};
use object::{Object, ObjectSection, ObjectSegment};
use xunwind_core::{
    CompactRule, ContextPointers, FrameWalker, MemoryReader, PcKind, Regs, Step, StepInfo, Trust,
    UnwindError,
};

pub use fast::{CompactRow, Rule};

/// The x86-64 psABI's DWARF register `n` (0-15) as a general-purpose register.
pub fn dwarf_gpr(n: u16) -> Option<xunwind_core::Reg> {
    eval::DWARF_GPR.get(usize::from(n)).copied()
}
pub use index::FdeIndex;

/// The reader gimli parses our borrowed sections with.
pub type Reader<'d> = EndianSlice<'d, LittleEndian>;
type Cie<'d> = CommonInformationEntry<Reader<'d>>;
/// A parsed frame description entry.
pub type Fde<'d> = FrameDescriptionEntry<Reader<'d>>;

/// Most CIEs kept parsed per unwinder; real modules have a handful.
const CIE_CACHE: usize = 32;

/// Why an ELF image's CFI could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DwarfError {
    /// The bytes are not an ELF file `object` can read.
    NotElf(String),
    /// Not a little-endian 64-bit image.
    UnsupportedElf,
    /// Neither `.eh_frame` nor `.debug_frame` is present.
    NoCfi,
    /// A CFI section is malformed in a way that prevents indexing it.
    Malformed(&'static str),
}

impl fmt::Display for DwarfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DwarfError::NotElf(e) => write!(f, "not a readable ELF file: {e}"),
            DwarfError::UnsupportedElf => f.write_str("only little-endian ELF64 is supported"),
            DwarfError::NoCfi => f.write_str("no .eh_frame or .debug_frame"),
            DwarfError::Malformed(m) => write!(f, "malformed CFI: {m}"),
        }
    }
}

impl std::error::Error for DwarfError {}

/// Which section an FDE lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfiSection {
    /// `.eh_frame`.
    EhFrame,
    /// `.debug_frame`.
    DebugFrame,
}

/// A CFI section's bytes and the address it is linked at.
#[derive(Clone, Copy, Debug)]
pub struct SectionData<'d> {
    /// The section's contents.
    pub data: &'d [u8],
    /// Its link-time virtual address (`sh_addr`); 0 for `.debug_frame`, which is not loaded.
    pub address: u64,
}

/// The CFI sections of an image, as [`DwarfUnwinder::from_sections`] takes them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CfiSections<'d> {
    /// `.eh_frame`.
    pub eh_frame: Option<SectionData<'d>>,
    /// `.eh_frame_hdr`.
    pub eh_frame_hdr: Option<SectionData<'d>>,
    /// `.debug_frame`.
    pub debug_frame: Option<SectionData<'d>>,
    /// `.text`'s address, for `DW_EH_PE_textrel` pointers.
    pub text: u64,
    /// `.got`'s address, for `DW_EH_PE_datarel` pointers in `.eh_frame`.
    pub got: u64,
}

/// How the `.eh_frame` index was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSource {
    /// `.eh_frame_hdr`'s binary-search table.
    EhFrameHdr,
    /// A scan of every FDE (the header was missing or unusable).
    Scan,
    /// No `.eh_frame`.
    None,
}

/// Row storage sized for x86-64: gimli's default holds 192 rules per row, and it copies whole
/// rows on reset and `DW_CFA_remember_state`, which dominated a step. x86-64 CFI describes the
/// 16 GPRs and the return address (glibc's signal frame: 17 rules; the psABI has no callee-saved
/// xmm); more than 24 rules is an error (`TooManyRegisterRules`), reported as bad unwind info.
pub struct X64Rows;

impl<T: gimli::ReaderOffset> gimli::UnwindContextStorage<T> for X64Rows {
    type Rules = [(gimli::Register, gimli::RegisterRule<T>); 24];
    type Stack = [gimli::UnwindTableRow<T, Self>; 4];
}

/// The gimli context a step evaluates rows in.
pub type Context = UnwindContext<usize, X64Rows>;

/// Per-step scratch state: the gimli context and parsed CIEs, reused so a step does not allocate.
struct Scratch<'d> {
    /// Rule cache slots, allocated on the first step; empty when the cache is off.
    rows: Vec<cache::CachedRow>,
    ctx: Box<Context>,
    cies: Vec<(CfiSection, usize, Cie<'d>)>,
    /// The fast path's state for `.eh_frame` and for `.debug_frame`.
    fast: [FastState; 2],
}

/// The fast path's scratch: parsed CIEs and compiled FDEs.
#[derive(Default)]
struct FastState {
    cies: fast::CieCache,
    compiled: compiled::Compiled,
}

impl Scratch<'_> {
    fn new() -> Self {
        Scratch {
            rows: Vec::new(),
            ctx: Box::new(UnwindContext::new_in()),
            cies: Vec::with_capacity(CIE_CACHE),
            fast: Default::default(),
        }
    }
}

/// A [`FrameWalker`] for one ELF image's DWARF CFI.
pub struct DwarfUnwinder<'d> {
    bias: u64,
    bases: BaseAddresses,
    eh_frame: Option<EhFrame<Reader<'d>>>,
    debug_frame: Option<DebugFrame<Reader<'d>>>,
    eh_index: FdeIndex,
    debug_index: FdeIndex,
    eh_source: IndexSource,
    rule_cache: bool,
    fast_path: bool,
    compiled_rows: bool,
    /// `.eh_frame` and `.debug_frame` for the fast path, with their bases.
    fast_sections: [Option<(&'d [u8], fast::Bases)>; 2],
    scratch: RefCell<Scratch<'d>>,
}

impl fmt::Debug for DwarfUnwinder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DwarfUnwinder")
            .field("bias", &format_args!("{:#x}", self.bias))
            .field("eh_frame_fdes", &self.eh_index.len())
            .field("debug_frame_fdes", &self.debug_index.len())
            .field("eh_source", &self.eh_source)
            .finish()
    }
}

/// The load bias of an ELF image mapped so that its file offset 0 is at `mapped_base`: the
/// first `PT_LOAD` maps file offset `p_offset` at `p_vaddr + bias`.
pub fn load_bias(elf: &object::read::elf::ElfFile64<'_>, mapped_base: u64) -> u64 {
    // object's ELF segment iterator yields only PT_LOAD entries.
    match elf.segments().next() {
        Some(seg) => mapped_base.wrapping_sub(seg.address().wrapping_sub(seg.file_range().0)),
        None => mapped_base,
    }
}

/// `.eh_frame_hdr` and `.eh_frame` of an image without section headers: `PT_GNU_EH_FRAME` is
/// the header, whose `eh_frame_ptr` names `.eh_frame`; its size is unknown, so it runs to the
/// end of the `PT_LOAD` holding it (gimli stops at the zero terminator).
fn eh_frame_from_segments<'d>(
    file: &object::read::elf::ElfFile64<'d, object::Endianness>,
    elf: &'d [u8],
) -> Option<(SectionData<'d>, SectionData<'d>)> {
    use object::read::elf::ProgramHeader;
    let endian = file.endian();
    let phdrs = file.elf_program_headers();
    let file_bytes = |vaddr: u64| -> Option<&'d [u8]> {
        let ph = phdrs.iter().find(|p| {
            p.p_type(endian) == object::elf::PT_LOAD
                && p.p_vaddr(endian) <= vaddr
                && vaddr - p.p_vaddr(endian) < p.p_filesz(endian)
        })?;
        let start = ph
            .p_offset(endian)
            .checked_add(vaddr - ph.p_vaddr(endian))?;
        let end = ph.p_offset(endian).checked_add(ph.p_filesz(endian))?;
        elf.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    };
    let gnu = phdrs
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_GNU_EH_FRAME)?;
    let hdr_addr = gnu.p_vaddr(endian);
    let hdr_data = file_bytes(hdr_addr)?.get(..usize::try_from(gnu.p_filesz(endian)).ok()?)?;
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = gimli::EhFrameHdr::new(hdr_data, LittleEndian)
        .parse(&bases, 8)
        .ok()?;
    let gimli::Pointer::Direct(eh_addr) = parsed.eh_frame_ptr() else {
        return None;
    };
    let eh_data = file_bytes(eh_addr)?;
    Some((
        SectionData {
            data: hdr_data,
            address: hdr_addr,
        },
        SectionData {
            data: eh_data,
            address: eh_addr,
        },
    ))
}

impl<'d> DwarfUnwinder<'d> {
    /// Reads the CFI of the ELF image `elf`, whose file offset 0 is mapped at `mapped_base`.
    pub fn new(elf: &'d [u8], mapped_base: u64) -> Result<Self, DwarfError> {
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(elf)
            .map_err(|e| DwarfError::NotElf(e.to_string()))?;
        if !file.is_little_endian() {
            return Err(DwarfError::UnsupportedElf);
        }
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            // SHT_NOBITS sections (stripped debug files) have no bytes.
            let data = s.data().ok()?;
            (!data.is_empty()).then_some(SectionData {
                data,
                address: s.address(),
            })
        };
        let mut sections = CfiSections {
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame"),
            text: file.section_by_name(".text").map_or(0, |s| s.address()),
            got: file.section_by_name(".got").map_or(0, |s| s.address()),
        };
        if sections.eh_frame.is_none() {
            if let Some((hdr, eh)) = eh_frame_from_segments(&file, elf) {
                sections.eh_frame_hdr = Some(hdr);
                sections.eh_frame = Some(eh);
            }
        }
        Self::from_sections(sections, load_bias(&file, mapped_base))
    }

    /// Builds an unwinder from CFI sections; runtime addresses are link-time addresses plus `bias`.
    pub fn from_sections(sections: CfiSections<'d>, bias: u64) -> Result<Self, DwarfError> {
        if sections.eh_frame.is_none() && sections.debug_frame.is_none() {
            return Err(DwarfError::NoCfi);
        }
        let mut bases = BaseAddresses::default()
            .set_text(sections.text)
            .set_got(sections.got);
        if let Some(s) = sections.eh_frame {
            bases = bases.set_eh_frame(s.address);
        }
        if let Some(s) = sections.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(s.address);
        }
        let eh_frame = sections.eh_frame.map(|s| {
            let mut e = EhFrame::new(s.data, LittleEndian);
            e.set_address_size(8);
            e
        });
        let debug_frame = sections.debug_frame.map(|s| {
            let mut d = DebugFrame::new(s.data, LittleEndian);
            d.set_address_size(8);
            d
        });
        let scratch = Scratch::new();
        let fast_bases = |address, debug| fast::Bases {
            eh_frame: address,
            text: Some(sections.text),
            data: Some(sections.got),
            debug,
        };
        let fast_sections = [
            sections
                .eh_frame
                .map(|s| (s.data, fast_bases(s.address, false))),
            sections
                .debug_frame
                .map(|s| (s.data, fast_bases(s.address, true))),
        ];
        let (eh_index, eh_source) = match (&eh_frame, sections.eh_frame) {
            (Some(eh), Some(sd)) => {
                let from_hdr = sections
                    .eh_frame_hdr
                    .and_then(|hdr| FdeIndex::from_eh_frame_hdr(hdr, sd, &bases, eh).ok());
                match from_hdr {
                    Some(i) => (i, IndexSource::EhFrameHdr),
                    None => (
                        FdeIndex::scan(eh, sd.data.len(), &bases)?,
                        IndexSource::Scan,
                    ),
                }
            }
            _ => (FdeIndex::default(), IndexSource::None),
        };
        let debug_index = match &debug_frame {
            Some(d) => FdeIndex::scan(d, sections.debug_frame.map_or(0, |s| s.data.len()), &bases)?,
            None => FdeIndex::default(),
        };
        Ok(DwarfUnwinder {
            bias,
            bases,
            eh_frame,
            debug_frame,
            eh_index,
            debug_index,
            eh_source,
            rule_cache: true,
            fast_path: true,
            compiled_rows: true,
            fast_sections,
            scratch: RefCell::new(scratch),
        })
    }

    /// Turns the rule cache (on by default) on or off; off, every step takes the full path.
    pub fn set_rule_cache(&mut self, on: bool) {
        self.rule_cache = on;
        self.scratch.get_mut().rows = Vec::new();
    }

    /// Number of rows the rule cache holds.
    pub fn rule_cache_len(&self) -> usize {
        self.scratch
            .try_borrow()
            .map_or(0, |s| s.rows.iter().filter(|r| r.live).count())
    }

    /// Whether the rule cache holds the row for the link-time address `svma`.
    pub fn is_rule_cached(&self, svma: u64) -> bool {
        self.scratch.try_borrow().is_ok_and(|s| {
            s.rows
                .get(cache::slot(svma))
                .is_some_and(|r| r.live && r.key == svma)
        })
    }

    /// Runtime address minus link-time address.
    pub fn bias(&self) -> u64 {
        self.bias
    }

    /// How the `.eh_frame` index was built.
    pub fn eh_index_source(&self) -> IndexSource {
        self.eh_source
    }

    /// The `.eh_frame` index (link-time addresses).
    pub fn eh_index(&self) -> &FdeIndex {
        &self.eh_index
    }

    /// The `.debug_frame` index (link-time addresses).
    pub fn debug_index(&self) -> &FdeIndex {
        &self.debug_index
    }

    /// The `.eh_frame` section, for callers that want to parse entries themselves.
    pub fn eh_frame(&self) -> Option<&EhFrame<Reader<'d>>> {
        self.eh_frame.as_ref()
    }

    /// The base addresses pointers are resolved against.
    pub fn bases(&self) -> &BaseAddresses {
        &self.bases
    }

    /// The FDE covering the link-time address `svma`: `.eh_frame` first, then `.debug_frame`.
    pub fn find_fde(&self, svma: u64) -> Result<Option<(CfiSection, Fde<'d>)>, UnwindError> {
        let mut scratch = self.scratch.try_borrow_mut().ok();
        let mut cies = scratch.as_mut().map(|s| &mut s.cies);
        self.find_fde_with(svma, &mut cies)
    }

    fn find_fde_with(
        &self,
        svma: u64,
        cies: &mut Option<&mut Vec<(CfiSection, usize, Cie<'d>)>>,
    ) -> Result<Option<(CfiSection, Fde<'d>)>, UnwindError> {
        if let (Some(eh), Some(off)) = (&self.eh_frame, self.eh_index.candidate(svma)) {
            let fde = parse_fde(eh, &self.bases, CfiSection::EhFrame, off, cies)?;
            if fde.contains(svma) {
                return Ok(Some((CfiSection::EhFrame, fde)));
            }
        }
        if let (Some(df), Some(off)) = (&self.debug_frame, self.debug_index.candidate(svma)) {
            let fde = parse_fde(df, &self.bases, CfiSection::DebugFrame, off, cies)?;
            if fde.contains(svma) {
                return Ok(Some((CfiSection::DebugFrame, fde)));
            }
        }
        Ok(None)
    }
}

/// Parses the FDE at `offset`, taking its CIE from the cache when it was parsed before.
fn parse_fde<'d, S>(
    section: &S,
    bases: &BaseAddresses,
    which: CfiSection,
    offset: usize,
    cies: &mut Option<&mut Vec<(CfiSection, usize, Cie<'d>)>>,
) -> Result<Fde<'d>, UnwindError>
where
    S: UnwindSection<Reader<'d>>,
    S::Offset: gimli::UnwindOffset<usize>,
{
    let bad = |reason| UnwindError::BadUnwindInfo {
        addr: offset as u64,
        reason,
    };
    let partial = section
        .partial_fde_from_offset(bases, offset.into())
        .map_err(|e| bad(gimli_reason(e)))?;
    partial
        .parse(|s, b, cie_off| {
            let key = gimli::UnwindOffset::into(cie_off);
            if let Some(c) = cies.as_deref() {
                if let Some((_, _, cie)) = c.iter().find(|(w, o, _)| *w == which && *o == key) {
                    return Ok(cie.clone());
                }
            }
            let cie = s.cie_from_offset(b, cie_off)?;
            if let Some(c) = cies.as_deref_mut() {
                if c.len() < CIE_CACHE {
                    c.push((which, key, cie.clone()));
                }
            }
            Ok(cie)
        })
        .map_err(|e| bad(gimli_reason(e)))
}

/// gimli's errors as a static reason.
fn gimli_reason(e: gimli::Error) -> &'static str {
    use gimli::Error as E;
    match e {
        E::UnexpectedEof(_) => "truncated CFI",
        E::NoUnwindInfoForAddress => "no CFI row for the address",
        E::UnknownPointerEncoding(_) => "unknown pointer encoding",
        E::UnsupportedPointerEncoding => "unsupported pointer encoding",
        E::UnknownAugmentation => "unknown CIE augmentation",
        E::UnknownCallFrameInstruction(_) => "unknown call frame instruction",
        E::TooManyRegisterRules => "too many register rules",
        E::NotCieId | E::NotCiePointer | E::NotFdePointer => "bad CIE/FDE pointer",
        E::OffsetOutOfBounds => "offset out of bounds",
        E::InvalidAddressRange => "invalid FDE address range",
        E::TooManyIterations => "CFI expression runs too long",
        E::StackFull => "CFI or expression stack overflow",
        E::NotEnoughStackItems => "CFI expression stack underflow",
        E::InvalidExpression(_) => "invalid CFI expression",
        E::UnsupportedEvaluation => "unsupported CFI expression",
        E::PcRelativePointerButSectionBaseIsUndefined
        | E::TextRelativePointerButTextBaseIsUndefined
        | E::DataRelativePointerButDataBaseIsUndefined
        | E::FuncRelativePointerInBadContext => "pointer relative to an unknown base",
        _ => "malformed CFI",
    }
}

impl FrameWalker for DwarfUnwinder<'_> {
    /// The fast path's row at the pc, when it is loads from the CFA (plus same-value rules) and
    /// its handler, if any, resolves: rows with register copies, expressions or an unreadable
    /// personality pointer take `unwind`.
    fn rule(&self, pc: u64, pc_kind: PcKind, mem: &dyn MemoryReader) -> Option<CompactRule> {
        if !self.fast_path {
            return None;
        }
        let svma = pc_kind.lookup_address(pc).wrapping_sub(self.bias);
        self.with_scratch(|scratch| {
            // The row cache first, as `unwind` would: a caller's cache that misses often (more
            // frames than slots) then costs a slot probe here, not a row evaluation.
            let slot = match self.probe(&mut scratch.rows, svma) {
                Ok(hit) => return compact_rule(&hit.row, hit.handler),
                Err(slot) => slot,
            };
            match self.fast_row_cached(&mut scratch.fast, slot, svma, mem) {
                Ok((row, handler, true)) => compact_rule(&row, handler),
                _ => None,
            }
        })
    }

    fn unwind(
        &self,
        regs: &mut Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
        pointers: Option<&mut ContextPointers>,
    ) -> Result<StepInfo, UnwindError> {
        let pc = regs.rip().ok_or(UnwindError::MissingRip)?;
        let svma = pc_kind.lookup_address(pc).wrapping_sub(self.bias);
        self.with_scratch(|scratch| {
            let Scratch {
                rows,
                ctx,
                cies,
                fast,
            } = scratch;
            let mut slot = match self.probe(rows, svma) {
                Ok(hit) => return cache::apply(&hit.row, hit.handler, regs, mem, pointers),
                Err(slot) => slot,
            };
            if self.fast_path {
                match self.fast_row_cached(fast, slot.as_deref_mut(), svma, mem) {
                    Ok((row, handler, _)) => {
                        return cache::apply(&row, handler, regs, mem, pointers);
                    }
                    // Neither section's index names an FDE covering the pc (each FDE it names
                    // parsed whole): gimli's path would find none either.
                    Err(fast::Fast::NotCovered) => {
                        return Err(UnwindError::NoUnwindInfo { pc });
                    }
                    Err(_) => {}
                }
            }
            Ok(self
                .reference_step(ctx, cies, slot, svma, pc, regs, mem)?
                .into_place(regs, pointers))
        })
    }
}

impl<'d> DwarfUnwinder<'d> {
    /// Runs `f` on the scratch state; re-entrancy (a walker used from inside its own step)
    /// gets fresh scratch, not a panic.
    #[inline]
    fn with_scratch<R>(&self, f: impl FnOnce(&mut Scratch<'d>) -> R) -> R {
        match self.scratch.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut Scratch::new()),
        }
    }

    /// The rule cache's slot for `svma`: `Ok` with the row on a hit, else the slot to fill
    /// (`None` when the cache is off). The slots are allocated on first use.
    #[inline]
    fn probe<'r>(
        &self,
        rows: &'r mut Vec<cache::CachedRow>,
        svma: u64,
    ) -> Result<&'r cache::CachedRow, Option<&'r mut cache::CachedRow>> {
        if !self.rule_cache {
            return Err(None);
        }
        if rows.is_empty() {
            rows.resize(cache::SLOTS, cache::CachedRow::EMPTY);
        }
        let s = &mut rows[cache::slot(svma)];
        if s.live && s.key == svma {
            Ok(s)
        } else {
            Err(Some(s))
        }
    }

    /// The fast path's row at `svma`, its handler and whether the handler resolved; stored in
    /// `slot` when it can be (a resolved handler and a return-address rule). `Err` is the fast
    /// path's verdict when it has no row.
    fn fast_row_cached(
        &self,
        st: &mut [FastState; 2],
        slot: Option<&mut cache::CachedRow>,
        svma: u64,
        mem: &dyn MemoryReader,
    ) -> Result<(CompactRow, Option<xunwind_core::Handler>, bool), fast::Fast> {
        let mut row = CompactRow::EMPTY;
        let (lsda, personality) = match self.fast_row_with(st, svma, &mut row, self.compiled_rows) {
            fast::Fast::Row(lsda, personality) => (lsda, personality),
            verdict => return Err(verdict),
        };
        let (handler, resolved) = eval::handler_of(self, personality, lsda, mem);
        if let Some(s) = slot.filter(|_| resolved && row.has_return_address()) {
            *s = cache::CachedRow {
                key: svma,
                live: true,
                row,
                handler,
            };
        }
        Ok((row, handler, resolved))
    }
}

impl<'d> DwarfUnwinder<'d> {
    /// gimli's path: FDE search and parse, row evaluation, register recovery (the reference).
    #[allow(clippy::too_many_arguments)]
    fn reference_step(
        &self,
        ctx: &mut Context,
        cies: &mut Vec<(CfiSection, usize, Cie<'d>)>,
        slot: Option<&mut cache::CachedRow>,
        svma: u64,
        pc: u64,
        regs: &Regs,
        mem: &dyn MemoryReader,
    ) -> Result<Step, UnwindError> {
        let Some((which, fde)) = self.find_fde_with(svma, &mut Some(cies))? else {
            return Err(UnwindError::NoUnwindInfo { pc });
        };
        match (which, &self.eh_frame, &self.debug_frame) {
            (CfiSection::EhFrame, Some(section), _) => {
                eval::step_fde(self, section, &fde, ctx, svma, regs, mem, slot)
            }
            (CfiSection::DebugFrame, _, Some(section)) => {
                eval::step_fde(self, section, &fde, ctx, svma, regs, mem, slot)
            }
            _ => Err(UnwindError::NoUnwindInfo { pc }),
        }
    }

    /// The fast path's row at `svma`, from `.eh_frame` and, where that has no FDE covering it,
    /// from `.debug_frame` (gimli's order).
    #[inline]
    fn fast_row_with(
        &self,
        st: &mut [FastState; 2],
        svma: u64,
        row: &mut CompactRow,
        compiled: bool,
    ) -> fast::Fast {
        let [eh, debug] = st;
        match self.fast_row_in(0, eh, svma, row, compiled) {
            fast::Fast::NotCovered => self.fast_row_in(1, debug, svma, row, compiled),
            verdict => verdict,
        }
    }

    /// Section `which` (0 `.eh_frame`, 1 `.debug_frame`) for the fast path, and its index.
    #[inline]
    fn fast_section(&self, which: usize) -> (Option<&(&'d [u8], fast::Bases)>, &FdeIndex) {
        let idx = if which == 0 {
            &self.eh_index
        } else {
            &self.debug_index
        };
        (self.fast_sections[which].as_ref(), idx)
    }

    /// The fast path's row at `svma` in section `which` (0 `.eh_frame`, 1 `.debug_frame`): from
    /// the FDE's compiled rows when `compiled` (compiled on its second use), else, or when it
    /// does not compile, by interpreting up to `svma`.
    #[inline]
    fn fast_row_in(
        &self,
        which: usize,
        st: &mut FastState,
        svma: u64,
        row: &mut CompactRow,
        compiled: bool,
    ) -> fast::Fast {
        let (section, idx) = self.fast_section(which);
        let (Some((data, b)), Some(i)) = (section, idx.position(svma)) else {
            return fast::Fast::NotCovered;
        };
        let offset = || idx.offsets().get(i).map(|&o| o as usize);
        if compiled {
            let n = idx.len();
            if let Some(f) = st
                .compiled
                .row_at(n, i, data, b, &mut st.cies, offset, svma, row)
            {
                return f;
            }
        }
        let Some(off) = offset() else {
            return fast::Fast::NotCovered;
        };
        fast::row_at(data, b, &mut st.cies, off, svma, row)
    }

    /// Turns our own `.eh_frame` parser and CFA interpreter (on by default) on or off; off,
    /// every row not in the rule cache is evaluated by gimli.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
        self.scratch.get_mut().rows = Vec::new();
    }

    /// Turns compiled FDEs (on by default) on or off: on, the fast path's second step into an
    /// FDE keeps all of its rows, and later steps into it search them instead of interpreting
    /// its program up to the address; off, every step interprets.
    pub fn set_compiled_rows(&mut self, on: bool) {
        self.compiled_rows = on;
        self.scratch.get_mut().rows = Vec::new();
    }

    /// Compiles every `.eh_frame` FDE now, as a profiler may at module load so that no step
    /// interprets (libc: 3.7k FDEs, a few ms); returns how many FDEs are compiled (those outside
    /// the fast subset stay interpreted). Compiled rows must be on.
    pub fn compile_all(&self) -> usize {
        if !(self.compiled_rows && self.fast_path) {
            return 0;
        }
        self.with_scratch(|s| {
            let mut total = 0;
            for (which, st) in s.fast.iter_mut().enumerate() {
                let (section, idx) = self.fast_section(which);
                let Some((data, b)) = section else {
                    continue;
                };
                let FastState { cies, compiled } = st;
                for i in 0..idx.len() {
                    let offset = || idx.offsets().get(i).map(|&o| o as usize);
                    compiled.ensure(idx.len(), i, data, b, cies, offset);
                }
                total += compiled.len();
            }
            total
        })
    }

    /// FDEs compiled so far, and the heap bytes their rows hold.
    pub fn compiled_stats(&self) -> (usize, usize) {
        self.scratch.try_borrow().map_or((0, 0), |s| {
            s.fast.iter().fold((0, 0), |(n, b), f| {
                (n + f.compiled.len(), b + f.compiled.heap_bytes())
            })
        })
    }

    /// The row at link-time address `svma` as the fast path's interpreter computes it, from the
    /// FDE the indexes name (`.eh_frame`'s, else `.debug_frame`'s).
    pub fn fast_row(&self, svma: u64) -> RowLookup {
        self.fast_lookup(svma, false)
    }

    /// As [`DwarfUnwinder::fast_row`], through the FDE's compiled rows: the first call for an
    /// FDE interprets and the second compiles it; an FDE that does not compile is interpreted.
    pub fn compiled_row(&self, svma: u64) -> RowLookup {
        self.fast_lookup(svma, true)
    }

    fn fast_lookup(&self, svma: u64, compiled: bool) -> RowLookup {
        let mut row = CompactRow::EMPTY;
        let verdict =
            self.with_scratch(|s| self.fast_row_with(&mut s.fast, svma, &mut row, compiled));
        match verdict {
            fast::Fast::Row(..) => RowLookup::Row(row),
            fast::Fast::NotCovered => RowLookup::NotCovered,
            fast::Fast::Decline => RowLookup::Declined,
        }
    }

    /// The row at link-time address `svma` as gimli evaluates it, from the same `.eh_frame`
    /// FDE as [`DwarfUnwinder::fast_row`]; `Declined` when it has no compact form.
    pub fn reference_row(&self, svma: u64) -> Result<RowLookup, UnwindError> {
        let (Some(eh), Some(off)) = (&self.eh_frame, self.eh_index.candidate(svma)) else {
            return Ok(RowLookup::NotCovered);
        };
        let fde = parse_fde(eh, &self.bases, CfiSection::EhFrame, off, &mut None)?;
        if !fde.contains(svma) {
            return Ok(RowLookup::NotCovered);
        }
        let mut ctx = Box::new(Context::new_in());
        let row = fde
            .unwind_info_for_address(eh, &self.bases, &mut ctx, svma)
            .map_err(|e| UnwindError::BadUnwindInfo {
                addr: off as u64,
                reason: gimli_reason(e),
            })?;
        Ok(match eval::compact_of(row, &fde) {
            Some(r) => RowLookup::Row(r),
            None => RowLookup::Declined,
        })
    }
}

/// A compact row as the walker-independent [`CompactRule`]: what `cache::apply` does to the
/// registers, expressed as loads from the CFA and a mask of registers that stay known.
fn compact_rule(row: &CompactRow, handler: Option<xunwind_core::Handler>) -> Option<CompactRule> {
    let (cfa_reg, cfa_off) = row.cfa();
    let base = dwarf_gpr(cfa_reg)?;
    let mut ra = None;
    let mut keep = cache::CALLEE_SAVED_MASK | Regs::bit(xunwind_core::Reg::Rsp) | Regs::rip_bit();
    let mut saves = [(xunwind_core::Reg::Rax, 0i64); xunwind_core::RULE_SAVES];
    let mut n = 0;
    for (reg, rule) in row.rules() {
        match (reg, rule) {
            (16, Rule::Offset(off)) => ra = Some(off),
            (16, _) => return None,
            (r, Rule::Offset(off)) => {
                let r = dwarf_gpr(r)?;
                *saves.get_mut(n)? = (r, off);
                n += 1;
                keep |= Regs::bit(r);
            }
            (r, Rule::SameValue) => keep |= Regs::bit(dwarf_gpr(r)?),
            (_, Rule::Register(_)) => return None,
        }
    }
    let mut rule = CompactRule::new(base, cfa_off, i32::try_from(ra?).ok()?, Trust::Cfi)
        .with_keep(keep)
        .with_handler(handler)
        .with_caller_pc(if row.is_signal_frame() {
            PcKind::Exact
        } else {
            PcKind::ReturnAddress
        });
    for &(r, off) in &saves[..n] {
        rule = rule.save(r, off)?;
    }
    Some(rule)
}

/// What [`DwarfUnwinder::fast_row`] and [`DwarfUnwinder::reference_row`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLookup {
    /// The row, in the compact form.
    Row(CompactRow),
    /// The FDE the index names does not cover the address (or there is no `.eh_frame`).
    NotCovered,
    /// The row is outside the compact form (fast path: outside the subset it interprets, or
    /// malformed; gimli's path then decides).
    Declined,
}

#[cfg(test)]
mod tests;

//! Reading a kernel file: vmlinux, bzImage/vmlinuz, or a `.ko` module.

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget};

use crate::compress::{decompress, find_payload, Compression};
use crate::error::{Error, Result};
use crate::format::{
    decode_entry, parse_entries, ExTableEntry, ExTableFormat, Extra, KernelVersion, Machine,
};
use crate::table::{ExTable, FixupKind};

/// ELF `SHF_WRITE`.
pub const SHF_WRITE: u64 = 1;
/// ELF `SHF_ALLOC`.
pub const SHF_ALLOC: u64 = 2;
/// ELF `SHF_EXECINSTR`.
pub const SHF_EXECINSTR: u64 = 4;
/// Linux `SHF_RO_AFTER_INIT` (module sections made read-only after init).
pub const SHF_RO_AFTER_INIT: u64 = 0x0020_0000;

/// One ELF section header, as far as the tables need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// ELF section index.
    pub index: usize,
    /// Section name.
    pub name: String,
    /// `sh_addr` (0 in a module).
    pub address: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_flags`.
    pub flags: u64,
    /// `sh_addralign`.
    pub align: u64,
}

impl Section {
    /// Whether the section holds code (`SHF_EXECINSTR`).
    pub fn is_exec(&self) -> bool {
        self.flags & SHF_EXECINSTR != 0
    }
}

/// Whether the file is linked (vmlinux) or relocatable (a module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A linked kernel: addresses are final.
    Vmlinux,
    /// A loadable module: addresses are section-relative until loaded.
    Module,
}

/// A place in a module: section index and offset, since a module has no address until loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecOff {
    /// ELF section index.
    pub section: usize,
    /// Offset in the section.
    pub offset: u64,
}

/// A module's table entry, from its relocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleEntry {
    /// The instruction that may fault.
    pub insn: SecOff,
    /// Where its handler resumes.
    pub fixup: SecOff,
    /// Type/data words; for the 4.6-5.15 handler format, `Handler(0)` with the handler's
    /// symbol in `handler_symbol` (the handler lives in vmlinux).
    pub extra: Extra,
    /// Name of the symbol a handler field is relocated against.
    pub handler_symbol: Option<String>,
}

/// A symbol: address (or section offset in a module), size (0 if unknown), name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Address, or offset in `section` for module symbols.
    pub address: u64,
    /// Size in bytes; 0 when unknown.
    pub size: u64,
    /// Section index, for module symbols.
    pub section: Option<usize>,
    /// Name.
    pub name: String,
}

/// Address-sorted symbols for naming code addresses.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    syms: Vec<Symbol>,
}

impl Symbols {
    /// From a list in any order.
    pub fn new(mut syms: Vec<Symbol>) -> Self {
        syms.sort_by_key(|s| (s.section, s.address));
        Symbols { syms }
    }

    /// Parses a System.map (`ADDRESS TYPE NAME` lines), keeping text symbols (`t`, `T`, `w`, `W`).
    pub fn from_system_map(text: &str) -> Self {
        let syms = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?;
                let name = it.next()?;
                matches!(ty, "t" | "T" | "w" | "W").then(|| Symbol {
                    address: addr,
                    size: 0,
                    section: None,
                    name: name.to_string(),
                })
            })
            .collect();
        Symbols::new(syms)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The symbol at or before `addr` (in `section` for module symbols) and the offset into it.
    pub fn lookup(&self, section: Option<usize>, addr: u64) -> Option<(&str, u64)> {
        let key = (section, addr);
        let pos = self
            .syms
            .partition_point(|s| (s.section, s.address) <= key)
            .checked_sub(1)?;
        let s = &self.syms[pos];
        if s.section != section || (s.size != 0 && addr >= s.address + s.size) {
            return None;
        }
        Some((&s.name, addr - s.address))
    }
}

/// How to read a file: the format and version can be given when the file does not say.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Force this entry layout.
    pub format: Option<ExTableFormat>,
    /// Force this kernel version (for type names and layout).
    pub version: Option<KernelVersion>,
}

/// The ORC sections of a vmlinux, copied out of the file.
#[derive(Clone, Debug)]
pub struct OrcSections {
    /// Address of `.orc_unwind_ip`.
    pub ip_address: u64,
    /// `.orc_unwind_ip` bytes.
    pub ip: Vec<u8>,
    /// `.orc_unwind` bytes.
    pub unwind: Vec<u8>,
    /// `.orc_header` bytes (6.4+).
    pub header: Option<Vec<u8>>,
    /// `.orc_lookup` size in bytes (NOBITS: filled at boot).
    pub lookup_size: Option<u64>,
    /// `[_stext, _etext)`: `.text`'s range, what the kernel's `orc_lookup` covers.
    pub text: (u64, u64),
}

/// A kernel file with its exception table read.
#[derive(Clone, Debug)]
pub struct KernelFile {
    /// vmlinux or module.
    pub kind: FileKind,
    /// Target machine.
    pub machine: Machine,
    /// Kernel version from the banner or `vermagic`, or as forced.
    pub version: Option<KernelVersion>,
    /// The compression of the bzImage payload this came from, if it did.
    pub compression: Option<Compression>,
    /// Section headers by ELF index (index 0 is the null section).
    pub sections: Vec<Section>,
    /// The entry layout in use.
    pub format: ExTableFormat,
    /// How the format was chosen (`version`, `size`, `forced`, `handler-probe`).
    pub format_reason: &'static str,
    /// vmlinux entries in file order (empty for a module).
    pub entries: Vec<ExTableEntry>,
    /// Module entries in file order (empty for vmlinux).
    pub module_entries: Vec<ModuleEntry>,
    /// The ELF symbol table (vmlinux from a -dbg package, or a module's own).
    pub symbols: Symbols,
    /// ORC sections (vmlinux).
    pub orc: Option<OrcSections>,
    /// Whether there is an `__ex_table` at all.
    pub has_ex_table: bool,
}

/// Upper bound on the relocations read from one `.rela__ex_table`.
const MAX_RELOCS: usize = 1 << 24;

impl KernelFile {
    /// Reads a vmlinux, bzImage or module from its bytes.
    pub fn parse(data: &[u8]) -> Result<Self> {
        Self::parse_with(data, Options::default())
    }

    /// Reads with a forced format and/or version.
    pub fn parse_with(data: &[u8], opts: Options) -> Result<Self> {
        if data.starts_with(b"\x7fELF") {
            return Self::parse_elf(data, opts, None);
        }
        // A compressed module (`.ko.xz`, `.ko.gz`, `.ko.zst`) is the whole file; a bzImage
        // carries its payload after the setup code.
        let (payload, method) = match Compression::sniff(data) {
            Some(c) => (data, c),
            None => find_payload(data).ok_or(Error::NotKernel)?,
        };
        let elf = decompress(payload, method)?;
        if !elf.starts_with(b"\x7fELF") {
            return Err(Error::NotKernel);
        }
        Self::parse_elf(&elf, opts, Some(method))
    }

    fn parse_elf(data: &[u8], opts: Options, compression: Option<Compression>) -> Result<Self> {
        let file = object::File::parse(data)?;
        if !file.is_little_endian() {
            return Err(Error::Elf("big-endian kernels are not supported"));
        }
        let e_machine = u16::from_le_bytes([data[18], data[19]]);
        let machine = Machine::from_elf(e_machine, file.is_64());
        let kind = match file.kind() {
            object::ObjectKind::Relocatable => FileKind::Module,
            _ => FileKind::Vmlinux,
        };
        let mut sections = vec![Section {
            index: 0,
            name: String::new(),
            address: 0,
            size: 0,
            flags: 0,
            align: 0,
        }];
        for s in file.sections() {
            let flags = match s.flags() {
                object::SectionFlags::Elf { sh_flags } => sh_flags,
                _ => 0,
            };
            let index = s.index().0;
            if sections.len() <= index {
                sections.resize(index + 1, sections[0].clone());
            }
            sections[index] = Section {
                index,
                name: s.name().unwrap_or("").to_string(),
                address: s.address(),
                size: s.size(),
                flags,
                align: s.align(),
            };
        }
        let version = opts.version.or_else(|| match kind {
            FileKind::Vmlinux => file
                .section_by_name(".rodata")
                .and_then(|s| s.data().ok())
                .and_then(KernelVersion::find_banner)
                .or_else(|| KernelVersion::find_banner(data)),
            FileKind::Module => file
                .section_by_name(".modinfo")
                .and_then(|s| s.data().ok())
                .and_then(vermagic),
        });
        let symbols = read_symbols(&file, kind);
        let orc = if kind == FileKind::Vmlinux {
            read_orc(&file)
        } else {
            None
        };
        let mut kf = KernelFile {
            kind,
            machine,
            version,
            compression,
            sections,
            format: ExTableFormat::X86Data,
            format_reason: "none",
            entries: Vec::new(),
            module_entries: Vec::new(),
            symbols,
            orc,
            has_ex_table: false,
        };
        let Some(sec) = file.section_by_name("__ex_table") else {
            kf.format = opts.format.unwrap_or_else(|| {
                ExTableFormat::for_kernel(machine, version.unwrap_or(KernelVersion::new(6, 1, 0)))
            });
            return Ok(kf);
        };
        kf.has_ex_table = true;
        let bytes = sec.data()?;
        let (format, reason) = match (opts.format, version) {
            (Some(f), _) => (f, "forced"),
            (None, Some(v)) => (ExTableFormat::for_kernel(machine, v), "version"),
            (None, None) => kf.guess_format(bytes, sec.address()),
        };
        kf.format = format;
        kf.format_reason = reason;
        match kind {
            FileKind::Vmlinux => kf.entries = parse_entries(format, bytes, sec.address(), false)?,
            FileKind::Module => kf.module_entries = module_entries(&file, &sec, bytes, format)?,
        }
        Ok(kf)
    }

    /// The layout of a table whose kernel version is unknown: 12-byte entries on x86 are
    /// handler-format when every third field points into code, data-format otherwise.
    fn guess_format(&self, bytes: &[u8], addr: u64) -> (ExTableFormat, &'static str) {
        let by12 = bytes.len().is_multiple_of(12) && !bytes.is_empty();
        match self.machine {
            Machine::X86_64 | Machine::X86 if by12 => {
                if self.kind == FileKind::Vmlinux
                    && bytes.chunks_exact(12).enumerate().all(|(i, b)| {
                        let e =
                            decode_entry(ExTableFormat::X86Handler, b, addr + i as u64 * 12, false);
                        matches!(e.extra, Extra::Handler(h) if self.exec_section(h).is_some())
                    })
                {
                    (ExTableFormat::X86Handler, "handler-probe")
                } else {
                    (ExTableFormat::X86Data, "size")
                }
            }
            Machine::Arm64 | Machine::RiscV if by12 => (ExTableFormat::TypeData, "size"),
            Machine::X86_64 | Machine::X86 | Machine::Arm64 | Machine::RiscV => {
                (ExTableFormat::Relative, "size")
            }
            Machine::Other { is_64: true, .. } => (ExTableFormat::Absolute64, "size"),
            Machine::Other { is_64: false, .. } => (ExTableFormat::Absolute32, "size"),
        }
    }

    /// The executable section holding `addr` (vmlinux addresses).
    pub fn exec_section(&self, addr: u64) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.is_exec() && s.address <= addr && addr - s.address < s.size)
    }

    /// The allocated section holding `addr` (vmlinux addresses).
    pub fn section_at(&self, addr: u64) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.flags & SHF_ALLOC != 0 && s.address <= addr && addr - s.address < s.size)
    }

    /// A section by name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Number of entries in the file's table.
    pub fn entry_count(&self) -> usize {
        self.entries.len().max(self.module_entries.len())
    }

    /// The vmlinux table, sorted and indexed for lookup.
    pub fn vmlinux_table(&self) -> Result<ExTable> {
        ExTable::new(self.entries.clone(), FixupKind::Address)
    }

    /// The module table placed at `layout` and sorted as the module loader does (moving an
    /// entry rebases its relative fields; `data` is left alone).
    pub fn module_table(&self, layout: &ModuleLayout) -> Result<ExTable> {
        let place = |p: SecOff| -> Result<u64> {
            layout
                .address(p.section)
                .map(|a| a.wrapping_add(p.offset))
                .ok_or(Error::BadRelocation {
                    offset: p.offset,
                    reason: "target section is not loaded",
                })
        };
        let entries = self
            .module_entries
            .iter()
            .map(|m| {
                Ok(ExTableEntry {
                    insn: place(m.insn)?,
                    fixup: place(m.fixup)?,
                    extra: m.extra,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        ExTable::new(entries, FixupKind::Address)
    }
}

/// `vermagic=6.1.0-56-amd64 SMP ...` in `.modinfo`.
fn vermagic(modinfo: &[u8]) -> Option<KernelVersion> {
    modinfo
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"vermagic="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(KernelVersion::parse)
}

fn read_symbols(file: &object::File<'_>, kind: FileKind) -> Symbols {
    let syms = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && !s.name().unwrap_or("").is_empty())
        .map(|s| Symbol {
            address: s.address(),
            size: s.size(),
            section: match kind {
                FileKind::Module => s.section_index().map(|i| i.0),
                FileKind::Vmlinux => None,
            },
            name: s.name().unwrap_or("").to_string(),
        })
        .take(1 << 22)
        .collect();
    Symbols::new(syms)
}

fn read_orc(file: &object::File<'_>) -> Option<OrcSections> {
    let ip = file.section_by_name(".orc_unwind_ip")?;
    let unwind = file.section_by_name(".orc_unwind")?;
    let text = file.section_by_name(".text")?;
    Some(OrcSections {
        ip_address: ip.address(),
        ip: ip.data().ok()?.to_vec(),
        unwind: unwind.data().ok()?.to_vec(),
        header: file
            .section_by_name(".orc_header")
            .and_then(|h| h.data().ok())
            .map(<[u8]>::to_vec),
        lookup_size: file.section_by_name(".orc_lookup").map(|s| s.size()),
        text: (text.address(), text.address() + text.size()),
    })
}

/// Where a relocation points: a section offset, or an undefined symbol by name.
enum Target {
    Place(SecOff),
    Symbol(String),
}

/// Builds a module's entries from `.rela__ex_table`: each address field is a PC-relative (or
/// absolute) relocation against a symbol, typically a section symbol with the offset in the
/// addend; the field's file bytes are zero. Non-address fields are read from the bytes.
fn module_entries(
    file: &object::File<'_>,
    sec: &object::Section<'_, '_>,
    bytes: &[u8],
    format: ExTableFormat,
) -> Result<Vec<ModuleEntry>> {
    let es = format.entry_size() as usize;
    if !bytes.len().is_multiple_of(es) {
        return Err(Error::BadTableSize {
            size: bytes.len() as u64,
            entry_size: es as u8,
        });
    }
    let mut relocs: Vec<(u64, Target)> = Vec::new();
    for (offset, r) in sec.relocations() {
        if relocs.len() >= MAX_RELOCS {
            return Err(Error::TooLarge("relocations in .rela__ex_table"));
        }
        let bad = |reason| Error::BadRelocation { offset, reason };
        let r_type = match r.flags() {
            RelocationFlags::Elf { r_type } => r_type,
            _ => return Err(bad("not an ELF relocation")),
        };
        // x86-64 PC32/PLT32/64, arm64 PREL32/ABS64, riscv 32_PCREL/64: all resolve to S + A,
        // the place-relative ones storing S + A - P, which we turn back into S + A.
        let ok = match file.architecture() {
            object::Architecture::X86_64 => matches!(r_type, 1 | 2 | 4),
            object::Architecture::Aarch64 => matches!(r_type, 257 | 261),
            object::Architecture::Riscv64 => matches!(r_type, 2 | 57),
            _ => true,
        };
        if !ok {
            return Err(bad("unsupported relocation type"));
        }
        let RelocationTarget::Symbol(si) = r.target() else {
            return Err(bad("relocation target is not a symbol"));
        };
        let sym = file
            .symbol_by_index(si)
            .map_err(|_| bad("bad symbol index"))?;
        let target = match sym.section_index() {
            Some(idx) => Target::Place(SecOff {
                section: idx.0,
                offset: sym.address().wrapping_add(r.addend() as u64),
            }),
            None => Target::Symbol(sym.name().unwrap_or("?").to_string()),
        };
        relocs.push((offset, target));
    }
    relocs.sort_by_key(|r| r.0);
    let find = |off: u64| -> Option<&Target> {
        relocs
            .binary_search_by_key(&off, |r| r.0)
            .ok()
            .map(|i| &relocs[i].1)
    };
    let addr_fields: (u64, u64) = match format {
        ExTableFormat::Absolute64 => (0, 8),
        _ => (0, 4),
    };
    let mut out = Vec::with_capacity(bytes.len() / es);
    for (i, b) in bytes.chunks_exact(es).enumerate() {
        let base = (i * es) as u64;
        let place = |field: u64, what| -> Result<SecOff> {
            match find(base + field) {
                Some(Target::Place(p)) => Ok(*p),
                Some(Target::Symbol(_)) => Err(Error::BadRelocation {
                    offset: base + field,
                    reason: "address field relocated against an undefined symbol",
                }),
                None => Err(Error::BadRelocation {
                    offset: base + field,
                    reason: what,
                }),
            }
        };
        let insn = place(addr_fields.0, "no relocation for insn")?;
        let fixup = place(addr_fields.1, "no relocation for fixup")?;
        let raw = decode_entry(format, b, 0, false);
        let (extra, handler_symbol) = match format {
            ExTableFormat::X86Handler => match find(base + 8) {
                Some(Target::Symbol(name)) => (Extra::Handler(0), Some(name.clone())),
                Some(Target::Place(p)) => (Extra::Handler(p.offset), None),
                None => (Extra::Handler(0), None),
            },
            _ => (raw.extra, None),
        };
        out.push(ModuleEntry {
            insn,
            fixup,
            extra,
            handler_symbol,
        });
    }
    Ok(out)
}

/// Load addresses of a module's sections.
#[derive(Clone, Debug, Default)]
pub struct ModuleLayout {
    addrs: Vec<Option<u64>>,
}

impl ModuleLayout {
    /// A layout from explicit `(section index, address)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (usize, u64)>) -> Self {
        let mut addrs = Vec::new();
        for (i, a) in pairs {
            if addrs.len() <= i {
                addrs.resize(i + 1, None);
            }
            addrs[i] = Some(a);
        }
        ModuleLayout { addrs }
    }

    /// The module loader's layout (`layout_sections`): allocated sections in the order
    /// code, read-only, ro-after-init, writable, each aligned, core sections from `core_base`
    /// and `.init*` sections from `init_base`.
    pub fn loader_default(file: &KernelFile, core_base: u64, init_base: u64) -> Self {
        const MASKS: [(u64, u64); 4] = [
            (SHF_EXECINSTR | SHF_ALLOC, 0),
            (SHF_ALLOC, SHF_WRITE),
            (SHF_RO_AFTER_INIT | SHF_ALLOC, 0),
            (SHF_WRITE | SHF_ALLOC, 0),
        ];
        let mut addrs = vec![None; file.sections.len()];
        let mut core = 0u64;
        let mut init = 0u64;
        for (want, not) in MASKS {
            for s in &file.sections {
                if s.flags & want != want || s.flags & not != 0 || addrs[s.index].is_some() {
                    continue;
                }
                let is_init = s.name.starts_with(".init");
                let cur = if is_init { &mut init } else { &mut core };
                let align = s.align.max(1);
                *cur = cur.div_ceil(align).saturating_mul(align);
                let base = if is_init { init_base } else { core_base };
                addrs[s.index] = Some(base.wrapping_add(*cur));
                *cur = cur.saturating_add(s.size);
            }
        }
        ModuleLayout { addrs }
    }

    /// The load address of section `index`.
    pub fn address(&self, index: usize) -> Option<u64> {
        self.addrs.get(index).copied().flatten()
    }

    /// The loaded sections' `(index, address)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.addrs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (i, a)))
    }

    /// The section and offset at a loaded address (the inverse of placement), among `sections`.
    pub fn locate(&self, sections: &[Section], addr: u64) -> Option<SecOff> {
        // Inside a section first; then just past one's end (a fixup label can sit there).
        let within = |slack: u64| {
            self.iter().find_map(|(i, a)| {
                let s = sections.get(i)?;
                (a <= addr && addr - a < s.size + slack).then(|| SecOff {
                    section: i,
                    offset: addr - a,
                })
            })
        };
        within(0).or_else(|| within(1))
    }
}

//! The raw `__ex_table` entry layouts and how a file's layout is chosen.

use crate::error::{Error, Result};

/// A kernel release, as printed in `Linux version X.Y.Z` or a module's `vermagic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major number (6 in 6.1.0).
    pub major: u16,
    /// Minor number (1 in 6.1.0).
    pub minor: u16,
    /// Patch level (0 in 6.1.0-56-amd64; Debian's upstream stable number is elsewhere).
    pub patch: u16,
}

impl KernelVersion {
    /// A version from its parts.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        KernelVersion {
            major,
            minor,
            patch,
        }
    }

    /// Whether this is at least `major.minor`.
    pub const fn at_least(self, major: u16, minor: u16) -> bool {
        self.major > major || (self.major == major && self.minor >= minor)
    }

    /// Parses a leading `X.Y[.Z]` (anything after it, like `-56-amd64`, is ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = [0u16; 3];
        let mut n = 0;
        let mut rest = s;
        while n < 3 {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 4 {
                break;
            }
            parts[n] = rest[..digits].parse().ok()?;
            n += 1;
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(r) => rest = r,
                None => break,
            }
        }
        (n >= 2).then_some(KernelVersion::new(parts[0], parts[1], parts[2]))
    }

    /// Finds `Linux version X.Y.Z` in a kernel image's bytes (the `linux_banner` in `.rodata`).
    pub fn find_banner(data: &[u8]) -> Option<Self> {
        const TAG: &[u8] = b"Linux version ";
        let mut start = 0;
        // The banner is the string that continues with digits; a bounded number of false hits.
        for _ in 0..64 {
            let pos = find(&data[start..], TAG)? + start;
            let tail = &data[pos + TAG.len()..];
            let tail = &tail[..tail.len().min(32)];
            let text: String = tail
                .iter()
                .take_while(|b| b.is_ascii_graphic())
                .map(|&b| b as char)
                .collect();
            if let Some(v) = KernelVersion::parse(&text) {
                return Some(v);
            }
            start = pos + 1;
        }
        None
    }
}

impl core::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// First position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The processor a kernel is built for; it decides the entry layouts and type numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Machine {
    /// x86-64.
    X86_64,
    /// 32-bit x86.
    X86,
    /// AArch64.
    Arm64,
    /// RISC-V (64-bit).
    RiscV,
    /// Anything else, with its ELF `e_machine` and whether the file is 64-bit.
    Other {
        /// ELF e_machine.
        e_machine: u16,
        /// ELFCLASS64.
        is_64: bool,
    },
}

impl Machine {
    /// From an ELF header's `e_machine` and class.
    pub fn from_elf(e_machine: u16, is_64: bool) -> Self {
        match e_machine {
            62 => Machine::X86_64,
            3 => Machine::X86,
            183 => Machine::Arm64,
            243 => Machine::RiscV,
            _ => Machine::Other { e_machine, is_64 },
        }
    }

    /// A short name (`x86_64`, `arm64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Machine::X86_64 => "x86_64",
            Machine::X86 => "x86",
            Machine::Arm64 => "arm64",
            Machine::RiscV => "riscv",
            Machine::Other { .. } => "other",
        }
    }
}

/// The byte layout of one `__ex_table` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExTableFormat {
    /// `{unsigned long insn, fixup}` with absolute 64-bit addresses (64-bit arches before
    /// relative tables).
    Absolute64,
    /// `{unsigned long insn, fixup}` with absolute 32-bit addresses (32-bit arches).
    Absolute32,
    /// `{int insn, fixup}`: each field is an offset from its own address (x86 3.5-4.5, arm64
    /// 4.6-5.15, riscv 5.18).
    Relative,
    /// x86 `{int insn, fixup, handler}`: the third field is a self-relative pointer to the
    /// handler function (`ex_handler_default`, ...), 4.6-5.15.
    X86Handler,
    /// x86 `{int insn, fixup, data}`: `data` holds the `EX_TYPE_*` and, from 5.17, register,
    /// flags and an immediate; 5.16 on.
    X86Data,
    /// arm64/riscv `{int insn, fixup; short type, data}`.
    TypeData,
}

impl ExTableFormat {
    /// Size of one entry in bytes.
    pub const fn entry_size(self) -> u8 {
        match self {
            ExTableFormat::Absolute64 => 16,
            ExTableFormat::Absolute32 | ExTableFormat::Relative => 8,
            ExTableFormat::X86Handler | ExTableFormat::X86Data | ExTableFormat::TypeData => 12,
        }
    }

    /// A short name (`absolute64`, `relative`, `x86-handler`, `x86-data`, `type-data`).
    pub const fn name(self) -> &'static str {
        match self {
            ExTableFormat::Absolute64 => "absolute64",
            ExTableFormat::Absolute32 => "absolute32",
            ExTableFormat::Relative => "relative",
            ExTableFormat::X86Handler => "x86-handler",
            ExTableFormat::X86Data => "x86-data",
            ExTableFormat::TypeData => "type-data",
        }
    }

    /// Parses a name given by [`ExTableFormat::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        [
            ExTableFormat::Absolute64,
            ExTableFormat::Absolute32,
            ExTableFormat::Relative,
            ExTableFormat::X86Handler,
            ExTableFormat::X86Data,
            ExTableFormat::TypeData,
        ]
        .into_iter()
        .find(|f| f.name() == s)
    }

    /// Whether insn and fixup are self-relative (and so must be rebased when an entry moves).
    pub const fn is_relative(self) -> bool {
        !matches!(self, ExTableFormat::Absolute64 | ExTableFormat::Absolute32)
    }

    /// The layout a kernel of this machine and version uses. `None` where the version does not
    /// decide it (unknown version): see [`crate::KernelFile`] for the size-based guess.
    pub fn for_kernel(machine: Machine, version: KernelVersion) -> Self {
        match machine {
            Machine::X86_64 | Machine::X86 => {
                if version.at_least(5, 16) {
                    ExTableFormat::X86Data
                } else if version.at_least(4, 6) {
                    ExTableFormat::X86Handler
                } else if version.at_least(3, 5) {
                    ExTableFormat::Relative
                } else if machine == Machine::X86 {
                    ExTableFormat::Absolute32
                } else {
                    ExTableFormat::Absolute64
                }
            }
            Machine::Arm64 => {
                if version.at_least(5, 16) {
                    ExTableFormat::TypeData
                } else if version.at_least(4, 6) {
                    ExTableFormat::Relative
                } else {
                    ExTableFormat::Absolute64
                }
            }
            Machine::RiscV => {
                if version.at_least(5, 19) {
                    ExTableFormat::TypeData
                } else if version.at_least(5, 18) {
                    ExTableFormat::Relative
                } else {
                    ExTableFormat::Absolute64
                }
            }
            Machine::Other { is_64: true, .. } => ExTableFormat::Absolute64,
            Machine::Other { is_64: false, .. } => ExTableFormat::Absolute32,
        }
    }
}

/// What an entry carries besides insn and fixup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Extra {
    /// Nothing (two-field formats).
    None,
    /// x86 4.6-5.15: the absolute address of the handler function.
    Handler(u64),
    /// x86 5.16+: the `data` word.
    Data(u32),
    /// arm64/riscv: `type` and `data` halves.
    TypeData {
        /// `EX_TYPE_*`.
        ty: i16,
        /// Register fields.
        data: i16,
    },
}

/// One exception-table entry with its addresses resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExTableEntry {
    /// Address of the instruction that may fault.
    pub insn: u64,
    /// Where the handler resumes: an address, except in BPF-style tables where it is the raw
    /// field (see [`crate::FixupKind`]).
    pub fixup: u64,
    /// The handler pointer or type/data words.
    pub extra: Extra,
}

#[inline]
fn rd_i32(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
fn rd_i16(b: &[u8], off: usize) -> i16 {
    i16::from_le_bytes([b[off], b[off + 1]])
}

#[inline]
fn rel(field_addr: u64, v: i32) -> u64 {
    field_addr.wrapping_add(v as i64 as u64)
}

/// Decodes one entry of `format` from its bytes, `addr` being the entry's own address (used by
/// self-relative fields). With `raw_fixup` the fixup field is kept as written (BPF tables).
pub fn decode_entry(format: ExTableFormat, b: &[u8], addr: u64, raw_fixup: bool) -> ExTableEntry {
    let fix = |off: usize| -> u64 {
        let v = rd_i32(b, off);
        if raw_fixup {
            v as u32 as u64
        } else {
            rel(addr + off as u64, v)
        }
    };
    match format {
        ExTableFormat::Absolute64 => {
            let insn = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
            let fixup = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
            ExTableEntry {
                insn,
                fixup,
                extra: Extra::None,
            }
        }
        ExTableFormat::Absolute32 => ExTableEntry {
            insn: rd_i32(b, 0) as u32 as u64,
            fixup: rd_i32(b, 4) as u32 as u64,
            extra: Extra::None,
        },
        ExTableFormat::Relative => ExTableEntry {
            insn: rel(addr, rd_i32(b, 0)),
            fixup: fix(4),
            extra: Extra::None,
        },
        ExTableFormat::X86Handler => ExTableEntry {
            insn: rel(addr, rd_i32(b, 0)),
            fixup: fix(4),
            extra: Extra::Handler(rel(addr + 8, rd_i32(b, 8))),
        },
        ExTableFormat::X86Data => ExTableEntry {
            insn: rel(addr, rd_i32(b, 0)),
            fixup: fix(4),
            extra: Extra::Data(rd_i32(b, 8) as u32),
        },
        ExTableFormat::TypeData => ExTableEntry {
            insn: rel(addr, rd_i32(b, 0)),
            fixup: fix(4),
            extra: Extra::TypeData {
                ty: rd_i16(b, 8),
                data: rd_i16(b, 10),
            },
        },
    }
}

/// Upper bound on entries in one table (the largest real tables have tens of thousands).
pub const MAX_ENTRIES: usize = 1 << 24;

/// Decodes every entry of a table whose bytes `data` sit at address `addr`.
pub fn parse_entries(
    format: ExTableFormat,
    data: &[u8],
    addr: u64,
    raw_fixup: bool,
) -> Result<Vec<ExTableEntry>> {
    let es = format.entry_size() as usize;
    if !data.len().is_multiple_of(es) {
        return Err(Error::BadTableSize {
            size: data.len() as u64,
            entry_size: es as u8,
        });
    }
    if data.len() / es > MAX_ENTRIES {
        return Err(Error::TooLarge("more than 2^24 __ex_table entries"));
    }
    Ok(data
        .chunks_exact(es)
        .enumerate()
        .map(|(i, b)| decode_entry(format, b, addr.wrapping_add((i * es) as u64), raw_fixup))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            KernelVersion::parse("6.1.0-56-amd64"),
            Some(KernelVersion::new(6, 1, 0))
        );
        assert_eq!(
            KernelVersion::parse("5.16"),
            Some(KernelVersion::new(5, 16, 0))
        );
        assert_eq!(KernelVersion::parse("x6.1"), None);
        assert_eq!(KernelVersion::parse("6"), None);
        let img = b"\0\0Linux version %s\0Linux version 6.1.0-56-amd64 (debian)\0";
        assert_eq!(
            KernelVersion::find_banner(img),
            Some(KernelVersion::new(6, 1, 0))
        );
        assert!(KernelVersion::new(6, 1, 0).at_least(5, 16));
        assert!(!KernelVersion::new(5, 15, 9).at_least(5, 16));
    }

    #[test]
    fn format_by_version() {
        let v = KernelVersion::new;
        assert_eq!(
            ExTableFormat::for_kernel(Machine::X86_64, v(6, 1, 0)),
            ExTableFormat::X86Data
        );
        assert_eq!(
            ExTableFormat::for_kernel(Machine::X86_64, v(5, 15, 0)),
            ExTableFormat::X86Handler
        );
        assert_eq!(
            ExTableFormat::for_kernel(Machine::X86_64, v(4, 5, 0)),
            ExTableFormat::Relative
        );
        assert_eq!(
            ExTableFormat::for_kernel(Machine::X86_64, v(3, 4, 0)),
            ExTableFormat::Absolute64
        );
        assert_eq!(
            ExTableFormat::for_kernel(Machine::Arm64, v(6, 1, 0)),
            ExTableFormat::TypeData
        );
        assert_eq!(
            ExTableFormat::for_kernel(Machine::Arm64, v(5, 10, 0)),
            ExTableFormat::Relative
        );
        assert_eq!(
            ExTableFormat::for_kernel(Machine::RiscV, v(6, 1, 0)),
            ExTableFormat::TypeData
        );
        for f in [
            ExTableFormat::Absolute64,
            ExTableFormat::Absolute32,
            ExTableFormat::Relative,
            ExTableFormat::X86Handler,
            ExTableFormat::X86Data,
            ExTableFormat::TypeData,
        ] {
            assert_eq!(ExTableFormat::from_name(f.name()), Some(f));
        }
    }

    fn le32(v: i32) -> [u8; 4] {
        v.to_le_bytes()
    }

    #[test]
    fn every_layout_decodes() {
        let base = 0xffff_ffff_8100_0000u64;
        // Absolute64.
        let mut b = Vec::new();
        b.extend(0xffff_ffff_8100_1000u64.to_le_bytes());
        b.extend(0xffff_ffff_8100_2000u64.to_le_bytes());
        let e = parse_entries(ExTableFormat::Absolute64, &b, base, false).unwrap();
        assert_eq!(
            (e[0].insn, e[0].fixup),
            (0xffff_ffff_8100_1000, 0xffff_ffff_8100_2000)
        );
        // Absolute32.
        let b = [le32(0x100), le32(0x200)].concat();
        let e = parse_entries(ExTableFormat::Absolute32, &b, 0, false).unwrap();
        assert_eq!(
            (e[0].insn, e[0].fixup, e[0].extra),
            (0x100, 0x200, Extra::None)
        );
        // Relative: two entries, the second at base+8; fields relative to themselves.
        let b = [le32(-0x10), le32(0x20), le32(-0x10), le32(-4)].concat();
        let e = parse_entries(ExTableFormat::Relative, &b, base, false).unwrap();
        assert_eq!(e[0].insn, base - 0x10);
        assert_eq!(e[0].fixup, base + 4 + 0x20);
        assert_eq!(e[1].insn, base + 8 - 0x10);
        assert_eq!(e[1].fixup, base + 12 - 4);
        // x86 with handler.
        let b = [le32(-0x100), le32(-0x80), le32(-0x1000)].concat();
        let e = parse_entries(ExTableFormat::X86Handler, &b, base, false).unwrap();
        assert_eq!(e[0].insn, base - 0x100);
        assert_eq!(e[0].fixup, base + 4 - 0x80);
        assert_eq!(e[0].extra, Extra::Handler(base + 8 - 0x1000));
        // x86 with data: EX_TYPE_IMM_REG, reg 3, imm -14.
        let data = 17 | (3 << 8) | ((-14i32) << 16);
        let b = [le32(-0x100), le32(-0x80), le32(data)].concat();
        let e = parse_entries(ExTableFormat::X86Data, &b, base, false).unwrap();
        assert_eq!(e[0].extra, Extra::Data(data as u32));
        // BPF: fixup kept raw.
        let e = parse_entries(ExTableFormat::X86Data, &b, base, true).unwrap();
        assert_eq!(e[0].fixup, (-0x80i32) as u32 as u64);
        // arm64 type/data.
        let mut b = [le32(-8), le32(-4)].concat();
        b.extend(3i16.to_le_bytes());
        b.extend(((1i16) | (2 << 5)).to_le_bytes());
        let e = parse_entries(ExTableFormat::TypeData, &b, base, false).unwrap();
        assert_eq!(e[0].insn, base - 8);
        assert_eq!(e[0].fixup, base);
        assert_eq!(e[0].extra, Extra::TypeData { ty: 3, data: 65 });
        // Size not a multiple.
        assert_eq!(
            parse_entries(ExTableFormat::X86Data, &[0; 13], 0, false),
            Err(Error::BadTableSize {
                size: 13,
                entry_size: 12
            })
        );
    }
}

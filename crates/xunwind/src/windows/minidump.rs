//! The minidump format, read in place: header, stream directory and the streams a stack walk
//! needs (threads, modules, memory, exception, system information).
//!
//! Every structure is read from the dump's bytes at a checked offset; counts are clipped to what
//! the stream (and the file) can hold, so a truncated dump yields what it still contains. Layouts
//! follow `minidumpapiset.h` (structures are packed to 4 bytes: MINIDUMP_MODULE is 108 bytes).

use crate::target::{CodeView, TargetError};
use xunwind_core::{Reg, Regs};

/// `MDMP`, little-endian.
pub(crate) const SIGNATURE: u32 = 0x504d_444d;

/// Stream types used here.
pub(crate) mod stream {
    pub const THREAD_LIST: u32 = 3;
    pub const MODULE_LIST: u32 = 4;
    pub const MEMORY_LIST: u32 = 5;
    pub const EXCEPTION: u32 = 6;
    pub const SYSTEM_INFO: u32 = 7;
    pub const THREAD_EX_LIST: u32 = 8;
    pub const MEMORY64_LIST: u32 = 9;
}

/// PROCESSOR_ARCHITECTURE_AMD64.
pub(crate) const PROCESSOR_ARCHITECTURE_AMD64: u16 = 9;

const HEADER_SIZE: usize = 32;
const DIRECTORY_ENTRY_SIZE: usize = 12;
const THREAD_SIZE: usize = 48;
const THREAD_EX_SIZE: usize = 64;
const MODULE_SIZE: usize = 108;
const MEMORY_DESCRIPTOR_SIZE: usize = 16;
const MEMORY_DESCRIPTOR64_SIZE: usize = 16;
const EXCEPTION_STREAM_SIZE: usize = 168;
/// Most modules read from a module list. Processes load hundreds; building the module map and
/// locating files costs per module, so a hostile list of millions stops here.
pub(crate) const MAX_MODULES: usize = 4096;
/// Most threads read from a thread list: each 48-byte record becomes a full register set (about
/// 400 bytes), so a list of millions is cut here; real processes stay far below.
pub(crate) const MAX_THREADS: usize = 65536;
/// Longest module name read (bytes of UTF-16): longer than any real path, and short enough that
/// many records pointing at one huge "string" cannot multiply the dump's size in memory.
pub(crate) const MAX_STRING_BYTES: usize = 4096;
/// Longest CodeView record read (24 bytes of header, then the PDB path), for the same reason.
pub(crate) const MAX_CODEVIEW_BYTES: usize = 24 + 4096;
/// EXCEPTION_MAXIMUM_PARAMETERS.
const MAX_EXCEPTION_PARAMETERS: usize = 15;

/// CONTEXT_AMD64 and its parts (ContextFlags).
pub(crate) mod context_flags {
    pub const AMD64: u32 = 0x0010_0000;
    pub const CONTROL: u32 = 0x1;
    pub const INTEGER: u32 = 0x2;
    pub const FLOATING_POINT: u32 = 0x8;
}

const CONTEXT_FLAGS_OFFSET: usize = 0x30;
const CONTEXT_RAX_OFFSET: usize = 0x78;
const CONTEXT_RIP_OFFSET: usize = 0xf8;
/// Xmm0 in the XMM_SAVE_AREA32 at 0x100.
const CONTEXT_XMM0_OFFSET: usize = 0x1a0;

#[inline]
pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

#[inline]
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

#[inline]
pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A MINIDUMP_LOCATION_DESCRIPTOR: `size` bytes at file offset `rva`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub size: u32,
    pub rva: u32,
}

impl Location {
    fn at(b: &[u8], off: usize) -> Option<Location> {
        Some(Location {
            size: u32_at(b, off)?,
            rva: u32_at(b, off + 4)?,
        })
    }
}

/// A parsed header and stream directory over the dump's bytes.
#[derive(Debug)]
pub(crate) struct Minidump<'a> {
    data: &'a [u8],
    /// (stream type, location), in directory order.
    directory: Vec<(u32, Location)>,
}

/// A thread record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawThread<'a> {
    pub id: u32,
    /// Start of the stack memory and its bytes (clipped to the file).
    pub stack: (u64, &'a [u8]),
    pub context: &'a [u8],
}

/// A module record.
#[derive(Clone, Debug)]
pub(crate) struct RawModule {
    pub base: u64,
    pub size: u32,
    pub checksum: u32,
    pub time_date_stamp: u32,
    pub name: String,
    pub codeview: Option<CodeView>,
}

/// The exception stream.
#[derive(Clone, Debug)]
pub(crate) struct RawException<'a> {
    pub thread_id: u32,
    pub code: u32,
    pub flags: u32,
    pub address: u64,
    pub parameters: Vec<u64>,
    pub context: &'a [u8],
}

fn malformed(msg: String) -> TargetError {
    TargetError::Malformed(msg)
}

impl<'a> Minidump<'a> {
    /// Reads the header and the stream directory.
    pub fn parse(data: &'a [u8]) -> Result<Minidump<'a>, TargetError> {
        if data.len() < HEADER_SIZE {
            return Err(malformed(format!(
                "{} bytes is shorter than the {HEADER_SIZE}-byte header",
                data.len()
            )));
        }
        if u32_at(data, 0) != Some(SIGNATURE) {
            return Err(TargetError::UnknownFormat);
        }
        let count = u32_at(data, 8).unwrap_or(0) as usize;
        let dir_rva = u32_at(data, 12).unwrap_or(0) as usize;
        let fits = data.len().saturating_sub(dir_rva) / DIRECTORY_ENTRY_SIZE;
        if dir_rva > data.len() || count > fits {
            return Err(malformed(format!(
                "stream directory of {count} entries at {dir_rva:#x} runs past the end of the file ({:#x} bytes)",
                data.len()
            )));
        }
        let directory = (0..count)
            .filter_map(|i| {
                let off = dir_rva + i * DIRECTORY_ENTRY_SIZE;
                Some((u32_at(data, off)?, Location::at(data, off + 4)?))
            })
            .collect();
        Ok(Minidump { data, directory })
    }

    /// The bytes of `loc` that lie inside the file (a truncated dump clips them).
    pub fn bytes(&self, loc: Location) -> &'a [u8] {
        let start = loc.rva as usize;
        let end = start.saturating_add(loc.size as usize).min(self.data.len());
        self.data.get(start..end).unwrap_or(&[])
    }

    /// The first stream of type `kind`.
    pub fn stream(&self, kind: u32) -> Option<&'a [u8]> {
        let &(_, loc) = self.directory.iter().find(|(t, _)| *t == kind)?;
        Some(self.bytes(loc))
    }

    /// SYSTEM_INFO's ProcessorArchitecture, if the stream is there.
    pub fn processor_architecture(&self) -> Option<u16> {
        u16_at(self.stream(stream::SYSTEM_INFO)?, 0)
    }

    /// The thread list (ThreadListStream, else ThreadExListStream).
    pub fn threads(&self) -> Vec<RawThread<'a>> {
        let (s, entry) = match self.stream(stream::THREAD_LIST) {
            Some(s) => (s, THREAD_SIZE),
            None => match self.stream(stream::THREAD_EX_LIST) {
                Some(s) => (s, THREAD_EX_SIZE),
                None => return Vec::new(),
            },
        };
        let count = u32_at(s, 0).unwrap_or(0) as usize;
        let count = count
            .min(s.len().saturating_sub(4) / entry)
            .min(MAX_THREADS);
        (0..count)
            .filter_map(|i| {
                let t = s.get(4 + i * entry..4 + (i + 1) * entry)?;
                let stack_start = u64_at(t, 24)?;
                let stack = self.bytes(Location::at(t, 32)?);
                Some(RawThread {
                    id: u32_at(t, 0)?,
                    stack: (stack_start, stack),
                    context: self.bytes(Location::at(t, 40)?),
                })
            })
            .collect()
    }

    /// The module list.
    pub fn modules(&self) -> Vec<RawModule> {
        let Some(s) = self.stream(stream::MODULE_LIST) else {
            return Vec::new();
        };
        let count = u32_at(s, 0).unwrap_or(0) as usize;
        let count = count
            .min(s.len().saturating_sub(4) / MODULE_SIZE)
            .min(MAX_MODULES);
        (0..count)
            .filter_map(|i| {
                let m = s.get(4 + i * MODULE_SIZE..4 + (i + 1) * MODULE_SIZE)?;
                let name_rva = u32_at(m, 20)?;
                // VS_FIXEDFILEINFO (52 bytes) at 24, then CvRecord at 76.
                let cv = self.bytes(Location::at(m, 76)?);
                let cv = &cv[..cv.len().min(MAX_CODEVIEW_BYTES)];
                Some(RawModule {
                    base: u64_at(m, 0)?,
                    size: u32_at(m, 8)?,
                    checksum: u32_at(m, 12)?,
                    time_date_stamp: u32_at(m, 16)?,
                    name: self.string(name_rva).unwrap_or_default(),
                    codeview: parse_codeview(cv),
                })
            })
            .collect()
    }

    /// A MINIDUMP_STRING (u32 byte length, UTF-16LE), clipped to the file and to
    /// [`MAX_STRING_BYTES`].
    pub fn string(&self, rva: u32) -> Option<String> {
        let len = (u32_at(self.data, rva as usize)? as usize).min(MAX_STRING_BYTES);
        let start = rva as usize + 4;
        let end = start.saturating_add(len).min(self.data.len());
        let b = self.data.get(start..end)?;
        let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        Some(
            char::decode_utf16(units)
                .map(|c| c.unwrap_or('\u{fffd}'))
                .collect(),
        )
    }

    /// Memory ranges of the MemoryListStream and Memory64ListStream as (address, bytes),
    /// clipped to the file, in stream order.
    pub fn memory(&self) -> Vec<(u64, &'a [u8])> {
        let mut out = Vec::new();
        if let Some(s) = self.stream(stream::MEMORY_LIST) {
            let count = u32_at(s, 0).unwrap_or(0) as usize;
            let count = count.min(s.len().saturating_sub(4) / MEMORY_DESCRIPTOR_SIZE);
            for i in 0..count {
                let off = 4 + i * MEMORY_DESCRIPTOR_SIZE;
                if let (Some(start), Some(loc)) = (u64_at(s, off), Location::at(s, off + 8)) {
                    out.push((start, self.bytes(loc)));
                }
            }
        }
        if let Some(s) = self.stream(stream::MEMORY64_LIST) {
            // The ranges' bytes follow each other from BaseRva.
            let count = u64_at(s, 0).unwrap_or(0);
            let count = count.min((s.len().saturating_sub(16) / MEMORY_DESCRIPTOR64_SIZE) as u64);
            let mut rva = u64_at(s, 8).unwrap_or(u64::MAX);
            for i in 0..count as usize {
                let off = 16 + i * MEMORY_DESCRIPTOR64_SIZE;
                let (Some(start), Some(size)) = (u64_at(s, off), u64_at(s, off + 8)) else {
                    break;
                };
                let from = usize::try_from(rva)
                    .unwrap_or(usize::MAX)
                    .min(self.data.len());
                let to = usize::try_from(rva.saturating_add(size))
                    .unwrap_or(usize::MAX)
                    .min(self.data.len());
                out.push((start, &self.data[from..to]));
                rva = rva.saturating_add(size);
            }
        }
        out
    }

    /// The exception stream.
    pub fn exception(&self) -> Option<RawException<'a>> {
        let s = self.stream(stream::EXCEPTION)?;
        if s.len() < EXCEPTION_STREAM_SIZE {
            return None;
        }
        // MINIDUMP_EXCEPTION at 8: code, flags, record, address, count, pad, info[15].
        let n = (u32_at(s, 32)? as usize).min(MAX_EXCEPTION_PARAMETERS);
        Some(RawException {
            thread_id: u32_at(s, 0)?,
            code: u32_at(s, 8)?,
            flags: u32_at(s, 12)?,
            address: u64_at(s, 24)?,
            parameters: (0..n).filter_map(|i| u64_at(s, 40 + 8 * i)).collect(),
            context: self.bytes(Location::at(s, 160)?),
        })
    }
}

/// A CodeView `RSDS` record: signature, GUID, age, NUL-terminated UTF-8 path.
pub(crate) fn parse_codeview(b: &[u8]) -> Option<CodeView> {
    if b.get(..4)? != b"RSDS" {
        return None;
    }
    let guid: [u8; 16] = b.get(4..20)?.try_into().ok()?;
    let age = u32_at(b, 20)?;
    let name = &b[24..];
    let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
    Some(CodeView {
        guid,
        age,
        pdb_name: String::from_utf8_lossy(name).into_owned(),
    })
}

/// The registers of an x64 CONTEXT: only the parts its ContextFlags mark valid, and only what the
/// record's bytes hold (a truncated context leaves the rest unknown).
pub(crate) fn context_amd64(b: &[u8]) -> Regs {
    let mut regs = Regs::new();
    let Some(flags) = u32_at(b, CONTEXT_FLAGS_OFFSET) else {
        return regs;
    };
    // Another architecture's context (or none named) says nothing we can read as x64.
    if flags & context_flags::AMD64 == 0 {
        return regs;
    }
    let gpr = |r: Reg| u64_at(b, CONTEXT_RAX_OFFSET + 8 * r.number() as usize);
    if flags & context_flags::CONTROL != 0 {
        if let Some(v) = u64_at(b, CONTEXT_RIP_OFFSET) {
            regs.set_rip(v);
        }
        if let Some(v) = gpr(Reg::Rsp) {
            regs.set(Reg::Rsp, v);
        }
    }
    if flags & context_flags::INTEGER != 0 {
        // CONTEXT_INTEGER on x64 holds every GPR except rsp (rbp included).
        for r in Reg::ALL {
            if r != Reg::Rsp {
                if let Some(v) = gpr(r) {
                    regs.set(r, v);
                }
            }
        }
    }
    if flags & context_flags::FLOATING_POINT != 0 {
        for n in 0..16u8 {
            let off = CONTEXT_XMM0_OFFSET + 16 * n as usize;
            if let Some(v) = b.get(off..off + 16) {
                regs.set_xmm(n, u128::from_le_bytes(v.try_into().expect("16 bytes")));
            }
        }
    }
    regs
}

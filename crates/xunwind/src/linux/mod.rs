//! Linux targets: ELF core files, ELF modules unwound with DWARF CFI, ELF symbols.
//!
//! A core file (the kernel's or gdb's `gcore`) holds the memory as `PT_LOAD` segments and, in
//! `PT_NOTE` segments, one `NT_PRSTATUS` per thread (registers as `user_regs_struct`), optional
//! `NT_FPREGSET` (FXSAVE, for xmm), `NT_SIGINFO`, `NT_AUXV` (where the vDSO is) and `NT_FILE`
//! (which file is mapped where). Module files are found on this machine by the recorded path,
//! else by file name in [`LoadOptions::module_dirs`].

use crate::space::{Module, NoUnwindInfo};
use crate::target::{
    ExceptionRecord, LoadOptions, ModuleImage, Platform, Symbol, Symbolize, Target, TargetError,
    Thread,
};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{LittleEndian as LE, Object, ObjectSegment, ObjectSymbol, SymbolKind};
use std::path::{Path, PathBuf};
use xunwind_core::{FrameWalker, MemoryReader, Reg, RegionMemory, Regs};
use xunwind_dwarf::DwarfUnwinder;

const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const NT_FILE: u32 = 0x4649_4c45;
/// `elf_prstatus.pr_reg` offset and size on x86-64 (27 u64s of `user_regs_struct`).
const PR_REG_OFFSET: usize = 112;
const PR_REG_WORDS: usize = 27;
/// `elf_prstatus.pr_pid`.
const PR_PID_OFFSET: usize = 32;
/// FXSAVE's xmm0 offset.
const FX_XMM_OFFSET: usize = 160;
const AT_SYSINFO_EHDR: u64 = 33;
/// Most `NT_FILE` entries and auxv entries read (a process has a few thousand mappings at most).
const MAX_FILE_ENTRIES: u64 = 1 << 20;
/// Most bytes of the vDSO image taken from memory.
const MAX_VDSO: u64 = 1 << 20;

/// `user_regs_struct` field order to our register encoding (r15 r14 r13 r12 rbp rbx r11 r10 r9
/// r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ...).
const USER_REGS: [(usize, Reg); 16] = [
    (0, Reg::R15),
    (1, Reg::R14),
    (2, Reg::R13),
    (3, Reg::R12),
    (4, Reg::Rbp),
    (5, Reg::Rbx),
    (6, Reg::R11),
    (7, Reg::R10),
    (8, Reg::R9),
    (9, Reg::R8),
    (10, Reg::Rax),
    (11, Reg::Rcx),
    (12, Reg::Rdx),
    (13, Reg::Rsi),
    (14, Reg::Rdi),
    (19, Reg::Rsp),
];
const USER_RIP: usize = 16;

fn malformed(what: impl Into<String>) -> TargetError {
    TargetError::Malformed(what.into())
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// One `NT_FILE` mapping.
struct FileMapping {
    start: u64,
    end: u64,
    page_offset: u64,
    path: String,
}

/// Reads an x86-64 ELF core file.
pub(crate) fn read_core(bytes: Vec<u8>, options: &LoadOptions) -> Result<Target, TargetError> {
    let data = &bytes[..];
    let header =
        elf::FileHeader64::<LE>::parse(data).map_err(|e| malformed(format!("ELF header: {e}")))?;
    let endian = header
        .endian()
        .map_err(|_| TargetError::Unsupported("big-endian ELF".into()))?;
    if header.e_type.get(endian) != elf::ET_CORE {
        return Err(malformed(format!(
            "ELF type {} is not a core file (ET_CORE)",
            header.e_type.get(endian)
        )));
    }
    if header.e_machine.get(endian) != elf::EM_X86_64 {
        return Err(TargetError::Unsupported(format!(
            "core file for machine {} (only x86-64 is supported)",
            header.e_machine.get(endian)
        )));
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| malformed(format!("program headers: {e}")))?;

    let mut memory = RegionMemory::new();
    let mut threads: Vec<Thread> = Vec::new();
    let mut exception = None;
    let mut files = Vec::new();
    let mut vdso_base = None;
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_LOAD => {
                let (off, filesz) = (ph.p_offset(endian), ph.p_filesz(endian));
                if filesz == 0 {
                    continue;
                }
                // A truncated core keeps what it has of a segment.
                let start = usize::try_from(off).unwrap_or(usize::MAX).min(data.len());
                let end = usize::try_from(off.saturating_add(filesz))
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                if start < end {
                    memory.add(ph.p_vaddr(endian), data[start..end].to_vec());
                }
            }
            elf::PT_NOTE => {
                let Ok(Some(mut notes)) = ph.notes(endian, data) else {
                    return Err(malformed("PT_NOTE segment outside the file"));
                };
                // Every note has a 12-byte header: bounded by the segment size.
                for _ in 0..=ph.p_filesz(endian) / 12 {
                    let note = match notes.next() {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => return Err(malformed(format!("note: {e}"))),
                    };
                    let desc = note.desc();
                    match note.n_type(endian) {
                        NT_PRSTATUS if note.name() == b"CORE" => {
                            threads.push(prstatus_thread(desc)?);
                        }
                        NT_FPREGSET if note.name() == b"CORE" => {
                            if let Some(t) = threads.last_mut() {
                                fpregset(desc, &mut t.regs);
                            }
                        }
                        NT_SIGINFO if exception.is_none() => {
                            let thread_id = threads.last().map_or(0, |t| t.id);
                            exception = siginfo(desc, thread_id);
                        }
                        NT_FILE => files = nt_file(desc)?,
                        NT_AUXV => vdso_base = auxv_vdso(desc),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if threads.is_empty() {
        return Err(malformed("core file has no NT_PRSTATUS (no threads)"));
    }
    let mut modules = modules_from_files(&files, &memory, options);
    if let Some(base) = vdso_base {
        if let Some(m) = vdso_module(base, &memory) {
            modules.push(m);
        }
    }
    Ok(Target {
        platform: Platform::Linux,
        memory,
        threads,
        modules,
        exception,
    })
}

fn prstatus_thread(desc: &[u8]) -> Result<Thread, TargetError> {
    let word = |i: usize| u64_at(desc, PR_REG_OFFSET + 8 * i);
    if desc.len() < PR_REG_OFFSET + 8 * PR_REG_WORDS {
        return Err(malformed(format!(
            "NT_PRSTATUS of {} bytes is too short for x86-64",
            desc.len()
        )));
    }
    let mut gpr = [0u64; 16];
    for (i, r) in USER_REGS {
        gpr[r as usize] = word(i).unwrap_or(0);
    }
    Ok(Thread {
        id: u64::from(u32_at(desc, PR_PID_OFFSET).unwrap_or(0)),
        regs: Regs::with_gprs(word(USER_RIP).unwrap_or(0), gpr),
    })
}

/// FXSAVE layout: xmm0-15 at 160, 16 bytes each.
fn fpregset(desc: &[u8], regs: &mut Regs) {
    for n in 0..16u8 {
        let at = FX_XMM_OFFSET + 16 * n as usize;
        if let Some(b) = desc.get(at..at + 16) {
            regs.set_xmm(n, u128::from_le_bytes(b.try_into().expect("16 bytes")));
        }
    }
}

/// `siginfo_t`: si_signo, si_errno, si_code, then (for faults) si_addr at 16.
fn siginfo(desc: &[u8], thread_id: u64) -> Option<ExceptionRecord> {
    let signo = u32_at(desc, 0)?;
    let code = u32_at(desc, 8)?;
    // SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV carry the faulting address.
    let address = match signo {
        4 | 5 | 7 | 8 | 11 => u64_at(desc, 16).unwrap_or(0),
        _ => 0,
    };
    Some(ExceptionRecord {
        thread_id,
        code: signo,
        flags: 0,
        address,
        parameters: vec![u64::from(code)],
        context: None,
    })
}

/// `NT_FILE`: count, page size, count × (start, end, file offset in pages), then count paths.
fn nt_file(desc: &[u8]) -> Result<Vec<FileMapping>, TargetError> {
    let count = u64_at(desc, 0).ok_or_else(|| malformed("NT_FILE too short"))?;
    let page = u64_at(desc, 8).ok_or_else(|| malformed("NT_FILE too short"))?;
    if count > MAX_FILE_ENTRIES || 16 + count * 24 > desc.len() as u64 {
        return Err(malformed(format!("NT_FILE claims {count} entries")));
    }
    let mut names = desc[16 + count as usize * 24..].split(|&b| b == 0);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let at = 16 + 24 * i;
        let (Some(start), Some(end), Some(pgoff)) = (
            u64_at(desc, at),
            u64_at(desc, at + 8),
            u64_at(desc, at + 16),
        ) else {
            break;
        };
        let Some(name) = names.next() else { break };
        if end <= start {
            continue;
        }
        out.push(FileMapping {
            start,
            end,
            page_offset: pgoff.saturating_mul(page),
            path: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(out)
}

fn auxv_vdso(desc: &[u8]) -> Option<u64> {
    (0..desc.len() / 16)
        .take(MAX_FILE_ENTRIES as usize)
        .map(|i| (u64_at(desc, 16 * i), u64_at(desc, 16 * i + 8)))
        .find(|(k, _)| *k == Some(AT_SYSINFO_EHDR))
        .and_then(|(_, v)| v)
}

/// The vDSO's image, copied from the core's memory (it is not a file).
fn vdso_module(base: u64, memory: &RegionMemory<'static>) -> Option<ModuleImage> {
    let region = memory
        .regions()
        .iter()
        .find(|r| r.base <= base && base - r.base < r.data.len() as u64)?;
    let off = (base - region.base) as usize;
    let len = (region.data.len() - off).min(MAX_VDSO as usize);
    let image = region.data[off..off + len].to_vec();
    if !image.starts_with(b"\x7fELF") {
        return None;
    }
    Some(ModuleImage {
        name: "[vdso]".into(),
        path: "[vdso]".into(),
        base,
        size: len as u64,
        located: None,
        file: Some(image),
        pe: None,
    })
}

/// Groups `NT_FILE` mappings into modules: a mapping at file offset 0 starts one, later
/// mappings of the same path extend it. Files that are not ELF images are left out.
fn modules_from_files(
    files: &[FileMapping],
    memory: &RegionMemory<'static>,
    options: &LoadOptions,
) -> Vec<ModuleImage> {
    let mut modules: Vec<ModuleImage> = Vec::new();
    for f in files {
        if f.page_offset != 0 {
            if let Some(m) = modules
                .iter_mut()
                .rev()
                .find(|m| m.path == f.path && m.base <= f.start)
            {
                m.size = m.size.max(f.end - m.base);
            }
            continue;
        }
        let name = Path::new(&f.path)
            .file_name()
            .map_or_else(|| f.path.clone(), |n| n.to_string_lossy().into_owned());
        let located = locate(&f.path, &name, options);
        let file = located.as_deref().and_then(read_module_file);
        let is_elf = match &file {
            Some(b) => b.starts_with(b"\x7fELF"),
            None => {
                let mut magic = [0u8; 4];
                memory.read(f.start, &mut magic).is_ok() && &magic == b"\x7fELF"
            }
        };
        if !is_elf {
            continue;
        }
        modules.push(ModuleImage {
            name,
            path: f.path.clone(),
            base: f.start,
            size: f.end - f.start,
            located: located.filter(|_| file.is_some()),
            file,
            pe: None,
        });
    }
    modules
}

/// Most bytes read of one module file.
const MAX_MODULE_FILE: u64 = 1 << 30;

/// A module file's bytes: a regular, non-empty file of sane size (a core may name anything,
/// `/proc/kcore` included).
fn read_module_file(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 || meta.len() > MAX_MODULE_FILE {
        return None;
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(meta.len()).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The recorded path if it exists here, else a file of the same name (any case) in a module dir.
fn locate(path: &str, name: &str, options: &LoadOptions) -> Option<PathBuf> {
    let p = Path::new(path);
    if p.is_file() {
        return Some(p.to_path_buf());
    }
    let want = name.to_lowercase();
    for dir in &options.module_dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().to_lowercase() == want && e.path().is_file() {
                return Some(e.path());
            }
        }
    }
    None
}

/// The unwinder for an ELF module of a core file.
pub(crate) fn module_unwinder<'t>(
    module: &'t ModuleImage,
    _memory: &'t RegionMemory<'static>,
) -> Option<Module<'t>> {
    let bytes = module.file.as_deref()?;
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes).ok()?;
    let bias = xunwind_dwarf::load_bias(&elf, module.base);
    let executable = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| {
            ph.p_type(elf.endian()) == elf::PT_LOAD && ph.p_flags(elf.endian()) & elf::PF_X != 0
        })
        .map(|ph| {
            let start = ph.p_vaddr(elf.endian()).wrapping_add(bias);
            (start, start.saturating_add(ph.p_memsz(elf.endian())))
        })
        .collect();
    let walker: Box<dyn FrameWalker + 't> = match DwarfUnwinder::new(bytes, module.base) {
        Ok(u) => Box::new(u),
        Err(_) => Box::new(NoUnwindInfo),
    };
    Some(Module {
        name: module.name.clone(),
        base: module.base,
        size: module.size,
        walker,
        executable,
    })
}

/// Function symbols of one ELF module, as module offsets sorted by address.
struct ElfSymbols {
    /// (offset, size, name)
    syms: Vec<(u64, u64, String)>,
}

impl Symbolize for ElfSymbols {
    fn symbolize(&self, module_offset: u64) -> Option<Symbol> {
        let i = self
            .syms
            .partition_point(|s| s.0 <= module_offset)
            .checked_sub(1)?;
        // Among aliases at one address, prefer one whose size covers the offset.
        let addr = self.syms[i].0;
        let same = self.syms[..=i]
            .iter()
            .rev()
            .take_while(|s| s.0 == addr)
            .collect::<Vec<_>>();
        let hit = same
            .iter()
            .find(|s| s.1 > 0 && module_offset - s.0 < s.1)
            .or_else(|| same.iter().find(|s| s.1 == 0))?;
        // Demangled here, for the few symbols printed, not for every symbol at load.
        Some(Symbol::new(&hit.2, module_offset - hit.0))
    }
}

/// The symbols of an ELF module (symbol table, else dynamic symbols).
pub(crate) fn module_symbols<'t>(
    module: &'t ModuleImage,
    _options: &LoadOptions,
) -> Option<Box<dyn Symbolize + 't>> {
    let bytes = module.file.as_deref()?;
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes).ok()?;
    // Module offsets count from the mapping of file offset 0.
    let link_base = elf
        .segments()
        .next()
        .map_or(0, |s| s.address().wrapping_sub(s.file_range().0));
    let collect = |syms: &mut dyn Iterator<Item = object::read::elf::ElfSymbol64<'_, '_>>| {
        syms.filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
            .filter_map(|s| {
                Some((
                    s.address().wrapping_sub(link_base),
                    s.size(),
                    s.name().ok()?.to_string(),
                ))
            })
            .filter(|s| !s.2.is_empty())
            .collect::<Vec<_>>()
    };
    let mut syms = collect(&mut elf.symbols());
    if syms.is_empty() {
        syms = collect(&mut elf.dynamic_symbols());
    }
    if syms.is_empty() {
        return None;
    }
    syms.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    Some(Box::new(ElfSymbols { syms }))
}

#[cfg(test)]
mod symbol_tests {
    use super::*;

    #[test]
    fn printed_names_are_demangled_with_the_linkage_name_kept() {
        let syms = ElfSymbols {
            syms: vec![
                (0x1000, 0x20, "_ZN2ns5KlassC2Ei".into()),
                (
                    0x1020,
                    0x20,
                    "_ZN4core3fmt5write17h0123456789abcdefE".into(),
                ),
                (0x1040, 0x20, "stop_here".into()),
            ],
        };
        let s = syms.symbolize(0x1005).unwrap();
        assert_eq!((s.name.as_str(), s.offset), ("ns::Klass::Klass", 5));
        assert_eq!(s.mangled.as_deref(), Some("_ZN2ns5KlassC2Ei"));
        let s = syms.symbolize(0x1020).unwrap();
        assert_eq!(s.name, "core::fmt::write");
        assert_eq!(s.raw_name(), "_ZN4core3fmt5write17h0123456789abcdefE");
        let s = syms.symbolize(0x1041).unwrap();
        assert_eq!((s.name.as_str(), s.mangled), ("stop_here", None));
    }
}

#[cfg(all(feature = "live", target_os = "linux"))]
pub mod live;
#[cfg(test)]
mod tests;

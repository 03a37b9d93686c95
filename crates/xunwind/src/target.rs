//! A stopped program as a debugger sees it: threads, memory and modules, read from a dump.
//!
//! [`Target`] owns everything it was read from (memory, the module files found on disk), so an
//! [`AddressSpace`] and a [`Symbols`] borrowed from it live as long as the target does. The
//! platform halves (`windows`: minidumps, PE, PDB; `linux`: ELF core files, ELF, DWARF) fill it
//! in; the stack walker and the CLI see only this.

use crate::space::AddressSpace;
use core::fmt;
use std::path::{Path, PathBuf};
use xunwind_core::{RegionMemory, Regs};

/// Which operating system's rules apply to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Windows x64 (minidump, PE modules).
    Windows,
    /// Linux x86-64 (ELF core file, ELF modules).
    Linux,
}

/// A thread and its registers at the time of the dump.
#[derive(Clone, Debug)]
pub struct Thread {
    /// The operating system's thread id (Linux: the LWP id).
    pub id: u64,
    /// Its registers; what the dump lacks is unknown.
    pub regs: Regs,
}

/// The exception a dump was taken for (minidump exception stream, core file's `siginfo`).
#[derive(Clone, Debug)]
pub struct ExceptionRecord {
    /// The thread that raised it.
    pub thread_id: u64,
    /// Windows exception code (e.g. `0xc0000005`), or the Linux signal number.
    pub code: u32,
    /// Windows exception flags (0 on Linux).
    pub flags: u32,
    /// Where it happened (Windows' ExceptionAddress, Linux `si_addr` for faults).
    pub address: u64,
    /// Windows ExceptionInformation (access violations: read/write flag, address).
    pub parameters: Vec<u64>,
    /// The context at the exception, when the dump has it apart from the thread's.
    pub context: Option<Regs>,
}

/// A module the dump names, and its file when we found one.
#[derive(Clone)]
pub struct ModuleImage {
    /// The file name shown in frames (`ntdll.dll`, `libc.so.6`).
    pub name: String,
    /// The path as the dump names it (may not exist on this machine).
    pub path: String,
    /// Load address.
    pub base: u64,
    /// Mapped size in bytes.
    pub size: u64,
    /// Where the file was found on this machine, if it was.
    pub located: Option<PathBuf>,
    /// The file's bytes, if it was found.
    pub file: Option<Vec<u8>>,
    /// What a minidump records of a PE module's build (None for ELF modules).
    pub pe: Option<PeRecord>,
}

/// A minidump's record of a PE module's build: identifies the right file and PDB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeRecord {
    /// The file header's TimeDateStamp.
    pub time_date_stamp: u32,
    /// The optional header's CheckSum.
    pub checksum: u32,
    /// The CodeView (`RSDS`) record naming the PDB, if the dump has one.
    pub codeview: Option<CodeView>,
}

/// A CodeView `RSDS` record: which PDB matches a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeView {
    /// The PDB's GUID, in the byte order stored (Data1..3 little-endian, as in the PDB).
    pub guid: [u8; 16],
    /// The PDB's age.
    pub age: u32,
    /// The PDB path as the linker recorded it.
    pub pdb_name: String,
}

impl fmt::Debug for ModuleImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleImage")
            .field("name", &self.name)
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .field("located", &self.located)
            .finish_non_exhaustive()
    }
}

/// Where to look for what a dump names but does not contain.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Directories holding module files, matched by file name without regard to case.
    pub module_dirs: Vec<PathBuf>,
    /// Directories holding PDBs (flat, or a symbol-store `name.pdb/GUIDAGE/name.pdb` tree).
    pub symbol_dirs: Vec<PathBuf>,
}

/// Why a target could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum TargetError {
    /// The file could not be read.
    Io(PathBuf, std::io::Error),
    /// Neither a minidump nor an ELF core file.
    UnknownFormat,
    /// The format is known but the file is malformed; the message says where.
    Malformed(String),
    /// A part of the format this build does not support.
    Unsupported(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            TargetError::UnknownFormat => f.write_str("not a minidump or an ELF core file"),
            TargetError::Malformed(m) => write!(f, "malformed dump: {m}"),
            TargetError::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

impl std::error::Error for TargetError {}

/// A symbol covering an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// The function's name as debuggers print it: demangled to its short form
    /// ([`crate::demangle`]) where the linkage name is mangled, else as the source gives it.
    pub name: String,
    /// The linkage name, when `name` was demangled from it.
    pub mangled: Option<String>,
    /// The address's distance from the symbol's start.
    pub offset: u64,
}

impl Symbol {
    /// A symbol named by its linkage name, demangled when it is a mangled name we recognise.
    pub fn new(linkage: &str, offset: u64) -> Symbol {
        match crate::demangle::demangle(linkage) {
            Some(name) => Symbol {
                name,
                mangled: Some(linkage.to_string()),
                offset,
            },
            None => Symbol {
                name: linkage.to_string(),
                mangled: None,
                offset,
            },
        }
    }

    /// The name as the symbol table spells it (the linkage name, before demangling).
    pub fn raw_name(&self) -> &str {
        self.mangled.as_deref().unwrap_or(&self.name)
    }
}

/// Something that names addresses of one module, given as offsets from its base.
pub trait Symbolize {
    /// The symbol covering `module_offset`, if any.
    fn symbolize(&self, module_offset: u64) -> Option<Symbol>;
}

/// A stopped program: its platform, memory, threads, modules and exception.
pub struct Target {
    /// Which OS's rules apply.
    pub platform: Platform,
    /// The memory the dump holds.
    pub memory: RegionMemory<'static>,
    /// Threads in dump order.
    pub threads: Vec<Thread>,
    /// Modules in dump order.
    pub modules: Vec<ModuleImage>,
    /// The exception the dump was taken for.
    pub exception: Option<ExceptionRecord>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("platform", &self.platform)
            .field("regions", &self.memory.regions().len())
            .field("threads", &self.threads.len())
            .field("modules", &self.modules)
            .field("exception", &self.exception)
            .finish()
    }
}

impl Target {
    /// Reads a minidump or an ELF core file, locating the module files it names.
    pub fn open(path: &Path, options: &LoadOptions) -> Result<Target, TargetError> {
        let bytes = std::fs::read(path).map_err(|e| TargetError::Io(path.to_path_buf(), e))?;
        Target::from_bytes(bytes, options)
    }

    /// As [`Target::open`], from the dump's bytes.
    pub fn from_bytes(bytes: Vec<u8>, options: &LoadOptions) -> Result<Target, TargetError> {
        if bytes.starts_with(b"MDMP") {
            crate::windows::read_minidump(bytes, options)
        } else if bytes.starts_with(b"\x7fELF") {
            crate::linux::read_core(bytes, options)
        } else {
            Err(TargetError::UnknownFormat)
        }
    }

    /// The thread the exception was raised on, else the first.
    pub fn default_thread(&self) -> Option<&Thread> {
        self.exception
            .as_ref()
            .and_then(|e| self.threads.iter().find(|t| t.id == e.thread_id))
            .or_else(|| self.threads.first())
    }

    /// The module map with an unwinder per module (modules without a usable file are mapped
    /// with no unwind information, so the walk falls back to frame pointers and scanning).
    pub fn address_space(&self) -> AddressSpace<'_> {
        let modules = self.modules.iter().filter_map(|m| match self.platform {
            Platform::Windows => crate::windows::module_unwinder(m, &self.memory),
            Platform::Linux => crate::linux::module_unwinder(m, &self.memory),
        });
        let mut space = AddressSpace::new();
        // Overlapping modules (a corrupt list) are left out rather than mis-attributed.
        let _rejected = space.add_modules(modules);
        space
    }

    /// Symbolizers for every module, found next to the module or in `options.symbol_dirs`.
    pub fn symbols(&self, options: &LoadOptions) -> Symbols<'_> {
        let per_module = self
            .modules
            .iter()
            .map(|m| match self.platform {
                Platform::Windows => crate::windows::module_symbols(m, &self.memory, options),
                Platform::Linux => crate::linux::module_symbols(m, options),
            })
            .collect();
        Symbols {
            target: self,
            per_module,
        }
    }
}

/// Names for addresses of a [`Target`]: module, function and offsets.
pub struct Symbols<'t> {
    target: &'t Target,
    per_module: Vec<Option<Box<dyn Symbolize + 't>>>,
}

/// What [`Symbols::lookup`] knows about an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location<'t> {
    /// The module holding it.
    pub module: &'t str,
    /// Its offset from the module's base.
    pub module_offset: u64,
    /// The function symbol covering it, if any.
    pub symbol: Option<Symbol>,
}

impl<'t> Symbols<'t> {
    /// The module and symbol of `addr`.
    pub fn lookup(&self, addr: u64) -> Option<Location<'t>> {
        let (i, m) = self
            .target
            .modules
            .iter()
            .enumerate()
            .find(|(_, m)| m.base <= addr && addr - m.base < m.size)?;
        let module_offset = addr - m.base;
        let symbol = self.per_module[i]
            .as_ref()
            .and_then(|s| s.symbolize(module_offset));
        Some(Location {
            module: &m.name,
            module_offset,
            symbol,
        })
    }
}

//! The Linux kernel's answer to a fault in kernel mode: `search_exception_tables(ip)` over
//! vmlinux, then the module holding the ip; an entry's fixup, or an oops.

use crate::space::{AddressSpace, Module};
use crate::walk::{StackWalker, Walk};
use xunwind_core::{MemoryReader, Regs};
use xunwind_extable::orc::OrcTable;
use xunwind_extable::{
    decode, decode::x86_handler_type, ExTable, ExTableEntry, ExceptionTables, Extra, FileKind,
    Fixup, KernelFile, ModuleLayout, Source,
};

/// Where module `k` is placed: modules get disjoint 16 MiB slots in the module area, core and
/// init apart, since files on disk carry no load address.
const MODULE_SLOT: u64 = 0x100_0000;
const MODULE_CORE_BASE: u64 = 0xffff_ffff_c000_0000;
const MODULE_INIT_BASE: u64 = 0xffff_ffff_e000_0000;

struct KernelModule {
    name: String,
    file: KernelFile,
    layout: ModuleLayout,
}

/// vmlinux plus modules, searched as the kernel searches them.
pub struct KernelResolver {
    vmlinux: KernelFile,
    modules: Vec<KernelModule>,
    tables: ExceptionTables,
}

/// A found entry, decoded.
#[derive(Clone, Debug)]
pub struct KernelFixup {
    /// `None` for vmlinux, else the module's name.
    pub module: Option<String>,
    /// The entry (absolute addresses; modules at their assigned layout).
    pub entry: ExTableEntry,
    /// Its type, register, flags and immediate.
    pub fixup: Fixup,
    /// `insn` as CONFORMANCE section 4 prints it (absolute hex, or `section+0xoff`).
    pub insn_text: String,
    /// `fixup` likewise.
    pub fixup_text: String,
    /// The section holding `insn`.
    pub section: Option<String>,
    /// What the fixup does to the registers.
    pub effect: String,
}

/// What the kernel does with a fault at an ip.
#[derive(Clone, Debug)]
pub enum KernelResolution {
    /// An `__ex_table` entry covers it: execution resumes at the fixup.
    Fixup(Box<KernelFixup>),
    /// No entry: the kernel oopses.
    Oops,
}

impl KernelResolver {
    /// A resolver over a parsed vmlinux (or bzImage) and modules (`name`, parsed `.ko`).
    pub fn new(
        vmlinux: KernelFile,
        modules: Vec<(String, KernelFile)>,
    ) -> Result<Self, xunwind_extable::Error> {
        let mut tables = ExceptionTables::new();
        tables.set_kernel(vmlinux.vmlinux_table()?);
        let mut mods = Vec::new();
        for (k, (name, file)) in modules.into_iter().enumerate() {
            if file.kind != FileKind::Module {
                continue;
            }
            let off = MODULE_SLOT.saturating_mul(k as u64);
            let layout = ModuleLayout::loader_default(
                &file,
                MODULE_CORE_BASE.wrapping_add(off),
                MODULE_INIT_BASE.wrapping_add(off),
            );
            let table = file.module_table(&layout)?;
            let ranges: Vec<(u64, u64)> = [MODULE_CORE_BASE, MODULE_INIT_BASE]
                .iter()
                .map(|b| (b.wrapping_add(off), b.wrapping_add(off + MODULE_SLOT)))
                .collect();
            tables.add_module(&name, &ranges, table)?;
            mods.push(KernelModule { name, file, layout });
        }
        Ok(KernelResolver {
            vmlinux,
            modules: mods,
            tables,
        })
    }

    /// The vmlinux.
    pub fn vmlinux(&self) -> &KernelFile {
        &self.vmlinux
    }

    /// The load address of `module`'s section `section` plus `offset` (how a module ip is
    /// named on the command line: `name.ko:.text+0x10`).
    pub fn module_address(&self, module: &str, section: &str, offset: u64) -> Option<u64> {
        let m = self.modules.iter().find(|m| m.name == module)?;
        let s = m.file.section(section)?;
        Some(m.layout.address(s.index)? + offset)
    }

    /// The kernel's answer for a fault at `ip`.
    pub fn resolve(&self, ip: u64) -> KernelResolution {
        let Some(found) = self.tables.search(ip) else {
            return KernelResolution::Oops;
        };
        let e = *found.entry;
        let (file, module, layout) = match found.source {
            Source::Module(n) | Source::Bpf(n) => {
                let m = self.modules.iter().find(|m| m.name == n);
                match m {
                    Some(m) => (&m.file, Some(m.name.clone()), Some(&m.layout)),
                    None => (&self.vmlinux, None, None),
                }
            }
            Source::Kernel => (&self.vmlinux, None, None),
        };
        let text = |a: u64| match layout.and_then(|l| l.locate(&file.sections, a)) {
            Some(p) => format!("{}+{:#x}", file.sections[p.section].name, p.offset),
            None => format!("{a:#x}"),
        };
        let section = match layout {
            Some(l) => l
                .locate(&file.sections, e.insn)
                .map(|p| file.sections[p.section].name.clone()),
            None => file.section_at(e.insn).map(|s| s.name.clone()),
        };
        let handler_type = match e.extra {
            Extra::Handler(h) if module.is_none() => file
                .symbols
                .lookup(None, h)
                .filter(|&(_, off)| off == 0)
                .and_then(|(n, _)| x86_handler_type(n)),
            _ => None,
        };
        let fixup = decode(&e, file.machine, file.version, handler_type);
        let effect = fixup.effect(&e);
        KernelResolution::Fixup(Box::new(KernelFixup {
            module,
            insn_text: text(e.insn),
            fixup_text: text(e.fixup),
            entry: e,
            fixup,
            section,
            effect,
        }))
    }

    /// The stack an oops at `regs` would print: an ORC walk of vmlinux's text (no frame-pointer
    /// or scanning guesses; the kernel's unwinder trusts ORC alone). `None` without ORC data.
    pub fn oops_stack(
        &self,
        regs: &Regs,
        mem: &dyn MemoryReader,
        max_frames: usize,
    ) -> Option<Walk> {
        let orc = OrcTable::from_sections(self.vmlinux.orc.as_ref()?, self.vmlinux.version).ok()?;
        let (lo, hi) = orc.text();
        let mut space = AddressSpace::new();
        space
            .add_module(Module {
                name: "vmlinux".into(),
                base: lo,
                size: hi.saturating_sub(lo),
                walker: Box::new(orc),
                executable: vec![(lo, hi)],
            })
            .ok()?;
        let walker = StackWalker {
            max_frames,
            frame_pointer: false,
            scan: false,
            ..StackWalker::default()
        };
        Some(walker.walk(&space, regs, mem))
    }

    /// Replaces the vmlinux's symbols (a stripped image names nothing; System.map does).
    pub fn set_symbols(&mut self, symbols: xunwind_extable::Symbols) {
        self.vmlinux.symbols = symbols;
    }

    /// A kernel symbol for `addr`: (name, offset), from the vmlinux's symbol table.
    pub fn symbol(&self, addr: u64) -> Option<(&str, u64)> {
        self.vmlinux.symbols.lookup(None, addr)
    }

    /// The vmlinux table (sorted, as searched).
    pub fn vmlinux_table(&self) -> Result<ExTable, xunwind_extable::Error> {
        self.vmlinux.vmlinux_table()
    }
}

//! Synthetic stacks over real ELF shared objects, for whole-walk DWARF benchmarks.
//!
//! The module map is the system's own shared objects (`/lib/x86_64-linux-gnu/*.so*`, each file
//! once however many symlinks name it), each at its own page-aligned base. A stack is built
//! top-down from real return addresses: the address after a `call` instruction (found by
//! decoding the FDE's code with iced-x86), taken only where the CFI row there is simple: the CFA
//! is `rsp + N`, every saved register is at `CFA - k`, the return address at `CFA - 8`. The row
//! at the return address must equal the row at the call (the innermost frame's pc is looked up
//! exactly, the others at `pc - 1`), so the frame layout is the same either way. Each frame then
//! holds the saved registers where the row puts them and the next frame's pc at `CFA - 8`; the
//! caller's stack pointer is the CFA, and the outermost frame returns to 0.
//!
//! Rows are evaluated with gimli directly, independently of xunwind's unwinder; then every stack
//! is walked with xunwind and a candidate whose walk disagrees is dropped and the stack rebuilt
//! ([`build_stack`], shared with the PE stacks), so benchmarks only time walks that find exactly
//! the intended frames.

use crate::stacks::{CallSite, FrameLayout};
use gimli::{
    BaseAddresses, CfaRule, EhFrame, LittleEndian, Register, RegisterRule, UnwindContext,
    UnwindSection, UnwindTableRow,
};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection};
use std::path::{Path, PathBuf};
use xunwind::{AddressSpace, Module};
use xunwind_dwarf::DwarfUnwinder;

pub use crate::stacks::{build_stack, first_divergence, lay_out, PeStack as Stack, STACK_BASE};

/// First module base; later modules follow at distinct 64 KiB-aligned addresses.
pub const FIRST_MODULE_BASE: u64 = 0x0000_7f10_0000_0000;

/// Most call sites taken from one module, so a few huge libraries do not dominate the pool.
pub const SITES_PER_MODULE: usize = 64;

/// Largest CFA offset accepted for a frame (bigger frames would only make stacks huge).
const MAX_FRAME: i64 = 0x1_0000;

/// DWARF's return-address column on x86-64.
const RA: Register = Register(16);

/// The directory of the system's x86-64 shared objects.
pub fn system_lib_dir() -> PathBuf {
    PathBuf::from("/lib/x86_64-linux-gnu")
}

/// Reads up to `limit` distinct shared objects (`*.so` and `*.so.*`) of `dir` of at most
/// `max_size` bytes, sorted by name, that [`ElfLayout::parse`] and [`DwarfUnwinder::new`]
/// accept; a file named by several symlinks is read once, under its first name. Empty if the
/// directory is missing.
pub fn read_shared_objects(dir: &Path, limit: usize, max_size: u64) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".so") || n.contains(".so."))
        })
        .collect();
    paths.sort();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in paths {
        if out.len() >= limit {
            break;
        }
        let Ok(real) = std::fs::canonicalize(&p) else {
            continue;
        };
        let small = std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.len() <= max_size);
        if !small || !seen.insert(real.clone()) {
            continue;
        }
        let Ok(data) = std::fs::read(&real) else {
            continue;
        };
        if ElfLayout::parse(&data).is_none() || DwarfUnwinder::new(&data, 0).is_err() {
            continue;
        }
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        out.push((name, data));
    }
    out
}

/// A section's link-time address and bytes.
#[derive(Clone, Copy, Debug)]
pub struct Section<'a> {
    /// Link-time address (`sh_addr`).
    pub address: u64,
    /// The bytes.
    pub data: &'a [u8],
}

impl Section<'_> {
    /// The link-time address range.
    pub fn range(&self) -> core::ops::Range<u64> {
        self.address..self.address + self.data.len() as u64
    }
}

/// What the benchmarks need of an ELF shared object, all at link-time addresses.
#[derive(Clone, Debug)]
pub struct ElfLayout<'a> {
    /// Bytes the image spans once loaded (end of the last `PT_LOAD`, page-rounded).
    pub size: u64,
    /// Executable `PT_LOAD` ranges.
    pub executable: Vec<(u64, u64)>,
    /// `.text`.
    pub text: Section<'a>,
    /// `.eh_frame`.
    pub eh_frame: Section<'a>,
    /// `.eh_frame_hdr`.
    pub eh_frame_hdr: Section<'a>,
    /// `.got`'s range, if present.
    pub got: Option<(u64, u64)>,
}

impl<'a> ElfLayout<'a> {
    /// A little-endian ELF64 shared object whose first `PT_LOAD` maps file offset 0 at address 0
    /// (so load bias and load base coincide) with `.text`, `.eh_frame` and `.eh_frame_hdr`.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let elf = ElfFile64::<Endianness>::parse(data).ok()?;
        let e = elf.endian();
        if !elf.is_little_endian() || elf.elf_header().e_type(e) != object::elf::ET_DYN {
            return None;
        }
        let loads: Vec<_> = elf
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(e) == object::elf::PT_LOAD)
            .collect();
        let first = loads.first()?;
        if first.p_vaddr(e) != 0 || first.p_offset(e) != 0 {
            return None;
        }
        let end = loads
            .iter()
            .map(|p| p.p_vaddr(e).saturating_add(p.p_memsz(e)))
            .max()?;
        let executable = loads
            .iter()
            .filter(|p| p.p_flags(e) & object::elf::PF_X != 0)
            .map(|p| (p.p_vaddr(e), p.p_vaddr(e).saturating_add(p.p_memsz(e))))
            .collect();
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            let data = s.data().ok()?;
            (!data.is_empty()).then_some(Section {
                address: s.address(),
                data,
            })
        };
        Some(ElfLayout {
            size: end.checked_add(0xfff)? & !0xfff,
            executable,
            text: section(".text")?,
            eh_frame: section(".eh_frame")?,
            eh_frame_hdr: section(".eh_frame_hdr")?,
            got: elf
                .section_by_name(".got")
                .map(|s| (s.address(), s.address() + s.size())),
        })
    }

    /// gimli's base addresses for this image's `.eh_frame`.
    pub fn bases(&self) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame(self.eh_frame.address)
            .set_eh_frame_hdr(self.eh_frame_hdr.address)
            .set_text(self.text.address)
            .set_got(self.got.map_or(0, |g| g.0))
    }
}

/// An ELF shared object placed at a load address.
#[derive(Clone, Debug)]
pub struct LoadedElf<'a> {
    /// File name.
    pub name: String,
    /// Load address (and load bias: link-time address 0 is mapped here).
    pub base: u64,
    /// The file.
    pub data: &'a [u8],
    /// Its sections and segments.
    pub layout: ElfLayout<'a>,
}

/// Gives each of `files` that [`ElfLayout::parse`] accepts a distinct base.
pub fn place<'a>(files: &'a [(String, Vec<u8>)]) -> Vec<LoadedElf<'a>> {
    let mut base = FIRST_MODULE_BASE;
    let mut out = Vec::new();
    for (name, data) in files {
        let Some(layout) = ElfLayout::parse(data) else {
            continue;
        };
        let size = layout.size;
        out.push(LoadedElf {
            name: name.clone(),
            base,
            data,
            layout,
        });
        base += (size + 0x1_ffff) & !0xffff;
    }
    out
}

/// An xunwind address space with a [`DwarfUnwinder`] per module, its caches (the rule cache
/// and compiled FDEs) on or off: off, every step interprets its FDE's program.
pub fn dwarf_space<'a>(modules: &[LoadedElf<'a>], caches: bool) -> AddressSpace<'a> {
    let mut space = AddressSpace::new();
    let list = modules.iter().map(|m| {
        let mut u = DwarfUnwinder::new(m.data, m.base).expect("placed modules have CFI");
        u.set_rule_cache(caches);
        u.set_compiled_rows(caches);
        Module {
            name: m.name.clone(),
            base: m.base,
            size: m.layout.size,
            walker: Box::new(u),
            executable: m
                .layout
                .executable
                .iter()
                .map(|&(b, e)| (m.base + b, m.base + e))
                .collect(),
        }
    });
    let (_, rejected) = space.add_modules(list);
    assert!(rejected.is_empty(), "placed modules do not overlap");
    space
}

/// The frame layout a row gives, if it is simple: CFA = rsp + N, the return address at
/// CFA - 8, every other rule a GPR saved between the stack pointer and the return address
/// (or `same_value`).
pub fn simple_layout<S: gimli::UnwindContextStorage<usize>>(
    row: &UnwindTableRow<usize, S>,
) -> Option<FrameLayout> {
    let &CfaRule::RegisterAndOffset { register, offset } = row.cfa() else {
        return None;
    };
    if register != Register(7) || !(8..=MAX_FRAME).contains(&offset) {
        return None;
    }
    let mut pushes = Vec::new();
    let mut has_ra = false;
    for (reg, rule) in row.registers() {
        match *rule {
            RegisterRule::SameValue => {}
            RegisterRule::Offset(-8) if *reg == RA => has_ra = true,
            RegisterRule::Offset(k) if *reg != RA && *reg != Register(7) => {
                let r = xunwind_dwarf::dwarf_gpr(reg.0)?;
                // Below the return address, not below the stack pointer.
                if k > -16 || offset + k < 0 {
                    return None;
                }
                pushes.push(((offset + k) as u32, r));
            }
            _ => return None,
        }
    }
    pushes.sort_unstable_by_key(|p| p.0);
    if !has_ra || pushes.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(FrameLayout {
        pushes,
        return_offset: (offset - 8) as u32,
    })
}

/// Return addresses after `call` instructions whose rows are simple ([`simple_layout`]) and
/// the same at the call and at the return address; at most one per function and
/// `per_module` per module, from functions spread over the whole `.eh_frame`.
pub fn call_sites(modules: &[LoadedElf<'_>], per_module: usize) -> Vec<CallSite> {
    let mut out = Vec::new();
    let mut ctx: Box<UnwindContext<usize>> = Box::new(UnwindContext::new());
    for (mi, m) in modules.iter().enumerate() {
        let l = &m.layout;
        let bases = l.bases();
        let mut eh = EhFrame::new(l.eh_frame.data, LittleEndian);
        eh.set_address_size(8);
        // Every FDE once; bounded by the section's size (each entry is at least 4 bytes).
        let mut fdes = Vec::new();
        let mut entries = eh.entries(&bases);
        for _ in 0..l.eh_frame.data.len() / 4 + 1 {
            match entries.next() {
                Ok(Some(gimli::CieOrFde::Fde(p))) => {
                    if let Ok(f) = p.parse(EhFrame::cie_from_offset) {
                        fdes.push(f);
                    }
                }
                Ok(Some(gimli::CieOrFde::Cie(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let stride = (fdes.len() / (8 * per_module.max(1))).max(1);
        let mut taken = 0;
        for fde in fdes.iter().step_by(stride) {
            if taken >= per_module {
                break;
            }
            if fde.cie().return_address_register() != RA {
                continue;
            }
            let (start, end) = (fde.initial_address(), fde.end_address());
            let text = l.text.range();
            if start >= end || start < text.start || end > text.end {
                continue;
            }
            let code = &l.text.data[(start - text.start) as usize..(end - text.start) as usize];
            let mut dec = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
            let mut ins = Instruction::default();
            while dec.can_decode() {
                dec.decode_out(&mut ins);
                if ins.mnemonic() != Mnemonic::Call || ins.next_ip() >= end {
                    continue;
                }
                let ra = ins.next_ip();
                let mut row_at = |a: u64| {
                    fde.unwind_info_for_address(&eh, &bases, &mut ctx, a)
                        .ok()
                        .and_then(simple_layout)
                };
                let Some(layout) = row_at(ra - 1) else {
                    continue;
                };
                if row_at(ra).as_ref() == Some(&layout) {
                    out.push(CallSite {
                        module: mi,
                        pc: m.base + ra,
                        layout,
                    });
                    taken += 1;
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;
    use xunwind::core::Reg;

    fn libraries(limit: usize) -> Option<Vec<(String, Vec<u8>)>> {
        // Small ones: the test reads 40 files, not the LLVMs' hundreds of MiB.
        let files = read_shared_objects(&system_lib_dir(), limit, 4 << 20);
        if files.len() < limit {
            assert!(
                std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
                "only {} shared objects under {}",
                files.len(),
                system_lib_dir().display()
            );
            eprintln!(
                "skipped: too few shared objects in {}",
                system_lib_dir().display()
            );
            return None;
        }
        Some(files)
    }

    #[test]
    fn built_stack_walks_to_its_frames_and_a_corrupted_one_does_not() {
        let Some(files) = libraries(40) else { return };
        let modules = place(&files);
        assert_eq!(modules.len(), 40);
        let space = dwarf_space(&modules, true);
        let mut sites = call_sites(&modules, SITES_PER_MODULE);
        assert!(sites.len() > 200, "only {} call sites", sites.len());
        let mut rng = SplitMix64::new(5);
        let stack = build_stack(&space, &mut sites, 32, &mut rng).expect("a 32-frame stack");
        assert_eq!(stack.pcs.len(), 32);
        let mut mods: Vec<usize> = stack
            .pcs
            .iter()
            .map(|&pc| {
                modules
                    .iter()
                    .position(|m| m.base <= pc && pc < m.base + m.layout.size)
                    .expect("pc in a module")
            })
            .collect();
        mods.sort();
        mods.dedup();
        assert!(mods.len() > 8, "frames from only {} modules", mods.len());
        assert_eq!(first_divergence(&space, &stack), None);
        // The same stack walks the same with the rule cache off.
        assert_eq!(
            first_divergence(&dwarf_space(&modules, false), &stack),
            None
        );
        // Zeroing one return address must end the walk at exactly that frame.
        let mut bad = stack.clone();
        let o = (bad.sps[10] - 8 - STACK_BASE) as usize;
        bad.stack[o..o + 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(first_divergence(&space, &bad), Some(10));
    }

    /// A hand-built `.eh_frame`: one CIE (CFA = rsp + 8, return address at CFA - 8) and one
    /// FDE over `[0x1000, 0x1010)` whose rows are, by address: the CIE's; after `push rbx`
    /// (CFA = rsp + 16, rbx at CFA - 16); after `sub rsp, 0x20` (CFA = rsp + 0x30); then
    /// CFA = rbp + 16 (not simple).
    fn eh_frame_bytes() -> Vec<u8> {
        let mut cie = vec![0, 0, 0, 0, 1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b];
        cie.extend([0x0c, 7, 8, 0x90, 1]); // def_cfa rsp+8; offset r16 at cfa-8
        while !(cie.len() + 4).is_multiple_of(8) {
            cie.push(0);
        }
        let mut out = (cie.len() as u32).to_le_bytes().to_vec();
        out.extend(cie);
        let fde_at = out.len();
        let mut fde = ((fde_at + 4) as u32).to_le_bytes().to_vec(); // CIE pointer
                                                                    // pc_begin, pcrel: 0x1000 minus the field's own address (eh_frame at 0).
        let field = (fde_at + 8) as i32;
        fde.extend((0x1000 - field).to_le_bytes());
        fde.extend(0x10u32.to_le_bytes());
        fde.push(0); // augmentation data length
        fde.extend([0x41, 0x0e, 16, 0x83, 2]); // advance 1; def_cfa_offset 16; rbx at cfa-16
        fde.extend([0x44, 0x0e, 0x30]); // advance 4; def_cfa_offset 0x30
        fde.extend([0x44, 0x0c, 6, 16]); // advance 4; def_cfa rbp+16
        while !(fde.len() + 4).is_multiple_of(8) {
            fde.push(0);
        }
        out.extend((fde.len() as u32).to_le_bytes());
        out.extend(fde);
        out.extend(0u32.to_le_bytes());
        out
    }

    #[test]
    fn simple_layouts_follow_the_rows_and_others_are_refused() {
        let bytes = eh_frame_bytes();
        let mut eh = EhFrame::new(&bytes, LittleEndian);
        eh.set_address_size(8);
        let bases = BaseAddresses::default().set_eh_frame(0);
        let mut ctx: Box<UnwindContext<usize>> = Box::new(UnwindContext::new());
        let fde = eh
            .fde_for_address(&bases, 0x1000, EhFrame::cie_from_offset)
            .expect("the FDE");
        let mut at = |a: u64| {
            simple_layout(
                fde.unwind_info_for_address(&eh, &bases, &mut ctx, a)
                    .expect("a row"),
            )
        };
        assert_eq!(
            at(0x1000),
            Some(FrameLayout {
                pushes: vec![],
                return_offset: 0
            })
        );
        assert_eq!(
            at(0x1003),
            Some(FrameLayout {
                pushes: vec![(0, Reg::Rbx)],
                return_offset: 8
            })
        );
        assert_eq!(
            at(0x1008),
            Some(FrameLayout {
                pushes: vec![(0x20, Reg::Rbx)],
                return_offset: 0x28
            })
        );
        assert_eq!(at(0x100c), None);
    }
}

//! Synthetic stacks over real PE images, for whole-walk benchmarks.
//!
//! A stack is built top-down from real functions: each frame's pc is a real return address (the
//! byte after a `call rel32` to the start of another function of the same module), taken from a
//! function whose unwind codes are only pushes and stack allocations (no frame register, no
//! chaining), so its frame layout follows from the codes alone. Each frame then holds the pushed
//! registers and the allocation where the codes put them, and above them the next frame's pc as
//! its return address; the outermost frame returns to 0, the conventional end of a stack.
//!
//! Every stack is checked by walking it with xunwind before it is handed out: a candidate whose
//! unwind disagrees with its codes (an epilog right after the call, say) is dropped and the
//! stack rebuilt, so benchmarks only ever time walks that find exactly the intended frames.

use crate::SplitMix64;
use std::path::{Path, PathBuf};
use xunwind::core::{Reg, Regs, SliceMemory};
use xunwind::pe::{PeImage, PeUnwinder, UnwindOp, UNW_FLAG_CHAININFO};
use xunwind::{AddressSpace, Module, StackWalker, StopReason};

/// Where synthetic stacks are mapped.
pub const STACK_BASE: u64 = 0x0000_00e0_0000_0000;

/// First module base; later modules follow at 64 KiB-aligned distinct addresses.
pub const FIRST_MODULE_BASE: u64 = 0x0000_7ff6_0000_0000;

/// Most call sites taken from one module, so a few huge DLLs do not dominate the pool.
pub const SITES_PER_MODULE: usize = 64;

/// Most stack rebuilds after dropping a candidate that did not walk as its codes say.
const MAX_REBUILDS: usize = 256;

/// The directory holding Wine's x86_64 PE DLLs once `corpus/fetch wine` has run.
pub fn wine_dll_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows")
}

/// Reads up to `limit` `.dll` files of `dir`, sorted by name (empty if the directory is missing).
pub fn read_dlls(dir: &Path, limit: usize) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dll"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .take(limit)
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, std::fs::read(&p).ok()?))
        })
        .collect()
}

/// A PE image placed at a load address.
#[derive(Clone, Debug)]
pub struct LoadedPe<'a> {
    /// File name.
    pub name: String,
    /// Load address.
    pub base: u64,
    /// The parsed image.
    pub image: PeImage<'a>,
}

/// Parses `files` (skipping what is not PE32+ with a `.pdata`) and gives each a distinct base.
pub fn place<'a>(files: &'a [(String, Vec<u8>)]) -> Vec<LoadedPe<'a>> {
    let mut base = FIRST_MODULE_BASE;
    let mut out = Vec::new();
    for (name, data) in files {
        let Ok(image) = PeImage::parse(data) else {
            continue;
        };
        if image.functions().is_empty() {
            continue;
        }
        let size = u64::from(image.size_of_image());
        out.push(LoadedPe {
            name: name.clone(),
            base,
            image,
        });
        base += (size + 0x1_ffff) & !0xffff;
    }
    out
}

/// An xunwind address space with a [`PeUnwinder`] per module.
pub fn pe_space<'a>(modules: &[LoadedPe<'a>]) -> AddressSpace<'a> {
    let mut space = AddressSpace::new();
    for m in modules {
        let size = u64::from(m.image.size_of_image());
        space
            .add_module(Module {
                name: m.name.clone(),
                base: m.base,
                size,
                walker: Box::new(PeUnwinder::new(m.image.clone(), m.base)),
                executable: vec![(m.base, m.base + size)],
            })
            .expect("placed modules do not overlap");
    }
    space
}

/// Where a frame keeps what its prolog saved, relative to its stack pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    /// Pushed registers and their offsets.
    pub pushes: Vec<(u32, Reg)>,
    /// Offset of the return address (the frame size without it).
    pub return_offset: u32,
}

/// A pc usable as a frame: a return address inside a push/alloc-only function.
#[derive(Clone, Debug)]
pub struct CallSite {
    /// Index of the module in the list it was found in.
    pub module: usize,
    /// The absolute pc.
    pub pc: u64,
    /// The frame layout of its function.
    pub layout: FrameLayout,
}

/// The frame layout of a function from its codes, if it only pushes and allocates.
fn layout_of(image: &PeImage<'_>, unwind_data: u32) -> Option<(FrameLayout, u8)> {
    let info = image.unwind_info(unwind_data).ok()?;
    if info.version() != 1
        || info.flags() & UNW_FLAG_CHAININFO != 0
        || info.frame_register().is_some()
    {
        return None;
    }
    let mut pushes = Vec::new();
    let mut off = 0u32;
    // Codes run innermost first: the last prolog instruction sits nearest the stack pointer.
    for code in info.codes() {
        match code.ok()?.op {
            UnwindOp::PushNonvol(r) if r != Reg::Rsp => {
                pushes.push((off, r));
                off += 8;
            }
            UnwindOp::AllocSmall(n) | UnwindOp::AllocLarge { size: n, .. } => {
                off = off.checked_add(n)?;
            }
            _ => return None,
        }
    }
    (off <= 0x1_0000).then_some((
        FrameLayout {
            pushes,
            return_offset: off,
        },
        info.prolog_size(),
    ))
}

/// Return addresses after `call rel32` to a function start, in push/alloc-only functions.
pub fn call_sites(modules: &[LoadedPe<'_>], per_module: usize) -> Vec<CallSite> {
    let mut out = Vec::new();
    for (mi, m) in modules.iter().enumerate() {
        let fns = m.image.functions();
        let mut taken = 0;
        for f in fns.iter() {
            if taken >= per_module {
                break;
            }
            if f.is_indirect() || f.end <= f.begin {
                continue;
            }
            let Some((layout, prolog)) = layout_of(&m.image, f.unwind_data) else {
                continue;
            };
            let len = (f.end - f.begin) as usize;
            let Some(code) = m.image.bytes_at(f.begin).get(..len) else {
                continue;
            };
            // Past the prolog every code applies; the return address must stay inside.
            for i in usize::from(prolog)..len.saturating_sub(5) {
                if code[i] != 0xe8 {
                    continue;
                }
                let rel = i32::from_le_bytes([code[i + 1], code[i + 2], code[i + 3], code[i + 4]]);
                let ra = f.begin + i as u32 + 5;
                let target = i64::from(ra) + i64::from(rel);
                let is_start = u32::try_from(target).ok().is_some_and(|t| {
                    fns.find(t)
                        .and_then(|j| fns.get(j))
                        .is_some_and(|g| g.begin == t)
                });
                if is_start {
                    out.push(CallSite {
                        module: mi,
                        pc: m.base + u64::from(ra),
                        layout: layout.clone(),
                    });
                    taken += 1;
                    break;
                }
            }
        }
    }
    out
}

/// A synthetic stack: registers of its innermost frame, its memory, and the expected walk.
#[derive(Clone, Debug)]
pub struct PeStack {
    /// Registers of frame 0 (every GPR known).
    pub regs: Regs,
    /// The stack bytes, mapped at [`STACK_BASE`].
    pub stack: Vec<u8>,
    /// Each frame's pc, innermost first.
    pub pcs: Vec<u64>,
    /// Each frame's stack pointer.
    pub sps: Vec<u64>,
}

impl PeStack {
    /// The stack as memory.
    pub fn memory(&self) -> SliceMemory<'_> {
        SliceMemory::new(STACK_BASE, &self.stack)
    }
}

/// Lays out a stack whose frames are `sites`, innermost first.
pub fn lay_out(sites: &[&CallSite]) -> PeStack {
    let total: u64 = sites
        .iter()
        .map(|s| u64::from(s.layout.return_offset) + 8)
        .sum();
    let mut stack = vec![0u8; (total + 128) as usize];
    let mut sp = STACK_BASE + 64;
    let mut pcs = Vec::with_capacity(sites.len());
    let mut sps = Vec::with_capacity(sites.len());
    for (i, s) in sites.iter().enumerate() {
        pcs.push(s.pc);
        sps.push(sp);
        let mut put = |addr: u64, v: u64| {
            let o = (addr - STACK_BASE) as usize;
            stack[o..o + 8].copy_from_slice(&v.to_le_bytes());
        };
        for &(off, r) in &s.layout.pushes {
            put(
                sp + u64::from(off),
                0xc0de_0000_0000 | (i as u64) << 8 | r as u64,
            );
        }
        let ret = sites.get(i + 1).map_or(0, |n| n.pc);
        put(sp + u64::from(s.layout.return_offset), ret);
        sp += u64::from(s.layout.return_offset) + 8;
    }
    let mut gpr: [u64; 16] = core::array::from_fn(|r| 0x1000 + r as u64);
    gpr[Reg::Rsp as usize] = sps[0];
    PeStack {
        regs: Regs::with_gprs(pcs[0], gpr),
        stack,
        pcs,
        sps,
    }
}

/// The first frame at which xunwind's walk of `stack` departs from the intended one (`None`: it
/// found exactly the intended frames and then the end of the stack).
pub fn first_divergence(space: &AddressSpace<'_>, stack: &PeStack) -> Option<usize> {
    let walker = StackWalker {
        max_frames: stack.pcs.len() + 8,
        frame_pointer: false,
        scan: false,
        ..StackWalker::default()
    };
    let walk = walker.walk(space, &stack.regs, &stack.memory());
    for (i, f) in walk.frames.iter().enumerate() {
        if stack.pcs.get(i) != Some(&f.pc) || stack.sps.get(i) != Some(&f.sp) {
            return Some(i);
        }
    }
    if walk.frames.len() != stack.pcs.len() || walk.stop != StopReason::EndOfStack {
        return Some(walk.frames.len().min(stack.pcs.len()));
    }
    None
}

/// Builds a `frames`-deep stack from `sites` chosen at random, re-choosing where xunwind's walk
/// disagrees with the codes (the offending site is dropped from `sites`). `None` if too few
/// sites are left.
pub fn build_stack(
    space: &AddressSpace<'_>,
    sites: &mut Vec<CallSite>,
    frames: usize,
    rng: &mut SplitMix64,
) -> Option<PeStack> {
    for _ in 0..MAX_REBUILDS {
        if sites.len() < frames || frames == 0 {
            return None;
        }
        let picks: Vec<usize> = (0..frames)
            .map(|_| rng.range(0, sites.len() as u64) as usize)
            .collect();
        let chosen: Vec<&CallSite> = picks.iter().map(|&k| &sites[k]).collect();
        let stack = lay_out(&chosen);
        match first_divergence(space, &stack) {
            None => return Some(stack),
            // Frame i is wrong: frame i-1's unwind did not follow its layout.
            Some(i) => {
                sites.swap_remove(picks[i.saturating_sub(1)]);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Option<Vec<(String, Vec<u8>)>> {
        let files = read_dlls(&wine_dll_dir(), 40);
        if files.is_empty() {
            assert!(
                std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
                "Wine DLLs missing under {} (run corpus/fetch wine)",
                wine_dll_dir().display()
            );
            eprintln!("skipped: no Wine DLLs (run corpus/fetch wine)");
            return None;
        }
        Some(files)
    }

    #[test]
    fn built_stack_walks_to_its_frames_and_a_corrupted_one_does_not() {
        let Some(files) = corpus() else { return };
        let modules = place(&files);
        let space = pe_space(&modules);
        let mut sites = call_sites(&modules, SITES_PER_MODULE);
        assert!(sites.len() > 100, "only {} call sites", sites.len());
        let mut rng = SplitMix64::new(5);
        let stack = build_stack(&space, &mut sites, 32, &mut rng).expect("a 32-frame stack");
        assert_eq!(stack.pcs.len(), 32);
        // Frames come from more than a handful of modules.
        let mut mods: Vec<usize> = stack
            .pcs
            .iter()
            .map(|&pc| {
                modules
                    .iter()
                    .position(|m| m.base <= pc && pc < m.base + u64::from(m.image.size_of_image()))
                    .expect("pc in a module")
            })
            .collect();
        mods.sort();
        mods.dedup();
        assert!(mods.len() > 8, "frames from only {} modules", mods.len());
        assert_eq!(first_divergence(&space, &stack), None);
        // Zeroing one return address must end the walk at exactly that frame.
        let mut bad = stack.clone();
        let o = (bad.sps[10] - 8 - STACK_BASE) as usize;
        bad.stack[o..o + 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(first_divergence(&space, &bad), Some(10));
    }

    #[test]
    fn layout_puts_return_addresses_above_saved_registers() {
        let a = CallSite {
            module: 0,
            pc: 0x1000,
            layout: FrameLayout {
                pushes: vec![(0x20, Reg::Rbx), (0x28, Reg::Rsi)],
                return_offset: 0x30,
            },
        };
        let b = CallSite {
            module: 0,
            pc: 0x2000,
            layout: FrameLayout {
                pushes: vec![],
                return_offset: 8,
            },
        };
        let s = lay_out(&[&a, &b]);
        let rd = |addr: u64| {
            let o = (addr - STACK_BASE) as usize;
            u64::from_le_bytes(s.stack[o..o + 8].try_into().unwrap())
        };
        assert_eq!(s.sps, vec![STACK_BASE + 64, STACK_BASE + 64 + 0x38]);
        assert_eq!(rd(s.sps[0] + 0x30), 0x2000);
        assert_eq!(rd(s.sps[0] + 0x20), 0xc0de_0000_0000 | Reg::Rbx as u64);
        assert_eq!(rd(s.sps[1] + 8), 0);
        assert_eq!(s.regs.rsp(), Some(STACK_BASE + 64));
        assert_eq!(s.regs.rip(), Some(0x1000));
    }
}

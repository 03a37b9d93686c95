//! `RtlVirtualUnwind` for x64: one frame, exactly as Windows computes it.

use crate::epilog::{match_epilog, match_epilog_wine8, Epilog, EpilogAdjust, EpilogEnd};
use crate::{PeError, PeImage, RuntimeFunction, UnwindInfo, UnwindOp};
use xunwind_core::{ContextPointers, MemoryReader, Reg, Regs, UnwindError};

/// Windows' limit on chained unwind info (deeper chains are treated as corrupt).
pub const MAX_CHAIN_DEPTH: usize = 32;

/// Which establisher frame to report when the pc is in an epilog of a function with a frame
/// register: both are real Windows behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EpilogFrameRule {
    /// Windows 10 and earlier (and Wine 8.0): the frame-register rule, as outside the epilog.
    #[default]
    FrameRegister,
    /// Windows 11 (and current Wine): the stack pointer after the return, minus 8.
    ReturnSlot,
}

/// Whose behaviour to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    /// Windows (the default, and the point of this crate).
    #[default]
    Windows,
    /// Wine 8.0's known deviations (`corpus/oracle/wine-deviations.md`): its epilog grammar, a
    /// `ret imm16` that pops the immediate, and no version-2 epilog descriptors. Only for
    /// explaining differences from that oracle in differential tests.
    Wine8,
}

/// Options of [`virtual_unwind`].
#[derive(Clone, Copy, Debug, Default)]
pub struct UnwindOptions {
    /// Establisher frame in an epilog.
    pub epilog_frame: EpilogFrameRule,
    /// Whose behaviour to reproduce.
    pub compat: Compat,
}

/// What [`virtual_unwind`] reports besides the caller's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VirtualUnwind {
    /// The language handler of the requested kind: (handler RVA, handler-data RVA).
    pub handler: Option<(u32, u32)>,
    /// The establisher frame.
    pub establisher_frame: u64,
    /// The pc was in an epilog, which was emulated forward.
    pub in_epilog: bool,
    /// The pc was inside the prolog (only the executed codes were undone).
    pub in_prolog: bool,
    /// A machine frame was unwound: rip/rsp came from a trap frame, the pc is not a return address.
    pub machine_frame: bool,
    /// The `UNW_FLAG_*` handler bits of the entry the handler came from (0 without a handler).
    pub handler_flags: u8,
}

fn bad(info: &UnwindInfo<'_>, base: u64, reason: &'static str) -> UnwindError {
    UnwindError::BadUnwindInfo {
        addr: base.wrapping_add(info.rva() as u64),
        reason,
    }
}

pub(crate) fn pe_err(e: PeError, base: u64) -> UnwindError {
    match e {
        PeError::OutOfImage { rva, .. }
        | PeError::BadVersion { rva, .. }
        | PeError::UnknownOp { rva, .. }
        | PeError::CodesOverrun { rva, .. } => UnwindError::BadUnwindInfo {
            addr: base.wrapping_add(rva as u64),
            reason: match e {
                PeError::OutOfImage { .. } => "unwind data lies outside the image",
                PeError::BadVersion { .. } => "unsupported UNWIND_INFO version",
                PeError::UnknownOp { .. } => "undefined unwind op",
                _ => "unwind code runs past CountOfCodes",
            },
        },
        PeError::ChainTooDeep { rva } => UnwindError::ChainTooDeep {
            addr: base.wrapping_add(rva as u64),
        },
        _ => UnwindError::BadUnwindInfo {
            addr: base,
            reason: "malformed image",
        },
    }
}

#[inline]
pub(crate) fn reg(regs: &Regs, r: Reg) -> Result<u64, UnwindError> {
    regs.get(r).ok_or(UnwindError::MissingRegister(r))
}

#[inline]
pub(crate) fn pop<M: MemoryReader + ?Sized>(
    regs: &mut Regs,
    ptrs: &mut Option<&mut ContextPointers>,
    r: Reg,
    mem: &M,
) -> Result<(), UnwindError> {
    let sp = reg(regs, Reg::Rsp)?;
    let v = mem.read_u64(sp)?;
    regs.set(r, v);
    if let Some(p) = ptrs {
        p.set_gpr(r, sp);
    }
    // Windows adds 8 to rsp after the load, so `pop rsp` yields the loaded value plus 8.
    let sp = if r == Reg::Rsp { v } else { sp };
    regs.set(Reg::Rsp, sp.wrapping_add(8));
    Ok(())
}

pub(crate) fn resolve_indirect(
    img: &PeImage<'_>,
    f: RuntimeFunction,
) -> Result<RuntimeFunction, PeError> {
    if f.is_indirect() {
        img.runtime_function_at(f.target_rva())
    } else {
        Ok(f)
    }
}

/// The first entry of a chain: follows CHAININFO to the entry without it (the primary one).
fn primary_of(img: &PeImage<'_>, mut f: RuntimeFunction) -> Result<RuntimeFunction, PeError> {
    for _ in 0..=MAX_CHAIN_DEPTH {
        f = resolve_indirect(img, f)?;
        let info = img.unwind_info(f.unwind_data)?;
        match info.chained()? {
            Some(parent) => f = parent,
            None => return Ok(f),
        }
    }
    Err(PeError::ChainTooDeep { rva: f.unwind_data })
}

/// `RtlVirtualUnwind`: unwinds the frame of `function` (an entry of `image`, loaded at `base`)
/// whose pc is `pc`, turning `regs` into the caller's registers.
///
/// `handler_type` is `UNW_FLAG_EHANDLER` and/or `UNW_FLAG_UHANDLER` (0 for none). Code bytes
/// for epilog recognition come from the image; stack memory from `mem`. On error `regs` may be
/// partly updated, as Windows leaves its CONTEXT.
#[allow(clippy::too_many_arguments)]
pub fn virtual_unwind(
    image: &PeImage<'_>,
    base: u64,
    function: RuntimeFunction,
    pc: u64,
    regs: &mut Regs,
    mut pointers: Option<&mut ContextPointers>,
    handler_type: u8,
    mem: &dyn MemoryReader,
    opts: &UnwindOptions,
) -> Result<VirtualUnwind, UnwindError> {
    let function = resolve_indirect(image, function).map_err(|e| pe_err(e, base))?;
    let pc_rva = pc.wrapping_sub(base) as u32;
    let info = image
        .unwind_info(function.unwind_data)
        .map_err(|e| pe_err(e, base))?;
    let offset = pc_rva.wrapping_sub(function.begin);
    let in_prolog = offset < info.prolog_size() as u32;
    let rsp = reg(regs, Reg::Rsp)?;

    // Establisher frame: the frame register once SET_FPREG has run (always for chained info).
    let frame_base = match info.frame_register() {
        None => rsp,
        Some(fr) => {
            let fp = reg(regs, fr)?.wrapping_sub(info.frame_offset() as u64);
            if !in_prolog || info.flags() & crate::UNW_FLAG_CHAININFO != 0 {
                fp
            } else {
                let mut set = false;
                for c in info.codes() {
                    let c = c.map_err(|e| pe_err(e, base))?;
                    if c.op == UnwindOp::SetFpreg {
                        set = offset >= c.offset as u32;
                        break;
                    }
                }
                if set {
                    fp
                } else {
                    rsp
                }
            }
        }
    };
    let mut out = VirtualUnwind {
        establisher_frame: frame_base,
        in_prolog,
        ..VirtualUnwind::default()
    };

    // Epilogs are only looked for outside the prolog, and never without unwind codes.
    if !in_prolog && info.count_of_codes() > 0 {
        let hit = if opts.compat == Compat::Wine8 {
            unwind_wine8_epilog(image, function, pc_rva, regs, &mut pointers, mem)?
        } else if info.version() >= 2 {
            unwind_v2_epilog(
                image,
                base,
                function,
                &info,
                offset,
                regs,
                &mut pointers,
                mem,
            )?
        } else {
            unwind_v1_epilog(
                image,
                function,
                info.frame_register(),
                info.flags() & crate::UNW_FLAG_CHAININFO != 0,
                pc_rva,
                regs,
                &mut pointers,
                mem,
            )?
        };
        if hit {
            out.in_epilog = true;
            if info.frame_register().is_some() && opts.epilog_frame == EpilogFrameRule::ReturnSlot {
                out.establisher_frame = reg(regs, Reg::Rsp)?.wrapping_sub(8);
            }
            return Ok(out);
        }
    }

    // Undo the prolog, then the parents' prologs along the chain.
    let mut cur = info;
    let mut cur_offset = offset;
    let mut depth = 0usize;
    loop {
        let partial = cur_offset < cur.prolog_size() as u32;
        for c in cur.codes() {
            let c = c.map_err(|e| pe_err(e, base))?;
            if partial && (c.offset as u32) > cur_offset {
                continue;
            }
            match c.op {
                UnwindOp::PushNonvol(r) => pop(regs, &mut pointers, r, mem)?,
                UnwindOp::AllocLarge { size, .. } | UnwindOp::AllocSmall(size) => {
                    let sp = reg(regs, Reg::Rsp)?;
                    regs.set(Reg::Rsp, sp.wrapping_add(size as u64));
                }
                UnwindOp::SetFpreg => {
                    let fr = cur
                        .frame_register()
                        .ok_or_else(|| bad(&cur, base, "SET_FPREG without a frame register"))?;
                    let v = reg(regs, fr)?.wrapping_sub(cur.frame_offset() as u64);
                    regs.set(Reg::Rsp, v);
                }
                UnwindOp::SaveNonvol { reg: r, offset }
                | UnwindOp::SaveNonvolFar { reg: r, offset } => {
                    let at = frame_base.wrapping_add(offset as u64);
                    regs.set(r, mem.read_u64(at)?);
                    if let Some(p) = &mut pointers {
                        p.set_gpr(r, at);
                    }
                }
                UnwindOp::SaveXmm128 { xmm, offset } | UnwindOp::SaveXmm128Far { xmm, offset } => {
                    let at = frame_base.wrapping_add(offset as u64);
                    regs.set_xmm(xmm, mem.read_u128(at)?);
                    if let Some(p) = &mut pointers {
                        p.set_xmm(xmm, at);
                    }
                }
                UnwindOp::PushMachframe { error_code } => {
                    let sp = reg(regs, Reg::Rsp)?.wrapping_add(if error_code { 8 } else { 0 });
                    let rip = mem.read_u64(sp)?;
                    let new_sp = mem.read_u64(sp.wrapping_add(24))?;
                    regs.set_rip(rip);
                    regs.set(Reg::Rsp, new_sp);
                    out.machine_frame = true;
                }
                UnwindOp::EpilogHead { .. } | UnwindOp::Epilog { .. } => {}
                UnwindOp::Unknown { .. } => return Err(bad(&cur, base, "undefined unwind op")),
            }
        }
        let parent = match cur.chained().map_err(|e| pe_err(e, base))? {
            None => break,
            Some(p) => p,
        };
        depth += 1;
        if depth > MAX_CHAIN_DEPTH {
            return Err(UnwindError::ChainTooDeep {
                addr: base.wrapping_add(cur.rva() as u64),
            });
        }
        let cur_fn = resolve_indirect(image, parent).map_err(|e| pe_err(e, base))?;
        cur = image
            .unwind_info(cur_fn.unwind_data)
            .map_err(|e| pe_err(e, base))?;
        cur_offset = pc_rva.wrapping_sub(cur_fn.begin);
    }
    if !out.machine_frame {
        let sp = reg(regs, Reg::Rsp)?;
        regs.set_rip(mem.read_u64(sp)?);
        regs.set(Reg::Rsp, sp.wrapping_add(8));
    }

    // The handler is the primary (last, unchained) entry's, and only past its prolog.
    if handler_type & cur.flags() != 0 && cur_offset >= cur.prolog_size() as u32 {
        out.handler = cur.handler().map_err(|e| pe_err(e, base))?;
        out.handler_flags = cur.flags() & (crate::UNW_FLAG_EHANDLER | crate::UNW_FLAG_UHANDLER);
    }
    Ok(out)
}

/// Version 1: recognise the epilog from the code bytes and emulate it. `chained`: the entry's
/// UNWIND_INFO has CHAININFO.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unwind_v1_epilog<M: MemoryReader + ?Sized>(
    image: &PeImage<'_>,
    function: RuntimeFunction,
    frame_reg: Option<Reg>,
    chained: bool,
    pc_rva: u32,
    regs: &mut Regs,
    pointers: &mut Option<&mut ContextPointers>,
    mem: &M,
) -> Result<bool, UnwindError> {
    let code = image.bytes_at(pc_rva);
    let Some(ep) = v1_epilog_at(image, function, frame_reg, chained, pc_rva, code) else {
        return Ok(false);
    };
    apply_epilog(&ep, regs, pointers, mem)?;
    Ok(true)
}

/// The version-1 epilog that `code` (the image bytes at `pc_rva`) starts, judging jumps by
/// where they land relative to `function` and its chain.
pub(crate) fn v1_epilog_at(
    image: &PeImage<'_>,
    function: RuntimeFunction,
    frame_reg: Option<Reg>,
    chained: bool,
    pc_rva: u32,
    code: &[u8],
) -> Option<Epilog> {
    let primary_begin = std::cell::OnceCell::new();
    let judge = |target: u32| -> bool {
        if function.contains(target) {
            // A jump to the function's own start is a recursive tail call.
            return target == function.begin && !chained;
        }
        // Outside this entry: still the same function if it lands in another fragment of it
        // (an entry with the same primary), unless it lands on the primary's start.
        let ours = *primary_begin
            .get_or_init(|| primary_of(image, function).map_or(function.begin, |f| f.begin));
        if target == ours {
            return true;
        }
        match image.lookup_function_entry(target) {
            // An entry with our own begin is another fragment of us (Windows 10 2009+), even
            // if its unwind data cannot be read; otherwise compare the chains' primaries.
            Some(f) if f.begin == function.begin || f.begin == ours => false,
            Some(f) => primary_of(image, f).map_or(true, |p| p.begin != ours),
            None => true,
        }
    };
    match_epilog(code, pc_rva, frame_reg, &judge)
}

/// Runs a recognised epilog forward: the rsp adjustment, the pops, then a return. Every
/// terminator, jumps included, unwinds as a plain return (Windows does not apply `ret imm16`).
fn apply_epilog<M: MemoryReader + ?Sized>(
    ep: &Epilog,
    regs: &mut Regs,
    pointers: &mut Option<&mut ContextPointers>,
    mem: &M,
) -> Result<(), UnwindError> {
    match ep.adjust {
        Some(EpilogAdjust::Add(n)) => {
            let sp = reg(regs, Reg::Rsp)?;
            regs.set(Reg::Rsp, sp.wrapping_add(n as i64 as u64));
        }
        Some(EpilogAdjust::Lea(fr, d)) => {
            let v = reg(regs, fr)?.wrapping_add(d as i64 as u64);
            regs.set(Reg::Rsp, v);
        }
        None => {}
    }
    for &r in ep.pops() {
        pop(regs, pointers, r, mem)?;
    }
    let sp = reg(regs, Reg::Rsp)?;
    regs.set_rip(mem.read_u64(sp)?);
    regs.set(Reg::Rsp, sp.wrapping_add(8));
    Ok(())
}

/// Wine 8.0's epilog recognition and emulation (see [`Compat::Wine8`]).
fn unwind_wine8_epilog(
    image: &PeImage<'_>,
    function: RuntimeFunction,
    pc_rva: u32,
    regs: &mut Regs,
    pointers: &mut Option<&mut ContextPointers>,
    mem: &dyn MemoryReader,
) -> Result<bool, UnwindError> {
    let code_at = |rva: u32| image.bytes_at(rva);
    let Some(ep) = match_epilog_wine8(&code_at, pc_rva, function.begin, function.end) else {
        return Ok(false);
    };
    apply_epilog(&ep, regs, pointers, mem)?;
    if let EpilogEnd::Ret { imm } = ep.end {
        let sp = reg(regs, Reg::Rsp)?;
        regs.set(Reg::Rsp, sp.wrapping_add(imm as u64));
    }
    Ok(true)
}

/// Version 2: the EPILOG codes say where the epilogs are; the region is the pops and the return.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unwind_v2_epilog<M: MemoryReader + ?Sized>(
    image: &PeImage<'_>,
    base: u64,
    function: RuntimeFunction,
    info: &UnwindInfo<'_>,
    offset: u32,
    regs: &mut Regs,
    pointers: &mut Option<&mut ContextPointers>,
    mem: &M,
) -> Result<bool, UnwindError> {
    let len = function.end.wrapping_sub(function.begin);
    let mut size = 0u32;
    let mut start = None;
    for c in info.codes() {
        let c = c.map_err(|e| pe_err(e, base))?;
        let epilog_start = match c.op {
            UnwindOp::EpilogHead { size: s, at_end } => {
                size = s as u32;
                if !at_end {
                    continue;
                }
                len.wrapping_sub(size)
            }
            UnwindOp::Epilog { distance: 0 } => continue,
            UnwindOp::Epilog { distance } => len.wrapping_sub(distance as u32),
            _ => break,
        };
        if offset.wrapping_sub(epilog_start) < size {
            start = Some(epilog_start);
            break;
        }
    }
    let Some(start) = start else {
        return Ok(false);
    };
    // Bytes of the epilog already executed: skip as many pops as they cover.
    let mut done = offset.wrapping_sub(start);
    let mut cur = *info;
    let mut depth = 0usize;
    let mut started = false;
    let mut machine = None;
    'chain: loop {
        for c in cur.codes() {
            let c = c.map_err(|e| pe_err(e, base))?;
            let (bytes, kind) = match c.op {
                UnwindOp::PushNonvol(r) => (if r.number() < 8 { 1 } else { 2 }, Some(r)),
                // pushfq in the prolog, popfq in the epilog.
                UnwindOp::AllocSmall(8) if started => (1, None),
                UnwindOp::PushMachframe { error_code } => {
                    machine = Some(error_code);
                    break 'chain;
                }
                _ if !started => continue,
                _ => break 'chain,
            };
            started = true;
            if done >= bytes {
                done -= bytes;
                continue;
            }
            done = 0;
            match kind {
                Some(r) => pop(regs, pointers, r, mem)?,
                None => {
                    let sp = reg(regs, Reg::Rsp)?;
                    regs.set(Reg::Rsp, sp.wrapping_add(8));
                }
            }
        }
        let Some(parent) = cur.chained().map_err(|e| pe_err(e, base))? else {
            break;
        };
        depth += 1;
        if depth > MAX_CHAIN_DEPTH {
            return Err(UnwindError::ChainTooDeep {
                addr: base.wrapping_add(cur.rva() as u64),
            });
        }
        let parent = resolve_indirect(image, parent).map_err(|e| pe_err(e, base))?;
        cur = image
            .unwind_info(parent.unwind_data)
            .map_err(|e| pe_err(e, base))?;
    }
    let sp = reg(regs, Reg::Rsp)?;
    match machine {
        // iretq: rip, cs, rflags, rsp, ss.
        Some(error_code) => {
            let at = sp.wrapping_add(if error_code { 8 } else { 0 });
            regs.set_rip(mem.read_u64(at)?);
            regs.set(Reg::Rsp, mem.read_u64(at.wrapping_add(24))?);
        }
        None => {
            regs.set_rip(mem.read_u64(sp)?);
            regs.set(Reg::Rsp, sp.wrapping_add(8));
        }
    }
    Ok(true)
}

/// A leaf function (no `.pdata` entry): the return address is at the top of the stack.
pub fn unwind_leaf(regs: &mut Regs, mem: &dyn MemoryReader) -> Result<(), UnwindError> {
    let sp = reg(regs, Reg::Rsp)?;
    regs.set_rip(mem.read_u64(sp)?);
    regs.set(Reg::Rsp, sp.wrapping_add(8));
    Ok(())
}

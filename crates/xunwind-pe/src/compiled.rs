//! A function's unwind rules decoded once: the fast path of [`virtual_unwind`].
//!
//! [`virtual_unwind`] re-reads UNWIND_INFO (and its chain) at every call and runs the epilog
//! grammar at every pc. [`CompiledFunction`] decodes the codes of the entry and of its whole
//! chain once into a flat list of ready operations, keeps the few header facts the unwind needs,
//! and tries the epilog grammar only where the first code bytes can start an epilog
//! ([`may_start_epilog`]). Its results are those of [`virtual_unwind`], bit for bit (checked by
//! differential tests over the corpus and Wine's cases, and by fuzzing): only well-formed
//! version-1 entries are compiled, and everything else (malformed codes or chains, version 2,
//! [`Compat::Wine8`]) stays with [`virtual_unwind`], which reports exactly what is wrong.

use crate::epilog::may_start_epilog;
use crate::unwind::{pop, reg, resolve_indirect, unwind_v1_epilog};
use crate::{
    virtual_unwind, Compat, EpilogFrameRule, PeImage, RuntimeFunction, UnwindOp, UnwindOptions,
    VirtualUnwind, MAX_CHAIN_DEPTH, UNW_FLAG_CHAININFO, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};
use xunwind_core::{ContextPointers, MemoryReader, Reg, Regs, UnwindError};

/// Most operations (codes plus one per chain level) a compiled function holds inline; longer
/// functions stay with [`virtual_unwind`].
pub const MAX_COMPILED_OPS: usize = 30;

/// One decoded unwind code (or the start of a chain level), with its prolog offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// A new UNWIND_INFO of the chain: offsets below are relative to `begin`.
    Level {
        begin: u32,
        prolog: u8,
    },
    Push {
        at: u8,
        reg: Reg,
    },
    Alloc {
        at: u8,
        size: u32,
    },
    SetFp {
        at: u8,
        reg: Reg,
        offset: u8,
    },
    Save {
        at: u8,
        reg: Reg,
        offset: u32,
    },
    SaveXmm {
        at: u8,
        xmm: u8,
        offset: u32,
    },
    MachFrame {
        at: u8,
        error_code: bool,
    },
}

/// The unwind rules of one function entry (its UNWIND_INFO and every chained parent), decoded
/// once for [`CompiledFunction::unwind`].
#[derive(Clone, Debug)]
pub struct CompiledFunction {
    /// The entry as given (for the reference path).
    entry: RuntimeFunction,
    /// The entry after indirection.
    function: RuntimeFunction,
    prolog_size: u8,
    frame_reg: Option<Reg>,
    frame_offset: u8,
    /// Prolog offset of the entry's first SET_FPREG (for the establisher frame in the prolog).
    fpreg_at: Option<u8>,
    chained: bool,
    has_codes: bool,
    /// The primary (last, unchained) entry: its flags, prolog size, begin and handler.
    primary_flags: u8,
    primary_prolog: u8,
    primary_begin: u32,
    handler: Option<(u32, u32)>,
    len: u8,
    ops: [Op; MAX_COMPILED_OPS],
}

impl CompiledFunction {
    /// Decodes the rules of `function` (an entry of `image`, possibly indirect). `None` when the
    /// entry is not a well-formed version-1 UNWIND_INFO with a well-formed chain, or has more than
    /// [`MAX_COMPILED_OPS`] operations: [`virtual_unwind`] then handles it (and its errors).
    pub fn new(image: &PeImage<'_>, function: RuntimeFunction) -> Option<Self> {
        let entry = function;
        let function = resolve_indirect(image, function).ok()?;
        let info = image.unwind_info(function.unwind_data).ok()?;
        if info.version() != 1 {
            return None;
        }
        let mut out = CompiledFunction {
            entry,
            function,
            prolog_size: info.prolog_size(),
            frame_reg: info.frame_register(),
            frame_offset: (info.frame_offset() / 16) as u8,
            fpreg_at: None,
            chained: info.flags() & UNW_FLAG_CHAININFO != 0,
            has_codes: info.count_of_codes() > 0,
            primary_flags: 0,
            primary_prolog: 0,
            primary_begin: 0,
            handler: None,
            len: 0,
            ops: [Op::Level {
                begin: 0,
                prolog: 0,
            }; MAX_COMPILED_OPS],
        };
        let mut cur = info;
        let mut cur_fn = function;
        let mut depth = 0usize;
        loop {
            out.push(Op::Level {
                begin: cur_fn.begin,
                prolog: cur.prolog_size(),
            })?;
            for c in cur.codes() {
                let c = c.ok()?;
                let at = c.offset;
                let op = match c.op {
                    UnwindOp::PushNonvol(reg) => Op::Push { at, reg },
                    UnwindOp::AllocLarge { size, .. } | UnwindOp::AllocSmall(size) => {
                        Op::Alloc { at, size }
                    }
                    UnwindOp::SetFpreg => {
                        if depth == 0 && out.fpreg_at.is_none() {
                            out.fpreg_at = Some(at);
                        }
                        Op::SetFp {
                            at,
                            reg: cur.frame_register()?,
                            offset: (cur.frame_offset() / 16) as u8,
                        }
                    }
                    UnwindOp::SaveNonvol { reg, offset }
                    | UnwindOp::SaveNonvolFar { reg, offset } => Op::Save { at, reg, offset },
                    UnwindOp::SaveXmm128 { xmm, offset }
                    | UnwindOp::SaveXmm128Far { xmm, offset } => Op::SaveXmm { at, xmm, offset },
                    UnwindOp::PushMachframe { error_code } => Op::MachFrame { at, error_code },
                    // Version-2 epilog descriptors of a chained parent do nothing here.
                    UnwindOp::EpilogHead { .. } | UnwindOp::Epilog { .. } => continue,
                    UnwindOp::Unknown { .. } => return None,
                };
                out.push(op)?;
            }
            let Some(parent) = cur.chained().ok()? else {
                break;
            };
            depth += 1;
            if depth > MAX_CHAIN_DEPTH {
                return None;
            }
            cur_fn = resolve_indirect(image, parent).ok()?;
            cur = image.unwind_info(cur_fn.unwind_data).ok()?;
        }
        out.primary_flags = cur.flags();
        out.primary_prolog = cur.prolog_size();
        out.primary_begin = cur_fn.begin;
        // A handler RVA that cannot be read is an error only at some pcs: leave it to the
        // reference path.
        out.handler = cur.handler().ok()?;
        Some(out)
    }

    fn push(&mut self, op: Op) -> Option<()> {
        *self.ops.get_mut(self.len as usize)? = op;
        self.len += 1;
        Some(())
    }

    /// The function entry (after indirection) these rules belong to.
    pub fn function(&self) -> RuntimeFunction {
        self.function
    }

    /// [`virtual_unwind`] for this function: same arguments, same results, same errors, same
    /// partial register updates on error. Generic over the memory so direct callers get the
    /// reads inlined; `&dyn MemoryReader` works too.
    #[allow(clippy::too_many_arguments)]
    pub fn unwind<M: MemoryReader + ?Sized>(
        &self,
        image: &PeImage<'_>,
        base: u64,
        pc: u64,
        regs: &mut Regs,
        mut pointers: Option<&mut ContextPointers>,
        handler_type: u8,
        mem: &M,
        opts: &UnwindOptions,
    ) -> Result<VirtualUnwind, UnwindError> {
        if opts.compat != Compat::Windows {
            return virtual_unwind_generic(
                image,
                base,
                self.entry,
                pc,
                regs,
                pointers,
                handler_type,
                mem,
                opts,
            );
        }
        let pc_rva = pc.wrapping_sub(base) as u32;
        let offset = pc_rva.wrapping_sub(self.function.begin);
        let in_prolog = offset < self.prolog_size as u32;
        let rsp = reg(regs, Reg::Rsp)?;
        let frame_base = match self.frame_reg {
            None => rsp,
            Some(fr) => {
                let fp = reg(regs, fr)?.wrapping_sub(self.frame_offset as u64 * 16);
                let set = match self.fpreg_at {
                    _ if !in_prolog || self.chained => true,
                    Some(at) => offset >= at as u32,
                    None => false,
                };
                if set {
                    fp
                } else {
                    rsp
                }
            }
        };
        let mut out = VirtualUnwind {
            establisher_frame: frame_base,
            in_prolog,
            ..VirtualUnwind::default()
        };

        // Epilog: the grammar runs only where the first bytes can start one.
        if !in_prolog && self.has_codes {
            let code = image.bytes_at(pc_rva);
            if may_start_epilog(code)
                && unwind_v1_epilog(
                    image,
                    self.function,
                    self.frame_reg,
                    self.chained,
                    pc_rva,
                    regs,
                    &mut pointers,
                    mem,
                )?
            {
                out.in_epilog = true;
                if self.frame_reg.is_some() && opts.epilog_frame == EpilogFrameRule::ReturnSlot {
                    out.establisher_frame = reg(regs, Reg::Rsp)?.wrapping_sub(8);
                }
                return Ok(out);
            }
        }

        let mut cur_offset = offset;
        let mut partial = false;
        for op in &self.ops[..self.len as usize] {
            let at = match *op {
                Op::Level { begin, prolog } => {
                    cur_offset = pc_rva.wrapping_sub(begin);
                    partial = cur_offset < prolog as u32;
                    continue;
                }
                Op::Push { at, .. }
                | Op::Alloc { at, .. }
                | Op::SetFp { at, .. }
                | Op::Save { at, .. }
                | Op::SaveXmm { at, .. }
                | Op::MachFrame { at, .. } => at,
            };
            if partial && at as u32 > cur_offset {
                continue;
            }
            match *op {
                Op::Push { reg: r, .. } => pop(regs, &mut pointers, r, mem)?,
                Op::Alloc { size, .. } => {
                    let sp = reg(regs, Reg::Rsp)?;
                    regs.set(Reg::Rsp, sp.wrapping_add(size as u64));
                }
                Op::SetFp {
                    reg: fr, offset, ..
                } => {
                    let v = reg(regs, fr)?.wrapping_sub(offset as u64 * 16);
                    regs.set(Reg::Rsp, v);
                }
                Op::Save { reg: r, offset, .. } => {
                    let at = frame_base.wrapping_add(offset as u64);
                    regs.set(r, mem.read_u64(at)?);
                    if let Some(p) = &mut pointers {
                        p.set_gpr(r, at);
                    }
                }
                Op::SaveXmm { xmm, offset, .. } => {
                    let at = frame_base.wrapping_add(offset as u64);
                    regs.set_xmm(xmm, mem.read_u128(at)?);
                    if let Some(p) = &mut pointers {
                        p.set_xmm(xmm, at);
                    }
                }
                Op::MachFrame { error_code, .. } => {
                    let sp = reg(regs, Reg::Rsp)?.wrapping_add(if error_code { 8 } else { 0 });
                    let rip = mem.read_u64(sp)?;
                    let new_sp = mem.read_u64(sp.wrapping_add(24))?;
                    regs.set_rip(rip);
                    regs.set(Reg::Rsp, new_sp);
                    out.machine_frame = true;
                }
                Op::Level { .. } => {}
            }
        }
        if !out.machine_frame {
            let sp = reg(regs, Reg::Rsp)?;
            regs.set_rip(mem.read_u64(sp)?);
            regs.set(Reg::Rsp, sp.wrapping_add(8));
        }
        let primary_offset = pc_rva.wrapping_sub(self.primary_begin);
        if handler_type & self.primary_flags != 0 && primary_offset >= self.primary_prolog as u32 {
            out.handler = self.handler;
            out.handler_flags = self.primary_flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER);
        }
        Ok(out)
    }
}

/// [`virtual_unwind`] for any memory type (it takes `&dyn`; a `?Sized` generic cannot be
/// turned into one, so wrap it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn virtual_unwind_generic<M: MemoryReader + ?Sized>(
    image: &PeImage<'_>,
    base: u64,
    function: RuntimeFunction,
    pc: u64,
    regs: &mut Regs,
    pointers: Option<&mut ContextPointers>,
    handler_type: u8,
    mem: &M,
    opts: &UnwindOptions,
) -> Result<VirtualUnwind, UnwindError> {
    struct Dyn<'m, M: ?Sized>(&'m M);
    impl<M: MemoryReader + ?Sized> MemoryReader for Dyn<'_, M> {
        #[inline]
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), xunwind_core::MemoryError> {
            self.0.read(addr, buf)
        }
    }
    virtual_unwind(
        image,
        base,
        function,
        pc,
        regs,
        pointers,
        handler_type,
        &Dyn(mem),
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_is_small() {
        // The hot loop walks these: keep them at 8 bytes.
        assert_eq!(std::mem::size_of::<Op>(), 8);
    }
}

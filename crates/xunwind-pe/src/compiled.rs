//! A function's unwind rules decoded once: the fast path of [`virtual_unwind`].
//!
//! [`virtual_unwind`] re-reads UNWIND_INFO (and its chain) at every call and runs the epilog
//! grammar at every pc. [`CompiledFunction`] decodes the codes of the entry and of its whole
//! chain once into a flat list of ready operations, keeps the few header facts the unwind needs,
//! and, for version 1, runs the epilog grammar once over every pc past the prolog (behind the
//! two-byte filter [`may_start_epilog`]), keeping the pcs that start an epilog and what each
//! epilog does: an unwind then reads no code bytes at all (version 2 reads its EPILOG
//! descriptors, which need no code bytes either). Its results are those of [`virtual_unwind`],
//! bit for bit (checked by differential tests over the corpus and Wine's cases, and by
//! fuzzing): only well-formed entries with well-formed chains are compiled; the rest
//! (malformed codes, chains or handler fields) and [`Compat::Wine8`] stay with
//! [`virtual_unwind`], which reports exactly what is wrong.

use crate::epilog::{may_start_epilog, EpilogAdjust};
use crate::unwind::{
    pe_err, pop, reg, resolve_indirect, unwind_v1_epilog, unwind_v2_epilog, v1_epilog_at,
};
use crate::{
    virtual_unwind, Compat, EpilogFrameRule, PeImage, RuntimeFunction, UnwindOp, UnwindOptions,
    VirtualUnwind, MAX_CHAIN_DEPTH, UNW_FLAG_CHAININFO, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};
use xunwind_core::{
    CompactRule, ContextPointers, Handler, MemoryReader, Reg, Regs, Trust, UnwindError,
};

/// Functions up to this many bytes have their epilog pcs found when compiled (each byte is a
/// candidate pc); in longer ones the grammar runs at unwind time, behind the fast filter.
pub const MAX_SCANNED_FUNCTION: u32 = 0x1_0000;

/// What an [`Op`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// A new UNWIND_INFO of the chain: `imm` is its function's begin, `at` its SizeOfProlog.
    Level,
    /// PUSH_NONVOL `reg`.
    Push,
    /// ALLOC_SMALL/ALLOC_LARGE of `imm` bytes.
    Alloc,
    /// SET_FPREG: rsp = `reg` - `imm`.
    SetFp,
    /// SAVE_NONVOL(_FAR) `reg` at establisher + `imm`.
    Save,
    /// SAVE_XMM128(_FAR) xmm `reg` at establisher + `imm`.
    SaveXmm,
    /// PUSH_MACHFRAME; `reg` is 1 with an error code.
    MachFrame,
}

/// One decoded unwind code (or the start of a chain level), 8 bytes. After the codes, the
/// same array holds the body loads and the epilog pcs (their offsets, one word each, then their
/// rules, [`EPILOG_OPS`] words each), so that one function's rules are one allocation (fewer
/// cache misses on the first step through it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Op {
    kind: Kind,
    /// The code's prolog offset (CodeOffset).
    at: u8,
    reg: u8,
    x: u8,
    imm: u32,
}

/// Words of an encoded [`EpilogAt`].
const EPILOG_OPS: usize = 2;

/// Most pops an encoded epilog holds (56 bits of register numbers); a function with a longer
/// epilog is not scanned (its epilogs are recognised at unwind time).
const MAX_ENCODED_POPS: u8 = 14;

impl EpilogAt {
    /// The rule without its offset (kept in the dense offset array).
    fn encode(&self) -> [Op; EPILOG_OPS] {
        let w = |at, reg, x, imm| Op {
            kind: Kind::Level,
            at,
            reg,
            x,
            imm,
        };
        let p = self.pops;
        [
            w(self.adjust, self.lea_reg, self.pop_count, self.imm as u32),
            w(p as u8, (p >> 8) as u8, (p >> 16) as u8, (p >> 24) as u32),
        ]
    }

    fn decode(offset: u32, w: &[Op]) -> EpilogAt {
        EpilogAt {
            offset,
            adjust: w[0].at,
            lea_reg: w[0].reg,
            pop_count: w[0].x,
            imm: w[0].imm as i32,
            pops: w[1].at as u64
                | (w[1].reg as u64) << 8
                | (w[1].x as u64) << 16
                | (w[1].imm as u64) << 24,
        }
    }
}

/// A pc of the function that starts an epilog (version 1), and what the epilog does from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EpilogAt {
    /// Offset of the pc from the function's begin.
    offset: u32,
    /// `add rsp, imm` (adjust 1) or `lea rsp, [reg + imm]` (adjust 2), or nothing (0).
    adjust: u8,
    lea_reg: u8,
    pop_count: u8,
    imm: i32,
    /// The registers popped, four bits each, first in the low bits.
    pops: u64,
}

/// The unwind rules of one function entry (its UNWIND_INFO and every chained parent), decoded
/// once for [`CompiledFunction::unwind`].
#[derive(Clone, Debug)]
pub struct CompiledFunction {
    /// The entry after indirection.
    function: RuntimeFunction,
    /// The entry as given (for the reference path).
    entry: RuntimeFunction,
    prolog_size: u8,
    frame_reg: Option<Reg>,
    frame_offset: u8,
    /// Prolog offset of the entry's first SET_FPREG (for the establisher frame in the prolog).
    fpreg_at: Option<u8>,
    chained: bool,
    has_codes: bool,
    /// Version 2: epilogs come from the EPILOG descriptors at unwind time.
    v2: bool,
    /// The primary (last, unchained) entry: its flags, prolog size, begin and handler.
    primary_flags: u8,
    primary_prolog: u8,
    primary_begin: u32,
    handler: Option<(u32, u32)>,
    /// Offsets `prolog_size..scanned_end` were searched for epilogs when compiling.
    scanned_end: u32,
    /// Number of ops at the start of `code`.
    n_ops: u32,
    /// Where the epilog pcs start in `code`: `n_epi` offsets, then as many rules.
    epi_start: u32,
    n_epi: u32,
    /// The body program (see [`CompiledFunction::body`]): `code[n_ops..epi_start]` holds its
    /// loads; `None` when the codes do not reduce to one.
    body: Option<Body>,
    /// The ops, the body loads, the epilog offsets (sorted), then the epilog rules
    /// ([`EPILOG_OPS`] words each, in the same order).
    code: Box<[Op]>,
}

/// Past the prolog and outside epilogs, an unwind of simple codes is a fixed set of loads: each
/// register from a constant offset off the stack pointer (or off the frame register, when
/// SET_FPREG comes first) or off the establisher frame, then the return address.
#[derive(Clone, Copy, Debug)]
struct Body {
    /// SET_FPREG first: the base is this register minus the offset, else rsp.
    fp: Option<(Reg, u32)>,
    /// Where the return address lies, from the base.
    ret: u64,
}

/// Most loads of a body program (more: the general loop runs).
const MAX_BODY_LOADS: usize = 16;

impl CompiledFunction {
    /// Decodes the rules of `function` (an entry of `image`, possibly indirect) and finds its
    /// epilogs. `None` when the entry's UNWIND_INFO, codes, chain or handler field is
    /// malformed: [`virtual_unwind`] then handles it (and reports its errors).
    pub fn new(image: &PeImage<'_>, function: RuntimeFunction) -> Option<Self> {
        let entry = function;
        let function = resolve_indirect(image, function).ok()?;
        let info = image.unwind_info(function.unwind_data).ok()?;
        let mut ops = Vec::with_capacity(info.count_of_codes() as usize + 1);
        let mut fpreg_at = None;
        let mut cur = info;
        let mut cur_fn = function;
        let mut depth = 0usize;
        loop {
            ops.push(Op {
                kind: Kind::Level,
                at: cur.prolog_size(),
                reg: 0,
                x: 0,
                imm: cur_fn.begin,
            });
            for c in cur.codes() {
                let c = c.ok()?;
                let op = |kind, reg: u8, imm: u32| Op {
                    kind,
                    at: c.offset,
                    reg,
                    x: 0,
                    imm,
                };
                ops.push(match c.op {
                    UnwindOp::PushNonvol(r) => op(Kind::Push, r.number(), 0),
                    UnwindOp::AllocLarge { size, .. } | UnwindOp::AllocSmall(size) => {
                        op(Kind::Alloc, 0, size)
                    }
                    UnwindOp::SetFpreg => {
                        if depth == 0 && fpreg_at.is_none() {
                            fpreg_at = Some(c.offset);
                        }
                        op(
                            Kind::SetFp,
                            cur.frame_register()?.number(),
                            cur.frame_offset(),
                        )
                    }
                    UnwindOp::SaveNonvol { reg, offset }
                    | UnwindOp::SaveNonvolFar { reg, offset } => {
                        op(Kind::Save, reg.number(), offset)
                    }
                    UnwindOp::SaveXmm128 { xmm, offset }
                    | UnwindOp::SaveXmm128Far { xmm, offset } => op(Kind::SaveXmm, xmm, offset),
                    UnwindOp::PushMachframe { error_code } => {
                        op(Kind::MachFrame, error_code as u8, 0)
                    }
                    // Version-2 epilog descriptors do nothing when undoing a prolog.
                    UnwindOp::EpilogHead { .. } | UnwindOp::Epilog { .. } => continue,
                    UnwindOp::Unknown { .. } => return None,
                });
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
        // A handler RVA that cannot be read is an error only at some pcs: leave it to the
        // reference path.
        let handler = cur.handler().ok()?;
        let mut out = CompiledFunction {
            function,
            entry,
            prolog_size: info.prolog_size(),
            frame_reg: info.frame_register(),
            frame_offset: (info.frame_offset() / 16) as u8,
            fpreg_at,
            chained: info.flags() & UNW_FLAG_CHAININFO != 0,
            has_codes: info.count_of_codes() > 0,
            v2: info.version() >= 2,
            primary_flags: cur.flags(),
            primary_prolog: cur.prolog_size(),
            primary_begin: cur_fn.begin,
            handler,
            scanned_end: 0,
            n_ops: ops.len() as u32,
            epi_start: ops.len() as u32,
            n_epi: 0,
            body: None,
            code: Box::new([]),
        };
        out.body = Self::body(&mut ops);
        out.epi_start = ops.len() as u32;
        out.find_epilogs(image, &mut ops);
        out.code = ops.into_boxed_slice();
        Some(out)
    }

    /// Reduces a single-level list of PUSH_NONVOL (not rsp), ALLOC, SAVE_NONVOL (not rsp) and a
    /// leading SET_FPREG to its loads, appended to `ops`. Anything else (xmm, machine frames,
    /// chains, writes to rsp other than the adjustments) keeps the general loop.
    fn body(ops: &mut Vec<Op>) -> Option<Body> {
        let n = ops.len();
        let mut fp = None;
        let mut delta = 0u64;
        let mut loads = Vec::new();
        for (i, op) in ops.iter().enumerate().skip(1) {
            let r = Reg::from_number(op.reg);
            match op.kind {
                Kind::SetFp if i == 1 => fp = Some((r, op.imm)),
                Kind::Push if r != Reg::Rsp => {
                    loads.push(Op { imm: 0, ..*op });
                    loads.last_mut()?.imm = delta as u32;
                    if delta > u32::MAX as u64 {
                        return None;
                    }
                    delta = delta.wrapping_add(8);
                }
                Kind::Alloc => delta = delta.wrapping_add(op.imm as u64),
                Kind::Save if r != Reg::Rsp => loads.push(*op),
                _ => return None,
            }
        }
        if loads.len() > MAX_BODY_LOADS || n == 0 {
            return None;
        }
        ops.extend(loads);
        Some(Body { fp, ret: delta })
    }

    /// Runs the epilog grammar at every pc past the prolog once, so that unwinding never
    /// reads code bytes for pcs of the function.
    fn find_epilogs(&mut self, image: &PeImage<'_>, out: &mut Vec<Op>) {
        let len = self.function.end.wrapping_sub(self.function.begin);
        if !self.has_codes || self.v2 || len > MAX_SCANNED_FUNCTION {
            return;
        }
        let begin = self.function.begin;
        let code = image.bytes_at(begin);
        let mut offsets = Vec::new();
        let mut rules = Vec::new();
        for offset in self.prolog_size as u32..len {
            let pc_rva = begin.wrapping_add(offset);
            let at = match code.get(offset as usize..) {
                Some(c) => c,
                None => image.bytes_at(pc_rva),
            };
            if !may_start_epilog(at) {
                continue;
            }
            let Some(ep) = v1_epilog_at(
                image,
                self.function,
                self.frame_reg,
                self.chained,
                pc_rva,
                at,
            ) else {
                continue;
            };
            let (adjust, lea_reg, imm) = match ep.adjust {
                None => (0, 0, 0),
                Some(EpilogAdjust::Add(n)) => (1, 0, n),
                Some(EpilogAdjust::Lea(r, d)) => (2, r.number(), d),
            };
            if ep.pop_count > MAX_ENCODED_POPS {
                return;
            }
            let pops = ep
                .pops()
                .iter()
                .enumerate()
                .fold(0u64, |acc, (i, r)| acc | (r.number() as u64) << (4 * i));
            offsets.push(Op {
                kind: Kind::Level,
                at: 0,
                reg: 0,
                x: 0,
                imm: offset,
            });
            rules.extend(
                EpilogAt {
                    offset,
                    adjust,
                    lea_reg,
                    pop_count: ep.pop_count,
                    imm,
                    pops,
                }
                .encode(),
            );
        }
        // The offsets first, densely, for the search; then the rules.
        self.n_epi = offsets.len() as u32;
        out.extend(offsets);
        out.extend(rules);
        self.scanned_end = len;
    }

    /// The epilog starting at `offset`, if any (binary search over the encoded epilog pcs).
    #[inline]
    fn epilog_at(&self, offset: u32) -> Option<EpilogAt> {
        let n = self.n_epi as usize;
        let start = self.epi_start as usize;
        let offsets = self.code.get(start..start + n)?;
        if n == 0 {
            return None;
        }
        // Branch-free search: whether a pc is an epilog is data the predictor cannot learn.
        let (mut base, mut size) = (0usize, n);
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            base = std::hint::select_unpredictable(offsets[mid].imm <= offset, mid, base);
            size -= half;
        }
        if offsets[base].imm != offset {
            return None;
        }
        let w = start + n + base * EPILOG_OPS;
        self.code
            .get(w..w + EPILOG_OPS)
            .map(|w| EpilogAt::decode(offset, w))
    }

    /// The function entry (after indirection) these rules belong to.
    pub fn function(&self) -> RuntimeFunction {
        self.function
    }

    /// Number of pcs of the function that start an epilog (found when compiled).
    pub fn epilog_pcs(&self) -> usize {
        self.n_epi as usize
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

        if !in_prolog && self.has_codes {
            let hit = if self.v2 {
                // Version 2: the EPILOG descriptors, read as the reference reads them.
                let info = image
                    .unwind_info(self.function.unwind_data)
                    .map_err(|e| pe_err(e, base))?;
                unwind_v2_epilog(
                    image,
                    base,
                    self.function,
                    &info,
                    offset,
                    regs,
                    &mut pointers,
                    mem,
                )?
            } else if offset < self.scanned_end {
                // Epilog pcs were found when compiling: no code bytes to read.
                match self.epilog_at(offset) {
                    Some(ep) => {
                        apply_epilog_at(&ep, regs, &mut pointers, mem)?;
                        true
                    }
                    None => false,
                }
            } else {
                // Outside the scanned range (a pc past the end, a long function): the grammar,
                // behind the filter.
                may_start_epilog(image.bytes_at(pc_rva))
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
            };
            if hit {
                out.in_epilog = true;
                if self.frame_reg.is_some() && opts.epilog_frame == EpilogFrameRule::ReturnSlot {
                    out.establisher_frame = reg(regs, Reg::Rsp)?.wrapping_sub(8);
                }
                return Ok(out);
            }
        }

        // The body program: all loads first, committed only if every one succeeds (an error
        // falls through to the general loop, which leaves the registers as Windows does).
        if let (Some(body), false) = (self.body, in_prolog) {
            let base = match body.fp {
                Some((fr, off)) => reg(regs, fr)?.wrapping_sub(off as u64),
                None => rsp,
            };
            let loads = &self.code[self.n_ops as usize..self.epi_start as usize];
            let mut vals = [0u64; MAX_BODY_LOADS];
            let mut ok = true;
            for (v, l) in vals.iter_mut().zip(loads) {
                let from = if l.kind == Kind::Push {
                    base
                } else {
                    frame_base
                };
                match mem.read_u64(from.wrapping_add(l.imm as u64)) {
                    Ok(x) => *v = x,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            let ret_at = base.wrapping_add(body.ret);
            if let (true, Ok(rip)) = (ok, mem.read_u64(ret_at)) {
                for (v, l) in vals.iter().zip(loads) {
                    let r = Reg::from_number(l.reg);
                    let from = if l.kind == Kind::Push {
                        base
                    } else {
                        frame_base
                    };
                    regs.set(r, *v);
                    if let Some(p) = &mut pointers {
                        p.set_gpr(r, from.wrapping_add(l.imm as u64));
                    }
                }
                regs.set_rip(rip);
                regs.set(Reg::Rsp, ret_at.wrapping_add(8));
                self.handler_into(pc_rva, handler_type, &mut out);
                return Ok(out);
            }
        }

        let mut cur_offset = offset;
        let mut partial = false;
        for op in &self.code[..self.n_ops as usize] {
            if op.kind == Kind::Level {
                cur_offset = pc_rva.wrapping_sub(op.imm);
                partial = cur_offset < op.at as u32;
                continue;
            }
            if partial && op.at as u32 > cur_offset {
                continue;
            }
            let r = Reg::from_number(op.reg);
            match op.kind {
                Kind::Push => pop(regs, &mut pointers, r, mem)?,
                Kind::Alloc => {
                    let sp = reg(regs, Reg::Rsp)?;
                    regs.set(Reg::Rsp, sp.wrapping_add(op.imm as u64));
                }
                Kind::SetFp => {
                    let v = reg(regs, r)?.wrapping_sub(op.imm as u64);
                    regs.set(Reg::Rsp, v);
                }
                Kind::Save => {
                    let at = frame_base.wrapping_add(op.imm as u64);
                    regs.set(r, mem.read_u64(at)?);
                    if let Some(p) = &mut pointers {
                        p.set_gpr(r, at);
                    }
                }
                Kind::SaveXmm => {
                    let at = frame_base.wrapping_add(op.imm as u64);
                    regs.set_xmm(op.reg, mem.read_u128(at)?);
                    if let Some(p) = &mut pointers {
                        p.set_xmm(op.reg, at);
                    }
                }
                Kind::MachFrame => {
                    let sp = reg(regs, Reg::Rsp)?.wrapping_add(if op.reg != 0 { 8 } else { 0 });
                    let rip = mem.read_u64(sp)?;
                    let new_sp = mem.read_u64(sp.wrapping_add(24))?;
                    regs.set_rip(rip);
                    regs.set(Reg::Rsp, new_sp);
                    out.machine_frame = true;
                }
                Kind::Level => {}
            }
        }
        if !out.machine_frame {
            let sp = reg(regs, Reg::Rsp)?;
            regs.set_rip(mem.read_u64(sp)?);
            regs.set(Reg::Rsp, sp.wrapping_add(8));
        }
        self.handler_into(pc_rva, handler_type, &mut out);
        Ok(out)
    }

    /// The rule at `pc` as a [`CompactRule`] with handler RVAs relative to `base`, when
    /// [`CompiledFunction::unwind`] there is one: past the prolog, in a body program or in a
    /// recognised version 1 epilog, with the establisher frame expressible from the CFA.
    /// Prologs, version 2, xmm saves, machine frames and chains give `None`.
    pub fn rule(
        &self,
        base: u64,
        pc: u64,
        handler_type: u8,
        opts: &UnwindOptions,
    ) -> Option<CompactRule> {
        if opts.compat != Compat::Windows || self.v2 {
            return None;
        }
        let pc_rva = pc.wrapping_sub(base) as u32;
        let offset = pc_rva.wrapping_sub(self.function.begin);
        if offset < self.prolog_size as u32 {
            return None;
        }
        let rsp = Regs::bit(Reg::Rsp);
        if self.has_codes {
            if offset >= self.scanned_end {
                return None;
            }
            if let Some(ep) = self.epilog_at(offset) {
                // Without a frame register the establisher frame is rsp as the epilog starts,
                // which the CFA fixes only when the adjustment is relative to rsp too.
                if self.frame_reg.is_some() || ep.adjust == 2 {
                    return None;
                }
                let adjust = if ep.adjust == 1 { ep.imm as i64 } else { 0 };
                let n = ep.pop_count as i64;
                let cfa_off = adjust + 8 * n + 8;
                let mut rule = CompactRule::new(Reg::Rsp, cfa_off, -8, Trust::Pdata)
                    .with_frame(-cfa_off)
                    .with_keep(!crate::walker::VOLATILE);
                for i in 0..ep.pop_count as u32 {
                    let r = Reg::from_number((ep.pops >> (4 * i)) as u8);
                    rule = rule.save(r, adjust + 8 * i as i64 - cfa_off)?;
                }
                return Some(rule);
            }
        }
        let body = self.body?;
        // base = reg - fp_off; frame_base = reg - frame_off: both from one register, or the
        // rule cannot hold them.
        let (reg, fp_off, frame_off) = match (body.fp, self.frame_reg) {
            (None, None) => (Reg::Rsp, 0i64, 0i64),
            (Some((fr, off)), Some(f)) if fr == f => {
                (fr, off as i64, self.frame_offset as i64 * 16)
            }
            _ => return None,
        };
        let ret = i64::try_from(body.ret).ok()?;
        // CFA = base + ret + 8.
        let cfa_off = ret.checked_sub(fp_off)?.checked_add(8)?;
        let to_cfa = ret.checked_add(8)?;
        let mut rule = CompactRule::new(reg, cfa_off, -8, Trust::Pdata)
            .with_required(rsp)
            .with_frame(fp_off - frame_off - to_cfa)
            .with_keep(!crate::walker::VOLATILE);
        for l in &self.code[self.n_ops as usize..self.epi_start as usize] {
            let r = Reg::from_number(l.reg);
            let from_base = if l.kind == Kind::Push {
                l.imm as i64
            } else {
                l.imm as i64 + fp_off - frame_off
            };
            rule = rule.save(r, from_base - to_cfa)?;
        }
        let mut out = VirtualUnwind::default();
        self.handler_into(pc_rva, handler_type, &mut out);
        Some(rule.with_handler(out.handler.map(|(h, d)| Handler {
            address: base.wrapping_add(h as u64),
            data: base.wrapping_add(d as u64),
            flags: out.handler_flags,
        })))
    }

    /// The primary entry's handler, when asked for and past its prolog.
    #[inline]
    fn handler_into(&self, pc_rva: u32, handler_type: u8, out: &mut VirtualUnwind) {
        let primary_offset = pc_rva.wrapping_sub(self.primary_begin);
        if handler_type & self.primary_flags != 0 && primary_offset >= self.primary_prolog as u32 {
            out.handler = self.handler;
            out.handler_flags = self.primary_flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER);
        }
    }
}

/// A recognised epilog run forward, as `apply_epilog` does: the rsp adjustment, the pops, then
/// a return (every terminator unwinds as a plain return).
#[inline]
fn apply_epilog_at<M: MemoryReader + ?Sized>(
    ep: &EpilogAt,
    regs: &mut Regs,
    pointers: &mut Option<&mut ContextPointers>,
    mem: &M,
) -> Result<(), UnwindError> {
    match ep.adjust {
        1 => {
            let sp = reg(regs, Reg::Rsp)?;
            regs.set(Reg::Rsp, sp.wrapping_add(ep.imm as i64 as u64));
        }
        2 => {
            let v = reg(regs, Reg::from_number(ep.lea_reg))?.wrapping_add(ep.imm as i64 as u64);
            regs.set(Reg::Rsp, v);
        }
        _ => {}
    }
    for i in 0..ep.pop_count as u32 {
        pop(
            regs,
            pointers,
            Reg::from_number((ep.pops >> (4 * i)) as u8),
            mem,
        )?;
    }
    let sp = reg(regs, Reg::Rsp)?;
    regs.set_rip(mem.read_u64(sp)?);
    regs.set(Reg::Rsp, sp.wrapping_add(8));
    Ok(())
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
    use xunwind_core::SliceMemory;

    /// A function longer than [`MAX_SCANNED_FUNCTION`] (epilogs recognised at unwind time) and a
    /// short one (epilogs found when compiled): both agree with `virtual_unwind` at every pc of
    /// their epilogs and around them.
    #[test]
    fn long_and_short_functions_agree_with_reference() {
        let len = MAX_SCANNED_FUNCTION + 0x100;
        let mut bytes = vec![0x90u8; 0x1000 + len as usize + 0x1000];
        for (begin, end) in [
            (0x1000u32, 0x1000 + len),
            (0x1000 + len, 0x1000 + len + 0x80),
        ] {
            // push rbx; sub rsp,0x20 ... add rsp,0x20; pop rbx; ret
            bytes[begin as usize..begin as usize + 5]
                .copy_from_slice(&[0x53, 0x48, 0x83, 0xec, 0x20]);
            let e = end as usize - 6;
            bytes[e..e + 6].copy_from_slice(&[0x48, 0x83, 0xc4, 0x20, 0x5b, 0xc3]);
        }
        let unwind = bytes.len() as u32;
        bytes.extend([0x01, 5, 2, 0, 5, 0x12, 1, 0x30]);
        let pdata = bytes.len() as u32;
        for (b, e) in [
            (0x1000u32, 0x1000 + len),
            (0x1000 + len, 0x1000 + len + 0x80),
        ] {
            for v in [b, e, unwind] {
                bytes.extend(v.to_le_bytes());
            }
        }
        let base = 0x1_4000_0000u64;
        let img = PeImage::from_parts(&bytes, base, pdata, 24);
        let stack: Vec<u8> = (0..0x100u64)
            .flat_map(|k| (0x5000 + 8 * k).to_le_bytes())
            .collect();
        let mem = SliceMemory::new(0x7000_0000, &stack);
        for f in img.functions().iter() {
            let c = CompiledFunction::new(&img, f).expect("well-formed v1");
            let long = f.end - f.begin > MAX_SCANNED_FUNCTION;
            assert_eq!(c.scanned_end == 0, long);
            assert_eq!(c.epilog_pcs(), if long { 0 } else { 3 });
            for pc in (0..8).map(|k| f.begin + k).chain(f.end - 10..f.end + 1) {
                let mut g = [0xa000u64; 16];
                g[Reg::Rsp as usize] = 0x7000_0080;
                let (mut r1, mut p1) =
                    (Regs::with_gprs(base + pc as u64, g), ContextPointers::new());
                let (mut r2, mut p2) = (r1.clone(), p1);
                let opts = UnwindOptions::default();
                let want = virtual_unwind(
                    &img,
                    base,
                    f,
                    base + pc as u64,
                    &mut r1,
                    Some(&mut p1),
                    3,
                    &mem,
                    &opts,
                );
                let got = c.unwind(
                    &img,
                    base,
                    base + pc as u64,
                    &mut r2,
                    Some(&mut p2),
                    3,
                    &mem,
                    &opts,
                );
                assert_eq!(got, want, "pc {pc:#x}");
                assert_eq!((r2, p2), (r1, p1), "pc {pc:#x}");
                if [f.end - 6, f.end - 2, f.end - 1].contains(&pc) {
                    assert!(got.unwrap().in_epilog, "pc {pc:#x}");
                }
            }
        }
    }

    /// An epilog with more pops than the encoding holds: the function is not scanned, and its
    /// epilogs are recognised at unwind time, with the reference's results.
    #[test]
    fn epilog_with_many_pops_is_recognised_at_unwind_time() {
        let mut bytes = vec![0x90u8; 0x1000];
        bytes[0x100] = 0x53; // push rbx
        let pops = MAX_ENCODED_POPS as usize + 1;
        let epi = 0x180;
        bytes[epi..epi + pops].fill(0x5b); // pop rbx, many times
        bytes[epi + pops] = 0xc3;
        let end = (epi + pops + 1) as u32;
        bytes[0x800..0x808].copy_from_slice(&[0x01, 1, 1, 0, 1, 0x30, 0, 0]);
        for (i, v) in [0x100u32, end, 0x800].iter().enumerate() {
            bytes[0x900 + 4 * i..0x904 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        let base = 0x1_4000_0000u64;
        let img = PeImage::from_parts(&bytes, base, 0x900, 12);
        let f = img.functions().get(0).unwrap();
        let c = CompiledFunction::new(&img, f).unwrap();
        assert_eq!((c.scanned_end, c.epilog_pcs()), (0, 0));
        let stack: Vec<u8> = (0..0x100u64)
            .flat_map(|k| (0x5000 + 8 * k).to_le_bytes())
            .collect();
        let mem = SliceMemory::new(0x7000_0000, &stack);
        for pc in (0x100..end + 1).map(|r| base + r as u64) {
            let mut g = [0xa000u64; 16];
            g[Reg::Rsp as usize] = 0x7000_0080;
            let (mut r1, mut p1) = (Regs::with_gprs(pc, g), ContextPointers::new());
            let (mut r2, mut p2) = (r1.clone(), p1);
            let opts = UnwindOptions::default();
            let want = virtual_unwind(&img, base, f, pc, &mut r1, Some(&mut p1), 3, &mem, &opts);
            let got = c.unwind(&img, base, pc, &mut r2, Some(&mut p2), 3, &mem, &opts);
            assert_eq!(got, want, "pc {pc:#x}");
            assert_eq!((r2, p2), (r1, p1), "pc {pc:#x}");
            if pc == base + epi as u64 {
                assert!(got.unwrap().in_epilog);
            }
        }
    }

    #[test]
    fn epilog_encoding_round_trips() {
        let e = EpilogAt {
            offset: 0x1234_5678,
            adjust: 2,
            lea_reg: 13,
            pop_count: MAX_ENCODED_POPS,
            imm: -0x80,
            pops: 0x00dc_ba98_7654_3210,
        };
        assert_eq!(EpilogAt::decode(e.offset, &e.encode()), e);
    }

    #[test]
    fn op_is_small() {
        // The hot loop walks these: keep them at 8 bytes.
        assert_eq!(std::mem::size_of::<Op>(), 8);
    }
}

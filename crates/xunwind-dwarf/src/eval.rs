//! Turning a CFI row into the caller's registers.

use crate::cache::CachedRow;
use crate::fast::{CompactRow, Rule};
use crate::{gimli_reason, DwarfUnwinder, Fde, Reader};
use gimli::{
    CfaRule, Encoding, EvaluationResult, EvaluationStorage, Location, Piece, Register,
    RegisterRule, UnwindExpression, UnwindSection, Value,
};
use xunwind_core::{
    ContextPointers, Handler, MemoryReader, PcKind, Reg, Regs, Step, Trust, UnwindError,
};

/// DWARF register numbers 0-15 of the x86-64 psABI, in our encoding order.
pub(crate) const DWARF_GPR: [Reg; 16] = [
    Reg::Rax,
    Reg::Rdx,
    Reg::Rcx,
    Reg::Rbx,
    Reg::Rsi,
    Reg::Rdi,
    Reg::Rbp,
    Reg::Rsp,
    Reg::R8,
    Reg::R9,
    Reg::R10,
    Reg::R11,
    Reg::R12,
    Reg::R13,
    Reg::R14,
    Reg::R15,
];
/// DWARF's return-address column on x86-64 (the caller's rip).
const DWARF_RA: u16 = 16;
/// DWARF's xmm0; xmm0-15 are 17-32.
const DWARF_XMM0: u16 = 17;
/// Registers the psABI makes callee-saved: a row that says nothing about them means "same value"
/// (gdb's and libgcc's convention). gimli folds an explicit `DW_CFA_undefined` into "no rule",
/// so for these registers it cannot be told apart; only the return address column needs it.
pub(crate) const CALLEE_SAVED: [Reg; 6] =
    [Reg::Rbx, Reg::Rbp, Reg::R12, Reg::R13, Reg::R14, Reg::R15];

/// Most operations one CFI expression may execute (PLT and signal-frame expressions use < 12).
const MAX_EXPR_OPS: u32 = 256;
/// Most register/memory requests one expression may make.
const MAX_EXPR_REQUESTS: usize = 64;

/// Fixed-size storage so an expression evaluates without allocating.
struct ExprStore;

impl<R: gimli::Reader> EvaluationStorage<R> for ExprStore {
    type Stack = [Value; 64];
    type ExpressionStack = [(R, R); 4];
    type Result = [Piece<R>; 1];
}

fn bad(addr: u64, reason: &'static str) -> UnwindError {
    UnwindError::BadUnwindInfo { addr, reason }
}

/// The value of DWARF register `r` in `regs` (16 is the pc).
pub(crate) fn dwarf_reg(regs: &Regs, r: Register) -> Result<u64, UnwindError> {
    match r.0 {
        n @ 0..=15 => {
            let reg = DWARF_GPR[n as usize];
            regs.get(reg).ok_or(UnwindError::MissingRegister(reg))
        }
        DWARF_RA => regs.rip().ok_or(UnwindError::MissingRip),
        _ => Err(bad(0, "CFI uses a register xunwind does not track")),
    }
}

/// Evaluates a CFI expression; `initial` is pushed first (the CFA for register rules).
fn eval_expr<'d, S: UnwindSection<Reader<'d>>>(
    section: &S,
    expr: &UnwindExpression<usize>,
    encoding: Encoding,
    initial: Option<u64>,
    regs: &Regs,
    mem: &dyn MemoryReader,
) -> Result<u64, UnwindError> {
    let at = expr.offset as u64;
    let bytes = expr.get(section).map_err(|e| bad(at, gimli_reason(e)))?;
    let mut eval = gimli::Evaluation::<Reader<'d>, ExprStore>::new_in(bytes.0, encoding);
    eval.set_max_iterations(MAX_EXPR_OPS);
    if let Some(v) = initial {
        eval.set_initial_value(v);
    }
    let mut state = eval.evaluate().map_err(|e| bad(at, gimli_reason(e)))?;
    for _ in 0..MAX_EXPR_REQUESTS {
        state = match state {
            EvaluationResult::Complete => {
                return match eval.as_result() {
                    [Piece {
                        location: Location::Address { address },
                        ..
                    }] => Ok(*address),
                    [Piece {
                        location: Location::Value { value },
                        ..
                    }] => Ok(value.to_u64(!0).map_err(|e| bad(at, gimli_reason(e)))?),
                    _ => Err(bad(at, "CFI expression has no single address result")),
                };
            }
            EvaluationResult::RequiresRegister {
                register,
                base_type,
            } => {
                if base_type.0 != 0 {
                    return Err(bad(at, "typed register in CFI expression"));
                }
                let v = dwarf_reg(regs, register)?;
                eval.resume_with_register(Value::Generic(v))
            }
            EvaluationResult::RequiresMemory {
                address,
                size,
                space,
                base_type,
            } => {
                if space.is_some() || base_type.0 != 0 || size == 0 || size > 8 {
                    return Err(bad(at, "unsupported memory access in CFI expression"));
                }
                let mut b = [0u8; 8];
                mem.read(address, &mut b[..size as usize])?;
                eval.resume_with_memory(Value::Generic(u64::from_le_bytes(b)))
            }
            _ => return Err(bad(at, "unsupported operation in CFI expression")),
        }
        .map_err(|e| bad(at, gimli_reason(e)))?;
    }
    Err(bad(at, "CFI expression makes too many requests"))
}

/// A register's recovered value and, when it was read from memory, where.
#[derive(Clone, Copy)]
enum Recovered {
    Unknown,
    Value(u64),
    Saved(u64),
}

/// Unwinds one frame with the row of `fde` at `svma`.
// The hot path passes its borrowed parts separately rather than building a struct per step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_fde<'d, S: UnwindSection<Reader<'d>>>(
    u: &DwarfUnwinder<'d>,
    section: &S,
    fde: &Fde<'d>,
    ctx: &mut crate::Context,
    svma: u64,
    regs: &Regs,
    mem: &dyn MemoryReader,
    cache: Option<&mut CachedRow>,
) -> Result<Step, UnwindError> {
    let at = fde.offset() as u64;
    let row = fde
        .unwind_info_for_address(section, u.bases(), ctx, svma)
        .map_err(|e| bad(at, gimli_reason(e)))?;
    let cie = fde.cie();
    let encoding = cie.encoding();
    let compact = cache.is_some().then(|| compact_of(row, fde)).flatten();
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            dwarf_reg(regs, *register)?.wrapping_add(*offset as u64)
        }
        CfaRule::Expression(e) => eval_expr(section, e, encoding, None, regs, mem)?,
    };

    // The caller keeps the callee-saved registers unless a rule says otherwise; the rest of
    // the registers did not survive the call. The stack pointer is the CFA by definition.
    let mut out = Regs::new();
    for r in CALLEE_SAVED {
        if let Some(v) = regs.get(r) {
            out.set(r, v);
        }
    }
    out.set(Reg::Rsp, cfa);
    let mut pointers = ContextPointers::new();
    let ra_column = cie.return_address_register();
    let mut ra = None;
    for (reg, rule) in row.registers() {
        let is_xmm = (DWARF_XMM0..DWARF_XMM0 + 16).contains(&reg.0);
        let rec = match rule {
            RegisterRule::Undefined => Recovered::Unknown,
            RegisterRule::SameValue => current(regs, *reg),
            RegisterRule::Offset(n) => Recovered::Saved(cfa.wrapping_add(*n as u64)),
            RegisterRule::ValOffset(n) => Recovered::Value(cfa.wrapping_add(*n as u64)),
            RegisterRule::Register(r) => current(regs, *r),
            RegisterRule::Expression(e) => {
                Recovered::Saved(eval_expr(section, e, encoding, Some(cfa), regs, mem)?)
            }
            RegisterRule::ValExpression(e) => {
                Recovered::Value(eval_expr(section, e, encoding, Some(cfa), regs, mem)?)
            }
            RegisterRule::Constant(c) => Recovered::Value(*c),
            _ => return Err(bad(at, "architectural register rule")),
        };
        if *reg == ra_column {
            ra = match rec {
                Recovered::Unknown => None,
                Recovered::Value(v) => Some(v),
                Recovered::Saved(a) => {
                    // The return address slot is where a debugger would patch rip.
                    Some(mem.read_u64(a)?)
                }
            };
        } else if reg.0 < 16 {
            let r = DWARF_GPR[reg.0 as usize];
            match rec {
                // rsp is the CFA unless a rule recovers it.
                Recovered::Unknown if r == Reg::Rsp => {}
                Recovered::Unknown => out.invalidate(r),
                Recovered::Value(v) => out.set(r, v),
                Recovered::Saved(a) => {
                    out.set(r, mem.read_u64(a)?);
                    pointers.set_gpr(r, a);
                }
            }
        } else if is_xmm {
            let n = (reg.0 - DWARF_XMM0) as u8;
            let same = match rule {
                RegisterRule::SameValue => Some(n),
                RegisterRule::Register(r) if (DWARF_XMM0..DWARF_XMM0 + 16).contains(&r.0) => {
                    Some((r.0 - DWARF_XMM0) as u8)
                }
                _ => None,
            };
            match (same, rec) {
                (Some(from), _) => match regs.xmm(from) {
                    Some(v) => out.set_xmm(n, v),
                    None => out.invalidate_xmm(n),
                },
                (None, Recovered::Unknown) => out.invalidate_xmm(n),
                (None, Recovered::Value(v)) => out.set_xmm(n, u128::from(v)),
                (None, Recovered::Saved(a)) => {
                    out.set_xmm(n, mem.read_u128(a)?);
                    pointers.set_xmm(n, a);
                }
            }
        }
    }
    // An undefined return address ends the stack (the psABI's rule for the outermost frame,
    // e.g. glibc's _start): the caller's rip stays unknown.
    if let Some(ra) = ra {
        out.set_rip(ra);
    }
    let (handler, resolved) = handler_of(u, cie.personality(), fde.lsda(), mem);
    // Only rows with a return address are cached (an outermost frame is rare and cheap).
    if let (Some(slot), Some(row)) = (cache, compact.filter(|_| ra.is_some() && resolved)) {
        *slot = CachedRow {
            key: svma,
            live: true,
            row,
            handler,
        };
    }
    Ok(Step {
        regs: out,
        trust: Trust::Cfi,
        frame: cfa,
        pointers,
        handler,
        caller_pc: if fde.is_signal_trampoline() {
            PcKind::Exact
        } else {
            PcKind::ReturnAddress
        },
    })
}

/// gimli's row in the compact form, when it has one (see [`CompactRow`]).
pub(crate) fn compact_of(
    row: &gimli::UnwindTableRow<usize, crate::X64Rows>,
    fde: &Fde<'_>,
) -> Option<CompactRow> {
    if fde.cie().return_address_register().0 != DWARF_RA {
        return None;
    }
    let CfaRule::RegisterAndOffset { register, offset } = row.cfa() else {
        return None;
    };
    let mut ok = true;
    let rules = row.registers().map_while(|(reg, rule)| {
        let r = match rule {
            RegisterRule::Offset(n) => Rule::Offset(*n),
            RegisterRule::SameValue => Rule::SameValue,
            RegisterRule::Register(r) => Rule::Register(r.0),
            _ => {
                ok = false;
                return None;
            }
        };
        Some((reg.0, r))
    });
    let c = CompactRow::from_parts(register.0, *offset, fde.is_signal_trampoline(), rules);
    c.filter(|_| ok)
}

/// A register's current value, as `SameValue`/`Register` rules take it.
fn current(regs: &Regs, r: Register) -> Recovered {
    match dwarf_reg(regs, r) {
        Ok(v) => Recovered::Value(v),
        Err(_) => Recovered::Unknown,
    }
}

/// The frame's handler from its CIE's personality and its FDE's LSDA, and whether every
/// pointer resolved (an indirect one whose slot could not be read gives no handler, or data 0,
/// and such a handler is not cached: the next step tries again).
pub(crate) fn handler_of(
    u: &DwarfUnwinder<'_>,
    personality: Option<gimli::Pointer>,
    lsda: Option<gimli::Pointer>,
    mem: &dyn MemoryReader,
) -> (Option<Handler>, bool) {
    let Some(p) = personality else {
        return (None, true);
    };
    let Some(address) = resolve(u, p, mem) else {
        return (None, false);
    };
    let data = lsda.map(|l| resolve(u, l, mem));
    let handler = Handler {
        address,
        data: data.flatten().unwrap_or(0),
        flags: 0,
    };
    (Some(handler), data.is_none_or(|d| d.is_some()))
}

/// A pointer from the CFI as a runtime address; indirect ones are read from the target.
pub(crate) fn resolve(
    u: &DwarfUnwinder<'_>,
    p: gimli::Pointer,
    mem: &dyn MemoryReader,
) -> Option<u64> {
    match p {
        gimli::Pointer::Direct(a) => Some(a.wrapping_add(u.bias())),
        gimli::Pointer::Indirect(a) => mem.read_u64(a.wrapping_add(u.bias())).ok(),
    }
}

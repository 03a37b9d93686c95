//! The model of `RtlDispatchException` (phase 1) and `RtlUnwindEx` (phase 2) on x64, with the
//! language handlers whose data we decode.

use super::images::{CodeImages, FunctionRef};
use super::{
    Dispatch, DispatchError, Event, FilterResult, FrameInfo, HandlerInfo, Language, Outcome,
};
use std::collections::BTreeMap;
use xunwind_core::{MemoryReader, Regs};
use xunwind_pe::{
    cxx_search, unwind_leaf, virtual_unwind, CxxFound, FuncInfo, Lsda, ScopeTable, UnwindOptions,
    UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};

/// `STATUS_GCC_THROW`: a C++ exception raised by libgcc's `_Unwind_RaiseException`.
pub const STATUS_GCC_THROW: u32 = 0x2047_4343;
/// The MSVC C++ exception code (`0xE06D7363`, "msc").
pub const EH_EXCEPTION_NUMBER: u32 = 0xe06d_7363;

/// The exception being dispatched.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The registers at the exception (the exception record's context).
    pub regs: Regs,
    /// ExceptionCode.
    pub code: u32,
    /// ExceptionFlags.
    pub flags: u32,
    /// ExceptionInformation.
    pub parameters: Vec<u64>,
}

impl Fault {
    /// The exception of a Windows target: its record, with the exception context (else the
    /// raising thread's registers).
    pub fn from_target(target: &crate::Target) -> Option<Fault> {
        let exc = target.exception.as_ref()?;
        let regs = exc.context.clone().or_else(|| {
            target
                .threads
                .iter()
                .find(|t| t.id == exc.thread_id)
                .map(|t| t.regs.clone())
        })?;
        Some(Fault {
            regs,
            code: exc.code,
            flags: exc.flags,
            parameters: exc.parameters.clone(),
        })
    }
}

/// Decisions the model cannot take itself because they are code: filter results, and the
/// thrown C++ type.
#[derive(Clone, Debug, Default)]
pub struct Decisions {
    /// Result of each non-constant filter, by the filter's address.
    pub filters: BTreeMap<u64, FilterResult>,
    /// The thrown C++ object's `type_info` address (GCC); derived from the exception when not
    /// given and memory allows.
    pub thrown_type: Option<u64>,
}

/// Options of the dispatch model.
#[derive(Clone, Copy, Debug)]
pub struct DispatchOptions {
    /// Most frames walked in each phase.
    pub max_frames: usize,
    /// `RtlVirtualUnwind` options.
    pub unwind: UnwindOptions,
    /// Whose `__C_specific_handler` unwind rules to follow.
    pub scope_rules: ScopeRules,
    /// The thread's stack limits `[low, high)` (TEB StackLimit, StackBase), when known:
    /// RtlDispatchException stops with EXCEPTION_STACK_INVALID at an establisher frame outside
    /// them or misaligned, and ends its walk once the caller's rsp leaves them.
    pub stack_limits: Option<(u64, u64)>,
}

/// The termination-handler scan of `__C_specific_handler` during an unwind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScopeRules {
    /// Windows (Microsoft's CRT and ntdll): in the target frame the scan stops at the
    /// `__except` scope whose JumpTarget is the unwind's target, or at a scope that also holds
    /// the target pc (split scopes included); `__finally` scopes before it run.
    #[default]
    Windows,
    /// Wine 8: `__except` scopes are skipped, and the scan stops only at a `__finally` scope
    /// whose range holds the target pc. So a `__finally` enclosing the `__try/__except` that
    /// takes the exception runs during the unwind when the `__except` body lies outside that
    /// `__finally`'s range (clang places it out of line): a Wine deviation, observed under
    /// wine64 by `crates/xunwind-cli/tests/dispatch_wine.rs`.
    Wine8,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            max_frames: 256,
            unwind: UnwindOptions::default(),
            scope_rules: ScopeRules::Windows,
            stack_limits: None,
        }
    }
}

/// Windows' exception dispatch over a set of images: who handles a fault, and what runs.
pub struct ExceptionResolver<'i, 'a> {
    images: &'i CodeImages<'a>,
    options: DispatchOptions,
}

struct StepOut<'t, 'a> {
    caller: Regs,
    establisher: u64,
    func: Option<FunctionRef<'t, 'a>>,
    handler: Option<(u64, u64)>,
    machine_frame: bool,
}

/// Where phase 1 decided to unwind to.
struct Target {
    frame: usize,
    establisher: u64,
    ip: u64,
    outcome: Outcome,
    /// An MSVC C++ catch: the frame is unwound to its try block's low state first.
    try_low: Option<i32>,
}

enum Phase1 {
    Search,
    Stop(Outcome),
    Unwind(Target),
}

impl<'i, 'a> ExceptionResolver<'i, 'a> {
    /// A resolver over `images`.
    pub fn new(images: &'i CodeImages<'a>, options: DispatchOptions) -> Self {
        ExceptionResolver { images, options }
    }

    /// Classifies a language handler by the name of the function at its address.
    pub fn language(&self, handler: u64) -> Language {
        match self.images.name_at(handler) {
            Some(n) => Language::from_name(n),
            None => Language::Unknown(None),
        }
    }

    /// One frame, as the dispatcher unwinds it: the entry is looked up at the pc itself
    /// (RtlDispatchException and RtlUnwindEx pass ControlPc unchanged), no entry is a leaf.
    fn step(
        &self,
        regs: &Regs,
        mem: &dyn MemoryReader,
        handler_type: u8,
    ) -> Result<StepOut<'i, 'a>, DispatchError> {
        let pc = regs.rip().ok_or(DispatchError::MissingRegisters)?;
        let sp = regs.rsp().ok_or(DispatchError::MissingRegisters)?;
        let mut caller = regs.clone();
        let Some(f) = self.images.lookup_function_entry(pc) else {
            unwind_leaf(&mut caller, mem).map_err(DispatchError::Unwind)?;
            return Ok(StepOut {
                caller,
                establisher: sp,
                func: None,
                handler: None,
                machine_frame: false,
            });
        };
        let r = virtual_unwind(
            f.image,
            f.base,
            f.function,
            pc,
            &mut caller,
            None,
            handler_type,
            mem,
            &self.options.unwind,
        )
        .map_err(DispatchError::Unwind)?;
        Ok(StepOut {
            caller,
            establisher: r.establisher_frame,
            handler: r
                .handler
                .map(|(h, d)| (f.base.wrapping_add(h as u64), f.base.wrapping_add(d as u64))),
            func: Some(f),
            machine_frame: r.machine_frame,
        })
    }

    /// Dispatches `fault`: phase 1 asks each frame's handler, phase 2 runs the termination
    /// handlers up to the frame that takes the exception.
    pub fn dispatch(
        &self,
        fault: &Fault,
        mem: &dyn MemoryReader,
        decisions: &Decisions,
    ) -> Result<Dispatch, DispatchError> {
        let mut out = Dispatch {
            frames: Vec::new(),
            events: Vec::new(),
            outcome: Outcome::Unhandled {
                reason: "frame limit",
            },
        };
        let thrown = decisions
            .thrown_type
            .or_else(|| gcc_thrown_type(fault, mem));
        let mut regs = fault.regs.clone();
        let target = 'walk: {
            for n in 0..self.options.max_frames {
                let Some(pc) = regs.rip() else {
                    break 'walk Phase1::Stop(Outcome::Unhandled {
                        reason: "missing registers",
                    });
                };
                if pc == 0 {
                    break 'walk Phase1::Stop(Outcome::Unhandled {
                        reason: "end of stack",
                    });
                }
                let sp = regs.rsp().unwrap_or(0);
                let s = match self.step(&regs, mem, UNW_FLAG_EHANDLER) {
                    Ok(s) => s,
                    Err(DispatchError::Unwind(_)) => {
                        break 'walk Phase1::Stop(Outcome::Unhandled {
                            reason: "stack unreadable or unwind data invalid",
                        })
                    }
                    Err(e) => return Err(e),
                };
                let handler = s.handler.map(|(address, data)| HandlerInfo {
                    address,
                    data,
                    language: self.language(address),
                });
                if let Some((lo, hi)) = self.options.stack_limits {
                    let e = s.establisher;
                    if e < lo || e >= hi || e & 7 != 0 {
                        break 'walk Phase1::Stop(Outcome::Unhandled {
                            reason: "establisher frame outside the stack limits (stack invalid)",
                        });
                    }
                }
                out.frames.push(FrameInfo {
                    number: n,
                    pc,
                    sp,
                    establisher: s.establisher,
                    function: s.func.map(|f| f.base.wrapping_add(f.function.begin as u64)),
                    handler: handler.clone(),
                });
                if let (Some(h), Some(f)) = (&handler, s.func) {
                    match self
                        .phase1_frame(n, pc, &s, f, h, fault, thrown, decisions, mem, &mut out)?
                    {
                        Phase1::Search => {}
                        r => break 'walk r,
                    }
                }
                let nsp = s.caller.rsp().unwrap_or(0);
                if let Some((lo, hi)) = self.options.stack_limits {
                    if nsp < lo || nsp >= hi {
                        break 'walk Phase1::Stop(Outcome::Unhandled {
                            reason: "end of stack",
                        });
                    }
                }
                if nsp <= sp && !s.machine_frame {
                    break 'walk Phase1::Stop(Outcome::Unhandled {
                        reason: "stack not increasing",
                    });
                }
                regs = s.caller;
            }
            Phase1::Stop(Outcome::Unhandled {
                reason: "frame limit",
            })
        };
        match target {
            Phase1::Search => unreachable!("the walk only ends with a decision"),
            Phase1::Stop(o) => out.outcome = o,
            Phase1::Unwind(t) => {
                out.outcome = self.phase2(fault, t, thrown, mem, &mut out.events)?;
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn phase1_frame(
        &self,
        n: usize,
        pc: u64,
        s: &StepOut<'i, 'a>,
        f: FunctionRef<'i, 'a>,
        h: &HandlerInfo,
        fault: &Fault,
        thrown: Option<u64>,
        decisions: &Decisions,
        mem: &dyn MemoryReader,
        out: &mut Dispatch,
    ) -> Result<Phase1, DispatchError> {
        let function = f.base.wrapping_add(f.function.begin as u64);
        let data_rva = h.data.wrapping_sub(f.base) as u32;
        match &h.language {
            Language::CSpecific => {
                let table = ScopeTable::parse(f.image.bytes_at(data_rva), data_rva)
                    .map_err(|e| DispatchError::LanguageData(h.data, e.to_string()))?;
                let rva = pc.wrapping_sub(f.base) as u32;
                // __C_specific_handler, dispatching: every __except scope covering ControlPc,
                // in table order; a constant 1 is EXECUTE_HANDLER without a call.
                for (i, r) in table.records().enumerate() {
                    if !r.contains(rva) || r.jump_target == 0 {
                        continue;
                    }
                    let filter = (r.handler != 1).then(|| f.base.wrapping_add(r.handler as u64));
                    let result = match filter {
                        None => FilterResult::ExecuteHandler,
                        Some(a) => match decisions.filters.get(&a) {
                            Some(&v) => v,
                            None => {
                                return Ok(Phase1::Stop(Outcome::NeedsFilter {
                                    frame: n,
                                    function,
                                    address: a,
                                }))
                            }
                        },
                    };
                    out.events.push(Event::Filter {
                        frame: n,
                        function,
                        scope: i,
                        address: filter,
                        result,
                    });
                    match result {
                        FilterResult::ContinueSearch => {}
                        FilterResult::ContinueExecution => {
                            return Ok(Phase1::Stop(Outcome::Continue { frame: n }))
                        }
                        FilterResult::ExecuteHandler => {
                            let target = f.base.wrapping_add(r.jump_target as u64);
                            return Ok(Phase1::Unwind(Target {
                                frame: n,
                                establisher: s.establisher,
                                ip: target,
                                outcome: Outcome::Except {
                                    frame: n,
                                    function,
                                    address: target,
                                },
                                try_low: None,
                            }));
                        }
                    }
                }
                Ok(Phase1::Search)
            }
            Language::GxxSeh => {
                // libgcc's _GCC_specific_handler leaves foreign (non-GCC) exceptions alone
                // in the search phase: not even catch (...) takes them (observed under wine64
                // with a static libgcc, tests/dispatch_wine.rs).
                if !is_gcc_code(fault.code) {
                    return Ok(Phase1::Search);
                }
                let found = self.gxx(f, pc, h, thrown, mem)?;
                Ok(match found {
                    CxxFound::Nothing | CxxFound::Cleanup { .. } => Phase1::Search,
                    CxxFound::Terminate => Phase1::Stop(Outcome::Terminate { frame: n }),
                    CxxFound::NeedsType { type_info } => Phase1::Stop(Outcome::NeedsType {
                        frame: n,
                        function,
                        type_info,
                    }),
                    CxxFound::Handler {
                        landing_pad,
                        type_info,
                        ..
                    } => Phase1::Unwind(Target {
                        frame: n,
                        establisher: s.establisher,
                        ip: landing_pad,
                        outcome: Outcome::Catch {
                            frame: n,
                            function,
                            address: landing_pad,
                            type_info,
                        },
                        try_low: None,
                    }),
                })
            }
            Language::CxxFrameHandler3 => {
                let fi_rva = f
                    .image
                    .read_u32(data_rva)
                    .map_err(|e| DispatchError::LanguageData(h.data, e.to_string()))?;
                let fi = FuncInfo::parse(f.image, fi_rva)
                    .map_err(|e| DispatchError::LanguageData(h.data, e.to_string()))?;
                let state = fi.state_at(pc.wrapping_sub(f.base) as u32);
                let tries: Vec<_> = fi.try_blocks_at(state).collect();
                // No try block around the state: the frame handler has nothing to offer.
                if tries.is_empty() {
                    return Ok(Phase1::Search);
                }
                let cxx = fault.code == EH_EXCEPTION_NUMBER;
                // Compiled with /EHs (synchronous): the handler ignores other exceptions.
                if !cxx && synchronous_only(&fi) {
                    return Ok(Phase1::Search);
                }
                let thrown = if cxx {
                    self.msvc_thrown_types(fault, mem)
                } else {
                    None
                };
                for t in tries {
                    for c in &t.catches {
                        let ellipsis = c.type_descriptor == 0 || c.type_name.as_deref() == Some("");
                        let hit = if cxx {
                            if ellipsis {
                                Some(true)
                            } else {
                                thrown.as_ref().map(|names| {
                                    names.iter().any(|n| Some(n) == c.type_name.as_ref())
                                })
                            }
                        } else {
                            // A foreign (SEH) exception: only catch (...), and not the
                            // "std" form that /EHs-era compilers mark with 0x40.
                            Some(ellipsis && c.adjectives & 0x40 == 0)
                        };
                        match hit {
                            Some(false) => {}
                            None => {
                                return Ok(Phase1::Stop(Outcome::NeedsType {
                                    frame: n,
                                    function,
                                    type_info: f.base.wrapping_add(c.type_descriptor as u64),
                                }))
                            }
                            Some(true) => {
                                let funclet = f.base.wrapping_add(c.handler as u64);
                                return Ok(Phase1::Unwind(Target {
                                    frame: n,
                                    establisher: s.establisher,
                                    ip: funclet,
                                    outcome: Outcome::Catch {
                                        frame: n,
                                        function,
                                        address: funclet,
                                        type_info: (c.type_descriptor != 0)
                                            .then(|| f.base.wrapping_add(c.type_descriptor as u64)),
                                    },
                                    try_low: Some(t.try_low),
                                }));
                            }
                        }
                    }
                }
                Ok(Phase1::Search)
            }
            other => Ok(Phase1::Stop(Outcome::Unsupported {
                frame: n,
                handler: h.address,
                what: format!("language handler {} is not modelled", other.name()),
            })),
        }
    }

    /// `__gxx_personality_seh0`'s search at ControlPc - 1 (libgcc reports the pc as after the
    /// instruction, and the personality steps back one byte).
    fn gxx(
        &self,
        f: FunctionRef<'i, 'a>,
        pc: u64,
        h: &HandlerInfo,
        thrown: Option<u64>,
        mem: &dyn MemoryReader,
    ) -> Result<CxxFound, DispatchError> {
        let err = |e: String| DispatchError::LanguageData(h.data, e);
        // GCC writes the LSDA itself as the handler data (`.seh_handlerdata` then the table),
        // and libgcc's _Unwind_GetLanguageSpecificData returns HandlerData as is.
        let lsda_rva = h.data.wrapping_sub(f.base) as u32;
        let lsda_addr = h.data;
        let func = f.base.wrapping_add(f.function.begin as u64);
        let lsda = Lsda::parse(f.image.bytes_at(lsda_rva), lsda_addr, func)
            .map_err(|e| err(e.to_string()))?;
        let read = |addr: u64| self.read_ptr(addr, mem);
        let matches = |t: u64| {
            let thrown = thrown?;
            let want = self.type_name(t, mem);
            let mut budget = 64usize;
            Some(self.gcc_is_or_derives(thrown, t, want.as_deref(), mem, 0, &mut budget))
        };
        let (_, _, found) = cxx_search(&lsda, pc.wrapping_sub(1), &read, &matches)
            .map_err(|e| err(e.to_string()))?;
        Ok(found)
    }

    /// A pointer-sized value at `addr`: from the image holding it (relocated by the load
    /// delta), else from memory.
    fn read_ptr(&self, addr: u64, mem: &dyn MemoryReader) -> Option<u64> {
        if let Some((_, m)) = self.images.module_at(addr) {
            let b = m.image.read((addr - m.base) as u32, 8).ok()?;
            let v = u64::from_le_bytes(b.try_into().ok()?);
            if v == 0 {
                return Some(0);
            }
            return Some(v.wrapping_sub(m.image.image_base()).wrapping_add(m.base));
        }
        mem.read_u64(addr).ok()
    }

    /// A u32 from the image holding `addr`, else from memory.
    fn read_u32_any(&self, addr: u64, mem: &dyn MemoryReader) -> Option<u32> {
        if let Some((_, m)) = self.images.module_at(addr) {
            return m.image.read_u32((addr - m.base) as u32).ok();
        }
        mem.read_u32(addr).ok()
    }

    /// A NUL-terminated string (at most 512 bytes) from an image, else from memory.
    fn read_cstr(&self, p: u64, mem: &dyn MemoryReader) -> Option<String> {
        let mut s = Vec::new();
        for i in 0..512u64 {
            let a = p.wrapping_add(i);
            let b = match self.images.module_at(a) {
                Some((_, m)) => *m.image.bytes_at((a - m.base) as u32).first()?,
                None => {
                    let mut b = [0u8];
                    mem.read(a, &mut b).ok()?;
                    b[0]
                }
            };
            if b == 0 {
                return Some(String::from_utf8_lossy(&s).into_owned());
            }
            s.push(b);
        }
        None
    }

    /// The decorated names of every type an MSVC C++ exception can be caught as: its
    /// ThrowInfo's CatchableTypeArray (`ExceptionInformation`: magic, object, ThrowInfo,
    /// image base; the ThrowInfo's fields are RVAs from that base).
    pub fn msvc_thrown_types(&self, fault: &Fault, mem: &dyn MemoryReader) -> Option<Vec<String>> {
        let (&info, &base) = (fault.parameters.get(2)?, fault.parameters.get(3)?);
        let cta = base.wrapping_add(self.read_u32_any(info.wrapping_add(12), mem)? as u64);
        let count = self.read_u32_any(cta, mem)?.min(64);
        let mut names = Vec::new();
        for i in 0..count as u64 {
            let ct = base.wrapping_add(self.read_u32_any(cta + 4 + 4 * i, mem)? as u64);
            let td = base.wrapping_add(self.read_u32_any(ct.wrapping_add(4), mem)? as u64);
            names.push(self.read_cstr(td.wrapping_add(16), mem)?);
        }
        Some(names)
    }

    /// Whether the class `ty` (a GCC `type_info`) is `target` (same address or mangled name) or
    /// has it as a public base: `__si_class_type_info` has one base at +16,
    /// `__vmi_class_type_info` a count at +20 and (type, offset_flags) pairs from +24, where
    /// flag 2 marks a public base. The kind comes from the name of the vtable the type_info
    /// points into (vptr - 16), so it needs symbols (exact matches do not). Pointer and
    /// qualification conversions are not modelled.
    fn gcc_is_or_derives(
        &self,
        ty: u64,
        target: u64,
        target_name: Option<&str>,
        mem: &dyn MemoryReader,
        depth: usize,
        budget: &mut usize,
    ) -> bool {
        if ty == target {
            return true;
        }
        if target_name.is_some() && self.type_name(ty, mem).as_deref() == target_name {
            return true;
        }
        if depth >= 16 || *budget == 0 {
            return false;
        }
        *budget -= 1;
        let Some(vptr) = self.read_ptr(ty, mem) else {
            return false;
        };
        let kind = self
            .images
            .describe(vptr.wrapping_sub(16))
            .and_then(|(_, s)| s.filter(|&(_, off)| off == 0).map(|(n, _)| n.to_string()));
        match kind.as_deref() {
            Some("_ZTVN10__cxxabiv120__si_class_type_infoE") => {
                self.read_ptr(ty.wrapping_add(16), mem).is_some_and(|b| {
                    self.gcc_is_or_derives(b, target, target_name, mem, depth + 1, budget)
                })
            }
            Some("_ZTVN10__cxxabiv121__vmi_class_type_infoE") => {
                let n = self
                    .read_u32_any(ty.wrapping_add(20), mem)
                    .unwrap_or(0)
                    .min(64);
                (0..n as u64).any(|i| {
                    let at = ty.wrapping_add(24 + 16 * i);
                    let public = self
                        .read_u32_any(at.wrapping_add(8), mem)
                        .is_some_and(|f| f & 2 != 0);
                    public
                        && self.read_ptr(at, mem).is_some_and(|b| {
                            self.gcc_is_or_derives(b, target, target_name, mem, depth + 1, budget)
                        })
                })
            }
            _ => false,
        }
    }

    /// The mangled name of a GCC `type_info` (its second word points at the name).
    fn type_name(&self, type_info: u64, mem: &dyn MemoryReader) -> Option<String> {
        let p = self.read_ptr(type_info.wrapping_add(8), mem)?;
        self.read_cstr(p, mem)
    }

    /// `RtlUnwindEx(TargetFrame, TargetIp)` from the fault: each frame's termination handler,
    /// the target frame's with EXCEPTION_TARGET_UNWIND.
    fn phase2(
        &self,
        fault: &Fault,
        t: Target,
        thrown: Option<u64>,
        mem: &dyn MemoryReader,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, DispatchError> {
        let mut regs = fault.regs.clone();
        for n in 0..=t.frame {
            let pc = regs.rip().ok_or(DispatchError::MissingRegisters)?;
            let s = self.step(&regs, mem, UNW_FLAG_UHANDLER)?;
            let is_target = s.establisher == t.establisher;
            if n == t.frame && !is_target {
                return Err(DispatchError::InvalidUnwindTarget {
                    frame: n,
                    establisher: s.establisher,
                    target: t.establisher,
                });
            }
            if let (Some((address, data)), Some(f)) = (s.handler, s.func) {
                let function = f.base.wrapping_add(f.function.begin as u64);
                let h = HandlerInfo {
                    address,
                    data,
                    language: self.language(address),
                };
                let data_rva = data.wrapping_sub(f.base) as u32;
                match &h.language {
                    Language::CSpecific => {
                        let table = ScopeTable::parse(f.image.bytes_at(data_rva), data_rva)
                            .map_err(|e| DispatchError::LanguageData(data, e.to_string()))?;
                        let rva = pc.wrapping_sub(f.base) as u32;
                        let target_rva = t.ip.wrapping_sub(f.base) as u32;
                        // The scopes holding the target pc, as (JumpTarget, HandlerAddress):
                        // built once, so hostile tables cost linear time, not quadratic.
                        let at_target: std::collections::HashSet<(u32, u32)> = table
                            .records()
                            .filter(|o| o.contains(target_rva))
                            .map(|o| (o.jump_target, o.handler))
                            .collect();
                        for (i, r) in table.records().enumerate() {
                            if !r.contains(rva) {
                                continue;
                            }
                            let stop = match self.options.scope_rules {
                                // At the target frame, a scope that also holds the target pc
                                // (or a split piece of it) is not being left; nor is the
                                // __except scope whose handler is the target.
                                ScopeRules::Windows => {
                                    (is_target
                                        && at_target.contains(&(r.jump_target, r.handler)))
                                        || (r.jump_target != 0
                                            && is_target
                                            && target_rva == r.jump_target)
                                }
                                ScopeRules::Wine8 => {
                                    r.jump_target == 0 && is_target && r.contains(target_rva)
                                }
                            };
                            if stop {
                                break;
                            }
                            if r.jump_target == 0 {
                                events.push(Event::Finally {
                                    frame: n,
                                    function,
                                    scope: i,
                                    address: f.base.wrapping_add(r.handler as u64),
                                });
                            }
                        }
                    }
                    // What libgcc runs when another handler unwinds a foreign exception
                    // through a GCC frame is not observed: say so rather than guess.
                    Language::GxxSeh if !is_gcc_code(fault.code) => {
                        return Ok(Outcome::Unsupported {
                            frame: n,
                            handler: address,
                            what: format!(
                                "unwinding foreign exception {:#x} through a GCC frame is not modelled",
                                fault.code
                            ),
                        })
                    }
                    Language::GxxSeh if !is_target => match self.gxx(f, pc, &h, thrown, mem)? {
                        CxxFound::Cleanup { landing_pad } => events.push(Event::Cleanup {
                            frame: n,
                            function,
                            address: landing_pad,
                        }),
                        CxxFound::Terminate => return Ok(Outcome::Terminate { frame: n }),
                        _ => {}
                    },
                    Language::GxxSeh => {}
                    Language::CxxFrameHandler3 => {
                        let fi = f
                            .image
                            .read_u32(data_rva)
                            .map_err(|e| e.to_string())
                            .and_then(|r| FuncInfo::parse(f.image, r).map_err(|e| e.to_string()))
                            .map_err(|e| DispatchError::LanguageData(data, e))?;
                        // Other frames unwind to the empty state; the catching frame to its try
                        // block's low state (destructors of the try body), then the catch runs.
                        // /EHs code does nothing at all for a non-C++ exception, not even
                        // destructors (vcruntime and Wine's msvcrt agree).
                        let to = if fault.code != EH_EXCEPTION_NUMBER && synchronous_only(&fi) {
                            None
                        } else if is_target {
                            t.try_low
                        } else {
                            Some(-1)
                        };
                        if let Some(to) = to {
                            let state = fi.state_at(pc.wrapping_sub(f.base) as u32);
                            for (_, action) in fi.unwind_actions(state, to) {
                                events.push(Event::Cleanup {
                                    frame: n,
                                    function,
                                    address: f.base.wrapping_add(action as u64),
                                });
                            }
                        }
                    }
                    other => {
                        return Ok(Outcome::Unsupported {
                            frame: n,
                            handler: address,
                            what: format!("termination handler {} is not modelled", other.name()),
                        })
                    }
                }
            }
            if is_target {
                return Ok(t.outcome);
            }
            regs = s.caller;
        }
        Err(DispatchError::InvalidUnwindTarget {
            frame: t.frame,
            establisher: 0,
            target: t.establisher,
        })
    }
}

/// libgcc's own exception codes: STATUS_GCC_THROW, _UNWIND and _FORCED.
fn is_gcc_code(code: u32) -> bool {
    matches!(code, STATUS_GCC_THROW | 0x2147_4343 | 0x2247_4343)
}

/// FuncInfo from /EHs code (magic 0x19930522 or later with EHFlags bit 0): its frame handler
/// acts only on C++ exceptions.
fn synchronous_only(fi: &FuncInfo) -> bool {
    fi.magic >= 0x1993_0522 && fi.eh_flags & 1 != 0
}

/// The thrown type of a libgcc C++ exception: `ExceptionInformation[0]` is the
/// `_Unwind_Exception`, the last member of libstdc++'s `__cxa_exception`, whose first member
/// (80 bytes before it on x64) is the `type_info` pointer. Only for primary exceptions
/// (class `GNUCC++\0`).
pub fn gcc_thrown_type(fault: &Fault, mem: &dyn MemoryReader) -> Option<u64> {
    if fault.code != STATUS_GCC_THROW {
        return None;
    }
    let ue = *fault.parameters.first()?;
    let class = mem.read_u64(ue).ok()?;
    if class != u64::from_be_bytes(*b"GNUCC++\0") {
        return None;
    }
    mem.read_u64(ue.checked_sub(80)?).ok().filter(|&t| t != 0)
}

//! Who handles a fault: Windows' two-phase exception dispatch and the Linux kernel's
//! `__ex_table` fixups, behind one vocabulary.
//!
//! - Windows ([`ExceptionResolver`]): phase 1 (`RtlDispatchException`) unwinds from the fault
//!   with UNW_FLAG_EHANDLER, looking each ControlPc up as is (not minus one), and asks each
//!   frame's language handler; phase 2 (`RtlUnwindEx`) unwinds again from the fault up to the
//!   frame whose establisher is the target with UNW_FLAG_UHANDLER, running termination handlers
//!   (the target frame's with EXCEPTION_TARGET_UNWIND). Code is looked up in the loaded images,
//!   then in the dynamic function tables ([`CodeImages`]). Frame numbers are `xunwind stack`'s.
//! - Linux ([`KernelResolver`]): the exact `__ex_table` lookup over vmlinux, then the module
//!   holding the ip (BPF tables are not loaded); a fixup with its decoded type and register
//!   effect, or an oops with the ORC stack it would print ([`KernelResolver::oops_stack`]).
//!
//! Language data, by handler (identified by name: exports, COFF symbols, import thunks):
//! - `__C_specific_handler` — decoded and simulated fully: filters in table order (a constant 1
//!   is not called; other filters' results are [`Decisions`]), `__finally` blocks in phase 2 with
//!   Windows' target-frame rules ([`ScopeRules::Windows`]) or Wine 8's ([`ScopeRules::Wine8`]).
//! - `__gxx_personality_seh0` — the LSDA (the handler data itself) decoded fully: header, call
//!   sites, actions, type table. Simulated for libgcc C++ exceptions: cleanups (destructors)
//!   in phase 2, the catch matched by `type_info` address or mangled name, or as a public base
//!   class (through `__si_class_type_info` / `__vmi_class_type_info` links, which needs the
//!   symbols naming their vtables); pointer and qualification conversions are not modelled;
//!   exception specifications are taken as satisfied; a pc
//!   without a call site is `std::terminate`. Foreign (non-GCC) exceptions are ignored in
//!   phase 1, as libgcc does (observed under wine64); unwinding one through a GCC frame is
//!   [`Outcome::Unsupported`].
//! - `__gnat_personality_seh0` — same LSDA format; Ada's choice matching is not simulated
//!   ([`Outcome::Unsupported`]).
//! - `__CxxFrameHandler3` — FH3 FuncInfo decoded fully (IP-to-state map, try blocks, catch
//!   clauses, unwind map). Simulated: /EHs code ignores non-C++ exceptions in both phases; a
//!   C++ exception is caught by the first clause whose decorated type name is in the ThrowInfo's
//!   CatchableTypeArray (or `catch (...)`; const/reference adjectives are not checked); the
//!   unwind map's destructors run in phase 2, the catching frame's down to its try block.
//! - `__CxxFrameHandler4` (compressed FuncInfo4) and any other handler: not decoded,
//!   [`Outcome::Unsupported`].
//!
//! Stack limits ([`DispatchOptions::stack_limits`]) are checked as RtlDispatchException does
//! when known. Not simulated: collided unwinds and nested exceptions; the event list and the
//! outcome are non-exhaustive enums so that they can be added.

mod images;
mod linux;
mod windows;

pub use images::{CodeImages, FunctionRef, PeModule};
pub use linux::{KernelFixup, KernelResolution, KernelResolver};
pub use windows::{
    gcc_thrown_type, Decisions, DispatchOptions, ExceptionResolver, Fault, ScopeRules,
    EH_EXCEPTION_NUMBER, STATUS_GCC_THROW,
};

use core::fmt;
use xunwind_core::UnwindError;

/// What an exception filter returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterResult {
    /// EXCEPTION_EXECUTE_HANDLER (1, or any positive value).
    ExecuteHandler,
    /// EXCEPTION_CONTINUE_SEARCH (0).
    ContinueSearch,
    /// EXCEPTION_CONTINUE_EXECUTION (-1, or any negative value).
    ContinueExecution,
}

impl FilterResult {
    /// As `__C_specific_handler` reads a filter's return value.
    pub fn from_value(v: i32) -> Self {
        match v {
            v if v > 0 => FilterResult::ExecuteHandler,
            0 => FilterResult::ContinueSearch,
            _ => FilterResult::ContinueExecution,
        }
    }

    /// `EXECUTE_HANDLER`, `CONTINUE_SEARCH` or `CONTINUE_EXECUTION`.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterResult::ExecuteHandler => "EXECUTE_HANDLER",
            FilterResult::ContinueSearch => "CONTINUE_SEARCH",
            FilterResult::ContinueExecution => "CONTINUE_EXECUTION",
        }
    }

    /// Parses [`FilterResult::as_str`]'s names or a number.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "EXECUTE_HANDLER" => FilterResult::ExecuteHandler,
            "CONTINUE_SEARCH" => FilterResult::ContinueSearch,
            "CONTINUE_EXECUTION" => FilterResult::ContinueExecution,
            n => FilterResult::from_value(n.parse().ok()?),
        })
    }
}

/// Which language handler a frame has, identified by the handler function's name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Language {
    /// `__C_specific_handler` (SEH `__try`).
    CSpecific,
    /// GCC's `__gxx_personality_seh0` (C++ on mingw).
    GxxSeh,
    /// GCC's `__gnat_personality_seh0` (Ada on mingw).
    GnatSeh,
    /// MSVC `__CxxFrameHandler3`.
    CxxFrameHandler3,
    /// MSVC `__CxxFrameHandler4`.
    CxxFrameHandler4,
    /// Another handler (its name, when known).
    Unknown(Option<String>),
}

impl Language {
    /// Classifies a handler by its function name.
    pub fn from_name(name: &str) -> Self {
        let n = name.trim_start_matches("__imp_");
        match n {
            "__C_specific_handler" | "_C_specific_handler" => Language::CSpecific,
            "__gxx_personality_seh0" => Language::GxxSeh,
            "__gnat_personality_seh0" => Language::GnatSeh,
            "__CxxFrameHandler3" => Language::CxxFrameHandler3,
            "__CxxFrameHandler4" => Language::CxxFrameHandler4,
            _ => Language::Unknown(Some(n.to_string())),
        }
    }

    /// A name for messages.
    pub fn name(&self) -> &str {
        match self {
            Language::CSpecific => "__C_specific_handler",
            Language::GxxSeh => "__gxx_personality_seh0",
            Language::GnatSeh => "__gnat_personality_seh0",
            Language::CxxFrameHandler3 => "__CxxFrameHandler3",
            Language::CxxFrameHandler4 => "__CxxFrameHandler4",
            Language::Unknown(Some(n)) => n,
            Language::Unknown(None) => "(unnamed handler)",
        }
    }
}

/// A frame's language handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The handler's address.
    pub address: u64,
    /// The language data's address (just past the handler RVA in UNWIND_INFO).
    pub data: u64,
    /// What kind of handler it is.
    pub language: Language,
}

/// A frame visited by phase 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Frame number as `xunwind stack` numbers it (0 = the faulting frame).
    pub number: usize,
    /// Frame 0: the fault's rip; later: the return address (ControlPc).
    pub pc: u64,
    /// The stack pointer in this frame.
    pub sp: u64,
    /// The establisher frame.
    pub establisher: u64,
    /// The start of the function (its primary `.pdata` entry's), `None` for a leaf.
    pub function: Option<u64>,
    /// The exception handler, if the frame has one at this pc.
    pub handler: Option<HandlerInfo>,
}

/// Something that runs (or is decided) during dispatch, in Windows' order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Phase 1: an `__except` filter (or a constant EXECUTE_HANDLER, `address` None).
    Filter {
        /// Frame number.
        frame: usize,
        /// The function owning the scope.
        function: u64,
        /// Index in the scope table.
        scope: usize,
        /// The filter function; `None` for the constant.
        address: Option<u64>,
        /// Its result.
        result: FilterResult,
    },
    /// Phase 2: a `__finally` block.
    Finally {
        /// Frame number.
        frame: usize,
        /// The function owning the scope.
        function: u64,
        /// Index in the scope table.
        scope: usize,
        /// The termination handler.
        address: u64,
    },
    /// Phase 2: a C++ cleanup (destructors): a GCC landing pad or an MSVC unwind funclet.
    Cleanup {
        /// Frame number.
        frame: usize,
        /// The function owning it.
        function: u64,
        /// The landing pad or funclet.
        address: u64,
    },
}

impl Event {
    /// 1 for filters, 2 for termination handlers.
    pub fn phase(&self) -> u8 {
        match self {
            Event::Filter { .. } => 1,
            _ => 2,
        }
    }
}

/// How dispatch ends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Execution resumes in an `__except` block.
    Except {
        /// Frame number.
        frame: usize,
        /// The function.
        function: u64,
        /// The `__except` body (the unwind's TargetIp).
        address: u64,
    },
    /// Execution resumes in a C++ `catch` (the landing pad).
    Catch {
        /// Frame number.
        frame: usize,
        /// The function.
        function: u64,
        /// The landing pad.
        address: u64,
        /// The matching clause's `type_info` (`None`: `catch (...)`).
        type_info: Option<u64>,
    },
    /// A filter returned CONTINUE_EXECUTION: execution resumes at the faulting context.
    Continue {
        /// The frame whose filter said so.
        frame: usize,
    },
    /// No handler took it (the reason the search ended).
    Unhandled {
        /// Why the walk ended.
        reason: &'static str,
    },
    /// A filter's result is needed to go on.
    NeedsFilter {
        /// Frame number.
        frame: usize,
        /// The function.
        function: u64,
        /// The filter function.
        address: u64,
    },
    /// A C++ catch clause needs the thrown type to decide.
    NeedsType {
        /// Frame number.
        frame: usize,
        /// The function.
        function: u64,
        /// The clause's `type_info`.
        type_info: u64,
    },
    /// The C++ personality calls `std::terminate` (no call-site record covers the pc).
    Terminate {
        /// Frame number.
        frame: usize,
    },
    /// A handler whose decisions this model does not make.
    Unsupported {
        /// Frame number.
        frame: usize,
        /// The handler.
        handler: u64,
        /// What is not modelled.
        what: String,
    },
}

/// The result of a dispatch: frames of phase 1, events in order, and the outcome.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// Frames phase 1 visited.
    pub frames: Vec<FrameInfo>,
    /// Filters, finally blocks and cleanups, in the order they run.
    pub events: Vec<Event>,
    /// Where execution goes.
    pub outcome: Outcome,
}

/// Why a dispatch could not be modelled at all.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchError {
    /// The fault's registers lack rip or rsp.
    MissingRegisters,
    /// Unwinding failed in phase 2 (phase 1 reports it as unhandled).
    Unwind(UnwindError),
    /// Language data at this address is malformed.
    LanguageData(u64, String),
    /// Phase 2 did not meet the target frame (Windows: STATUS_INVALID_UNWIND_TARGET).
    InvalidUnwindTarget {
        /// The frame where it was expected.
        frame: usize,
        /// The establisher frame found there.
        establisher: u64,
        /// The target frame.
        target: u64,
    },
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::MissingRegisters => f.write_str("the fault context lacks rip or rsp"),
            DispatchError::Unwind(e) => write!(f, "unwind failed: {e}"),
            DispatchError::LanguageData(a, e) => write!(f, "language data at {a:#x}: {e}"),
            DispatchError::InvalidUnwindTarget {
                frame,
                establisher,
                target,
            } => write!(
                f,
                "phase 2 frame {frame} has establisher {establisher:#x}, not the target {target:#x}"
            ),
        }
    }
}

impl std::error::Error for DispatchError {}

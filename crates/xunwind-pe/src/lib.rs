//! Windows x64 unwind data, read the way Windows reads it.
//!
//! Layers, from the bytes up:
//! - [`PeImage`]: a PE32+ image (file layout or mapped) with RVA-addressed, zero-copy reads and
//!   its `.pdata` function table;
//! - [`RuntimeFunction`], [`FunctionTable`]: `.pdata` entries and `RtlLookupFunctionEntry`;
//! - [`UnwindInfo`], [`UnwindCode`]: `.xdata` (UNWIND_INFO versions 1 and 2, every UWOP code,
//!   chained info, handlers);
//! - [`virtual_unwind`]: `RtlVirtualUnwind`, one frame as Windows unwinds it;
//! - [`ScopeTable`]: `__C_specific_handler` language data (`__try` scopes).
#![deny(missing_docs)]

mod compiled;
mod cxx;
mod dynamic;
mod epilog;
mod error;
mod image;
mod lsda;
mod pdata;
mod probes;
mod scope;
mod unwind;
mod walker;
mod xdata;

pub use compiled::{CompiledFunction, MAX_SCANNED_FUNCTION};
pub use cxx::{CatchClause, CxxError, FuncInfo, TryBlock, MAX_CXX_ENTRIES};
pub use dynamic::{
    DynamicEntry, DynamicFunctionTables, DynamicTableError, DynamicTableId, FunctionTableCallback,
};
pub use epilog::{
    match_epilog, match_epilog_wine8, may_start_epilog, Epilog, EpilogAdjust, EpilogEnd, JumpJudge,
};
pub use error::PeError;
pub use image::{Layout, PeImage};
pub use lsda::{
    cxx_search, Action, CallSite, CallSites, CxxFound, Encoded, Lsda, LsdaError, ReadPtr,
    DW_EH_PE_OMIT, MAX_LSDA_RECORDS,
};
pub use pdata::{FunctionTable, RuntimeFunction, RUNTIME_FUNCTION_SIZE};
pub use probes::{probe_points, ProbePoint};
pub use scope::{ScopeKind, ScopeRecord, ScopeTable, EXCEPTION_EXECUTE_HANDLER};
pub use unwind::{
    unwind_leaf, virtual_unwind, Compat, EpilogFrameRule, UnwindOptions, VirtualUnwind,
    MAX_CHAIN_DEPTH,
};
pub use walker::PeUnwinder;
pub use xdata::{
    UnwindCode, UnwindCodes, UnwindInfo, UnwindOp, UNW_FLAG_CHAININFO, UNW_FLAG_EHANDLER,
    UNW_FLAG_UHANDLER,
};

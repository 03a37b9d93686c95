//! Core types shared by every xunwind unwinder.
//!
//! Nothing here knows a file format: the x64 register set ([`Regs`]), memory access
//! ([`MemoryReader`]), the address-range lookup every table in the project uses ([`RangeTable`]),
//! and the one-step frame-walker interface ([`FrameWalker`]) that PE unwind info, DWARF CFI, the
//! kernel's ORC tables and the fallbacks all implement.
#![deny(missing_docs)]

mod memory;
mod range;
mod regs;
mod rule;
mod walker;

pub use memory::{MemoryError, MemoryReader, Region, RegionMemory, SliceMemory, SpanReader};
pub use range::{RangeKey, RangeTable, RangeTableError};
pub use regs::{Reg, Regs, REG_NAMES};
pub use rule::{unwind_by_rule, CompactRule, RULE_SAVES};
pub use walker::{
    ContextPointers, FrameWalker, Handler, PcKind, Step, StepInfo, Trust, UnwindError,
};

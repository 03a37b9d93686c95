//! xunwind: x64 stack unwinding and exception resolution, faithful to Windows and Linux.
//!
//! This facade re-exports the format crates: [`core`] (registers, memory, range tables, the
//! frame-walker trait) and [`pe`] (Windows x64 unwind data).
#![deny(missing_docs)]

pub use xunwind_core as core;
pub use xunwind_pe as pe;

pub use xunwind_core::{
    FrameWalker, MemoryError, MemoryReader, PcKind, RangeTable, Reg, Regs, SliceMemory, Step,
    Trust, UnwindError,
};

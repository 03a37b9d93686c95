//! xunwind: x64 stack unwinding and exception resolution, faithful to Windows and Linux.
//!
//! This facade re-exports the format crates — [`core`] (registers, memory, range tables, the
//! frame-walker trait), [`pe`] (Windows x64 unwind data) and [`extable`] (Linux `__ex_table`
//! and ORC) — and adds what a debugger calls: an
//! [`AddressSpace`] of modules and a [`StackWalker`] that walks a whole stack with unwind info,
//! then frame pointers, then scanning, saying how each frame was found.
#![deny(missing_docs)]

mod space;
mod walk;

pub use xunwind_core as core;
pub use xunwind_extable as extable;
pub use xunwind_pe as pe;

pub use space::{AddressSpace, Module, ModuleId};
pub use walk::{Frame, StackWalker, StopReason, Walk};
pub use xunwind_core::{
    FrameWalker, MemoryError, MemoryReader, PcKind, RangeTable, Reg, Regs, SliceMemory, Step,
    Trust, UnwindError,
};

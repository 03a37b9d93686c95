//! xunwind: x64 stack unwinding and exception resolution, faithful to Windows and Linux.
//!
//! This facade re-exports the format crates — [`core`] (registers, memory, range tables, the
//! frame-walker trait), [`pe`] (Windows x64 unwind data) and [`extable`] (Linux `__ex_table`
//! and ORC) — and adds what a debugger calls: an
//! [`AddressSpace`] of modules and a [`StackWalker`] that walks a whole stack with unwind info,
//! then frame pointers, then scanning, saying how each frame was found, and a [`Target`] read
//! from a minidump or an ELF core file.
#![deny(missing_docs)]

pub mod demangle;
pub mod dispatch;
mod linux;
mod space;
mod target;
mod walk;
mod windows;

pub use xunwind_core as core;
pub use xunwind_extable as extable;
pub use xunwind_pe as pe;

pub use dispatch::{
    CodeImages, Decisions, Dispatch, DispatchError, DispatchOptions, Event, ExceptionResolver,
    Fault, FilterResult, FrameInfo, FunctionRef, HandlerInfo, KernelFixup, KernelResolution,
    KernelResolver, Language, Outcome, PeModule,
};
#[cfg(all(feature = "live", target_os = "linux"))]
pub use linux::live::{LiveError, LiveMemory, LiveProcess};
pub use space::{AddressSpace, Module, ModuleId};
pub use target::{
    CodeView, ExceptionRecord, LoadOptions, Location, ModuleImage, PeRecord, Platform, Symbol,
    Symbolize, Symbols, Target, TargetError, Thread,
};
pub use walk::{Frame, StackWalker, StopReason, Walk, WalkCache};
pub use xunwind_core::{
    FrameWalker, MemoryError, MemoryReader, PcKind, RangeTable, Reg, Regs, SliceMemory, Step,
    Trust, UnwindError,
};

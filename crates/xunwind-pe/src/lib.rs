//! Windows x64 unwind data, read the way Windows reads it.
//!
//! Layers, from the bytes up:
//! - [`PeImage`]: a PE32+ image (file layout or mapped) with RVA-addressed, zero-copy reads and
//!   its `.pdata` function table;
//! - [`RuntimeFunction`], [`FunctionTable`]: `.pdata` entries and `RtlLookupFunctionEntry`;
//! - [`UnwindInfo`], [`UnwindCode`]: `.xdata` (UNWIND_INFO versions 1 and 2, every UWOP code,
//!   chained info, handlers).
#![deny(missing_docs)]

mod error;
mod image;
mod pdata;
mod xdata;

pub use error::PeError;
pub use image::{Layout, PeImage};
pub use pdata::{FunctionTable, RuntimeFunction, RUNTIME_FUNCTION_SIZE};
pub use xdata::{
    UnwindCode, UnwindCodes, UnwindInfo, UnwindOp, UNW_FLAG_CHAININFO, UNW_FLAG_EHANDLER,
    UNW_FLAG_UHANDLER,
};

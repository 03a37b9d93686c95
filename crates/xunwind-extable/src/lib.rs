//! The Linux kernel's exception tables (`__ex_table`) and ORC unwind tables, read as the kernel
//! reads them.
//!
//! Layers, from the bytes up:
//! - [`format`](mod@format): the raw entry layouts ([`ExTableFormat`]) and [`KernelVersion`] detection;
//! - [`KernelFile`]: a vmlinux, a compressed bzImage/vmlinuz ([`Compression`]) or a `.ko`
//!   module, whose table is assembled from its relocations ([`ModuleEntry`]);
//! - [`ExTable`] / [`ExceptionTables`]: sorted tables with the kernel's exact-match lookup, and
//!   the kernel's search order across vmlinux, modules and BPF programs;
//! - [`decode`](mod@decode): what an entry does (`EX_TYPE_*`, register, flags, immediate, effect);
//! - [`orc`]: `.orc_unwind_ip`/`.orc_unwind`, the `orc_lookup` accelerator and an ORC
//!   [`xunwind_core::FrameWalker`].
#![deny(missing_docs)]

mod compress;
pub mod decode;
mod error;
pub mod format;
mod kernel;
pub mod orc;
mod table;

pub use compress::{decompress, find_payload, Compression, MAX_DECOMPRESSED};
pub use decode::{decode, Fixup};
pub use error::{Error, Result};
pub use format::{parse_entries, ExTableEntry, ExTableFormat, Extra, KernelVersion, Machine};
pub use kernel::{
    FileKind, KernelFile, ModuleEntry, ModuleLayout, Options, OrcSections, SecOff, Section, Symbol,
    Symbols, SHF_ALLOC, SHF_EXECINSTR, SHF_RO_AFTER_INIT, SHF_WRITE,
};
pub use table::{ExTable, ExceptionTables, FixupKind, Found, Source};

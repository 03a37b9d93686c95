//! Windows targets: minidumps, PE modules unwound with `.pdata`, PDB and export symbols.

use crate::space::Module;
use crate::target::{LoadOptions, ModuleImage, Symbolize, Target, TargetError};
use xunwind_core::RegionMemory;

/// Reads a Windows x64 minidump.
pub(crate) fn read_minidump(
    _bytes: Vec<u8>,
    _options: &LoadOptions,
) -> Result<Target, TargetError> {
    Err(TargetError::Unsupported(
        "minidump reading is not built yet".into(),
    ))
}

/// The unwinder for a PE module of a dump.
pub(crate) fn module_unwinder<'t>(
    _module: &'t ModuleImage,
    _memory: &'t RegionMemory<'static>,
) -> Option<Module<'t>> {
    None
}

/// The symbols of a PE module (PDB found by its CodeView record, else exports).
pub(crate) fn module_symbols<'t>(
    _module: &'t ModuleImage,
    _options: &LoadOptions,
) -> Option<Box<dyn Symbolize + 't>> {
    None
}

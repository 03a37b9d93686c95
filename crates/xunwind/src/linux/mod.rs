//! Linux targets: ELF core files, ELF modules unwound with DWARF CFI, ELF symbols.

use crate::space::Module;
use crate::target::{LoadOptions, ModuleImage, Symbolize, Target, TargetError};
use xunwind_core::RegionMemory;

/// Reads an x86-64 ELF core file.
pub(crate) fn read_core(_bytes: Vec<u8>, _options: &LoadOptions) -> Result<Target, TargetError> {
    Err(TargetError::Unsupported(
        "core file reading is not built yet".into(),
    ))
}

/// The unwinder for an ELF module of a core file.
pub(crate) fn module_unwinder<'t>(
    _module: &'t ModuleImage,
    _memory: &'t RegionMemory<'static>,
) -> Option<Module<'t>> {
    None
}

/// The symbols of an ELF module (symbol table, else dynamic symbols).
pub(crate) fn module_symbols<'t>(
    _module: &'t ModuleImage,
    _options: &LoadOptions,
) -> Option<Box<dyn Symbolize + 't>> {
    None
}

//! Names for PE code: the PDB the CodeView record names (procedures with their sizes, public
//! symbols), else the file's COFF symbol table (mingw keeps one) and its exports — the nearest
//! preceding symbol, as WinDbg does without a PDB.

use crate::target::{CodeView, LoadOptions, ModuleImage, Symbol, Symbolize};
use object::pe;
use object::pe::ImageNtHeaders64;
use object::read::coff::{CoffHeader, ImageSymbol as _};
use object::read::pe::{ExportTable, ImageNtHeaders, PeFile64};
use object::{LittleEndian as LE, Object};
use pdb::FallibleIterator;
use std::fs::File;
use std::path::{Path, PathBuf};
use xunwind_core::RegionMemory;

/// Where a symbol came from, in order of preference at the same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Procedure,
    Public,
    Coff,
    Export,
}

/// Function symbols sorted by RVA; `size` 0 means unknown (covers up to the next symbol).
#[derive(Debug, Default)]
pub(crate) struct SymbolTable {
    starts: Vec<u32>,
    sizes: Vec<u32>,
    names: Vec<String>,
}

impl SymbolTable {
    /// Sorts by address, keeping the preferred source at each address.
    fn new(mut entries: Vec<(u32, u32, Source, String)>) -> SymbolTable {
        entries.sort_by_key(|e| (e.0, e.2));
        entries.dedup_by_key(|e| e.0);
        let mut t = SymbolTable::default();
        for (start, size, _, name) in entries {
            t.starts.push(start);
            t.sizes.push(size);
            t.names.push(name);
        }
        t
    }

    fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

impl Symbolize for SymbolTable {
    fn symbolize(&self, module_offset: u64) -> Option<Symbol> {
        let rva = u32::try_from(module_offset).ok()?;
        let i = self.starts.partition_point(|&s| s <= rva).checked_sub(1)?;
        let offset = rva - self.starts[i];
        // A procedure's size is known: past its end lies code it does not name.
        if self.sizes[i] != 0 && offset >= self.sizes[i] {
            return None;
        }
        // Demangled here, for the few symbols printed, not for every symbol at load.
        Some(Symbol::new(&self.names[i], offset.into()))
    }
}

/// The symbols of a PE module (PDB found by its CodeView record, else COFF symbols and exports).
///
/// Without a file, an image the dump's memory holds whole is named by its exports.
pub(crate) fn module_symbols<'t>(
    module: &'t ModuleImage,
    memory: &RegionMemory<'static>,
    options: &LoadOptions,
) -> Option<Box<dyn Symbolize + 't>> {
    let file = module.file.as_deref();
    let codeview = module
        .pe
        .as_ref()
        .and_then(|p| p.codeview.clone())
        .or_else(|| file.and_then(file_codeview));
    if let Some(cv) = codeview {
        for path in pdb_candidates(&cv, module.located.as_deref(), &options.symbol_dirs) {
            // The pdb crate is not ours and a PDB is input like any other: a panic inside it
            // (a malformed stream it does not check) costs this module its names, nothing more.
            let loaded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_pdb(&path, &cv)));
            if let Ok(Some(table)) = loaded {
                if !table.is_empty() {
                    return Some(Box::new(table));
                }
            }
        }
    }
    let table = match file {
        Some(f) => image_symbols(f),
        None => mapped_exports(super::mapped_image(memory, module.base, module.size)?),
    };
    (!table.is_empty()).then(|| Box::new(table) as Box<dyn Symbolize + 't>)
}

/// The CodeView record in a PE file's debug directory.
fn file_codeview(data: &[u8]) -> Option<CodeView> {
    let pe = PeFile64::parse(data).ok()?;
    let cv = pe.pdb_info().ok()??;
    Some(CodeView {
        guid: cv.guid(),
        age: cv.age(),
        pdb_name: String::from_utf8_lossy(cv.path()).into_owned(),
    })
}

/// The GUID as symbol stores spell it: Data1-3 as numbers, then Data4's bytes, upper case.
fn guid_string(g: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    let mut s = format!("{d1:08X}{d2:04X}{d3:04X}");
    for b in &g[8..] {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Where the PDB may be: the recorded path, next to the module, then each symbol directory
/// (flat, any case, and symbol-store `name.pdb/GUIDAGE/name.pdb`).
fn pdb_candidates(cv: &CodeView, module: Option<&Path>, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let name = super::file_name(&cv.pdb_name).to_string();
    let mut out = vec![PathBuf::from(&cv.pdb_name)];
    if name.is_empty() {
        return out;
    }
    if let Some(dir) = module.and_then(Path::parent) {
        out.push(dir.join(&name));
    }
    let key = format!("{}{:X}", guid_string(&cv.guid), cv.age);
    let lower = name.to_lowercase();
    for dir in dirs {
        out.push(dir.join(&name));
        out.extend(
            super::list_dir(dir)
                .into_iter()
                .filter(|(n, _)| *n == lower)
                .map(|(_, p)| p),
        );
        out.push(dir.join(&name).join(&key).join(&name));
    }
    out.dedup();
    out
}

/// The procedures and public functions of the PDB at `path`, if its GUID and age match `cv`.
fn load_pdb(path: &Path, cv: &CodeView) -> Option<SymbolTable> {
    if !path.is_file() {
        return None;
    }
    let mut pdb = pdb::PDB::open(File::open(path).ok()?).ok()?;
    let info = pdb.pdb_information().ok()?;
    let (d1, d2, d3, d4) = info.guid.as_fields();
    let g = &cv.guid;
    let same_guid = d1 == u32::from_le_bytes([g[0], g[1], g[2], g[3]])
        && d2 == u16::from_le_bytes([g[4], g[5]])
        && d3 == u16::from_le_bytes([g[6], g[7]])
        && d4[..] == g[8..];
    let dbi = pdb.debug_information().ok()?;
    // The CodeView age is the DBI stream's; the info stream's is bumped by incremental links.
    let same_age = dbi.age() == Some(cv.age) || info.age == cv.age;
    if !same_guid || !same_age {
        return None;
    }
    let map = pdb.address_map().ok()?;
    let mut entries = Vec::new();
    if let Ok(globals) = pdb.global_symbols() {
        let mut it = globals.iter();
        while let Ok(Some(sym)) = it.next() {
            if let Ok(pdb::SymbolData::Public(p)) = sym.parse() {
                if p.function || p.code {
                    if let Some(rva) = p.offset.to_rva(&map) {
                        entries.push((rva.0, 0, Source::Public, p.name.to_string().into_owned()));
                    }
                }
            }
        }
    }
    if let Ok(mut modules) = dbi.modules() {
        while let Ok(Some(module)) = modules.next() {
            let Ok(Some(info)) = pdb.module_info(&module) else {
                continue;
            };
            let Ok(mut syms) = info.symbols() else {
                continue;
            };
            while let Ok(Some(sym)) = syms.next() {
                if let Ok(pdb::SymbolData::Procedure(p)) = sym.parse() {
                    if let Some(rva) = p.offset.to_rva(&map) {
                        let name = p.name.to_string().into_owned();
                        entries.push((rva.0, p.len, Source::Procedure, name));
                    }
                }
            }
        }
    }
    Some(SymbolTable::new(entries))
}

/// COFF function symbols and exports of a PE file.
fn image_symbols(data: &[u8]) -> SymbolTable {
    let mut entries = coff_functions(data);
    if let Ok(pe) = PeFile64::parse(data) {
        if let Ok(Some(table)) = pe.export_table() {
            push_exports(&table, &mut entries);
        }
    }
    SymbolTable::new(entries)
}

/// The exports of an image in its mapped layout (byte i at RVA i).
fn mapped_exports(image: &[u8]) -> SymbolTable {
    let mut entries = Vec::new();
    let dir = pe::ImageDosHeader::parse(image).ok().and_then(|dos| {
        let mut off = dos.nt_headers_offset().into();
        let (_, dirs) = ImageNtHeaders64::parse(image, &mut off).ok()?;
        let d = dirs.get(pe::IMAGE_DIRECTORY_ENTRY_EXPORT)?;
        Some((d.virtual_address.get(LE), d.size.get(LE)))
    });
    if let Some((va, size)) = dir {
        let start = va as usize;
        let data = image.get(start..start.saturating_add(size as usize).min(image.len()));
        if let Some(Ok(table)) = data.map(|d| ExportTable::parse(d, va)) {
            push_exports(&table, &mut entries);
        }
    }
    SymbolTable::new(entries)
}

/// Named exports that are code addresses (forwarders name another DLL's function).
fn push_exports(table: &ExportTable<'_>, entries: &mut Vec<(u32, u32, Source, String)>) {
    for (name_ptr, index) in table.name_iter() {
        let (Ok(name), Ok(rva)) = (
            table.name_from_pointer(name_ptr),
            table.address_by_index(index.into()),
        ) else {
            continue;
        };
        if !table.is_forward(rva) {
            let name = String::from_utf8_lossy(name).into_owned();
            entries.push((rva, 0, Source::Export, name));
        }
    }
}

/// Function symbols of the COFF symbol table a PE file may carry (mingw links keep it):
/// external or static symbols whose type is "function", at section RVA + value.
fn coff_functions(data: &[u8]) -> Vec<(u32, u32, Source, String)> {
    let mut out = Vec::new();
    let Ok(dos) = pe::ImageDosHeader::parse(data) else {
        return out;
    };
    let mut off = dos.nt_headers_offset().into();
    let Ok((nt, _)) = ImageNtHeaders64::parse(data, &mut off) else {
        return out;
    };
    let Ok(sections) = nt.sections(data, off) else {
        return out;
    };
    let Ok(symbols) = nt.file_header().symbols(data) else {
        return out;
    };
    for (_, sym) in symbols.iter() {
        let class = sym.storage_class();
        if !matches!(
            class,
            pe::IMAGE_SYM_CLASS_EXTERNAL | pe::IMAGE_SYM_CLASS_STATIC
        ) || sym.derived_type() != pe::IMAGE_SYM_DTYPE_FUNCTION
        {
            continue;
        }
        let n = sym.section_number();
        if n <= 0 {
            continue;
        }
        let Ok(section) = sections.section(object::SectionIndex(n as usize)) else {
            continue;
        };
        let Some(rva) = section.virtual_address.get(LE).checked_add(sym.value()) else {
            continue;
        };
        let Ok(name) = sym.name(symbols.strings()) else {
            continue;
        };
        out.push((
            rva,
            0,
            Source::Coff,
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_names_are_demangled_with_the_linkage_name_kept() {
        let table = SymbolTable::new(vec![
            (
                0x1000,
                0,
                Source::Public,
                "?method@Klass@ns@@QEAAXXZ".into(),
            ),
            (0x1100, 0, Source::Coff, "_ZN2ns5twiceIiEET_S1_".into()),
            (0x1200, 0x10, Source::Procedure, "ns::Klass::get".into()),
            (0x1300, 0, Source::Export, "plain_c".into()),
            (0x1400, 0, Source::Coff, "_ZN2ns".into()),
        ]);
        let s = table.symbolize(0x1021).unwrap();
        assert_eq!(s.name, "ns::Klass::method");
        assert_eq!(s.mangled.as_deref(), Some("?method@Klass@ns@@QEAAXXZ"));
        assert_eq!(s.raw_name(), "?method@Klass@ns@@QEAAXXZ");
        assert_eq!(s.offset, 0x21);
        let s = table.symbolize(0x1100).unwrap();
        assert_eq!((s.name.as_str(), s.offset), ("ns::twice<int>", 0));
        assert_eq!(s.mangled.as_deref(), Some("_ZN2ns5twiceIiEET_S1_"));
        // A PDB procedure's name is already undecorated; a C name and a malformed one stay raw.
        for (rva, name) in [
            (0x1204, "ns::Klass::get"),
            (0x1300, "plain_c"),
            (0x1400, "_ZN2ns"),
        ] {
            let s = table.symbolize(rva).unwrap();
            assert_eq!((s.name.as_str(), s.mangled), (name, None));
        }
    }
}

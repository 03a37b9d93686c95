//! The code a Windows dispatcher can see: loaded PE images, then dynamic function tables.

use object::pe;
use object::read::coff::{CoffHeader, ImageSymbol};
use object::read::pe::{ImageNtHeaders, ImageThunkData};
use object::LittleEndian as LE;
use std::collections::HashMap;
use xunwind_pe::{DynamicFunctionTables, PeError, PeImage, RuntimeFunction};

/// A loaded PE image with the names the dispatcher needs (handlers, functions).
#[derive(Debug)]
pub struct PeModule<'a> {
    /// File name (`app.exe`, `ntdll.dll`).
    pub name: String,
    /// Load address.
    pub base: u64,
    /// The image.
    pub image: PeImage<'a>,
    /// Function names by RVA (exports and the COFF symbol table), sorted.
    symbols: Vec<(u32, String)>,
    /// Imported function names by the RVA of their IAT slot.
    imports: HashMap<u32, String>,
}

impl<'a> PeModule<'a> {
    /// Parses a PE file (disk layout) loaded at `base`, reading its exports, imports and COFF
    /// symbols for naming handlers and functions.
    pub fn parse(name: &str, base: u64, file: &'a [u8]) -> Result<Self, PeError> {
        let image = PeImage::parse(file)?;
        let (symbols, imports) = names(file).unwrap_or_default();
        Ok(PeModule {
            name: name.to_string(),
            base,
            image,
            symbols,
            imports,
        })
    }

    /// Wraps an image that has no names (synthetic or mapped images).
    pub fn from_image(name: &str, base: u64, image: PeImage<'a>) -> Self {
        PeModule {
            name: name.to_string(),
            base,
            image,
            symbols: Vec::new(),
            imports: HashMap::new(),
        }
    }

    /// Adds a name for an RVA (for images without symbols).
    pub fn add_symbol(&mut self, rva: u32, name: &str) {
        let i = self.symbols.partition_point(|(r, _)| *r <= rva);
        self.symbols.insert(i, (rva, name.to_string()));
    }

    /// Whether `addr` lies in the image.
    pub fn contains(&self, addr: u64) -> bool {
        addr.wrapping_sub(self.base) < self.image.size_of_image() as u64
    }

    /// The symbol at or before `rva`: (name, offset).
    pub fn symbol(&self, rva: u32) -> Option<(&str, u32)> {
        let i = self.symbols.partition_point(|(r, _)| *r <= rva);
        let (r, n) = self.symbols.get(i.checked_sub(1)?)?;
        Some((n, rva - r))
    }

    /// The name of the function at exactly `rva`: a symbol there, or for an import thunk
    /// (`jmp [rip+disp32]`) the imported name.
    pub fn name_at(&self, rva: u32) -> Option<&str> {
        if let Some((n, 0)) = self.symbol(rva) {
            return Some(n);
        }
        let code = self.image.bytes_at(rva);
        if code.len() >= 6 && code[0] == 0xff && code[1] == 0x25 {
            let disp = i32::from_le_bytes([code[2], code[3], code[4], code[5]]);
            let slot = rva.wrapping_add(6).wrapping_add(disp as u32);
            return self.imports.get(&slot).map(String::as_str);
        }
        None
    }
}

type Names = (Vec<(u32, String)>, HashMap<u32, String>);

fn names(file: &[u8]) -> Option<Names> {
    let dos = pe::ImageDosHeader::parse(file).ok()?;
    let mut off = dos.nt_headers_offset().into();
    let (nt, dirs) = pe::ImageNtHeaders64::parse(file, &mut off).ok()?;
    let sections = nt.sections(file, off).ok()?;
    let mut symbols = Vec::new();
    if let Ok(Some(exports)) = dirs.export_table(file, &sections) {
        if let Ok(list) = exports.exports() {
            for e in list {
                if let (Some(name), object::read::pe::ExportTarget::Address(rva)) =
                    (e.name, e.target)
                {
                    symbols.push((rva, String::from_utf8_lossy(name).into_owned()));
                }
            }
        }
    }
    if let Ok(table) = nt.file_header().symbols(file) {
        for (_, s) in table.iter() {
            let sec = s.section_number();
            if sec <= 0 || !s.is_definition() {
                continue;
            }
            let Some(h) = sections.section(object::SectionIndex(sec as usize)).ok() else {
                continue;
            };
            let Ok(name) = s.name(table.strings()) else {
                continue;
            };
            // Section symbols (`.text`) share addresses with the functions they hold.
            if name.starts_with(b".") {
                continue;
            }
            let rva = h.virtual_address.get(LE).wrapping_add(s.value());
            symbols.push((rva, String::from_utf8_lossy(name).into_owned()));
        }
    }
    symbols.sort();
    symbols.dedup_by_key(|(r, _)| *r);
    let mut imports = HashMap::new();
    if let Ok(Some(table)) = dirs.import_table(file, &sections) {
        if let Ok(mut descs) = table.descriptors() {
            while let Ok(Some(d)) = descs.next() {
                let iat = d.first_thunk.get(LE);
                let mut names_at = d.original_first_thunk.get(LE);
                if names_at == 0 {
                    names_at = iat;
                }
                let Ok(mut thunks) = table.thunks(names_at) else {
                    continue;
                };
                let mut i = 0u32;
                // Bounded by the section the thunks live in; cap anyway.
                while let Ok(Some(t)) = thunks.next::<pe::ImageNtHeaders64>() {
                    if i > 1 << 16 {
                        break;
                    }
                    if !t.is_ordinal() {
                        if let Ok((_, n)) = table.hint_name(t.address()) {
                            imports.insert(
                                iat.wrapping_add(8 * i),
                                String::from_utf8_lossy(n).into_owned(),
                            );
                        }
                    }
                    i += 1;
                }
            }
        }
    }
    Some((symbols, imports))
}

/// Where a function entry was found.
#[derive(Clone, Copy, Debug)]
pub struct FunctionRef<'t, 'a> {
    /// The image (or dynamic table's code region) its RVAs refer to.
    pub image: &'t PeImage<'a>,
    /// The base of those RVAs.
    pub base: u64,
    /// The entry `RtlLookupFunctionEntry` returns.
    pub function: RuntimeFunction,
    /// Index of the module, or `None` for a dynamic table.
    pub module: Option<usize>,
}

/// Loaded images and dynamic function tables, searched in Windows' order.
#[derive(Debug, Default)]
pub struct CodeImages<'a> {
    modules: Vec<PeModule<'a>>,
    /// Dynamic function tables (JIT code), consulted after the images.
    pub dynamic: DynamicFunctionTables<'a>,
}

impl<'a> CodeImages<'a> {
    /// Nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// The PE modules of a Windows target whose files were found (the others' code unwinds as
    /// leaves, as for any pc without unwind data).
    pub fn from_target(target: &'a crate::Target) -> Self {
        let mut images = CodeImages::new();
        for m in &target.modules {
            if let Some(file) = &m.file {
                if let Ok(pm) = PeModule::parse(&m.name, m.base, file) {
                    images.add(pm);
                }
            }
        }
        images
    }

    /// Adds a loaded image.
    pub fn add(&mut self, module: PeModule<'a>) {
        self.modules.push(module);
        self.modules.sort_by_key(|m| m.base);
    }

    /// The modules, by base address.
    pub fn modules(&self) -> &[PeModule<'a>] {
        &self.modules
    }

    /// The module holding `addr`, with its index.
    pub fn module_at(&self, addr: u64) -> Option<(usize, &PeModule<'a>)> {
        let i = self.modules.partition_point(|m| m.base <= addr);
        let m = self.modules.get(i.checked_sub(1)?)?;
        m.contains(addr).then_some((i - 1, m))
    }

    /// `RtlLookupFunctionEntry(pc)`: the image holding `pc` answers if it has an exception
    /// directory; otherwise (no image, or one without `.pdata`) the dynamic tables do.
    pub fn lookup_function_entry(&self, pc: u64) -> Option<FunctionRef<'_, 'a>> {
        if let Some((i, m)) = self.module_at(pc) {
            if m.image.pdata_directory().1 != 0 {
                let rva = u32::try_from(pc - m.base).ok()?;
                return Some(FunctionRef {
                    image: &m.image,
                    base: m.base,
                    function: m.image.lookup_function_entry(rva)?,
                    module: Some(i),
                });
            }
        }
        let d = self.dynamic.lookup(pc)?;
        Some(FunctionRef {
            image: d.image,
            base: d.base,
            function: d.function,
            module: None,
        })
    }

    /// `module!symbol+0xoff` style name parts for `addr`: (module, symbol, offset).
    pub fn describe(&self, addr: u64) -> Option<(&str, Option<(&str, u32)>)> {
        let (_, m) = self.module_at(addr)?;
        Some((&m.name, m.symbol((addr - m.base) as u32)))
    }

    /// The name of the function at exactly `addr`, if known (handler identification).
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        let (_, m) = self.module_at(addr)?;
        m.name_at((addr - m.base) as u32)
    }
}

//! A PE32+ image and RVA-addressed reads from it.

use crate::{FunctionTable, PeError, RuntimeFunction, UnwindInfo, RUNTIME_FUNCTION_SIZE};
use object::pe;
use object::pe::ImageNtHeaders64;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use object::LittleEndian as LE;

/// How the image bytes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// As stored on disk: RVAs are translated through the section table.
    File,
    /// As mapped by the loader: byte `i` is at RVA `i`.
    Mapped,
}

#[derive(Clone, Copy, Debug)]
struct Section {
    va: u32,
    /// Bytes readable from the file (raw size clipped to the virtual size and the file).
    len: u32,
    file_off: u32,
    executable: bool,
}

/// A PE32+ x64 image: its bytes, section map and `.pdata` function table.
#[derive(Clone, Debug)]
pub struct PeImage<'a> {
    data: &'a [u8],
    layout: Layout,
    image_base: u64,
    size_of_image: u32,
    sections: Vec<Section>,
    pdata_rva: u32,
    pdata_size: u32,
    functions: FunctionTable<'a>,
}

impl<'a> PeImage<'a> {
    /// Parses a PE32+ file as stored on disk.
    pub fn parse(data: &'a [u8]) -> Result<Self, PeError> {
        Self::parse_with(data, Layout::File)
    }

    /// Parses an image as mapped in memory by the loader.
    pub fn parse_mapped(data: &'a [u8]) -> Result<Self, PeError> {
        Self::parse_with(data, Layout::Mapped)
    }

    /// Parses `data` in the given layout.
    pub fn parse_with(data: &'a [u8], layout: Layout) -> Result<Self, PeError> {
        let dos = pe::ImageDosHeader::parse(data)
            .map_err(|_| PeError::BadHeader("invalid DOS header"))?;
        let mut off = dos.nt_headers_offset().into();
        let (nt, dirs) = ImageNtHeaders64::parse(data, &mut off)
            .map_err(|_| PeError::BadHeader("invalid or non-PE32+ NT headers"))?;
        let machine = nt.file_header().machine.get(LE);
        if machine != pe::IMAGE_FILE_MACHINE_AMD64 {
            return Err(PeError::UnsupportedMachine(machine));
        }
        let table = nt
            .sections(data, off)
            .map_err(|_| PeError::BadHeader("invalid section table"))?;
        let opt = nt.optional_header();
        let mut sections: Vec<Section> = table
            .iter()
            .map(|s| {
                let vsize = s.virtual_size.get(LE);
                let raw = s.size_of_raw_data.get(LE);
                let file_off = s.pointer_to_raw_data.get(LE);
                let len = match layout {
                    Layout::File => {
                        let avail = (data.len() as u64).saturating_sub(file_off as u64);
                        let raw = if vsize == 0 { raw } else { raw.min(vsize) };
                        (raw as u64).min(avail) as u32
                    }
                    Layout::Mapped => vsize.max(raw),
                };
                Section {
                    va: s.virtual_address.get(LE),
                    len,
                    file_off,
                    executable: s.characteristics.get(LE) & pe::IMAGE_SCN_MEM_EXECUTE != 0,
                }
            })
            .collect();
        sections.sort_by_key(|s| s.va);
        let (pdata_rva, pdata_size) = dirs
            .get(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION)
            .map_or((0, 0), |d| (d.virtual_address.get(LE), d.size.get(LE)));
        let mut img = PeImage {
            data,
            layout,
            image_base: opt.image_base(),
            size_of_image: opt.size_of_image(),
            sections,
            pdata_rva,
            pdata_size,
            functions: FunctionTable::new(&[]),
        };
        img.functions = FunctionTable::new(img.pdata_bytes());
        Ok(img)
    }

    /// An image made of one flat mapped buffer at RVA 0 and a function table at `pdata_rva`;
    /// for synthetic inputs (tests, fuzzing, JIT code) that have no headers.
    pub fn from_parts(data: &'a [u8], image_base: u64, pdata_rva: u32, pdata_size: u32) -> Self {
        let len = data.len().min(u32::MAX as usize) as u32;
        let mut img = PeImage {
            data,
            layout: Layout::Mapped,
            image_base,
            size_of_image: len,
            sections: vec![Section {
                va: 0,
                len,
                file_off: 0,
                executable: true,
            }],
            pdata_rva,
            pdata_size,
            functions: FunctionTable::new(&[]),
        };
        img.functions = FunctionTable::new(img.pdata_bytes());
        img
    }

    fn pdata_bytes(&self) -> &'a [u8] {
        if self.pdata_size == 0 {
            return &[];
        }
        let b = self.bytes_at(self.pdata_rva);
        &b[..b.len().min(self.pdata_size as usize)]
    }

    /// The image's preferred base address.
    pub fn image_base(&self) -> u64 {
        self.image_base
    }

    /// SizeOfImage.
    pub fn size_of_image(&self) -> u32 {
        self.size_of_image
    }

    /// The layout the image was parsed in.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The exception directory (RVA, size).
    pub fn pdata_directory(&self) -> (u32, u32) {
        (self.pdata_rva, self.pdata_size)
    }

    /// Problems with the exception directory that do not stop its use (truncation, odd size).
    pub fn pdata_problem(&self) -> Option<PeError> {
        let have = self.functions.len() * RUNTIME_FUNCTION_SIZE;
        if have < self.pdata_size as usize
            && self.bytes_at(self.pdata_rva).len() < self.pdata_size as usize
        {
            Some(PeError::OutOfImage {
                rva: self.pdata_rva,
                len: self.pdata_size,
            })
        } else if !(self.pdata_size as usize).is_multiple_of(RUNTIME_FUNCTION_SIZE) {
            Some(PeError::BadPdataSize(self.pdata_size))
        } else {
            None
        }
    }

    /// The `.pdata` function table.
    pub fn functions(&self) -> &FunctionTable<'a> {
        &self.functions
    }

    /// The bytes from `rva` to the end of what is readable in its section (empty if none).
    #[inline]
    pub fn bytes_at(&self, rva: u32) -> &'a [u8] {
        let data = self.data;
        match self.layout {
            Layout::Mapped => data.get(rva as usize..).unwrap_or(&[]),
            Layout::File => {
                // Few sections: a linear scan beats a search and keeps this branch-light.
                for s in &self.sections {
                    let rel = rva.wrapping_sub(s.va);
                    if rel < s.len {
                        let start = s.file_off as usize + rel as usize;
                        let end = s.file_off as usize + s.len as usize;
                        return data.get(start..end).unwrap_or(&[]);
                    }
                }
                &[]
            }
        }
    }

    /// Exactly `len` bytes at `rva`.
    #[inline]
    pub fn read(&self, rva: u32, len: usize) -> Result<&'a [u8], PeError> {
        self.bytes_at(rva).get(..len).ok_or(PeError::OutOfImage {
            rva,
            len: len as u32,
        })
    }

    /// A little-endian u32 at `rva`.
    #[inline]
    pub fn read_u32(&self, rva: u32) -> Result<u32, PeError> {
        let b = self.read(rva, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The RUNTIME_FUNCTION stored at `rva` (the target of an indirect or chained entry).
    pub fn runtime_function_at(&self, rva: u32) -> Result<RuntimeFunction, PeError> {
        let b = self.read(rva, RUNTIME_FUNCTION_SIZE)?;
        Ok(RuntimeFunction::from_bytes(b.try_into().expect("12 bytes")))
    }

    /// Whether `rva` lies in an executable section.
    pub fn is_executable(&self, rva: u32) -> bool {
        self.sections
            .iter()
            .any(|s| s.executable && rva.wrapping_sub(s.va) < s.len)
    }

    /// The UNWIND_INFO at `rva`.
    pub fn unwind_info(&self, rva: u32) -> Result<UnwindInfo<'a>, PeError> {
        UnwindInfo::parse(self.bytes_at(rva), rva)
    }

    /// `RtlLookupFunctionEntry`: the entry covering `rva`, with an indirect entry replaced by the
    /// RUNTIME_FUNCTION it points to (Windows follows one level), as Windows returns it.
    #[inline]
    pub fn lookup_function_entry(&self, rva: u32) -> Option<RuntimeFunction> {
        let f = self.functions.get(self.functions.find(rva)?)?;
        if f.is_indirect() {
            self.runtime_function_at(f.target_rva()).ok()
        } else {
            Some(f)
        }
    }

    /// The entry whose BeginAddress is `begin` (first such in table order), as (index, entry).
    pub fn function_by_begin(&self, begin: u32) -> Option<(usize, RuntimeFunction)> {
        let i = self.functions.find(begin)?;
        let f = self.functions.get(i)?;
        if f.begin == begin {
            return Some((i, f));
        }
        self.functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.begin == begin)
    }
}

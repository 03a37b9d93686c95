//! Windows targets: minidumps, PE modules unwound with `.pdata`, PDB, COFF and export symbols.
//!
//! Module files are found by the path the dump names (when it exists here, or through Wine's
//! `Z:` drive, which maps `/`), else by file name, without regard to case, in
//! [`LoadOptions::module_dirs`]; a file is used only if its SizeOfImage and TimeDateStamp match the
//! dump's module record. Without a file, an image the dump's memory holds whole is unwound in its
//! mapped layout; otherwise the module is mapped with no unwind information (frame pointers and
//! scanning still see its range as code).

mod minidump;
mod symbols;

pub(crate) use symbols::module_symbols;

use crate::space::{Module, NoUnwindInfo};
use crate::target::{
    ExceptionRecord, LoadOptions, ModuleImage, PeRecord, Platform, Target, TargetError, Thread,
};
use minidump::{Minidump, RawModule, PROCESSOR_ARCHITECTURE_AMD64};
use object::pe;
use object::pe::ImageNtHeaders64;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use object::LittleEndian as LE;
use std::path::{Path, PathBuf};
use xunwind_core::{FrameWalker, RegionMemory};
use xunwind_pe::{PeImage, PeUnwinder};

/// Reads a Windows x64 minidump.
pub(crate) fn read_minidump(bytes: Vec<u8>, options: &LoadOptions) -> Result<Target, TargetError> {
    let dump = Minidump::parse(&bytes)?;
    if let Some(arch) = dump.processor_architecture() {
        if arch != PROCESSOR_ARCHITECTURE_AMD64 {
            return Err(TargetError::Unsupported(format!(
                "processor architecture {arch} (only x64, 9, is supported)"
            )));
        }
    }
    let raw_threads = dump.threads();
    let threads = raw_threads
        .iter()
        .map(|t| Thread {
            id: t.id.into(),
            regs: minidump::context_amd64(t.context),
        })
        .collect();

    let mut ranges = dump.memory();
    // Thread stacks are usually in the memory list too; listed after it, they only fill gaps.
    ranges.extend(raw_threads.iter().map(|t| t.stack));
    let memory = build_memory(ranges, bytes.len());

    let exception = dump.exception().map(|e| ExceptionRecord {
        thread_id: e.thread_id.into(),
        code: e.code,
        flags: e.flags,
        address: e.address,
        parameters: e.parameters,
        context: Some(minidump::context_amd64(e.context)).filter(|r| r.valid_mask() != 0),
    });

    let mut dirs = DirCache::new(&options.module_dirs);
    let modules = dump
        .modules()
        .into_iter()
        .map(|m| locate_module(m, &mut dirs))
        .collect();

    Ok(Target {
        platform: Platform::Windows,
        memory,
        threads,
        modules,
        exception,
    })
}

/// Copies the dump's memory ranges into sorted, non-overlapping regions, merging adjacent ones
/// (an image then usually reads as one region). The first range listed wins where ranges
/// overlap; at most `budget` bytes are copied, so a dump whose descriptors all point at the same
/// bytes cannot make us allocate more than the file's size.
fn build_memory(mut ranges: Vec<(u64, &[u8])>, budget: usize) -> RegionMemory<'static> {
    ranges.sort_by_key(|r| r.0);
    let mut regions: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut covered_to = 0u64; // first address not yet covered (0: nothing covered)
    let mut any = false;
    let mut left = budget;
    for (start, data) in ranges {
        // Clip a range that would wrap past the top of the address space.
        let room = u64::MAX - start;
        let mut data = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        let mut start = start;
        if any && start < covered_to {
            let skip = usize::try_from(covered_to - start).unwrap_or(usize::MAX);
            if skip >= data.len() {
                continue;
            }
            data = &data[skip..];
            start = covered_to;
        }
        if data.is_empty() || left == 0 {
            continue;
        }
        let data = &data[..data.len().min(left)];
        left -= data.len();
        match regions.last_mut() {
            Some((base, bytes)) if any && start == covered_to && *base <= start => {
                bytes.extend_from_slice(data)
            }
            _ => regions.push((start, data.to_vec())),
        }
        covered_to = start + data.len() as u64;
        any = true;
    }
    let mut memory = RegionMemory::new();
    for (base, bytes) in regions {
        memory.add(base, bytes);
    }
    memory
}

/// The last path component of a Windows or Unix path.
fn file_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

/// Directory listings, read once, for matching file names without regard to case.
struct DirCache<'o> {
    dirs: &'o [PathBuf],
    listings: Vec<Option<Vec<(String, PathBuf)>>>,
}

impl<'o> DirCache<'o> {
    fn new(dirs: &'o [PathBuf]) -> Self {
        DirCache {
            dirs,
            listings: vec![None; dirs.len()],
        }
    }

    /// Files named `name` (any case) in the directories, in directory order.
    fn find(&mut self, name: &str) -> Vec<PathBuf> {
        let want = name.to_lowercase();
        let mut out = Vec::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let listing = self.listings[i].get_or_insert_with(|| list_dir(dir));
            out.extend(
                listing
                    .iter()
                    .filter(|(n, _)| *n == want)
                    .map(|(_, p)| p.clone()),
            );
        }
        out
    }
}

fn list_dir(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().to_str()?.to_lowercase();
        Some((name, e.path()))
    })
    .collect()
}

/// Wine maps `Z:` to `/`: a dump written under Wine names host files as `Z:\home\...`.
fn wine_unix_path(path: &str) -> Option<PathBuf> {
    let rest = path
        .strip_prefix("Z:\\")
        .or_else(|| path.strip_prefix("z:\\"))?;
    Some(PathBuf::from(format!("/{}", rest.replace('\\', "/"))))
}

/// SizeOfImage, TimeDateStamp and CheckSum of a PE32+ file's headers.
fn pe_identity(data: &[u8]) -> Option<(u32, u32, u32)> {
    let dos = pe::ImageDosHeader::parse(data).ok()?;
    let mut off = dos.nt_headers_offset().into();
    let (nt, _) = ImageNtHeaders64::parse(data, &mut off).ok()?;
    let opt = nt.optional_header();
    Some((
        opt.size_of_image(),
        nt.file_header().time_date_stamp.get(LE),
        opt.check_sum(),
    ))
}

/// Executable section ranges as (begin, end) RVAs, clipped to SizeOfImage.
fn executable_ranges(data: &[u8]) -> Vec<(u32, u32)> {
    let Ok(dos) = pe::ImageDosHeader::parse(data) else {
        return Vec::new();
    };
    let mut off = dos.nt_headers_offset().into();
    let Ok((nt, _)) = ImageNtHeaders64::parse(data, &mut off) else {
        return Vec::new();
    };
    let size = nt.optional_header().size_of_image();
    let Ok(table) = nt.sections(data, off) else {
        return Vec::new();
    };
    let mut ranges: Vec<(u32, u32)> = table
        .iter()
        .filter(|s| s.characteristics.get(LE) & pe::IMAGE_SCN_MEM_EXECUTE != 0)
        .map(|s| {
            let va = s.virtual_address.get(LE);
            let len = s.virtual_size.get(LE).max(s.size_of_raw_data.get(LE));
            (va.min(size), va.saturating_add(len).min(size))
        })
        .filter(|(b, e)| b < e)
        .collect();
    ranges.sort_unstable();
    ranges.dedup_by(|next, prev| {
        let touch = next.0 <= prev.1;
        if touch {
            prev.1 = prev.1.max(next.1);
        }
        touch
    });
    // Scanning tests every candidate word against these ranges; a hostile image with thousands
    // of code sections is treated as one span of code instead.
    if ranges.len() > MAX_CODE_RANGES {
        let (b, e) = (ranges[0].0, ranges.iter().map(|r| r.1).max().unwrap_or(0));
        ranges = vec![(b, e)];
    }
    ranges
}

/// Most separate executable ranges kept per module.
const MAX_CODE_RANGES: usize = 64;

/// Whether a file's headers match the dump's record of the module (zero fields are unknown).
fn matches_record(data: &[u8], m: &RawModule) -> bool {
    let Some((size, stamp, _)) = pe_identity(data) else {
        return false;
    };
    (m.size == 0 || m.size == size) && (m.time_date_stamp == 0 || m.time_date_stamp == stamp)
}

/// Largest module file read: PE images are far smaller, and a dump naming `/proc/kcore` or a
/// huge file must not make us read it.
const MAX_MODULE_FILE: u64 = 1 << 30;

/// The bytes of a regular file of at most [`MAX_MODULE_FILE`] bytes.
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_MODULE_FILE {
        return None;
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_MODULE_FILE + 1).read_to_end(&mut data).ok()?;
    (data.len() as u64 <= MAX_MODULE_FILE).then_some(data)
}

fn locate_module(m: RawModule, dirs: &mut DirCache<'_>) -> ModuleImage {
    let name = file_name(&m.name).to_string();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if !m.name.is_empty() {
        candidates.push(PathBuf::from(&m.name));
    }
    candidates.extend(wine_unix_path(&m.name));
    if !name.is_empty() {
        candidates.extend(dirs.find(&name));
    }
    let mut located = None;
    let mut file = None;
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let Some(data) = read_bounded(&path) else {
            continue;
        };
        if matches_record(&data, &m) {
            located = Some(path);
            file = Some(data);
            break;
        }
    }
    ModuleImage {
        name,
        path: m.name,
        base: m.base,
        size: m.size.into(),
        located,
        file,
        pe: Some(PeRecord {
            time_date_stamp: m.time_date_stamp,
            checksum: m.checksum,
            codeview: m.codeview,
        }),
    }
}

/// The whole image as the dump's memory holds it, if one region covers it.
fn mapped_image<'t>(memory: &'t RegionMemory<'static>, base: u64, size: u64) -> Option<&'t [u8]> {
    let regions = memory.regions();
    let i = regions.partition_point(|r| r.base <= base).checked_sub(1)?;
    let r = &regions[i];
    let off = usize::try_from(base - r.base).ok()?;
    let len = usize::try_from(size).ok()?;
    r.data.get(off..off.checked_add(len)?)
}

/// The unwinder for a PE module of a dump.
pub(crate) fn module_unwinder<'t>(
    module: &'t ModuleImage,
    memory: &'t RegionMemory<'static>,
) -> Option<Module<'t>> {
    let (base, size) = (module.base, module.size);
    let end = base.saturating_add(size);
    let to_abs = |ranges: Vec<(u32, u32)>| -> Vec<(u64, u64)> {
        ranges
            .into_iter()
            .map(|(b, e)| (base.saturating_add(b.into()), base.saturating_add(e.into())))
            .collect()
    };
    let image = module
        .file
        .as_deref()
        .and_then(|f| Some((PeImage::parse(f).ok()?, f)))
        .or_else(|| {
            let bytes = mapped_image(memory, base, size)?;
            let img = PeImage::parse_mapped(bytes).ok()?;
            (u64::from(img.size_of_image()) == size).then_some((img, bytes))
        });
    let (walker, executable): (Box<dyn FrameWalker + 't>, _) = match image {
        Some((img, bytes)) => (
            Box::new(PeUnwinder::new(img, base)),
            to_abs(executable_ranges(bytes)),
        ),
        None => (Box::new(NoUnwindInfo), vec![(base, end)]),
    };
    Some(Module {
        name: module.name.clone(),
        base,
        size,
        walker,
        executable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PE32+ headers with the given (va, size, executable) sections and SizeOfImage.
    fn headers(sections: &[(u32, u32, bool)], size_of_image: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x40];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b.extend_from_slice(b"PE\0\0");
        let mut fh = [0u8; 20];
        fh[0..2].copy_from_slice(&0x8664u16.to_le_bytes());
        fh[2..4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        fh[16..18].copy_from_slice(&240u16.to_le_bytes());
        b.extend_from_slice(&fh);
        let mut opt = [0u8; 240];
        opt[0..2].copy_from_slice(&0x20bu16.to_le_bytes());
        opt[32..36].copy_from_slice(&0x1000u32.to_le_bytes());
        opt[36..40].copy_from_slice(&0x200u32.to_le_bytes());
        opt[56..60].copy_from_slice(&size_of_image.to_le_bytes());
        opt[108..112].copy_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&opt);
        for &(va, size, exec) in sections {
            let mut s = [0u8; 40];
            s[8..12].copy_from_slice(&size.to_le_bytes());
            s[12..16].copy_from_slice(&va.to_le_bytes());
            let flags: u32 = if exec { 0x6000_0020 } else { 0x4000_0040 };
            s[36..40].copy_from_slice(&flags.to_le_bytes());
            b.extend_from_slice(&s);
        }
        b
    }

    #[test]
    fn executable_ranges_merge_clip_and_cap() {
        let h = headers(
            &[
                (0x3000, 0x100, true),
                (0x1000, 0x1000, true),
                (0x2000, 0x800, true),
                (0x2800, 0x100, false),
                (0x4000, 0x2000, true),
            ],
            0x5000,
        );
        assert_eq!(
            executable_ranges(&h),
            vec![(0x1000, 0x2800), (0x3000, 0x3100), (0x4000, 0x5000)]
        );
        let many: Vec<(u32, u32, bool)> =
            (0..100).map(|i| (0x1000 + 0x20 * i, 0x10, true)).collect();
        assert_eq!(
            executable_ranges(&headers(&many, 0x10_0000)),
            vec![(0x1000, 0x1c70)]
        );
        assert_eq!(executable_ranges(&h[..0x50]), vec![]);
    }

    #[test]
    fn wine_z_drive_and_file_names() {
        assert_eq!(
            wine_unix_path("Z:\\tmp\\x\\prog.exe"),
            Some(PathBuf::from("/tmp/x/prog.exe"))
        );
        assert_eq!(wine_unix_path("C:\\windows\\system32\\ntdll.dll"), None);
        assert_eq!(file_name("C:\\windows\\system32\\ntdll.dll"), "ntdll.dll");
        assert_eq!(file_name("/usr/lib/libc.so.6"), "libc.so.6");
        assert_eq!(file_name("plain"), "plain");
    }
}

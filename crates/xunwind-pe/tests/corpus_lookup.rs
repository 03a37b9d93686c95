//! Over every PE file of the corpus: parsing never fails on real images, and
//! `RtlLookupFunctionEntry` agrees with a linear scan at each function's begin, end-1, end and
//! begin-1.

use std::path::{Path, PathBuf};
use xunwind_pe::{PeImage, RuntimeFunction};

fn is_mz(p: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 2];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b == b"MZ"
}

fn corpus_files() -> Vec<PathBuf> {
    let root = std::env::var_os("XUNWIND_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus"));
    let mut out = Vec::new();
    let mut stack = vec![root.join("unpacked"), root.join("fixtures")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_mz(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The model: the one entry whose range holds the rva (sorted tables have at most one), with an
/// indirect entry replaced by its target.
fn linear(img: &PeImage<'_>, rva: u32) -> Option<RuntimeFunction> {
    let f = img.functions().iter().find(|f| f.contains(rva))?;
    if f.is_indirect() {
        img.runtime_function_at(f.target_rva()).ok()
    } else {
        Some(f)
    }
}

#[test]
fn lookup_agrees_with_linear_scan_on_corpus() {
    let files = corpus_files();
    if files.is_empty() {
        assert!(
            std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
            "no corpus files found: run corpus/fetch"
        );
        eprintln!("skipped: no corpus (run corpus/fetch)");
        return;
    }
    let (mut pe64, mut functions, mut probes) = (0usize, 0usize, 0usize);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let img = match PeImage::parse(&data) {
            Ok(img) => img,
            // PE32 and non-x64 files exist in the corpus (Wine ships i386 stubs): skip them.
            Err(_) => continue,
        };
        pe64 += 1;
        let t = img.functions();
        assert!(
            t.order_error().is_none(),
            "{}: {:?}",
            path.display(),
            t.order_error()
        );
        functions += t.len();
        for f in t.iter() {
            for rva in [
                f.begin,
                f.end.wrapping_sub(1),
                f.end,
                f.begin.wrapping_sub(1),
            ] {
                probes += 1;
                assert_eq!(
                    img.lookup_function_entry(rva),
                    linear(&img, rva),
                    "{} rva {rva:#x}",
                    path.display()
                );
                assert_eq!(
                    t.find(rva),
                    t.windows_search(rva),
                    "{} rva {rva:#x}",
                    path.display()
                );
            }
        }
    }
    eprintln!("{pe64} x64 images, {functions} functions, {probes} lookups agree");
    assert!(pe64 > 0);
}

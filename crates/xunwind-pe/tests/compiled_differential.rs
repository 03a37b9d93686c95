//! The cached fast path (`PeUnwinder::virtual_unwind`, built on `CompiledFunction`) against the
//! reference `virtual_unwind` on real DLLs: the same result or error, the same registers (xmm
//! included), the same context pointers, establisher frame and handler, at every probe pc of
//! every function, at every byte of a sample of functions and just past each function's end; and the epilog fast filter never
//! rejects a pc the full grammar accepts.
//!
//! Files: Wine's ntdll.dll and kernelbase.dll, mingw's libstdc++-6.dll (`corpus/fetch`), and
//! every fixture under `corpus/fixtures` (chained, version 2). Without the corpus the test says
//! so and passes, unless `XUNWIND_REQUIRE_CORPUS` is set.

use std::path::{Path, PathBuf};
use xunwind_core::{
    unwind_by_rule, ContextPointers, FrameWalker, MemoryReader, PcKind, Reg, Regs, SliceMemory,
};
use xunwind_pe::{
    match_epilog, may_start_epilog, probe_points, virtual_unwind, CompiledFunction,
    EpilogFrameRule, PeImage, PeUnwinder, UnwindOptions, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};

const STACK: u64 = 0x7000_0000;
const STACK_LEN: u64 = 0x2_0000;

fn corpus_root() -> PathBuf {
    std::env::var_os("XUNWIND_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus"))
}

fn files() -> Vec<PathBuf> {
    let root = corpus_root();
    let wine = root.join("unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows");
    let mut out: Vec<PathBuf> = [
        wine.join("ntdll.dll"),
        wine.join("kernelbase.dll"),
        root.join(
            "unpacked/gcc-mingw-w64-x86-64-posix-runtime/usr/lib/gcc/x86_64-w64-mingw32/12-posix/libstdc++-6.dll",
        ),
    ]
    .into_iter()
    .filter(|p| p.is_file())
    .collect();
    // Fixtures: one directory each (msvc, mingw, v2, ...).
    let mut fx = Vec::new();
    for dir in std::fs::read_dir(root.join("fixtures"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|e| e == "dll" || e == "exe") {
                fx.push(p);
            }
        }
    }
    fx.sort();
    out.extend(fx);
    out
}

/// The conformance thread, scaled down: slot at offset `o` holds `0x5AFE000000000000 | o`.
fn stack() -> Vec<u8> {
    (0..STACK_LEN / 8)
        .flat_map(|k| (0x5AFE_0000_0000_0000u64 | (k * 8)).to_le_bytes())
        .collect()
}

fn initial(pc: u64) -> Regs {
    let mut g = [0u64; 16];
    for (n, v) in g.iter_mut().enumerate() {
        *v = 0xA000_0000_0000_0000 | (n as u64) << 48;
    }
    g[Reg::Rsp as usize] = STACK + STACK_LEN / 2;
    g[Reg::Rbp as usize] = STACK + STACK_LEN / 2 + 0x1000;
    let mut r = Regs::with_gprs(pc, g);
    for n in 0..16u8 {
        let lo = 0xE000_0000_0000_0000u64 | (n as u64) << 48;
        r.set_xmm(n, ((!lo as u128) << 64) | lo as u128);
    }
    r
}

#[derive(Default)]
struct Counts {
    pcs: usize,
    compiled_fns: usize,
    reference_fns: usize,
    epilogs: usize,
    errors: usize,
    /// FrameWalker comparisons where the walker had a compact rule, and of those in epilogs.
    rules: usize,
    rule_epilogs: usize,
}

/// Both paths at `pc_rva`, every handler kind and both epilog frame rules.
fn compare(
    img: &PeImage<'_>,
    unwinders: &[PeUnwinder<'_>; 2],
    lookup_rva: u32,
    pc_rva: u32,
    mem: &SliceMemory<'_>,
    counts: &mut Counts,
) {
    let base = img.image_base();
    let pc = base + pc_rva as u64;
    let lookup_pc = base + lookup_rva as u64;
    let Some(f) = img.lookup_function_entry(lookup_rva) else {
        return;
    };
    counts.pcs += 1;
    for (unwinder, rule) in unwinders
        .iter()
        .zip([EpilogFrameRule::FrameRegister, EpilogFrameRule::ReturnSlot])
    {
        let opts = UnwindOptions {
            epilog_frame: rule,
            ..UnwindOptions::default()
        };
        for ty in [0, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER] {
            let (mut r1, mut p1) = (initial(pc), ContextPointers::new());
            let want = virtual_unwind(
                img,
                base,
                f,
                pc,
                &mut r1,
                Some(&mut p1),
                ty,
                mem as &dyn MemoryReader,
                &opts,
            );
            let (mut r2, mut p2) = (initial(pc), ContextPointers::new());
            let got = unwinder
                .virtual_unwind(lookup_pc, pc, &mut r2, Some(&mut p2), ty, mem)
                .map(|o| o.expect("an entry covers the pc"));
            let at = format!("pc {pc_rva:#x} (entry {f:x?}, {rule:?}, handler type {ty})");
            assert_eq!(got, want, "{at}: result");
            assert_eq!(r2, r1, "{at}: registers");
            assert_eq!(p2, p1, "{at}: context pointers");
            // The same through `&dyn MemoryReader` (the FrameWalker path).
            let (mut r3, mut p3) = (initial(pc), ContextPointers::new());
            let got = unwinder
                .virtual_unwind(
                    lookup_pc,
                    pc,
                    &mut r3,
                    Some(&mut p3),
                    ty,
                    mem as &dyn MemoryReader,
                )
                .map(|o| o.expect("an entry covers the pc"));
            assert_eq!(got, want, "{at}: result through dyn");
            assert_eq!((r3, p3), (r1.clone(), p1), "{at}: state through dyn");
            match want {
                Ok(o) if o.in_epilog && ty == 0 && rule == EpilogFrameRule::FrameRegister => {
                    counts.epilogs += 1
                }
                Err(_) if ty == 0 && rule == EpilogFrameRule::FrameRegister => counts.errors += 1,
                _ => {}
            }
        }
    }
    // The compact rule (what a pc-keyed cache applies) against the walker's own unwind: the
    // same registers, pointers and step, also with a register the unwind needs missing.
    let kind = if lookup_rva == pc_rva {
        Some(PcKind::Exact)
    } else if lookup_rva.wrapping_add(1) == pc_rva {
        Some(PcKind::ReturnAddress)
    } else {
        None
    };
    for (unwinder, kind) in unwinders
        .iter()
        .zip([kind; 2])
        .filter_map(|(u, k)| Some((u, k?)))
    {
        let rule = unwinder.rule(pc, kind, mem);
        let in_epilog = matches!(
            unwinder.virtual_unwind(lookup_pc, pc, &mut initial(pc), None, 0, mem),
            Ok(Some(o)) if o.in_epilog
        );
        if rule.is_some() {
            counts.rules += 1;
            counts.rule_epilogs += in_epilog as usize;
        }
        for missing in [None, Some(Reg::Rsp), Some(Reg::Rbp), Some(Reg::Rbx)] {
            let mut start = initial(pc);
            if let Some(m) = missing {
                start.invalidate(m);
            }
            let (mut r1, mut p1) = (start.clone(), ContextPointers::new());
            let want = unwinder.unwind(&mut r1, kind, mem, Some(&mut p1));
            let (mut r2, mut p2) = (start.clone(), ContextPointers::new());
            let got = unwind_by_rule(unwinder, &mut r2, kind, mem, Some(&mut p2));
            let at = format!("pc {pc_rva:#x} {kind:?} without {missing:?}, rule {rule:?}");
            assert_eq!(got, want, "{at}: step");
            if want.is_ok() {
                assert_eq!((r2, p2), (r1, p1), "{at}: registers and pointers");
            }
            // Applied directly, a rule gives the unwind's answer or declines.
            if let Some(rule) = rule {
                let mut r3 = start.clone();
                if let Some(info) = rule.apply(&mut r3, mem, None) {
                    let mut r4 = start.clone();
                    assert_eq!(Ok(info), unwinder.unwind(&mut r4, kind, mem, None), "{at}");
                    assert_eq!(r3, r4, "{at}: registers (rule applied directly)");
                }
            }
        }
    }
    // The filter in front of the grammar never rejects what the grammar accepts, with any
    // frame register and any verdict on jumps.
    let code = img.bytes_at(pc_rva);
    for fr in [None, Some(Reg::Rbp), Some(Reg::Rbx), Some(Reg::R13)] {
        let judge = |_t: u32| true;
        if match_epilog(code, pc_rva, fr, &judge).is_some() {
            assert!(
                may_start_epilog(code),
                "pc {pc_rva:#x}: filter rejects an epilog"
            );
        }
    }
}

#[test]
fn cached_path_equals_reference_on_corpus() {
    let files = files();
    if files.is_empty() {
        assert!(
            std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
            "no corpus files found: run corpus/fetch wine (and corpus/fixtures/build.sh)"
        );
        eprintln!("skipped: no corpus (run corpus/fetch wine)");
        return;
    }
    let s = stack();
    let mem = SliceMemory::new(STACK, &s);
    let mut total = Counts::default();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let Ok(img) = PeImage::parse(&data) else {
            continue;
        };
        let base = img.image_base();
        let unwinders = [
            PeUnwinder::new(img.clone(), base),
            PeUnwinder::new(img.clone(), base).with_options(UnwindOptions {
                epilog_frame: EpilogFrameRule::ReturnSlot,
                ..UnwindOptions::default()
            }),
        ];
        let mut counts = Counts::default();
        for (i, f) in img.functions().iter().enumerate() {
            let entry = if f.is_indirect() {
                img.runtime_function_at(f.target_rva()).ok()
            } else {
                Some(f)
            };
            match entry.and_then(|e| CompiledFunction::new(&img, e)) {
                Some(_) => counts.compiled_fns += 1,
                None => counts.reference_fns += 1,
            }
            for p in probe_points(&img, f) {
                compare(&img, &unwinders, p.pc, p.pc, &mem, &mut counts);
            }
            // A return address just past the function (a call ending it): looked up at
            // end - 1, unwound at end, outside the pcs searched for epilogs when compiling.
            if f.end > f.begin {
                compare(&img, &unwinders, f.end - 1, f.end, &mem, &mut counts);
            }
            // Every byte of one function in 16 (and of every small file's functions).
            if i % 16 == 0 || img.functions().len() < 200 {
                for pc in f.begin..f.end.min(f.begin.saturating_add(0x1000)) {
                    compare(&img, &unwinders, pc, pc, &mem, &mut counts);
                }
            }
        }
        eprintln!(
            "{}: {} pcs, {} functions compiled, {} on the reference path, {} epilog pcs, {} errors",
            path.display(),
            counts.pcs,
            counts.compiled_fns,
            counts.reference_fns,
            counts.epilogs,
            counts.errors
        );
        assert!(counts.pcs > 0, "{}: no pcs probed", path.display());
        total.pcs += counts.pcs;
        total.compiled_fns += counts.compiled_fns;
        total.epilogs += counts.epilogs;
        total.rules += counts.rules;
        total.rule_epilogs += counts.rule_epilogs;
    }
    eprintln!(
        "total: {} pcs, {} compiled functions, {} epilog pcs; compact rules at {} walker probes ({} in epilogs)",
        total.pcs, total.compiled_fns, total.epilogs, total.rules, total.rule_epilogs
    );
    // The comparison must have exercised the fast path, epilogs included, and compact rules.
    assert!(total.compiled_fns > 0 && total.epilogs > 0);
    assert!(total.rules > 0 && total.rule_epilogs > 0);
}

//! The Wine stack oracle: a program of ours records its own stack with RtlCaptureStackBackTrace
//! (Wine's ntdll unwinding the live stack) and writes a minidump of itself with dbghelp's
//! MiniDumpWriteDump; our walk of the dump, with Wine's PE DLLs and the program as module files,
//! must give the same return addresses, frame by frame.
//!
//! Programs (corpus/oracle/wine-stack/stackprog.c, built at test time by build.sh): mingw-w64 gcc
//! -O0 and -O2 (COFF symbols), clang-14 + lld-link-14 (MSVC ABI, PDB). The stack runs
//! entry/main -> run_sort -> msvcrt!qsort (Wine's; the comparison is a callback) -> compare ->
//! big_frame (alloca and 8 KiB of locals: frame pointer, __chkstk) -> middle -> leaf.
//!
//! Alignment: RtlCaptureStackBackTrace(0, ...) returns, first, the return address of its own
//! call in `leaf`, then leaf's caller's, and so on. After recording, `leaf` either faults
//! (`fault`: the dump is written by a vectored handler with the exception context, and our
//! frame 0 is the faulting instruction in `leaf`) or blocks in WaitForSingleObject while another
//! thread writes the dump (`thread`: our walk starts in Wine's ntdll/kernelbase, then reaches
//! `leaf` at the return from WaitForSingleObject). So our frame in `leaf` and the recorded frame
//! 0 are both in `leaf` (at different call sites), and every later frame must be equal; Wine's
//! capture ends with a zero return address where our walk must stop with `end_of_stack`.
//!
//! The program also unwinds itself with Wine's RtlLookupFunctionEntry/RtlVirtualUnwind from a
//! RtlCaptureContext in `leaf`: for every frame after the one in `leaf`, our stack pointer and
//! our rbx, rbp, rsi, rdi, r12-r15 must equal what Wine restored.

#[path = "windows_oracle.rs"]
mod oracle;

mod common;
use xunwind::{LoadOptions, Reg, StackWalker, StopReason, Target, Trust};

/// Checks one program in one mode; returns how many frames were compared.
fn check(kind: &str, exe: &str, mode: &str) -> Option<usize> {
    if !oracle::available(kind) {
        return None;
    }
    let dir = oracle::build(kind);
    let rec = oracle::run(&dir.join(exe), mode);
    let options = LoadOptions {
        module_dirs: vec![oracle::wine_dlls(), dir.clone()],
        symbol_dirs: Vec::new(),
    };
    let t = Target::open(&rec.dump, &options).expect("open the dump");
    for name in [
        exe,
        "ntdll.dll",
        "kernel32.dll",
        "kernelbase.dll",
        "msvcrt.dll",
    ] {
        let m = t.modules.iter().find(|m| m.name.eq_ignore_ascii_case(name));
        assert!(
            m.is_some_and(|m| m.located.is_some()),
            "{name} not located: {:?}",
            t.modules
        );
    }
    let thread = t
        .threads
        .iter()
        .find(|th| th.id == rec.thread)
        .expect("thread");
    let regs = if mode == "fault" {
        let e = t.exception.as_ref().expect("exception stream");
        assert_eq!(e.thread_id, rec.thread);
        assert_eq!(e.code, 0xc000_0005);
        e.context.clone().expect("exception context")
    } else {
        assert!(t.exception.is_none());
        thread.regs.clone()
    };
    let space = t.address_space();
    let symbols = t.symbols(&options);
    let walk = common::walk_all_ways(&StackWalker::default(), &space, &regs, &t.memory);
    let function = |i: usize, pc: u64| {
        let at = if i == 0 { pc } else { pc - 1 };
        let loc = symbols.lookup(at)?;
        Some((loc.module.to_string(), loc.symbol?.name))
    };
    let report = || {
        walk.frames
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{i:2} {:#x} {:?} {:?}", f.pc, f.trust, function(i, f.pc)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ctx = format!(
        "{exe} {mode}: recorded {:x?}\nours:\n{}",
        rec.frames,
        report()
    );

    let start = walk
        .frames
        .iter()
        .position(|f| {
            space
                .module_at(f.pc)
                .is_some_and(|(_, m)| m.name.eq_ignore_ascii_case(exe))
        })
        .unwrap_or_else(|| panic!("no frame in {exe}\n{ctx}"));
    if mode == "fault" {
        assert_eq!(start, 0, "{ctx}");
    } else {
        // The blocked thread's context is inside Wine's wait; it must unwind out of it.
        assert!(start >= 1, "{ctx}");
        for (i, f) in walk.frames[..start].iter().enumerate() {
            let (module, _) = function(i, f.pc).unwrap_or_default();
            assert!(
                ["ntdll.dll", "kernelbase.dll", "kernel32.dll"].contains(&module.as_str()),
                "{ctx}"
            );
        }
    }
    let in_leaf = |i: usize, pc: u64| function(i, pc).map(|f| f.1);
    assert_eq!(
        in_leaf(start, walk.frames[start].pc).as_deref(),
        Some("leaf"),
        "{ctx}"
    );
    assert_eq!(in_leaf(1, rec.frames[0]).as_deref(), Some("leaf"), "{ctx}");

    let ours: Vec<u64> = walk.frames[start + 1..].iter().map(|f| f.pc).collect();
    assert_eq!(ours, rec.frames[1..], "{ctx}");
    // Wine's RtlVirtualUnwind on the live stack: the same frames, and per frame the same stack
    // pointer and non-volatile registers as ours.
    assert_eq!(rec.unwound.len(), rec.frames.len(), "{ctx}");
    const NONVOL: [Reg; 8] = [
        Reg::Rbx,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];
    for (k, u) in rec.unwound.iter().enumerate().skip(1) {
        let f = &walk.frames[start + k];
        assert_eq!((f.pc, f.sp), (u[0], u[1]), "frame {}\n{ctx}", start + k);
        for (i, r) in NONVOL.iter().enumerate() {
            assert_eq!(
                f.regs.get(*r),
                Some(u[2 + i]),
                "frame {} {r}\n{ctx}",
                start + k
            );
        }
    }
    assert_eq!(walk.stop, StopReason::EndOfStack, "{ctx}");
    // Unwind data covered every frame: no guessing.
    assert!(
        walk.frames[1..].iter().all(|f| f.trust == Trust::Pdata),
        "{ctx}"
    );
    // Names from the program's COFF symbols or PDB, and from Wine's DLLs.
    let names: Vec<String> = (start..walk.frames.len())
        .filter_map(|i| function(i, walk.frames[i].pc).map(|f| f.1))
        .collect();
    assert_eq!(
        names[..4],
        ["leaf", "middle", "big_frame", "compare"],
        "{ctx}"
    );
    assert!(names.iter().any(|n| n == "qsort"), "{ctx}");
    assert!(names.iter().any(|n| n.starts_with("run_sort")), "{ctx}");
    assert!(
        names.ends_with(&["BaseThreadInitThunk".into(), "RtlUserThreadStart".into()]),
        "{ctx}"
    );
    eprintln!(
        "{exe} {mode}: {} frames after the one in leaf equal Wine's (pc, sp, 8 non-volatile registers); {start} frames of Wine's wait before it",
        ours.len()
    );
    Some(ours.len())
}

#[test]
fn gnu_o0_fault() {
    check("gnu", "stackprog-O0.exe", "fault");
}

#[test]
fn gnu_o0_thread() {
    check("gnu", "stackprog-O0.exe", "thread");
}

#[test]
fn gnu_o2_fault() {
    check("gnu", "stackprog-O2.exe", "fault");
}

#[test]
fn gnu_o2_thread() {
    check("gnu", "stackprog-O2.exe", "thread");
}

#[test]
fn msvc_pdb_fault() {
    check("msvc", "stackprog-msvc.exe", "fault");
}

#[test]
fn msvc_pdb_thread() {
    check("msvc", "stackprog-msvc.exe", "thread");
}

/// Opt-in (`XUNWIND_WINE_FULL_MEMORY=1`; Wine writes ~100 MB in ~30 s): a MiniDumpWithFullMemory
/// dump walked with no module files at all — the exe is deleted after the run and no module
/// directories are given — so every module is unwound from its image in the dump's memory
/// (mapped layout) and named by its export table.
#[test]
fn gnu_o2_thread_full_memory_without_module_files() {
    if std::env::var_os("XUNWIND_WINE_FULL_MEMORY").is_none_or(|v| v != "1") {
        eprintln!("skipping: set XUNWIND_WINE_FULL_MEMORY=1 to run (about 30 s, 100 MB)");
        return;
    }
    if !oracle::available("gnu") {
        return;
    }
    let dir = oracle::build("gnu");
    let exe = dir.join("full-memory.exe");
    std::fs::copy(dir.join("stackprog-O2.exe"), &exe).unwrap();
    let rec = oracle::run_with(&exe, "thread", Some("2"));
    std::fs::remove_file(&exe).unwrap();
    let t = Target::open(&rec.dump, &LoadOptions::default()).expect("open the dump");
    assert!(t.modules.iter().all(|m| m.located.is_none()));
    let thread = t.threads.iter().find(|th| th.id == rec.thread).unwrap();
    let space = t.address_space();
    let walk = common::walk_all_ways(&StackWalker::default(), &space, &thread.regs, &t.memory);
    let symbols = t.symbols(&LoadOptions::default());
    let pcs: Vec<u64> = walk.frames.iter().map(|f| f.pc).collect();
    let start = pcs
        .iter()
        .position(|&pc| pc == rec.frames[1])
        .unwrap_or_else(|| panic!("recorded {:x?}, ours {pcs:x?}", rec.frames));
    assert_eq!(pcs[start..], rec.frames[1..]);
    assert_eq!(walk.stop, StopReason::EndOfStack);
    assert!(walk.frames[1..].iter().all(|f| f.trust == Trust::Pdata));
    let first = symbols
        .lookup(pcs[0])
        .and_then(|l| l.symbol)
        .map(|s| s.name);
    assert_eq!(first.as_deref(), Some("NtWaitForMultipleObjects"));
}

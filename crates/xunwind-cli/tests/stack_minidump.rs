//! `xunwind stack` on hand-built minidumps (CONFORMANCE section 5): golden outputs in
//! corpus/fixtures/stack/, regenerated with `XUNWIND_UPDATE=1`.
//!
//! The dump (written here by the tests' minidump builder) maps the bundled fixture msvc.dll
//! (clang-14 + lld-link, with msvc.pdb) at 0x7ff600000000: thread 0x1234 stopped in `touch` (a
//! leaf without unwind data) called from large_frame_16 (ALLOC_LARGE 0x2028), called from
//! many_pushes (8 pushes), called from other.dll (no file); thread 0x99 has a garbage context.

#[path = "../../xunwind/tests/windows_builder.rs"]
mod builder;

use builder::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const BASE: u64 = 0x7ff6_0000_0000;
const OTHER: u64 = 0x7ff7_0000_0000;
const STACK: u64 = 0x10_0000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn msvc_dir() -> PathBuf {
    repo().join("corpus/fixtures/msvc")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xunwind-h3-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The dump; with `exception`, thread 0x1234 faulted at touch+8 (the exception context).
fn dump(exception: bool) -> Vec<u8> {
    let mut stack = vec![0u8; 0x2100];
    poke(&mut stack, 0, BASE + 0x1117);
    poke(&mut stack, 0x2030, BASE + 0x1460);
    for i in 0..8 {
        poke(&mut stack, 0x2060 + 8 * i, 0x1000 + i as u64);
    }
    poke(&mut stack, 0x20a0, OTHER + 0x123);
    let mut gpr = [0u64; 16];
    gpr[4] = STACK;
    gpr[5] = 5;
    let ctx = context(CONTEXT_FULL, BASE + 0x1004, gpr, [0; 16]);
    let garbage = context(CONTEXT_FULL, 0xdead_beef, [0x41; 16], [0; 16]);
    let mut b = DumpBuilder::new();
    b.system_info(9);
    b.thread_list(&[
        (0x99, 0x20_0000, &[0u8; 64], &garbage),
        (0x1234, STACK, &stack, &ctx),
    ]);
    let guid = [
        0x07, 0x61, 0xd6, 0xd1, 0xbe, 0x12, 0xa0, 0x53, 0x4c, 0x4c, 0x44, 0x20, 0x50, 0x44, 0x42,
        0x2e,
    ];
    let cv = codeview(guid, 1, "D:\\build\\msvc.pdb");
    b.module_list(&[
        (BASE, 0x5000, 0, 0x94ce_c75f, "C:\\Fixtures\\msvc.dll", &cv),
        (OTHER, 0x1000, 0, 1, "C:\\Windows\\System32\\other.dll", &[]),
    ]);
    if exception {
        let ectx = context(CONTEXT_FULL, BASE + 0x1008, gpr, [0; 16]);
        b.exception(0x1234, 0xc000_0005, BASE + 0x1008, &[0, 0], &ectx);
    }
    b.finish()
}

fn xunwind(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xunwind"))
        .args(args)
        .output()
        .expect("run xunwind");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn golden(name: &str, actual: &str) {
    let path = repo().join("corpus/fixtures/stack").join(name);
    if std::env::var_os("XUNWIND_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (XUNWIND_UPDATE=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from {}", path.display());
}

struct Setup {
    dump: String,
    dump_exc: String,
    modules: String,
    symbols: String,
}

fn setup(name: &str) -> Setup {
    let d = temp_dir(name);
    let modules = d.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::copy(msvc_dir().join("msvc.dll"), modules.join("MSVC.DLL")).unwrap();
    std::fs::write(d.join("plain.dmp"), dump(false)).unwrap();
    std::fs::write(d.join("exception.dmp"), dump(true)).unwrap();
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    Setup {
        dump: s(d.join("plain.dmp")),
        dump_exc: s(d.join("exception.dmp")),
        modules: s(modules),
        symbols: s(msvc_dir()),
    }
}

#[test]
fn stack_json_with_pdb_symbols() {
    let s = setup("json");
    let (ok, out, err) = xunwind(&[
        "stack",
        &s.dump,
        "--json",
        "--thread",
        "0x1234",
        "--modules",
        &s.modules,
        "--symbols",
        &s.symbols,
    ]);
    assert!(ok, "{err}");
    golden("synthetic-pdb.json", &out);
    // Spot checks of the contract, independent of the golden file.
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with(
        r#"{"frame":0,"pc":"0x7ff600001004","sp":"0x100000","module":"msvc.dll","module_offset":"0x1004","function":"touch","function_offset":"0x4","trust":"context"}"#
    ));
    assert!(
        lines[1].contains(r#""pc":"0x7ff600001117""#)
            && lines[1].contains(
                r#""function":"large_frame_16","function_offset":"0x27","trust":"pdata""#
            )
    );
    assert_eq!(*lines.last().unwrap(), r#"{"end":"no_caller"}"#);
}

#[test]
fn stack_human_forms() {
    let s = setup("human");
    // PDB names.
    let (ok, out, err) = xunwind(&[
        "stack",
        &s.dump,
        "--thread",
        "1",
        "--modules",
        &s.modules,
        "--symbols",
        &s.symbols,
    ]);
    assert!(ok, "{err}");
    golden("synthetic-pdb.txt", &out);
    assert!(out.starts_with("00 msvc!touch+0x4\n01 msvc!large_frame_16+0x27\n02 msvc!many_pushes+0x20\n03 other+0x123\n"));
    // Exports only (no symbol directory, and the recorded D:\build\msvc.pdb does not exist).
    let (ok, out, _) = xunwind(&["stack", &s.dump, "--thread", "1", "--modules", &s.modules]);
    assert!(ok);
    golden("synthetic-exports.txt", &out);
    // No module files: module names and offsets only, frames found by scanning.
    let (ok, out, _) = xunwind(&["stack", &s.dump, "--thread", "0x1234", "--json"]);
    assert!(ok);
    golden("synthetic-no-modules.json", &out);
}

#[test]
fn stack_default_thread_and_exception_context() {
    let s = setup("exception");
    // The exception's thread and context (touch+8), not the thread list's (touch+4).
    let (ok, out, err) = xunwind(&["stack", &s.dump_exc, "--json", "--modules", &s.modules]);
    assert!(ok, "{err}");
    golden("synthetic-exception.json", &out);
    assert!(out.starts_with(r#"{"frame":0,"pc":"0x7ff600001008""#));
    // No exception: the first thread, whose garbage context ends the walk at once.
    let (ok, out, _) = xunwind(&["stack", &s.dump, "--json"]);
    assert!(ok);
    golden("synthetic-first-thread.json", &out);
    assert!(out.starts_with(r#"{"frame":0,"pc":"0xdeadbeef""#));
}

#[test]
fn stack_errors() {
    let s = setup("errors");
    let (ok, _, err) = xunwind(&["stack", &s.dump, "--thread", "7"]);
    assert!(!ok && err.contains("no thread 7"), "{err}");
    let (ok, _, err) = xunwind(&["stack", "/nonexistent/x.dmp"]);
    assert!(!ok && err.contains("/nonexistent/x.dmp"), "{err}");
    let junk = temp_dir("junk").join("junk.bin");
    std::fs::write(&junk, b"not a dump").unwrap();
    let (ok, _, err) = xunwind(&["stack", junk.to_str().unwrap()]);
    assert!(
        !ok && err.contains("not a minidump or an ELF core file"),
        "{err}"
    );
    let mut truncated = dump(false);
    truncated[8..12].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&junk, truncated).unwrap();
    let (ok, _, err) = xunwind(&["stack", junk.to_str().unwrap()]);
    assert!(!ok && err.contains("malformed dump"), "{err}");
}

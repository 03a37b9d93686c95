//! `xunwind stack` on minidumps written by Wine's dbghelp (corpus/oracle/wine-stack): the
//! clang-14 + lld-link-14 build of stackprog.c names its PDB by file name only, and the PDB is
//! moved to a directory of its own, so function names appear exactly when `--symbols` names that
//! directory. The JSON pcs must equal the return addresses the program recorded (see
//! crates/xunwind/tests/windows_wine_stack.rs for the alignment).

#[path = "../../xunwind/tests/windows_oracle.rs"]
mod oracle;

mod common;

use common::xunwind;

#[test]
fn pdb_names_come_from_the_symbols_directory() {
    if !oracle::available("msvc") {
        return;
    }
    let dir = oracle::build("msvc");
    let symbols = dir.join("symbols");
    std::fs::create_dir_all(&symbols).unwrap();
    std::fs::rename(
        dir.join("stackprog-msvc.pdb"),
        symbols.join("stackprog-msvc.pdb"),
    )
    .unwrap();
    let rec = oracle::run(&dir.join("stackprog-msvc.exe"), "fault");
    let dump = rec.dump.to_str().unwrap();
    let wine = oracle::wine_dlls();
    let (wine, exe_dir, sym) = (
        wine.to_str().unwrap(),
        dir.to_str().unwrap(),
        symbols.to_str().unwrap(),
    );

    let named = xunwind(&[
        "stack",
        dump,
        "--modules",
        wine,
        "--modules",
        exe_dir,
        "--symbols",
        sym,
    ]);
    let lines: Vec<&str> = named.lines().collect();
    let expect = [
        "00 stackprog-msvc!leaf+0x",
        "01 stackprog-msvc!middle+0x",
        "02 stackprog-msvc!big_frame+0x",
        "03 stackprog-msvc!compare+0x",
    ];
    for (l, e) in lines.iter().zip(expect) {
        assert!(l.starts_with(e), "{named}");
    }
    assert!(named.contains("stackprog-msvc!run_sort+0x"), "{named}");
    assert!(named.contains("stackprog-msvc!entry+0x"), "{named}");
    assert!(named.contains(" msvcrt!qsort+0x"), "{named}");
    assert!(named.contains(" ntdll!RtlUserThreadStart+0x"), "{named}");
    assert!(named.ends_with("-- end_of_stack\n"), "{named}");

    // Without --symbols the program has no names (no exports, no COFF symbols, no PDB found).
    let bare = xunwind(&["stack", dump, "--modules", wine, "--modules", exe_dir]);
    assert!(bare.starts_with("00 stackprog-msvc+0x"), "{bare}");
    assert!(!bare.contains("stackprog-msvc!"), "{bare}");
    assert_eq!(bare.lines().count(), lines.len());

    let json = xunwind(&[
        "stack",
        dump,
        "--json",
        "--modules",
        wine,
        "--modules",
        exe_dir,
        "--symbols",
        sym,
    ]);
    let pcs: Vec<u64> = json
        .lines()
        .filter_map(|l| {
            let v = l.split(r#""pc":"0x"#).nth(1)?;
            u64::from_str_radix(&v[..v.find('"')?], 16).ok()
        })
        .collect();
    assert_eq!(pcs[1..], rec.frames[1..], "{json}");
    assert!(
        json.contains(r#""function":"leaf""#) && json.ends_with("{\"end\":\"end_of_stack\"}\n")
    );
}

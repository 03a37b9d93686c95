//! `xunwind stack` prints demangled names (CONFORMANCE section 5, human and JSON forms) and
//! keeps raw linkage names with `--no-demangle`. The program is our C++ fixture
//! corpus/fixtures/linux/names.cpp, built here with g++ and stopped under gdb at `stop_here`,
//! which writes the core (crates/xunwind/tests/linux_gdb.rs compares the names with gdb's).
//!
//! The same source built with mingw-w64 g++ is a PE with COFF symbols: a hand-built minidump
//! with a thread in two of its C++ functions must show them demangled too.
//!
//! Needs g++ and gdb (mingw-w64 g++ for the PE test): without them a test skips with a message,
//! unless XUNWIND_REQUIRE_CORPUS is set, when it fails.

#[path = "../../xunwind/tests/windows_builder.rs"]
mod builder;
mod common;

use common::xunwind;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have_tools(tools: &[&str]) -> bool {
    for &tool in tools {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some() {
                panic!("{tool} is missing and XUNWIND_REQUIRE_CORPUS is set");
            }
            eprintln!("skipping the demangling CLI test: {tool} is missing");
            return false;
        }
    }
    true
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus/fixtures/linux/names.cpp")
}

/// Builds names.cpp and returns the core gdb wrote at `stop_here`.
fn core() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stack_demangle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = source();
    let exe = dir.join("names");
    run(Command::new("g++")
        .args(["-O0", "-g", "-o"])
        .arg(&exe)
        .arg(&src));
    let core = dir.join("names.core");
    run(Command::new("gdb")
        .args(["-batch", "-nx"])
        .args(["-ex", "set debuginfod enabled off"])
        .args(["-ex", "break stop_here", "-ex", "run"])
        .arg("-ex")
        .arg(format!("gcore {}", core.display()))
        .args(["-ex", "kill"])
        .arg(&exe));
    assert!(core.exists(), "gdb wrote no core");
    core
}

/// The keys of one of our flat JSON lines, in order.
fn keys(line: &str) -> Vec<String> {
    line.split(&[',', '{'][..])
        .filter_map(|p| {
            p.strip_prefix('"')?
                .split_once("\":")
                .map(|(k, _)| k.to_string())
        })
        .collect()
}

#[test]
fn stack_prints_demangled_names_unless_told_not_to() {
    if !have_tools(&["g++", "gdb"]) {
        return;
    }
    let core = core();
    let core = core.to_str().unwrap();
    // (linkage name, short name) of frames 1..=6, below stop_here.
    let frames = [
        ("_ZN2nsplERKNS_5KlassES2_", "ns::operator+"),
        (
            "_ZN12_GLOBAL__N_16helperEi",
            "(anonymous namespace)::helper",
        ),
        ("_ZNK2ns3BoxIiE3getEv", "ns::Box<int>::get"),
        ("_ZN2ns5twiceIiEET_S1_", "ns::twice<int>"),
        ("_ZN2ns5KlassclEi", "ns::Klass::operator()"),
        // The complete-object constructor is an alias of the base-object one at -O0: either.
        ("_ZN2ns5KlassC", "ns::Klass::Klass"),
    ];

    let human = xunwind(&["stack", core]);
    let lines: Vec<&str> = human.lines().collect();
    assert!(lines[0].starts_with("00 names!stop_here+0x"), "{human}");
    for (i, (_, short)) in frames.iter().enumerate() {
        let want = format!("{:02} names!{short}+0x", i + 1);
        assert!(lines[i + 1].starts_with(&want), "{want}\n{human}");
    }
    assert!(lines[7].starts_with("07 names!main+0x"), "{human}");

    let raw = xunwind(&["stack", core, "--no-demangle"]);
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert_eq!(raw_lines.len(), lines.len());
    for (i, (mangled, _)) in frames.iter().enumerate() {
        let want = format!("{:02} names!{mangled}", i + 1);
        assert!(raw_lines[i + 1].starts_with(&want), "{want}\n{raw}");
    }
    // Names that are not mangled and everything but the names are the same.
    for (a, b) in lines.iter().zip(&raw_lines) {
        if !a.contains("::") {
            assert_eq!(a, b);
        }
        assert_eq!(a.rsplit('+').next(), b.rsplit('+').next());
    }

    let json = xunwind(&["stack", core, "--json"]);
    let json_lines: Vec<&str> = json.lines().collect();
    let base = [
        "frame",
        "pc",
        "sp",
        "module",
        "module_offset",
        "function",
        "function_offset",
        "trust",
    ];
    assert!(
        json_lines[0].contains("\"function\":\"stop_here\""),
        "{json}"
    );
    assert_eq!(keys(json_lines[0]), base, "{json}");
    for (i, (mangled, short)) in frames.iter().enumerate() {
        let l = json_lines[i + 1];
        assert!(l.contains(&format!("\"function\":\"{short}\"")), "{l}");
        // "mangled" is added last, after every key CONFORMANCE 5 lists, in their order.
        let mut with = base.to_vec();
        with.push("mangled");
        assert_eq!(keys(l), with, "{l}");
        assert!(l.contains(&format!("\"mangled\":\"{mangled}")), "{l}");
    }
    assert!(!json_lines[7].contains("mangled"), "{json}");

    let json_raw = xunwind(&["stack", core, "--json", "--no-demangle"]);
    assert!(!json_raw.contains("\"mangled\""), "{json_raw}");
    for (i, (mangled, _)) in frames.iter().enumerate() {
        let l = json_raw.lines().nth(i + 1).unwrap();
        assert!(l.contains(&format!("\"function\":\"{mangled}")), "{l}");
        assert_eq!(keys(l), base, "{l}");
    }
}

/// The value of `symbol` in `nm` output (a virtual address).
fn nm_address(nm: &str, symbol: &str) -> u64 {
    let line = nm
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(symbol))
        .unwrap_or_else(|| panic!("no {symbol} in nm output:\n{nm}"));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

#[test]
fn mingw_cxx_frames_show_demangled_names() {
    use builder::*;
    if !have_tools(&["x86_64-w64-mingw32-g++", "x86_64-w64-mingw32-nm"]) {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stack_demangle_pe");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("names.exe");
    run(Command::new("x86_64-w64-mingw32-g++")
        .args(["-O0", "-o"])
        .arg(&exe)
        .arg(source()));
    let out = Command::new("x86_64-w64-mingw32-nm")
        .arg(&exe)
        .output()
        .unwrap();
    let nm = String::from_utf8_lossy(&out.stdout);
    // nm prints virtual addresses: less the optional header's ImageBase, RVAs.
    let pe = std::fs::read(&exe).unwrap();
    let at = |o: usize| u32::from_le_bytes(pe[o..o + 4].try_into().unwrap());
    let optional = at(0x3c) as usize + 24;
    let image_base = u64::from(at(optional + 24)) | u64::from(at(optional + 28)) << 32;
    let size_of_image = at(optional + 56);
    let plus = nm_address(&nm, "_ZN2nsplERKNS_5KlassES2_") - image_base;
    let call = nm_address(&nm, "_ZN2ns5KlassclEi") - image_base;

    // Loaded elsewhere than its preferred base; stopped at the entry of ns::operator+ (its
    // return address at rsp), called from ns::Klass::operator() + 0x10.
    let base: u64 = 0x7ff6_1000_0000;
    let stack_at: u64 = 0x10_0000;
    let mut stack = vec![0u8; 0x100];
    poke(&mut stack, 0, base + call + 0x10);
    let mut gpr = [0u64; 16];
    gpr[4] = stack_at;
    let ctx = context(CONTEXT_FULL, base + plus, gpr, [0; 16]);
    let mut b = DumpBuilder::new();
    b.system_info(9);
    b.thread_list(&[(7, stack_at, &stack, &ctx)]);
    b.module_list(&[(base, size_of_image, 0, 0, "C:\\app\\names.exe", &[])]);
    let dump = dir.join("names.dmp");
    std::fs::write(&dump, b.finish()).unwrap();
    let (dump, modules) = (dump.to_str().unwrap(), dir.to_str().unwrap());

    let human = xunwind(&["stack", dump, "--modules", modules, "--max-frames", "2"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines[0], "00 names!ns::operator++0x0", "{human}");
    assert_eq!(lines[1], "01 names!ns::Klass::operator()+0x10", "{human}");
    let raw = xunwind(&["stack", dump, "--modules", modules, "--no-demangle"]);
    assert!(
        raw.starts_with("00 names!_ZN2nsplERKNS_5KlassES2_+0x0\n01 names!_ZN2ns5KlassclEi+0x10\n"),
        "{raw}"
    );
    let json = xunwind(&["stack", dump, "--modules", modules, "--json"]);
    let first = json.lines().next().unwrap();
    assert!(
        first.ends_with(
            r#""function":"ns::operator+","function_offset":"0x0","trust":"context","mangled":"_ZN2nsplERKNS_5KlassES2_"}"#
        ),
        "{first}"
    );
}

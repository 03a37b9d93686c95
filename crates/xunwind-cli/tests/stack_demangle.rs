//! `xunwind stack` prints demangled names (CONFORMANCE section 5, human and JSON forms) and
//! keeps raw linkage names with `--no-demangle`. The program is our C++ fixture
//! corpus/fixtures/linux/names.cpp, built here with g++ and stopped under gdb at `stop_here`,
//! which writes the core (crates/xunwind/tests/linux_gdb.rs compares the names with gdb's).
//!
//! Needs g++ and gdb: without them the test skips with a message, unless
//! XUNWIND_REQUIRE_CORPUS is set, when it fails.

mod common;

use common::xunwind;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have_tools() -> bool {
    for tool in ["g++", "gdb"] {
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

/// Builds names.cpp and returns the core gdb wrote at `stop_here`.
fn core() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stack_demangle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus/fixtures/linux/names.cpp");
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
        .filter_map(|p| p.strip_prefix('"')?.split_once("\":").map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn stack_prints_demangled_names_unless_told_not_to() {
    if !have_tools() {
        return;
    }
    let core = core();
    let core = core.to_str().unwrap();
    // (linkage name, short name) of frames 1..=6, below stop_here.
    let frames = [
        ("_ZN2nsplERKNS_5KlassES2_", "ns::operator+"),
        ("_ZN12_GLOBAL__N_16helperEi", "(anonymous namespace)::helper"),
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
    assert!(json_lines[0].contains("\"function\":\"stop_here\""), "{json}");
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

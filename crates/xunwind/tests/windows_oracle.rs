//! The Wine stack oracle's driver (corpus/oracle/wine-stack): builds stackprog.c, runs it under
//! wine64, and parses what it recorded. Included as a module by `windows_wine_stack.rs` and by the
//! CLI's `stack_wine.rs`; on its own it is an empty test crate.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn oracle_dir() -> PathBuf {
    repo().join("corpus/oracle/wine-stack")
}

/// Wine's PE DLLs as unpacked by `corpus/fetch` (the same files wine64 loads).
pub fn wine_dlls() -> PathBuf {
    repo().join("corpus/unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows")
}

fn wine64() -> PathBuf {
    std::env::var_os("WINE64")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/wine/wine64"))
}

fn have_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tools for `kind` (`gnu` or `msvc`), wine64 and the Wine corpus are here. Missing
/// ones fail the test under `XUNWIND_REQUIRE_CORPUS=1` and skip it (with a message) otherwise.
pub fn available(kind: &str) -> bool {
    let mut missing = Vec::new();
    let tools: &[&str] = match kind {
        "gnu" => &["x86_64-w64-mingw32-gcc"],
        _ => &["clang-14", "lld-link-14", "llvm-dlltool-14"],
    };
    for t in tools {
        if !have_command(t) {
            missing.push(t.to_string());
        }
    }
    if !wine64().exists() {
        missing.push(wine64().display().to_string());
    }
    if !wine_dlls().join("ntdll.dll").exists() {
        missing.push(format!("{} (run corpus/fetch)", wine_dlls().display()));
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("wine stack oracle: missing {}", missing.join(", "));
    if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

fn work_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("xunwind-wine-stack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// Builds the `kind` programs once per test process; returns the directory holding them.
pub fn build(kind: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let out = work_dir().join(kind);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|k| k == kind) {
        let st = Command::new(oracle_dir().join("build.sh"))
            .arg(&out)
            .arg(kind)
            .status()
            .expect("run build.sh");
        assert!(
            st.success(),
            "corpus/oracle/wine-stack/build.sh {kind} failed"
        );
        built.push(kind.to_string());
    }
    out
}

/// What the program recorded about itself.
#[derive(Debug)]
pub struct Recorded {
    /// RtlCaptureStackBackTrace's return addresses, innermost first, up to (not including) the
    /// first zero (Wine's capture runs on past the end of the stack).
    pub frames: Vec<u64>,
    /// Wine's RtlVirtualUnwind of the same stack: per frame rip, rsp, rbx, rbp, rsi, rdi,
    /// r12-r15; `unwound[0]` is in `leaf` (another call site), `unwound[k]` matches `frames[k]`.
    pub unwound: Vec<[u64; 10]>,
    /// The recording thread.
    pub thread: u64,
    /// The minidump it wrote.
    pub dump: PathBuf,
}

/// Runs `exe` under wine64 in `mode` (`fault` or `thread`).
pub fn run(exe: &Path, mode: &str) -> Recorded {
    run_with(exe, mode, None)
}

/// As [`run`], with a MINIDUMP_TYPE (hex) other than MiniDumpNormal.
pub fn run_with(exe: &Path, mode: &str, dump_type: Option<&str>) -> Recorded {
    let dump = exe.with_extension(format!("{mode}.dmp"));
    let mut cmd = Command::new(oracle_dir().join("run.sh"));
    if let Some(t) = dump_type {
        cmd.env("XUNWIND_DUMP_TYPE", t);
    }
    let out = cmd
        .arg(exe)
        .arg(mode)
        .arg(&dump)
        .output()
        .expect("run run.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = |s: &str| u64::from_str_radix(s.trim(), 16).unwrap();
    let mut frames = Vec::new();
    let mut ended = false;
    let mut thread = None;
    let mut unwound = Vec::new();
    let mut ok = false;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("F", v)) if !ended => {
                let v = hex(v);
                if v == 0 {
                    ended = true;
                } else {
                    frames.push(v);
                }
            }
            Some(("U", v)) => {
                let f: Vec<u64> = v.split_whitespace().map(hex).collect();
                unwound.push(f.try_into().expect("10 values per U line"));
            }
            Some(("T", v)) => thread = Some(hex(v)),
            Some(("D", v)) => ok = v.trim() == "1",
            _ => {}
        }
    }
    assert!(
        ok && ended && dump.exists(),
        "{} {mode}: no dump or no complete stack; stdout:\n{text}\nstderr:\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Recorded {
        frames,
        unwound,
        thread: thread.expect("T line"),
        dump,
    }
}

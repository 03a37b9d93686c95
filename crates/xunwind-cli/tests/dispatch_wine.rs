//! Conformance of `xunwind dispatch` with what wine64 does (corpus/fixtures/dispatch, run by
//! corpus/oracle/wine-dispatch/run.sh): the fixtures print every filter, `__finally`,
//! destructor and the final `__except`/`catch` as they run, and a vectored handler writes a
//! minidump (and a context file) at the first-chance exception. Our prediction from the dump
//! (and from the context file, which must agree) has to equal the printed sequence; filter
//! results are fed from what the program printed, in phase-1 order, and the thrown C++ type from
//! its `T` line (the context file carries the exception object, so there it is derived).
//!
//! Fixtures: SEH (`__C_specific_handler`), mingw g++ (`__gxx_personality_seh0`) and clang MSVC
//! C++ (`__CxxFrameHandler3`, Wine's msvcrt). One Wine deviation is observed and asserted: Wine 8's `__C_specific_handler` runs a
//! `__finally` that encloses the `__try/__except` taking the exception (`seh accept`); Windows'
//! stops at the target `__except` scope. `--compat wine8` predicts Wine; the default (Windows)
//! prediction differs by exactly that line.
//!
//! Needs clang-14, lld-link-14, llvm-dlltool-14, mingw g++, wine64 and Wine's DLLs from
//! corpus/fetch: missing ones fail under XUNWIND_REQUIRE_CORPUS=1 and skip otherwise.

mod common;

use common::xunwind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wine_dlls() -> PathBuf {
    repo().join("corpus/unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn available() -> bool {
    let mut missing: Vec<String> = [
        "clang-14",
        "lld-link-14",
        "llvm-dlltool-14",
        "x86_64-w64-mingw32-g++",
    ]
    .iter()
    .filter(|t| !have(t))
    .map(|t| t.to_string())
    .collect();
    let wine = std::env::var("WINE64").unwrap_or_else(|_| "/usr/lib/wine/wine64".into());
    if !Path::new(&wine).exists() {
        missing.push(wine);
    }
    if !wine_dlls().join("kernelbase.dll").exists() {
        missing.push("Wine's DLLs (run corpus/fetch)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("wine dispatch oracle: missing {}", missing.join(", "));
    assert!(
        std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none_or(|v| v != "1"),
        "{msg}"
    );
    eprintln!("skipping: {msg}");
    false
}

/// The fixtures, built once per test process.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("xunwind-dispatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let st = Command::new(repo().join("corpus/fixtures/dispatch/build.sh"))
            .arg(&d)
            .status()
            .expect("run build.sh");
        assert!(st.success(), "corpus/fixtures/dispatch/build.sh failed");
        d
    })
}

/// One observed step: (kind, function, result), as printed by an `R` line.
type Step = (String, String, Option<String>);

struct Observed {
    steps: Vec<Step>,
    thrown: Option<String>,
    dump: PathBuf,
}

/// Runs a fixture; the steps up to and including the first `except`/`catch`.
fn observe(exe: &str, mode: &str) -> Observed {
    let dir = built();
    let dump = dir.join(format!("{exe}-{mode}.dmp"));
    let out = Command::new(repo().join("corpus/oracle/wine-dispatch/run.sh"))
        .arg(dir.join(format!("{exe}.exe")))
        .arg(mode)
        .arg(&dump)
        .output()
        .expect("run run.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut steps = Vec::new();
    let mut thrown = None;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["T", t] => thrown = Some(format!("0x{t}")),
            ["R", "done"] => {}
            ["R", kind, function, rest @ ..]
                if steps
                    .last()
                    .is_none_or(|s: &Step| s.0 != "except" && s.0 != "catch") =>
            {
                steps.push((
                    kind.to_string(),
                    function.to_string(),
                    rest.first().map(|r| r.to_string()),
                ))
            }
            _ => {}
        }
    }
    assert!(
        (text.contains("R done") || text.contains("R unhandled")) && dump.exists(),
        "{exe} {mode}: no dump or did not finish; stdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Observed {
        steps,
        thrown,
        dump,
    }
}

/// A string or null field of one of our flat JSON lines.
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let v = rest.strip_prefix('"')?;
    Some(v[..v.find('"')?].to_string())
}

fn num_field(line: &str, key: &str) -> Option<usize> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    rest[..rest.find([',', '}'])?].parse().ok()
}

/// Predicts from `input` args, feeding filter results in phase-1 order from `observed`.
/// Returns the JSON lines.
fn predict(base: &[&str], observed: &Observed) -> Vec<String> {
    let filters: Vec<&Step> = observed.steps.iter().filter(|s| s.0 == "filter").collect();
    let mut given: Vec<String> = Vec::new();
    for _ in 0..=filters.len() {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.push("--json".into());
        for g in &given {
            args.push("--filter".into());
            args.push(g.clone());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = xunwind(&argv);
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        let last = lines.last().cloned().unwrap_or_default();
        if field(&last, "kind").as_deref() != Some("needs_filter") {
            return lines;
        }
        let addr = field(&last, "address").unwrap();
        let result = filters
            .get(given.len())
            .and_then(|f| f.2.clone())
            .unwrap_or_else(|| panic!("predicted a filter call {addr} the program did not make"));
        given.push(format!("{addr}={result}"));
    }
    panic!("too many filter requests");
}

/// Our lines as steps; constant filters (never called, so never printed) are left out.
fn steps(lines: &[String]) -> Vec<Step> {
    lines
        .iter()
        .filter(|l| {
            !(field(l, "kind").as_deref() == Some("filter") && l.contains("\"address\":null"))
        })
        .map(|l| {
            (
                field(l, "kind").unwrap_or_default(),
                field(l, "function").unwrap_or_else(|| "?".into()),
                field(l, "result"),
            )
        })
        .collect()
}

/// Frame numbers must be `xunwind stack`'s: each event's function is that frame's.
fn frames_agree_with_stack(dump: &str, lines: &[String]) {
    let dlls = wine_dlls();
    let dir = built().to_str().unwrap().to_string();
    let stack = xunwind(&[
        "stack",
        dump,
        "--json",
        "--modules",
        &dir,
        "--modules",
        dlls.to_str().unwrap(),
    ]);
    let stack: Vec<&str> = stack.lines().collect();
    for l in lines {
        if let (Some(n), Some(f)) = (num_field(l, "frame"), field(l, "function")) {
            assert_eq!(
                field(stack[n], "function").as_deref(),
                Some(f.as_str()),
                "frame {n}: {l} vs stack {}",
                stack[n]
            );
        }
    }
}

fn check(exe: &str, mode: &str, compat: &str) -> (Observed, Vec<Step>, Vec<Step>) {
    let obs = observe(exe, mode);
    let dlls = wine_dlls();
    let dir = built().to_str().unwrap().to_string();
    let dump = obs.dump.to_str().unwrap().to_string();
    let ctx = format!("{dump}.ctx");
    let mut from_dump = vec![
        "dispatch",
        &dump,
        "--modules",
        &dir,
        "--modules",
        dlls.to_str().unwrap(),
    ];
    let mut from_ctx = vec![
        "dispatch",
        "--context",
        &ctx,
        "--modules",
        dlls.to_str().unwrap(),
    ];
    if let Some(t) = &obs.thrown {
        from_dump.extend(["--thrown-type", t]);
    }
    from_dump.extend(["--compat", compat]);
    from_ctx.extend(["--compat", compat]);
    let d = predict(&from_dump, &obs);
    let c = predict(&from_ctx, &obs);
    frames_agree_with_stack(&dump, &d);
    assert_eq!(
        d, c,
        "{exe} {mode}: the minidump and the context file disagree"
    );
    let predicted = steps(&d);
    let observed = obs.steps.clone();
    (obs, predicted, observed)
}

#[test]
fn seh_declining_filter_then_constant_except() {
    if !available() {
        return;
    }
    for compat in ["windows", "wine8"] {
        let (_, predicted, observed) = check("seh", "decline", compat);
        assert_eq!(predicted, observed, "compat {compat}");
        assert_eq!(observed.len(), 5, "{observed:?}");
    }
}

#[test]
fn seh_accepting_filter_shows_the_wine_scope_deviation() {
    if !available() {
        return;
    }
    let (_, wine, observed) = check("seh", "accept", "wine8");
    assert_eq!(wine, observed);
    let (_, windows, _) = check("seh", "accept", "windows");
    let deviation: Step = ("finally".into(), "middle".into(), None);
    let mut without = observed.clone();
    let at = without
        .iter()
        .position(|s| *s == deviation)
        .expect("Wine runs middle's enclosing __finally");
    without.remove(at);
    assert_eq!(
        windows, without,
        "Windows stops at the target __except scope"
    );
}

#[test]
fn gcc_cleanups_and_catch_match_wine() {
    if !available() {
        return;
    }
    let (obs, predicted, observed) = check("cxx", "throw", "windows");
    assert!(obs.thrown.is_some());
    assert_eq!(predicted, observed);
    assert_eq!(observed.iter().filter(|s| s.0 == "cleanup").count(), 5);
    assert_eq!(observed.last().map(|s| s.0.as_str()), Some("catch"));
}

#[test]
fn msvc_cxx_frame_handler3_matches_wine() {
    if !available() {
        return;
    }
    // /EHs code ignores an access violation entirely: no destructor runs in cxxmid.
    let (_, predicted, observed) = check("cxxmsvc", "seh", "windows");
    assert_eq!(predicted, observed);
    assert_eq!(observed.len(), 1, "{observed:?}");
    // A thrown int: destructors frame by frame, the try body's in the catching frame, then the
    // catch (matched by the ThrowInfo's catchable type names).
    let (_, predicted, observed) = check("cxxmsvc", "throw", "windows");
    assert_eq!(predicted, observed);
    assert_eq!(observed.iter().filter(|s| s.0 == "cleanup").count(), 4);
    assert_eq!(observed.last().map(|s| s.0.as_str()), Some("catch"));
}

#[test]
fn gcc_frames_ignore_foreign_exceptions() {
    if !available() {
        return;
    }
    // An access violation below g++ frames with destructors and a catch (...): libgcc's
    // personality leaves it alone (nothing of the program runs before the unhandled-exception
    // filter); we predict no event in those frames, and the first decision in the C runtime's
    // mainCRTStartup (whose filter leads to the unhandled-exception filter).
    let obs = observe("cxx", "av");
    assert_eq!(
        obs.steps,
        [("unhandled".to_string(), "-".to_string(), None)]
    );
    let dlls = wine_dlls();
    let dir = built().to_str().unwrap().to_string();
    let dump = obs.dump.to_str().unwrap().to_string();
    let out = xunwind(&[
        "dispatch",
        &dump,
        "--json",
        "--modules",
        &dir,
        "--modules",
        dlls.to_str().unwrap(),
    ]);
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(field(&lines[0], "kind").as_deref(), Some("needs_filter"));
    assert_eq!(
        field(&lines[0], "function").as_deref(),
        Some("mainCRTStartup")
    );
    frames_agree_with_stack(&dump, &lines);
}

#[test]
fn gcc_catch_by_public_base_class() {
    if !available() {
        return;
    }
    // A Derived is thrown; main's catch (Base &) takes it through the type_info's base link.
    let (obs, predicted, observed) = check("cxx", "derived", "windows");
    assert_eq!(predicted, observed);
    assert_eq!(observed.last().map(|s| s.0.as_str()), Some("catch"));
    let dlls = wine_dlls();
    let ctx = format!("{}.ctx", obs.dump.display());
    let out = xunwind(&[
        "dispatch",
        "--context",
        &ctx,
        "--modules",
        dlls.to_str().unwrap(),
        "--json",
    ]);
    let last = out.lines().last().unwrap();
    let clause = field(last, "type_info").unwrap();
    assert_ne!(
        Some(clause),
        obs.thrown,
        "caught as the base class, not the thrown type"
    );
}

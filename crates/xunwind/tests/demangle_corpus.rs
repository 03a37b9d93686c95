//! `xunwind::demangle` against demanglers we did not write, over real symbol tables: every
//! Itanium C++ name that the system libstdc++ defines, checked against binutils' `c++filt`, and
//! every MSVC decorated name that Wine's msvcp140.dll exports (corpus/fetch), checked against
//! LLVM's `llvm-undname`. Where the oracle demangles a name, ours must too, and our short form
//! must be the oracle's full form with its return type, parameters, access and calling
//! convention taken away: it must appear in the oracle's output (spaces and MSVC's
//! class/struct/union/enum keywords aside, which the two spell differently).
//!
//! Needs c++filt, llvm-undname and the corpus: without them a check skips with a message,
//! unless XUNWIND_REQUIRE_CORPUS is set, when it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn require(what: &str) -> bool {
    if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some() {
        panic!("{what} is missing and XUNWIND_REQUIRE_CORPUS is set");
    }
    eprintln!("skipping: {what} is missing");
    false
}

/// Runs `tool` with the names on stdin, one per line; its output lines.
fn run_oracle(tool: &str, args: &[&str], names: &[String]) -> Option<Vec<String>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut input = child.stdin.take().unwrap();
    let text = names.join("\n") + "\n";
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().ok()?;
    writer.join().unwrap().ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// Removes what the demanglers spell differently: spaces, and MSVC's tag keywords.
fn normal(s: &str) -> String {
    let mut s = s.to_string();
    for tag in ["class ", "struct ", "union ", "enum "] {
        s = s.replace(tag, "");
    }
    // LLVM abbreviates the words of Microsoft's own undname (`default ctor closure'`).
    s.replace(" ctor", " constructor")
        .replace(" dtor", " destructor")
        .replace(' ', "")
}

/// Compares ours with the oracles' full forms (`None`: the oracle rejects the name); returns
/// (names the oracles demangle, mismatches).
fn compare(names: &[String], full: &[Vec<Option<String>>]) -> (usize, Vec<String>) {
    let mut bad = Vec::new();
    let mut demangled = 0;
    for (i, name) in names.iter().enumerate() {
        let forms: Vec<&String> = full.iter().filter_map(|f| f[i].as_ref()).collect();
        if forms.is_empty() {
            continue;
        }
        demangled += 1;
        let ours = xunwind::demangle::demangle(name);
        let agrees = ours
            .as_ref()
            .is_some_and(|short| forms.iter().any(|f| normal(f).contains(&normal(short))));
        if !agrees {
            bad.push(format!(
                "{name}\n    ours:   {ours:?}\n    oracle: {forms:?}"
            ));
        }
    }
    (demangled, bad)
}

/// A c++filt-style oracle: one output line per input line, the input itself when rejected.
fn cxxfilt(tool: &str, names: &[String]) -> Option<Vec<Option<String>>> {
    let out = run_oracle(tool, &[], names)?;
    assert_eq!(out.len(), names.len(), "{tool} skipped lines");
    Some(
        out.into_iter()
            .zip(names)
            .map(|(o, n)| (o != *n).then_some(o))
            .collect(),
    )
}

/// llvm-undname echoes each name, then prints its demangling (or an error) and a blank line.
fn undname(names: &[String]) -> Option<Vec<Option<String>>> {
    let out = run_oracle("llvm-undname", &[], names)
        .or_else(|| run_oracle("llvm-undname-14", &[], names))?;
    let mut at = 0;
    let mut forms = Vec::new();
    for n in names {
        let i = at + out[at..].iter().position(|l| l == n)?;
        let form = out.get(i + 1)?;
        forms.push((!form.starts_with("error:") && !form.is_empty()).then(|| form.clone()));
        at = i + 1;
    }
    Some(forms)
}

/// What symbolizing costs per printed frame: our demangling of every name, timed.
fn timing(names: &[String]) {
    let start = std::time::Instant::now();
    let n = names
        .iter()
        .filter(|n| xunwind::demangle::demangle(n).is_some())
        .count();
    let t = start.elapsed();
    eprintln!(
        "demangled {n} of {} names in {t:?} ({:.2} us per name)",
        names.len(),
        t.as_secs_f64() * 1e6 / names.len() as f64
    );
}

fn libstdcxx() -> Option<PathBuf> {
    let out = Command::new("g++")
        .arg("-print-file-name=libstdc++.so.6")
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

/// The names starting with `prefix` of code the file defines (functions and thunks: what a
/// stack can show; vtables, typeinfo and statics are left out).
fn code_names(path: &Path, prefix: &str) -> Vec<String> {
    use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let in_code = |addr: u64| {
        file.sections().any(|s| {
            s.kind() == SectionKind::Text && (s.address()..s.address() + s.size()).contains(&addr)
        })
    };
    let mut names: Vec<String> = file
        .dynamic_symbols()
        .chain(file.symbols())
        .filter(|s| s.is_definition() && s.kind() == SymbolKind::Text)
        .filter_map(|s| s.name().ok().map(str::to_string))
        .chain(
            file.exports()
                .unwrap_or_default()
                .iter()
                .filter(|e| in_code(e.address()))
                .map(|e| String::from_utf8_lossy(e.name()).into_owned()),
        )
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn itanium_names_of_libstdcxx_match_cxxfilt() {
    let Some(lib) = libstdcxx() else {
        require("libstdc++.so.6 (g++)");
        return;
    };
    let names = code_names(&lib, "_Z");
    assert!(
        names.len() > 1000,
        "{}: {} names",
        lib.display(),
        names.len()
    );
    // binutils (gdb's demangler) and LLVM's (lldb's) differ in one convention: LLVM and
    // cpp_demangle keep `std::string` as the prefix of a member, binutils expands it. Either
    // oracle's form is a debugger's.
    let (Some(gnu), Some(llvm)) = (
        cxxfilt("c++filt", &names),
        cxxfilt("llvm-cxxfilt", &names).or_else(|| cxxfilt("llvm-cxxfilt-14", &names)),
    ) else {
        require("c++filt and llvm-cxxfilt");
        return;
    };
    let (demangled, bad) = compare(&names, &[gnu, llvm]);
    timing(&names);
    eprintln!(
        "{}: {} _Z names, {demangled} demangled by the oracles, {} differ",
        lib.display(),
        names.len(),
        bad.len()
    );
    assert!(demangled > 1000);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn msvc_names_of_wine_msvcp140_match_llvm_undname() {
    let dll = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../corpus/unpacked/libwine/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/msvcp140.dll",
    );
    if !dll.is_file() {
        require("corpus/unpacked (corpus/fetch)");
        return;
    }
    let names = code_names(&dll, "?");
    assert!(
        names.len() > 1000,
        "{}: {} names",
        dll.display(),
        names.len()
    );
    let Some(mut full) = undname(&names) else {
        require("llvm-undname");
        return;
    };
    // Exports in code sections that are not functions (function-local statics that Wine's
    // build places there): a function's calling convention comes before any quoted scope.
    for f in &mut full {
        if f.as_ref()
            .is_some_and(|f| !f.split('`').next().unwrap().contains("__cdecl"))
        {
            *f = None;
        }
    }
    let (demangled, bad) = compare(&names, &[full]);
    timing(&names);
    eprintln!(
        "msvcp140.dll: {} decorated names, {demangled} demangled by llvm-undname, {} differ",
        names.len(),
        bad.len()
    );
    assert!(demangled > 1000);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

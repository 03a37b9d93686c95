//! `xunwind::demangle::demangle` on arbitrary names of every scheme it recognises: it must
//! return (no panic, no stack overflow, no runaway time or memory in the demanglers it calls)
//! and keep its contract: a result is non-empty, differs from the name, stays under
//! `MAX_DEMANGLED_LEN`, and names over `MAX_MANGLED_LEN` are never demangled; a `Symbol` made
//! from the name keeps it as its raw name.
//!
//! Input: a mode byte choosing the prefix (`_Z`, `_R`, `?`, `??$`, or a Rust legacy `_ZN` path
//! closed by a hash), then the name's body as lossy UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind::demangle::{demangle, MAX_DEMANGLED_LEN, MAX_MANGLED_LEN};
use xunwind::Symbol;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    let name = match mode % 5 {
        0 => format!("_Z{body}"),
        1 => format!("_R{body}"),
        2 => format!("?{body}"),
        3 => format!("??${body}"),
        _ => format!("_ZN{body}17h0123456789abcdefE"),
    };
    let out = demangle(&name);
    if let Some(s) = &out {
        assert!(!s.is_empty() && *s != name, "{name:?} -> {s:?}");
        assert!(s.len() <= MAX_DEMANGLED_LEN, "{name:?}: {} bytes", s.len());
        assert!(name.len() <= MAX_MANGLED_LEN, "{name:?} is over the cap");
    }
    let sym = Symbol::new(&name, 0);
    assert_eq!(sym.raw_name(), name);
    assert_eq!(sym.mangled.is_some(), out.is_some());
    assert_eq!(sym.name, out.unwrap_or(name));
});

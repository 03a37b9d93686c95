//! Linkage names as debuggers print them: `ns::Klass::method`, not `_ZN2ns5Klass6methodEv`.
//!
//! Three schemes are recognised by their prefix: Itanium C++ (`_Z`, `__Z`; via `cpp_demangle`),
//! Rust legacy (`_ZN...17h<hash>E`) and v0 (`_R`; via `rustc-demangle`), and MSVC decorated
//! names (`?`; via `msvc-demangler`). The result is the *short* form of gdb's `bt` and WinDbg's
//! `kn`: the qualified name with template arguments, without parameter list, return type or
//! Rust hash. Anything else, and anything a demangler rejects, gives `None`, so the caller shows
//! the raw name.
//!
//! The demanglers recurse and can expand back-references exponentially, and symbol names are
//! input like any other: names longer than [`MAX_MANGLED_LEN`] are not demangled, recursion is
//! capped (Itanium, Rust) or, for MSVC names, whose demangler has no cap, given a thread with a
//! stack deep enough for the longest name, and output stops at [`MAX_DEMANGLED_LEN`] bytes (then
//! the raw name is kept).

use core::fmt;

/// Longest linkage name that is demangled; longer names are shown raw.
pub const MAX_MANGLED_LEN: usize = 4096;

/// Longest short form kept; a demangling that grows past it is abandoned.
pub const MAX_DEMANGLED_LEN: usize = 16 * 1024;

/// Recursion cap for the Itanium parser and printer (the crate's defaults are 96 and 128; real
/// names nest far less, and a lower cap keeps debug builds' stacks safe on small threads).
const ITANIUM_RECURSION: u32 = 64;

/// Longest MSVC name demangled on the caller's stack. `msvc-demangler` has no recursion limit
/// and its parser can go one level deeper per byte (`PEAPEA...`: pointer to pointer to ...);
/// measured at up to 4 KiB of stack per byte in debug builds (1 KiB in release), so up to this
/// length (1 MiB at worst, half a Rust thread's default stack) any thread's stack will do, and
/// longer names go to a thread of their own.
const MSVC_INLINE_LEN: usize = 256;

/// Stack of the thread that demangles longer MSVC names: [`MAX_MANGLED_LEN`] levels at the
/// worst cost measured, with room to spare. Only reserved; the pages a name touches are used.
const MSVC_THREAD_STACK: usize = 64 << 20;

/// The short demangled form of `name`, or `None` when it is not a mangled name we recognise or
/// its demangler rejects it.
///
/// ```
/// use xunwind::demangle::demangle;
/// assert_eq!(demangle("_ZN2ns5Klass6methodEv").as_deref(), Some("ns::Klass::method"));
/// assert_eq!(demangle("?method@Klass@ns@@QEAAXXZ").as_deref(), Some("ns::Klass::method"));
/// assert_eq!(demangle("main"), None);
/// ```
pub fn demangle(name: &str) -> Option<String> {
    if name.len() > MAX_MANGLED_LEN {
        return None;
    }
    let demangler: fn(&str) -> Option<String> =
        if name.starts_with("_R") || name.starts_with("__R") || is_rust_legacy(name) {
            rust
        } else if name.starts_with("_Z") || name.starts_with("__Z") {
            itanium
        } else if name.starts_with('?') {
            msvc
        } else {
            return None;
        };
    // The demanglers are not ours: a panic inside one costs this name its demangling only.
    let out = std::panic::catch_unwind(|| demangler(name)).ok()??;
    // A demangler that accepts a name but prints nothing (or the name itself) adds nothing.
    (!out.is_empty() && out != name).then_some(out)
}

/// Whether `name` is a Rust legacy symbol: an Itanium-style `_ZN` path whose last element is
/// the 16-hex-digit hash `17h...E` (possibly followed by an LLVM `.suffix`).
fn is_rust_legacy(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("_ZN")
        .or_else(|| name.strip_prefix("__ZN"))
    else {
        return false;
    };
    // Bytes, not str slices: the cut 20 bytes from the end may fall inside a UTF-8 character.
    let body = rest.split('.').next().unwrap_or(rest).as_bytes();
    body.len() >= 20 && {
        let tail = &body[body.len() - 20..];
        tail.starts_with(b"17h")
            && tail.ends_with(b"E")
            && tail[3..19].iter().all(u8::is_ascii_hexdigit)
    }
}

/// A `fmt::Write` that refuses to grow past [`MAX_DEMANGLED_LEN`], which stops a demangler
/// expanding back-references without bound.
struct Bounded(String);

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.0.len() + s.len() > MAX_DEMANGLED_LEN {
            return Err(fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

fn rust(name: &str) -> Option<String> {
    use fmt::Write as _;
    let d = rustc_demangle::try_demangle(name).ok()?;
    let mut out = Bounded(String::new());
    // `{:#}` is the form without the legacy hash and v0's crate disambiguators.
    write!(out, "{d:#}").ok()?;
    // rustc-demangle prints this marker instead of failing when its own size cap is hit.
    (!out.0.contains("{size limit reached}") && !out.0.contains("{recursion limit reached}"))
        .then_some(out.0)
}

fn itanium(name: &str) -> Option<String> {
    // Thunks are code, so they appear in stacks: printed as binutils and LLVM print them, which
    // cpp_demangle does not (`{virtual override thunk(...)}`).
    let special = name
        .strip_prefix("_ZT")
        .or_else(|| name.strip_prefix("__ZT"));
    if let Some(rest) = special {
        let thunk = match rest.as_bytes().first() {
            Some(b'h') => Some(("non-virtual thunk to ", call_offset(rest))),
            Some(b'v') => Some(("virtual thunk to ", call_offset(rest))),
            Some(b'c') => Some((
                "covariant return thunk to ",
                call_offset(&rest[1..]).and_then(call_offset),
            )),
            _ => None,
        };
        if let Some((what, encoding)) = thunk {
            let target = itanium_encoding(&format!("_Z{}", encoding?))?;
            return (!target.starts_with('{')).then(|| format!("{what}{target}"));
        }
    }
    itanium_encoding(name)
}

/// The rest of `s` after one `<call-offset>`: `h <number> _` or `v <number> _ <number> _`, a
/// `<number>` being digits after an optional `n` (negative).
fn call_offset(s: &str) -> Option<&str> {
    fn number(s: &str) -> Option<&str> {
        let s = s.strip_prefix('n').unwrap_or(s);
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0).then(|| &s[digits..])?.strip_prefix('_')
    }
    match s.as_bytes().first()? {
        b'h' => number(&s[1..]),
        b'v' => number(number(&s[1..])?),
        _ => None,
    }
}

/// cpp_demangle's short form of a whole `_Z` name, in the spelling debuggers use.
fn itanium_encoding(name: &str) -> Option<String> {
    let parse = cpp_demangle::ParseOptions::default().recursion_limit(ITANIUM_RECURSION);
    let sym = cpp_demangle::Symbol::new_with_options(name.as_bytes(), &parse).ok()?;
    let print = cpp_demangle::DemangleOptions::new()
        .no_params()
        .no_return_type()
        .recursion_limit(ITANIUM_RECURSION);
    let mut out = Bounded(String::new());
    sym.structured_demangle(&mut out, &print).ok()?;
    // Without the parameter list, the member function's qualifiers (`str() const &`) are left
    // dangling (`str &`); debuggers print neither.
    let mut short = out.0.as_str();
    while let Some(rest) = [" const", " volatile", " &&", " &"]
        .iter()
        .find_map(|q| short.strip_suffix(q))
    {
        short = rest;
    }
    for (braced, words) in [("{vtable(", "vtable for "), ("{vtt(", "VTT for ")] {
        if let Some(ty) = short
            .strip_prefix(braced)
            .and_then(|t| t.strip_suffix(")}"))
        {
            return Some(format!("{words}{ty}"));
        }
    }
    Some(std_constructors(short))
}

/// The standard abbreviations (`Ss`, `Si`, `So`, `Sd`) name a class by a typedef, which cannot
/// name its constructor: binutils and LLVM both print `std::basic_string<...>::basic_string`
/// where cpp_demangle prints `std::string::string`.
fn std_constructors(short: &str) -> String {
    const ABBREVIATIONS: [(&str, &str, &str); 4] = [
        (
            "string",
            "basic_string",
            "std::basic_string<char, std::char_traits<char>, std::allocator<char> >",
        ),
        (
            "istream",
            "basic_istream",
            "std::basic_istream<char, std::char_traits<char> >",
        ),
        (
            "ostream",
            "basic_ostream",
            "std::basic_ostream<char, std::char_traits<char> >",
        ),
        (
            "iostream",
            "basic_iostream",
            "std::basic_iostream<char, std::char_traits<char> >",
        ),
    ];
    let mut out = short.to_string();
    for (typedef, class, full) in ABBREVIATIONS {
        for tilde in ["", "~"] {
            let from = format!("std::{typedef}::{tilde}{typedef}");
            let Some(at) = out.find(&from) else {
                continue;
            };
            // Only the whole constructor name, not a longer member that starts like it.
            let next = out[at + from.len()..].bytes().next();
            if next.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let to = format!("{full}::{tilde}{class}");
            out.replace_range(at..at + from.len(), &to);
        }
    }
    out
}

fn msvc(name: &str) -> Option<String> {
    fn run(name: &str) -> Option<String> {
        use msvc_demangler::DemangleFlags as F;
        // WinDbg's form: the qualified name, template arguments without class/struct keywords,
        // Microsoft's type names (`unsigned __int64`).
        let flags = F::NAME_ONLY | F::NO_CLASS_TYPE | F::MS_TYPENAMES;
        let out = msvc_demangler::demangle(name, flags).ok()?;
        (out.len() <= MAX_DEMANGLED_LEN).then_some(out)
    }
    if name.len() <= MSVC_INLINE_LEN {
        return run(name);
    }
    // A failure to start the thread, or a panic in it, leaves the name raw.
    let owned = name.to_string();
    std::thread::Builder::new()
        .name("xunwind-demangle".into())
        .stack_size(MSVC_THREAD_STACK)
        .spawn(move || run(&owned))
        .ok()?
        .join()
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str) -> Option<String> {
        demangle(name)
    }

    #[test]
    fn itanium_short_forms() {
        assert_eq!(
            d("_ZN2ns5Klass6methodEv").as_deref(),
            Some("ns::Klass::method")
        );
        // A function template: no return type, no parameters, template arguments kept.
        assert_eq!(
            d("_ZN2ns5twiceIiEET_S1_").as_deref(),
            Some("ns::twice<int>")
        );
        // An operator and a constructor (complete and base object constructors name alike).
        assert_eq!(
            d("_ZN2ns5KlassclEi").as_deref(),
            Some("ns::Klass::operator()")
        );
        assert_eq!(d("_ZN2ns5KlassC2Ei").as_deref(), Some("ns::Klass::Klass"));
        assert_eq!(d("_ZN2ns5KlassD1Ev").as_deref(), Some("ns::Klass::~Klass"));
        // A const member of a class template instance; a free operator.
        assert_eq!(
            d("_ZNK2ns3BoxINS0_IiEEE3getEv").as_deref(),
            Some("ns::Box<ns::Box<int> >::get")
        );
        assert_eq!(
            d("_ZN2nsplERKNS_5KlassES2_").as_deref(),
            Some("ns::operator+")
        );
        // gcc's clone suffixes (hot/cold split, constant propagation) name the same function.
        assert_eq!(d("_ZN2ns1fEv.cold").as_deref(), Some("ns::f"));
        assert_eq!(d("_ZL6helperi").as_deref(), Some("helper"));
        // Qualifiers of the member function go with its parameters (`str() const &`).
        assert_eq!(
            d("_ZNKRSt7__cxx1115basic_stringbufIcSt11char_traitsIcESaIcEE3strEv").as_deref(),
            Some("std::__cxx11::basic_stringbuf<char, std::char_traits<char>, std::allocator<char> >::str")
        );
        assert_eq!(
            d("_ZZN2ns1fEvENKUliE_clEi").as_deref(),
            Some("ns::f()::{lambda(int)#1}::operator()")
        );
        // Thunks, in binutils' and LLVM's words; special data names likewise.
        assert_eq!(
            d("_ZThn8_N2ns1D1fEv").as_deref(),
            Some("non-virtual thunk to ns::D::f")
        );
        assert_eq!(
            d("_ZTv0_n24_N2ns1D1fEv").as_deref(),
            Some("virtual thunk to ns::D::f")
        );
        assert_eq!(
            d("_ZTch0_h16_N2ns1D5cloneEv").as_deref(),
            Some("covariant return thunk to ns::D::clone")
        );
        assert_eq!(d("_ZThn8_"), None);
        assert_eq!(d("_ZThx_N2ns1D1fEv"), None);
        assert_eq!(d("_ZTVN2ns1DE").as_deref(), Some("vtable for ns::D"));
        assert_eq!(d("_ZTTSo").as_deref(), Some("VTT for std::ostream"));
        assert_eq!(d("_ZTIN2ns1DE").as_deref(), Some("typeinfo for ns::D"));
        // A typedef cannot name a constructor: the class template's name is used.
        assert_eq!(
            d("_ZNSsC1Ev").as_deref(),
            Some("std::basic_string<char, std::char_traits<char>, std::allocator<char> >::basic_string")
        );
        assert_eq!(
            d("_ZNSoD0Ev").as_deref(),
            Some("std::basic_ostream<char, std::char_traits<char> >::~basic_ostream")
        );
        assert_eq!(d("_ZNKSs4sizeEv").as_deref(), Some("std::string::size"));
        // Operators whose names end in `&` keep it.
        assert_eq!(d("_ZN2nsanERKNS_1AES2_").as_deref(), Some("ns::operator&"));
        assert_eq!(d("_ZN2nsaaERKNS_1AES2_").as_deref(), Some("ns::operator&&"));
        // Mach-O's extra underscore.
        assert_eq!(
            d("__ZN2ns5Klass6methodEv").as_deref(),
            Some("ns::Klass::method")
        );
        // A free function in an anonymous namespace.
        assert_eq!(
            d("_ZN12_GLOBAL__N_16helperEi").as_deref(),
            Some("(anonymous namespace)::helper")
        );
    }

    #[test]
    fn not_mangled_names_stay_raw() {
        for raw in [
            "main",
            "stop_here",
            "__libc_start_main",
            "_start",
            "",
            "Z",
            "_",
            "?",
        ] {
            assert_eq!(d(raw), None, "{raw:?}");
        }
        // Static initialisers are not demangled (gdb prints them as they are).
        assert_eq!(d("_GLOBAL__sub_I_main"), None);
    }

    #[test]
    fn malformed_names_stay_raw() {
        for raw in [
            "_Z",
            "_ZN2ns",
            "_ZN3ab",
            "_Z3foov_trailing_garbage",
            "_ZZZZ",
            "_R",
            "_RNv",
        ] {
            assert_eq!(d(raw), None, "{raw:?}");
        }
        assert_eq!(d("?method@@@"), None);
    }

    #[test]
    fn rust_legacy_and_v0() {
        assert_eq!(
            d("_ZN4core3fmt5write17h0123456789abcdefE").as_deref(),
            Some("core::fmt::write")
        );
        // An LLVM suffix after the hash is dropped like the hash.
        assert_eq!(
            d("_ZN4core3fmt5write17h0123456789abcdefE.llvm.123").as_deref(),
            Some("core::fmt::write")
        );
        // v0: crate disambiguators are dropped in the short form.
        assert_eq!(
            d("_RNvNtCs1234_7mycrate3foo3bar").as_deref(),
            Some("mycrate::foo::bar")
        );
        assert_eq!(
            d("_RNvMNtCs1234_7mycrate3fooNtB2_3Bar3new").as_deref(),
            Some("<mycrate::foo::Bar>::new")
        );
        // rustc 1.95's own v0 names (its default): an inherent method, a trait method and a
        // generic function, as Rust's backtraces print them (gdb names the first
        // `names::ns::Klass::method` from DWARF; the symbol does not say more than this).
        assert_eq!(
            d("_RNvMNtCs4T4zK9Otvt5_5names2nsNtB2_5Klass6method").as_deref(),
            Some("<names::ns::Klass>::method")
        );
        assert_eq!(
            d("_RNvXs_NtCs4T4zK9Otvt5_5names2nsNtB4_5KlassNtB4_2Tr4call").as_deref(),
            Some("<names::ns::Klass as names::ns::Tr>::call")
        );
        assert_eq!(
            d("_RINvNtCs4T4zK9Otvt5_5names2ns5twiceNtB2_5KlassEB4_").as_deref(),
            Some("names::ns::twice::<names::ns::Klass>")
        );
    }

    #[test]
    fn msvc_short_forms() {
        // A public member function: access, calling convention and parameters dropped.
        assert_eq!(
            d("?method@Klass@ns@@QEAAXXZ").as_deref(),
            Some("ns::Klass::method")
        );
        assert_eq!(d("?f@@YAHH@Z").as_deref(), Some("f"));
        // A constructor and a template.
        assert_eq!(
            d("??0Klass@ns@@QEAA@H@Z").as_deref(),
            Some("ns::Klass::Klass")
        );
        assert_eq!(
            d("??$twice@H@ns@@YAHH@Z").as_deref(),
            Some("ns::twice<int>")
        );
        assert_eq!(
            d("??1Klass@ns@@QEAA@XZ").as_deref(),
            Some("ns::Klass::~Klass")
        );
        assert_eq!(
            d("??RKlass@ns@@QEAAHH@Z").as_deref(),
            Some("ns::Klass::operator()")
        );
        // Microsoft's type names, as WinDbg prints them.
        assert_eq!(
            d("??Bid@locale@std@@QEAA_KXZ").as_deref(),
            Some("std::locale::id::operator unsigned __int64")
        );
        // Longer than the in-place limit: demangled on a thread of its own (llvm-undname's
        // demangling, without its spaces and class/struct keywords).
        let long =
            "?clear@?$map@V?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@V12@\
                    U?$less@V?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@@2@V?$\
                    allocator@U?$pair@$$CBV?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@\
                    @std@@V12@@std@@@2@@std@@QEAAXXZ";
        assert!(long.len() > MSVC_INLINE_LEN);
        let string = "std::basic_string<char,std::char_traits<char>,std::allocator<char> >";
        assert_eq!(
            d(long),
            Some(format!(
                "std::map<{string},{string},std::less<{string} >,\
                 std::allocator<std::pair<{string} const,{string} > > >::clear"
            ))
        );
    }

    #[test]
    fn deep_msvc_names_do_not_overflow_the_stack() {
        // One parser level per byte or so, 4 KiB long: this overflowed an 8 MiB stack (debug)
        // when demangled in place; test threads have 2 MiB.
        let pointers = format!("?f@@YAX{}H@Z", "PEA".repeat(1360));
        assert!(pointers.len() <= MAX_MANGLED_LEN);
        assert_eq!(d(&pointers).as_deref(), Some("f"));
        let functions = format!("?f@@YAX{}@Z", "P6AX".repeat(1020));
        assert_eq!(d(&functions), None);
    }

    #[test]
    fn fuzz_regressions() {
        // A `_ZN` name with a multi-byte character 20 bytes from its end (a str slice there
        // panicked).
        assert_eq!(d("_ZN2\u{fffd}s5Klass6met\u{fffd}odEv"), None);
        assert_eq!(d("_ZNé17h0123456789abcdefE"), None);
    }

    #[test]
    fn huge_garbage_returns_quickly() {
        let start = std::time::Instant::now();
        for prefix in ["_Z", "_R", "?", "_ZN"] {
            let mut name = String::from(prefix);
            while name.len() < 100 * 1024 {
                name.push_str("N1aIS_E");
            }
            assert_eq!(d(&name), None);
        }
        // Just under the length cap, deeply nested: refused by the recursion caps.
        let nested = format!("_Z1f{}", "PFv".repeat(1300));
        assert!(nested.len() <= MAX_MANGLED_LEN);
        assert_eq!(d(&nested), None);
        let msvc = format!("?f@@YA{}@Z", "?$A@".repeat(1000));
        assert_eq!(d(&msvc), None);
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}

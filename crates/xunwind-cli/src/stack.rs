//! `xunwind stack INPUT`: walk a thread of a minidump or ELF core file (CONFORMANCE section 5).

use crate::json::Obj;
use std::io::Write;
use std::path::PathBuf;
use xunwind::{LoadOptions, StackWalker, Symbol, Symbols, Target, Thread, Trust, Walk};

const USAGE: &str = "usage: xunwind stack (INPUT | --pid PID) [--json] [--modules DIR]... [--symbols DIR]... [--thread N] [--max-frames N] [--no-demangle]";

/// Runs `xunwind stack`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut input = None;
    let mut pid = None;
    let mut json = false;
    let mut demangle = true;
    let mut options = LoadOptions::default();
    let mut thread: Option<u64> = None;
    let mut walker = StackWalker::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--json" => json = true,
            "--no-demangle" => demangle = false,
            "--modules" => options.module_dirs.push(PathBuf::from(value("--modules")?)),
            "--symbols" => options.symbol_dirs.push(PathBuf::from(value("--symbols")?)),
            "--thread" => thread = Some(parse_number(&value("--thread")?)?),
            "--pid" => pid = Some(parse_number(&value("--pid")?)?),
            "--max-frames" => {
                walker.max_frames = parse_number(&value("--max-frames")?)? as usize;
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            s if input.is_none() => input = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let input = match (input, pid) {
        (Some(input), None) => input,
        (None, Some(pid)) => return live(pid, thread, &options, &walker, json, demangle),
        _ => return Err(USAGE.to_string()),
    };
    let target = Target::open(&input, &options).map_err(|e| e.to_string())?;
    let t = pick(&target.threads, target.default_thread(), thread).ok_or_else(|| match thread {
        Some(n) => format!("no thread {n} in {}", input.display()),
        None => format!("{} has no threads", input.display()),
    })?;
    let regs = target
        .exception
        .as_ref()
        .filter(|e| e.thread_id == t.id)
        .and_then(|e| e.context.clone())
        .unwrap_or_else(|| t.regs.clone());
    let space = target.address_space();
    let symbols = target.symbols(&options);
    let walk = walker.walk(&space, &regs, &target.memory);
    report(&walk, &symbols, json, demangle)
}

/// Thread `n` (a thread id first, failing that a 0-based index), else `default`.
fn pick<'t>(
    threads: &'t [Thread],
    default: Option<&'t Thread>,
    n: Option<u64>,
) -> Option<&'t Thread> {
    match n {
        Some(n) => threads
            .iter()
            .find(|t| t.id == n)
            .or_else(|| threads.get(usize::try_from(n).ok()?)),
        None => default,
    }
}

/// `--pid`: every thread of a live process stopped (ptrace), one walked with its memory read
/// through `process_vm_readv`, then the process detached and let run.
#[cfg(all(feature = "live", target_os = "linux"))]
fn live(
    pid: u64,
    thread: Option<u64>,
    options: &LoadOptions,
    walker: &StackWalker,
    json: bool,
    demangle: bool,
) -> Result<(), String> {
    let pid = u32::try_from(pid).map_err(|_| format!("not a process id: {pid}"))?;
    let process = xunwind::LiveProcess::attach_with(pid, options).map_err(|e| e.to_string())?;
    // The thread-group leader is listed first.
    let t = pick(process.threads(), process.threads().first(), thread)
        .ok_or_else(|| format!("no thread {} in process {pid}", thread.unwrap_or(0)))?;
    let space = process.address_space();
    let symbols = process.symbols(options);
    let walk = walker.walk(&space, &t.regs, process.memory());
    let result = report(&walk, &symbols, json, demangle);
    drop((symbols, space));
    process.detach();
    result
}

#[cfg(not(all(feature = "live", target_os = "linux")))]
fn live(
    _: u64,
    _: Option<u64>,
    _: &LoadOptions,
    _: &StackWalker,
    _: bool,
    _: bool,
) -> Result<(), String> {
    Err("--pid needs a Linux build with the `live` feature".into())
}

/// Prints a walk's frames, named, in the human or the JSON form (CONFORMANCE section 5).
fn report(walk: &Walk, symbols: &Symbols<'_>, json: bool, demangle: bool) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write = |out: &mut std::io::BufWriter<_>| -> std::io::Result<()> {
        for (n, f) in walk.frames.iter().enumerate() {
            // Return addresses belong to the call before them.
            let at = if n == 0 || f.trust == Trust::Context {
                f.pc
            } else {
                f.pc.wrapping_sub(1)
            };
            let loc = symbols.lookup(at);
            // The printed name, and the linkage name it was demangled from (JSON's "mangled").
            let name = |s: &Symbol| -> (String, Option<String>) {
                if demangle {
                    (s.name.clone(), s.mangled.clone())
                } else {
                    (s.raw_name().to_string(), None)
                }
            };
            let mut mangled = None;
            if json {
                let mut o = Obj::new();
                o.num("frame", n as u64);
                o.str("pc", &format!("{:#x}", f.pc));
                o.str("sp", &format!("{:#x}", f.sp));
                match &loc {
                    Some(l) => {
                        o.str("module", l.module);
                        o.str(
                            "module_offset",
                            &format!("{:#x}", f.pc - (at - l.module_offset)),
                        );
                        match &l.symbol {
                            Some(s) => {
                                let (function, linkage) = name(s);
                                mangled = linkage;
                                o.str("function", &function);
                                o.str("function_offset", &format!("{:#x}", f.pc - (at - s.offset)));
                            }
                            None => {
                                o.raw("function", "null");
                                o.raw("function_offset", "null");
                            }
                        }
                    }
                    None => {
                        o.raw("module", "null");
                        o.raw("module_offset", "null");
                        o.raw("function", "null");
                        o.raw("function_offset", "null");
                    }
                }
                o.str("trust", f.trust.as_str());
                // Additive (CONFORMANCE 5): present only when "function" was demangled.
                if let Some(m) = &mangled {
                    o.str("mangled", m);
                }
                writeln!(out, "{}", o.finish())?;
            } else {
                let site = match &loc {
                    Some(l) => {
                        let module = module_stem(l.module);
                        match &l.symbol {
                            Some(s) => {
                                format!("{module}!{}+{:#x}", name(s).0, f.pc - (at - s.offset))
                            }
                            None => format!("{module}+{:#x}", f.pc - (at - l.module_offset)),
                        }
                    }
                    None => format!("{:#x}", f.pc),
                };
                writeln!(out, "{n:02} {site}")?;
            }
        }
        if json {
            let mut o = Obj::new();
            o.str("end", walk.stop.as_str());
            writeln!(out, "{}", o.finish())?;
        } else {
            writeln!(out, "-- {}", walk.stop.as_str())?;
        }
        out.flush()
    };
    crate::io_result(write(&mut out))
}

/// WinDbg names modules without their extension (`ntdll`, `kernel32`); ELF names stay whole.
fn module_stem(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    for ext in [".dll", ".exe", ".sys", ".drv"] {
        if lower.ends_with(ext) {
            return &name[..name.len() - ext.len()];
        }
    }
    name
}

/// A decimal or `0x` hex number.
fn parse_number(s: &str) -> Result<u64, String> {
    if s.starts_with("0x") || s.starts_with("0X") {
        crate::parse_hex(s)
    } else {
        s.parse().map_err(|_| format!("not a number: {s:?}"))
    }
}

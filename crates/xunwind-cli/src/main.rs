//! `xunwind`: dump, look up and unwind x64 unwind tables from the command line.
//!
//! Output formats are the contracts of `shared/CONFORMANCE.md`; other tools parse them.

mod dispatch;
mod extable;
mod json;
mod pe;
mod probe;
mod stack;

use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  xunwind pe dump [FILE] [--json]      dump .pdata/.xdata (default FILE: the bundled fixture)
  xunwind pe lookup FILE RVA...        RtlLookupFunctionEntry for each RVA (hex)
  xunwind pe probe FILE [--pcs LIST] [--emit-pcs]
                                       RtlVirtualUnwind on the synthetic thread (CONFORMANCE 3)
  xunwind extable FILE [--json] [--ip ADDR] [--system-map FILE]
                                       __ex_table of a vmlinux, bzImage or .ko (CONFORMANCE 4)
  xunwind stack (INPUT | --pid PID) [--json] [--modules DIR]... [--symbols DIR]...
                [--thread N] [--max-frames N] [--no-demangle]
                                       walk a thread of a minidump, an ELF core or a live
                                       process (CONFORMANCE 5)
  xunwind dispatch INPUT [--json] [--filter ADDR=RESULT]... [--ip ADDR] ...
                                       who handles a fault: Windows dispatch or kernel
                                       __ex_table (CONFORMANCE 6; `dispatch --help`)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("pe") => pe::run(&args[1..]),
        Some("extable") => extable::run(&args[1..]),
        Some("stack") => stack::run(&args[1..]),
        Some("dispatch") => dispatch::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            let _ = std::io::stdout().flush();
            eprintln!("xunwind: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a hex number with or without `0x`.
pub(crate) fn parse_hex(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|_| format!("not a hex number: {s:?}"))
}

/// Maps a write error to a message, treating a closed pipe as success.
pub(crate) fn io_result(r: std::io::Result<()>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| format!("write error: {e}")),
    }
}

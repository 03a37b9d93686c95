//! `xunwind pe ...`: Windows x64 unwind data.

use crate::json::Obj;
use crate::{io_result, parse_hex};
use std::fmt::Write as _;
use std::io::Write;
use xunwind::pe::{
    PeError, PeImage, RuntimeFunction, UnwindInfo, UnwindOp, UNW_FLAG_CHAININFO, UNW_FLAG_EHANDLER,
    UNW_FLAG_UHANDLER,
};

/// The fixture dumped when no file is given (built from our own sources; recipe beside it).
const BUNDLED: &[u8] = include_bytes!("../../../corpus/fixtures/msvc/msvc.dll");

pub fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("dump") => dump(&args[1..]),
        Some("lookup") => lookup(&args[1..]),
        Some("probe") => crate::probe::run(&args[1..]),
        _ => Err("usage: xunwind pe dump [FILE] [--json] | pe lookup FILE RVA...".into()),
    }
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn parse_image<'a>(path: &str, data: &'a [u8]) -> Result<PeImage<'a>, String> {
    PeImage::parse(data).map_err(|e| format!("{path}: {e}"))
}

/// Everything the dump says about one `.pdata` entry.
struct Entry<'a> {
    index: usize,
    func: RuntimeFunction,
    /// For an indirect entry, the RVA of the RUNTIME_FUNCTION it points to.
    indirect: Option<u32>,
    /// The RVA of the UNWIND_INFO described (the target's, for an indirect entry).
    unwind: u32,
    info: Option<UnwindInfo<'a>>,
    /// The version byte when the info could not be parsed past it.
    raw_version: Option<u8>,
    codes: Vec<(u8, UnwindOp)>,
    chained: Option<RuntimeFunction>,
    handler: Option<(u32, u32)>,
    error: Option<String>,
}

fn describe<'a>(img: &PeImage<'a>, index: usize, func: RuntimeFunction) -> Entry<'a> {
    let mut e = Entry {
        index,
        func,
        indirect: None,
        unwind: func.unwind_data,
        info: None,
        raw_version: None,
        codes: Vec::new(),
        chained: None,
        handler: None,
        error: None,
    };
    let fail = |e: &mut Entry<'a>, msg: String| {
        if e.error.is_none() {
            e.error = Some(msg);
        }
    };
    if func.is_indirect() {
        e.indirect = Some(func.target_rva());
        match img.runtime_function_at(func.target_rva()) {
            Ok(t) if t.is_indirect() => {
                e.unwind = t.unwind_data;
                fail(
                    &mut e,
                    format!(
                        "indirect entry points at another indirect entry at {:#x}",
                        func.target_rva()
                    ),
                );
                return e;
            }
            Ok(t) => e.unwind = t.unwind_data,
            Err(err) => {
                fail(&mut e, err.to_string());
                return e;
            }
        }
    }
    match img.unwind_info(e.unwind) {
        Ok(info) => {
            e.info = Some(info);
            for c in info.codes() {
                match c {
                    Ok(c) => {
                        if let UnwindOp::Unknown { op, .. } = c.op {
                            fail(
                                &mut e,
                                format!("undefined unwind op {op} at slot {}", c.slot),
                            );
                        }
                        e.codes.push((c.offset, c.op));
                    }
                    Err(err) => fail(&mut e, err.to_string()),
                }
            }
            match info.chained() {
                Ok(c) => e.chained = c,
                Err(err) => fail(&mut e, err.to_string()),
            }
            match info.handler() {
                Ok(h) => e.handler = h,
                Err(err) => fail(&mut e, err.to_string()),
            }
        }
        Err(err) => {
            if let PeError::BadVersion { version, .. } = err {
                e.raw_version = Some(version);
            }
            fail(&mut e, err.to_string());
        }
    }
    e
}

fn flag_names(flags: u8) -> impl Iterator<Item = &'static str> {
    [
        (UNW_FLAG_EHANDLER, "EHANDLER"),
        (UNW_FLAG_UHANDLER, "UHANDLER"),
        (UNW_FLAG_CHAININFO, "CHAININFO"),
    ]
    .into_iter()
    .filter(move |(f, _)| flags & f != 0)
    .map(|(_, n)| n)
}

fn code_json(offset: u8, op: UnwindOp) -> String {
    let mut o = Obj::new();
    o.num("offset", offset as u64);
    match op {
        UnwindOp::PushNonvol(r) => o.str("op", "PUSH_NONVOL").str("reg", r.name()),
        UnwindOp::AllocLarge { size, .. } => o.str("op", "ALLOC_LARGE").num("size", size as u64),
        UnwindOp::AllocSmall(size) => o.str("op", "ALLOC_SMALL").num("size", size as u64),
        UnwindOp::SetFpreg => o.str("op", "SET_FPREG"),
        UnwindOp::SaveNonvol { reg, offset } => o
            .str("op", "SAVE_NONVOL")
            .str("reg", reg.name())
            .num("stack_offset", offset as u64),
        UnwindOp::SaveNonvolFar { reg, offset } => o
            .str("op", "SAVE_NONVOL_FAR")
            .str("reg", reg.name())
            .num("stack_offset", offset as u64),
        UnwindOp::SaveXmm128 { xmm, offset } => o
            .str("op", "SAVE_XMM128")
            .num("xmm", xmm as u64)
            .num("stack_offset", offset as u64),
        UnwindOp::SaveXmm128Far { xmm, offset } => o
            .str("op", "SAVE_XMM128_FAR")
            .num("xmm", xmm as u64)
            .num("stack_offset", offset as u64),
        UnwindOp::PushMachframe { error_code } => {
            o.str("op", "PUSH_MACHFRAME").bool("error_code", error_code)
        }
        UnwindOp::EpilogHead { size, at_end } => o
            .str("op", "EPILOG")
            .num("size", size as u64)
            .bool("at_end", at_end),
        UnwindOp::Epilog { distance } => o.str("op", "EPILOG").num("distance", distance as u64),
        UnwindOp::Unknown { op, info } => o
            .str("op", "UNKNOWN")
            .num("code", op as u64)
            .num("info", info as u64),
    };
    o.finish()
}

fn entry_json(e: &Entry<'_>) -> String {
    let mut o = Obj::new();
    o.num("index", e.index as u64)
        .num("begin", e.func.begin as u64)
        .num("end", e.func.end as u64)
        .num("unwind", e.unwind as u64)
        .opt_num("indirect", e.indirect.map(u64::from));
    match &e.info {
        Some(info) => {
            let flags: Vec<String> = flag_names(info.flags())
                .map(|f| format!("\"{f}\""))
                .collect();
            o.num("version", info.version() as u64)
                .raw("flags", &format!("[{}]", flags.join(",")))
                .num("prolog", info.prolog_size() as u64)
                .opt_str("frame_reg", info.frame_register().map(|r| r.name()))
                .num("frame_offset", info.frame_offset() as u64);
        }
        None => {
            o.opt_num("version", e.raw_version.map(u64::from))
                .raw("flags", "[]")
                .raw("prolog", "null")
                .raw("frame_reg", "null")
                .raw("frame_offset", "null");
        }
    }
    let codes: Vec<String> = e
        .codes
        .iter()
        .map(|&(off, op)| code_json(off, op))
        .collect();
    o.raw("codes", &format!("[{}]", codes.join(",")))
        .opt_num("handler", e.handler.map(|h| h.0 as u64))
        .opt_num("handler_data", e.handler.map(|h| h.1 as u64));
    match e.chained {
        Some(c) => {
            let mut co = Obj::new();
            co.num("begin", c.begin as u64)
                .num("end", c.end as u64)
                .num("unwind", c.unwind_data as u64);
            o.raw("chained", &co.finish())
        }
        None => o.raw("chained", "null"),
    };
    o.opt_str("error", e.error.as_deref());
    o.finish()
}

fn code_text(offset: u8, op: UnwindOp) -> String {
    let body = match op {
        UnwindOp::PushNonvol(r) => format!("PUSH_NONVOL reg={r}"),
        UnwindOp::AllocLarge { size, long } => {
            format!(
                "ALLOC_LARGE size={size:#x}{}",
                if long { " (32-bit)" } else { "" }
            )
        }
        UnwindOp::AllocSmall(size) => format!("ALLOC_SMALL size={size:#x}"),
        UnwindOp::SetFpreg => "SET_FPREG".into(),
        UnwindOp::SaveNonvol { reg, offset } => format!("SAVE_NONVOL reg={reg} offset={offset:#x}"),
        UnwindOp::SaveNonvolFar { reg, offset } => {
            format!("SAVE_NONVOL_FAR reg={reg} offset={offset:#x}")
        }
        UnwindOp::SaveXmm128 { xmm, offset } => {
            format!("SAVE_XMM128 reg=xmm{xmm} offset={offset:#x}")
        }
        UnwindOp::SaveXmm128Far { xmm, offset } => {
            format!("SAVE_XMM128_FAR reg=xmm{xmm} offset={offset:#x}")
        }
        UnwindOp::PushMachframe { error_code } => {
            format!(
                "PUSH_MACHFRAME error_code={}",
                if error_code { "yes" } else { "no" }
            )
        }
        UnwindOp::EpilogHead { size, at_end } => {
            format!(
                "EPILOG size={size:#x} at_end={}",
                if at_end { "yes" } else { "no" }
            )
        }
        UnwindOp::Epilog { distance } => format!("EPILOG distance={distance:#x}"),
        UnwindOp::Unknown { op, info } => format!("UNKNOWN op={op} info={info}"),
    };
    format!("0x{offset:02X}: {body}")
}

fn entry_text(e: &Entry<'_>, out: &mut String) {
    let _ = writeln!(out, "RuntimeFunction {{");
    let _ = writeln!(out, "  Index: {}", e.index);
    let _ = writeln!(out, "  StartAddress: {:#x}", e.func.begin);
    let _ = writeln!(out, "  EndAddress: {:#x}", e.func.end);
    if let Some(t) = e.indirect {
        let _ = writeln!(out, "  IndirectTo: {t:#x}");
    }
    let _ = writeln!(out, "  UnwindInfoAddress: {:#x}", e.unwind);
    if let Some(info) = &e.info {
        let _ = writeln!(out, "  UnwindInfo {{");
        let _ = writeln!(out, "    Version: {}", info.version());
        let names: Vec<&str> = flag_names(info.flags()).collect();
        let _ = writeln!(
            out,
            "    Flags [ {} ] ({:#x})",
            names.join(" "),
            info.flags()
        );
        let _ = writeln!(out, "    PrologSize: {}", info.prolog_size());
        match info.frame_register() {
            Some(r) => {
                let _ = writeln!(out, "    FrameRegister: {r}");
                let _ = writeln!(out, "    FrameOffset: {:#x}", info.frame_offset());
            }
            None => {
                let _ = writeln!(out, "    FrameRegister: -");
                let _ = writeln!(out, "    FrameOffset: -");
            }
        }
        let _ = writeln!(out, "    UnwindCodeCount: {}", info.count_of_codes());
        let _ = writeln!(out, "    UnwindCodes [");
        for &(off, op) in &e.codes {
            let _ = writeln!(out, "      {}", code_text(off, op));
        }
        let _ = writeln!(out, "    ]");
        if let Some((h, d)) = e.handler {
            let _ = writeln!(out, "    Handler: {h:#x}");
            let _ = writeln!(out, "    HandlerData: {d:#x}");
        }
        if let Some(c) = e.chained {
            let _ = writeln!(
                out,
                "    Chained: {:#x}-{:#x} unwind {:#x}",
                c.begin, c.end, c.unwind_data
            );
        }
        let _ = writeln!(out, "  }}");
    }
    if let Some(err) = &e.error {
        let _ = writeln!(out, "  Error: {err}");
    }
    let _ = writeln!(out, "}}");
}

fn dump(args: &[String]) -> Result<(), String> {
    let json = args.iter().any(|a| a == "--json");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (name, owned) = match files.as_slice() {
        [] => ("<bundled msvc.dll>".to_string(), None),
        [f] => (f.to_string(), Some(read_file(f)?)),
        _ => return Err("pe dump takes one FILE".into()),
    };
    let data = owned.as_deref().unwrap_or(BUNDLED);
    let img = parse_image(&name, data)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = String::new();
    if !json {
        let (rva, size) = img.pdata_directory();
        let _ = writeln!(
            line,
            "File: {name}\nImageBase: {:#x}\nExceptionDirectory: {rva:#x} size {size:#x} ({} entries)",
            img.image_base(),
            img.functions().len()
        );
        if let Some(p) = img.pdata_problem() {
            let _ = writeln!(line, "Warning: {p}");
        }
        if let Some(e) = img.functions().order_error() {
            let _ = writeln!(line, "Warning: {e}; lookups follow Windows' binary search");
        }
        io_result(out.write_all(line.as_bytes()))?;
    }
    for (i, f) in img.functions().iter().enumerate() {
        let e = describe(&img, i, f);
        line.clear();
        if json {
            line.push_str(&entry_json(&e));
            line.push('\n');
        } else {
            entry_text(&e, &mut line);
        }
        io_result(out.write_all(line.as_bytes()))?;
    }
    io_result(out.flush())
}

fn lookup(args: &[String]) -> Result<(), String> {
    let (path, rvas) = args
        .split_first()
        .ok_or("usage: xunwind pe lookup FILE RVA...")?;
    let data = read_file(path)?;
    let img = parse_image(path, &data)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in rvas {
        let v = parse_hex(r)?;
        let hit = u32::try_from(v)
            .ok()
            .and_then(|rva| img.lookup_function_entry(rva));
        let line = match hit {
            Some(f) => format!("L pc={v:x} -> {:x}\n", f.begin),
            None => format!("L pc={v:x} -> -\n"),
        };
        io_result(out.write_all(line.as_bytes()))?;
    }
    io_result(out.flush())
}

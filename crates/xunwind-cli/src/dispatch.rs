//! `xunwind dispatch`: who handles a fault (CONFORMANCE section 6).
//!
//! Windows: from a minidump's exception stream, or from a synthetic fault (PE files at load
//! addresses, registers, stack bytes) given by flags or a context file. Linux kernel: the
//! `__ex_table` entry of an ip in a vmlinux (and modules), or an oops.

use crate::json::Obj;
use std::io::Write;
use std::path::{Path, PathBuf};
use xunwind::core::RegionMemory;
use xunwind::dispatch::{
    gcc_thrown_type, Decisions, DispatchOptions, ExceptionResolver, Fault, ScopeRules,
};
use xunwind::extable::{FileKind, KernelFile};
use xunwind::pe::Compat;
use xunwind::{
    CodeImages, Event, FilterResult, KernelResolution, KernelResolver, LoadOptions, MemoryReader,
    Outcome, PeModule, Reg, Regs, Target,
};

const USAGE: &str = "\
usage:
  xunwind dispatch DUMP [--json] [--filter ADDR=RESULT]... [--thrown-type ADDR]
                   [--modules DIR]... [--symbols DIR]...
      Predict Windows' two-phase dispatch of the minidump's exception.
  xunwind dispatch --pe FILE@BASE [--pe FILE@BASE]... --rip ADDR --rsp ADDR
                   [--reg NAME=VALUE]... [--stack FILE@ADDR]... [--code CODE] [--param VALUE]...
                   [--json] [--filter ADDR=RESULT]... [--thrown-type ADDR]
      The same for a synthetic fault: PE files (disk layout) loaded at BASE, the registers at
      the fault, and stack memory (FILE's bytes at ADDR). CODE defaults to 0xc0000005.
  xunwind dispatch --context FILE [options as above]
      Reads the synthetic fault from FILE, one `key value...` per line (# comments):
        module PATH BASE | stack PATH ADDR | code CODE | param VALUE | REG VALUE
        | stacklimits LOW HIGH (the thread's stack: establisher frames are checked)
      (REG: rip rsp rax ... r15); relative paths are relative to FILE's directory.
  xunwind dispatch VMLINUX --ip ADDR [--modules DIR]... [--json]
                   [--rsp ADDR [--reg NAME=VALUE]... --stack FILE@ADDR...] [--system-map FILE]
      The Linux kernel's answer to a fault at ADDR: the __ex_table fixup, or an oops. A module
      ip is written NAME.ko:SECTION+0xOFF (modules from DIR get disjoint load addresses). With
      the registers and stack memory, an oops comes with the ORC stack it would print.

--compat wine8 follows Wine 8's deviations (its __C_specific_handler unwind scan and epilog
rules) instead of Windows', to explain what wine64 does.
RESULT is EXECUTE_HANDLER, CONTINUE_SEARCH, CONTINUE_EXECUTION or a number (the filter's
return value). Numbers are hex (0x optional) unless stated. Output: one line per filter (phase
1), __finally / cleanup (phase 2), then the outcome: except, catch, continue, unhandled,
needs_filter, needs_type, terminate or unsupported.";

#[derive(Default)]
struct Synthetic {
    modules: Vec<(PathBuf, u64)>,
    stacks: Vec<(PathBuf, u64)>,
    regs: Vec<(Reg, u64)>,
    rip: Option<u64>,
    stack_limits: Option<(u64, u64)>,
    code: Option<u32>,
    params: Vec<u64>,
}

fn hex(s: &str) -> Result<u64, String> {
    crate::parse_hex(s)
}

fn split_at_sign(s: &str) -> Result<(PathBuf, u64), String> {
    let (f, a) = s
        .rsplit_once('@')
        .ok_or_else(|| format!("expected FILE@ADDR, got {s:?}"))?;
    Ok((PathBuf::from(f), hex(a)?))
}

fn reg_by_name(n: &str) -> Option<Reg> {
    Reg::ALL.into_iter().find(|r| r.name() == n)
}

impl Synthetic {
    fn read_context(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let w: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("{}:{}: cannot read {line:?}", path.display(), i + 1);
            match w.as_slice() {
                [] => {}
                ["module", p, base] => self.modules.push((dir.join(p), hex(base)?)),
                ["stack", p, addr] => self.stacks.push((dir.join(p), hex(addr)?)),
                ["code", c] => self.code = Some(hex(c)? as u32),
                ["param", v] => self.params.push(hex(v)?),
                ["rip", v] => self.rip = Some(hex(v)?),
                ["stacklimits", lo, hi] => self.stack_limits = Some((hex(lo)?, hex(hi)?)),
                [r, v] => self.regs.push((reg_by_name(r).ok_or_else(bad)?, hex(v)?)),
                _ => return Err(bad()),
            }
        }
        Ok(())
    }
}

/// Runs `xunwind dispatch`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut input: Option<PathBuf> = None;
    let mut json = false;
    let mut ip: Option<String> = None;
    let mut system_map: Option<PathBuf> = None;
    let mut options = LoadOptions::default();
    let mut decisions = Decisions::default();
    let mut syn = Synthetic::default();
    let mut synthetic = false;
    let mut dopts = DispatchOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--ip" => ip = Some(value("--ip")?),
            "--system-map" => system_map = Some(PathBuf::from(value("--system-map")?)),
            "--compat" => match value("--compat")?.as_str() {
                "wine8" => {
                    dopts.scope_rules = ScopeRules::Wine8;
                    dopts.unwind.compat = Compat::Wine8;
                }
                "windows" => dopts = DispatchOptions::default(),
                c => return Err(format!("unknown --compat {c:?} (windows, wine8)")),
            },
            "--modules" => options.module_dirs.push(PathBuf::from(value("--modules")?)),
            "--symbols" => options.symbol_dirs.push(PathBuf::from(value("--symbols")?)),
            "--filter" => {
                let v = value("--filter")?;
                let (addr, res) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--filter wants ADDR=RESULT, got {v:?}"))?;
                let res = FilterResult::parse(res)
                    .ok_or_else(|| format!("unknown filter result {res:?}"))?;
                decisions.filters.insert(hex(addr)?, res);
            }
            "--thrown-type" => decisions.thrown_type = Some(hex(&value("--thrown-type")?)?),
            "--pe" => {
                synthetic = true;
                syn.modules.push(split_at_sign(&value("--pe")?)?);
            }
            "--stack" => syn.stacks.push(split_at_sign(&value("--stack")?)?),
            "--rip" => syn.rip = Some(hex(&value("--rip")?)?),
            "--rsp" => syn.regs.push((Reg::Rsp, hex(&value("--rsp")?)?)),
            "--reg" => {
                let v = value("--reg")?;
                let (r, x) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--reg wants NAME=VALUE, got {v:?}"))?;
                let r = reg_by_name(r).ok_or_else(|| format!("unknown register {r:?}"))?;
                syn.regs.push((r, hex(x)?));
            }
            "--code" => syn.code = Some(hex(&value("--code")?)? as u32),
            "--param" => syn.params.push(hex(&value("--param")?)?),
            "--context" => {
                synthetic = true;
                syn.read_context(Path::new(&value("--context")?))?;
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            s if input.is_none() => input = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let lines = if synthetic {
        run_synthetic(&syn, &options.module_dirs, &decisions, &dopts, json)?
    } else {
        let input = input.ok_or_else(|| USAGE.to_string())?;
        let bytes = std::fs::read(&input).map_err(|e| format!("{}: {e}", input.display()))?;
        if bytes.starts_with(b"MDMP") {
            run_minidump(bytes, &options, &decisions, &dopts, json)?
        } else {
            let ip = ip.ok_or_else(|| {
                format!(
                    "{}: not a minidump; a kernel needs --ip\n{USAGE}",
                    input.display()
                )
            })?;
            run_kernel(
                &bytes,
                &input,
                &ip,
                &options,
                &syn,
                system_map.as_deref(),
                json,
            )?
        }
    };
    let r = lines
        .iter()
        .try_for_each(|l| writeln!(out, "{l}"))
        .and_then(|()| out.flush());
    crate::io_result(r)
}

/// A module file: the path as given, else a file of that name (any case) in `dirs`.
fn find_module(p: &Path, dirs: &[PathBuf]) -> Option<PathBuf> {
    if p.exists() {
        return Some(p.to_path_buf());
    }
    let want = p.file_name()?.to_string_lossy().to_lowercase();
    dirs.iter().find_map(|d| {
        std::fs::read_dir(d).ok()?.flatten().find_map(|e| {
            (e.file_name().to_string_lossy().to_lowercase() == want).then(|| e.path())
        })
    })
}

fn run_synthetic(
    syn: &Synthetic,
    dirs: &[PathBuf],
    decisions: &Decisions,
    dopts: &DispatchOptions,
    json: bool,
) -> Result<Vec<String>, String> {
    let mut files: Vec<(String, Vec<u8>, u64)> = Vec::new();
    for (p, base) in &syn.modules {
        // A module named but not found is left out: its frames unwind as leaves.
        let Some(found) = find_module(p, dirs) else {
            eprintln!(
                "xunwind: module {} not found (give --modules DIR)",
                p.display()
            );
            continue;
        };
        let b = std::fs::read(&found).map_err(|e| format!("{}: {e}", found.display()))?;
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        files.push((name, b, *base));
    }
    let mut images = CodeImages::new();
    for (name, bytes, base) in &files {
        images.add(PeModule::parse(name, *base, bytes).map_err(|e| format!("{name}: {e}"))?);
    }
    let mut mem = RegionMemory::new();
    for (p, addr) in &syn.stacks {
        let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        mem.add(*addr, b);
    }
    let mut regs = Regs::new();
    for &(r, v) in &syn.regs {
        regs.set(r, v);
    }
    if let Some(rip) = syn.rip {
        regs.set_rip(rip);
    }
    let fault = Fault {
        regs,
        code: syn.code.unwrap_or(0xc000_0005),
        flags: 0,
        parameters: syn.params.clone(),
    };
    let name = |addr: u64| -> Option<String> {
        match images.describe(addr)? {
            (_, Some((s, _))) => Some(s.to_string()),
            _ => None,
        }
    };
    let mut dopts = *dopts;
    if dopts.stack_limits.is_none() {
        dopts.stack_limits = syn.stack_limits;
    }
    resolve(&images, &fault, &mem, decisions, &dopts, &name, json)
}

fn run_minidump(
    bytes: Vec<u8>,
    options: &LoadOptions,
    decisions: &Decisions,
    dopts: &DispatchOptions,
    json: bool,
) -> Result<Vec<String>, String> {
    let target = Target::from_bytes(bytes, options).map_err(|e| e.to_string())?;
    let fault = Fault::from_target(&target)
        .ok_or("the minidump has no exception stream (or no context for its thread)")?;
    let images = CodeImages::from_target(&target);
    let symbols = target.symbols(options);
    let name = |addr: u64| -> Option<String> {
        symbols
            .lookup(addr)
            .and_then(|l| l.symbol.map(|s| s.name))
            .or_else(|| match images.describe(addr)? {
                (_, Some((s, _))) => Some(s.to_string()),
                _ => None,
            })
    };
    // The dump holds the thread's stack from its rsp up to StackBase: that region's end is the
    // high limit (its start, above the real StackLimit, bounds nothing an establisher reaches).
    let mut dopts = *dopts;
    if dopts.stack_limits.is_none() {
        let rsp = fault.regs.rsp().unwrap_or(0);
        dopts.stack_limits = target
            .memory
            .regions()
            .iter()
            .find(|r| r.base <= rsp && rsp - r.base < r.data.len() as u64)
            .map(|r| (r.base, r.base + r.data.len() as u64));
    }
    resolve(
        &images,
        &fault,
        &target.memory,
        decisions,
        &dopts,
        &name,
        json,
    )
}

fn resolve(
    images: &CodeImages<'_>,
    fault: &Fault,
    mem: &dyn MemoryReader,
    decisions: &Decisions,
    dopts: &DispatchOptions,
    name: &dyn Fn(u64) -> Option<String>,
    json: bool,
) -> Result<Vec<String>, String> {
    let resolver = ExceptionResolver::new(images, *dopts);
    let d = resolver
        .dispatch(fault, mem, decisions)
        .map_err(|e| e.to_string())?;
    let a = |v: u64| format!("{v:#x}");
    let mut lines = Vec::new();
    if !json {
        let thrown = decisions
            .thrown_type
            .or_else(|| gcc_thrown_type(fault, mem));
        lines.push(format!(
            "exception {:#x} at {:#x}{}",
            fault.code,
            fault.regs.rip().unwrap_or(0),
            thrown.map_or(String::new(), |t| format!(" (thrown type_info {t:#x})"))
        ));
        for f in &d.frames {
            let h = f.handler.as_ref().map_or(String::new(), |h| {
                format!("  handler {} {:#x}", h.language.name(), h.address)
            });
            lines.push(format!(
                "  frame {:2} pc {:#x} sp {:#x} {}{h}",
                f.number,
                f.pc,
                f.sp,
                f.function.and_then(name).unwrap_or_else(|| "?".to_string())
            ));
        }
    }
    let fname = |f: u64| name(f);
    for e in &d.events {
        let (frame, function, kind, address, result) = match e {
            Event::Filter {
                frame,
                function,
                address,
                result,
                ..
            } => (*frame, *function, "filter", *address, Some(*result)),
            Event::Finally {
                frame,
                function,
                address,
                ..
            } => (*frame, *function, "finally", Some(*address), None),
            Event::Cleanup {
                frame,
                function,
                address,
            } => (*frame, *function, "cleanup", Some(*address), None),
            _ => continue,
        };
        let fun = fname(function);
        if json {
            let mut o = Obj::new();
            o.num("phase", e.phase() as u64)
                .num("frame", frame as u64)
                .opt_str("function", fun.as_deref())
                .str("kind", kind)
                .opt_str("address", address.map(a).as_deref());
            if let Some(r) = result {
                o.str("result", r.as_str());
            }
            lines.push(o.finish());
        } else {
            lines.push(format!(
                "phase {} frame {frame} {} {kind} {}{}",
                e.phase(),
                fun.as_deref().unwrap_or("?"),
                address.map_or("(constant)".to_string(), a),
                result.map_or(String::new(), |r| format!(" -> {}", r.as_str()))
            ));
        }
    }
    let mut o = Obj::new();
    let text = match &d.outcome {
        Outcome::Except {
            frame,
            function,
            address,
        } => {
            let f = fname(*function);
            o.str("kind", "except")
                .num("frame", *frame as u64)
                .opt_str("function", f.as_deref())
                .str("address", &a(*address));
            format!(
                "except: frame {frame} {} resumes at {}",
                f.as_deref().unwrap_or("?"),
                a(*address)
            )
        }
        Outcome::Catch {
            frame,
            function,
            address,
            type_info,
        } => {
            let f = fname(*function);
            o.str("kind", "catch")
                .num("frame", *frame as u64)
                .opt_str("function", f.as_deref())
                .str("address", &a(*address))
                .opt_str("type_info", type_info.map(a).as_deref());
            format!(
                "catch: frame {frame} {} handler {} ({})",
                f.as_deref().unwrap_or("?"),
                a(*address),
                type_info.map_or("catch (...)".to_string(), |t| format!("type_info {t:#x}"))
            )
        }
        Outcome::Continue { frame } => {
            o.str("kind", "continue").num("frame", *frame as u64);
            format!("continue: frame {frame}'s filter resumes the faulting context")
        }
        Outcome::Unhandled { reason } => {
            o.str("kind", "unhandled").str("reason", reason);
            format!("unhandled: {reason}")
        }
        Outcome::NeedsFilter {
            frame,
            function,
            address,
        } => {
            let f = fname(*function);
            o.str("kind", "needs_filter")
                .num("frame", *frame as u64)
                .opt_str("function", f.as_deref())
                .str("address", &a(*address));
            format!(
                "needs_filter: frame {frame} {} filter {} (give --filter {}=RESULT)",
                f.as_deref().unwrap_or("?"),
                a(*address),
                a(*address)
            )
        }
        Outcome::NeedsType {
            frame,
            function,
            type_info,
        } => {
            let f = fname(*function);
            o.str("kind", "needs_type")
                .num("frame", *frame as u64)
                .opt_str("function", f.as_deref())
                .str("type_info", &a(*type_info));
            format!(
                "needs_type: frame {frame} catch clause type_info {} (give --thrown-type ADDR)",
                a(*type_info)
            )
        }
        Outcome::Terminate { frame } => {
            o.str("kind", "terminate").num("frame", *frame as u64);
            format!("terminate: frame {frame} has no call-site record: std::terminate")
        }
        Outcome::Unsupported {
            frame,
            handler,
            what,
        } => {
            o.str("kind", "unsupported")
                .num("frame", *frame as u64)
                .str("handler", &a(*handler))
                .str("reason", what);
            format!("unsupported: frame {frame}: {what}")
        }
        other => {
            let s = format!("{other:?}");
            o.str("kind", "other").str("reason", &s);
            s
        }
    };
    lines.push(if json { o.finish() } else { text });
    Ok(lines)
}

fn run_kernel(
    bytes: &[u8],
    input: &Path,
    ip: &str,
    options: &LoadOptions,
    syn: &Synthetic,
    system_map: Option<&Path>,
    json: bool,
) -> Result<Vec<String>, String> {
    let kf = KernelFile::parse(bytes).map_err(|e| format!("{}: {e}", input.display()))?;
    if kf.kind != FileKind::Vmlinux {
        return Err(format!(
            "{}: a module; give the vmlinux as INPUT and modules with --modules DIR",
            input.display()
        ));
    }
    let mut modules = Vec::new();
    for dir in &options.module_dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ko"))
            .collect();
        paths.sort();
        for p in paths {
            let b = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            // Modules without an exception table, or that do not parse, change nothing.
            if let Ok(m) = KernelFile::parse(&b) {
                if m.has_ex_table {
                    let name = p
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    modules.push((name, m));
                }
            }
        }
    }
    let mut resolver = KernelResolver::new(kf, modules).map_err(|e| e.to_string())?;
    if let Some(m) = system_map {
        let text = std::fs::read_to_string(m).map_err(|e| format!("{}: {e}", m.display()))?;
        resolver.set_symbols(xunwind::extable::Symbols::from_system_map(&text));
    }
    let addr = match ip.split_once(':') {
        Some((module, rest)) => {
            let (sec, off) = rest
                .rsplit_once('+')
                .ok_or_else(|| format!("module ip wants NAME.ko:SECTION+0xOFF, got {ip:?}"))?;
            resolver
                .module_address(module, sec, hex(off)?)
                .ok_or_else(|| format!("no module section {module}:{sec}"))?
        }
        None => hex(ip)?,
    };
    let line = match resolver.resolve(addr) {
        KernelResolution::Fixup(f) => {
            if json {
                let mut o = Obj::new();
                o.str("kind", "fixup")
                    .str("insn", &f.insn_text)
                    .str("fixup", &f.fixup_text)
                    .opt_str("type", f.fixup.type_name)
                    .raw(
                        "type_code",
                        &f.fixup
                            .type_code
                            .map_or("null".to_string(), |c| c.to_string()),
                    )
                    .opt_str("reg", f.fixup.reg_name());
                if f.fixup.reg2.is_some() {
                    o.opt_str("reg2", f.fixup.reg2_name());
                }
                let flags: Vec<String> = f.fixup.flag_names().map(|n| format!("\"{n}\"")).collect();
                o.raw("flags", &format!("[{}]", flags.join(",")))
                    .raw("imm", &f.fixup.imm.to_string())
                    .opt_str("section", f.section.as_deref())
                    .opt_str("module", f.module.as_deref())
                    .str("effect", &f.effect);
                o.finish()
            } else {
                format!(
                    "fixup: {} -> {} {} ({})",
                    f.insn_text,
                    f.fixup_text,
                    f.fixup.type_name.unwrap_or("?"),
                    f.effect
                )
            }
        }
        KernelResolution::Oops => {
            // With the stack pointer and stack memory, the ORC walk the oops would print.
            let stack = if syn.regs.iter().any(|(r, _)| *r == Reg::Rsp) {
                let mut regs = Regs::new();
                for &(r, v) in &syn.regs {
                    regs.set(r, v);
                }
                regs.set_rip(addr);
                let mut mem = RegionMemory::new();
                for (p, a) in &syn.stacks {
                    let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
                    mem.add(*a, b);
                }
                resolver.oops_stack(&regs, &mem, 64)
            } else {
                None
            };
            let sym = |a: u64| resolver.symbol(a).map(|(n, off)| format!("{n}+{off:#x}"));
            if json {
                let mut o = Obj::new();
                o.str("kind", "oops").str("ip", &format!("{addr:#x}"));
                if let Some(w) = &stack {
                    let frames: Vec<String> = w
                        .frames
                        .iter()
                        .map(|f| {
                            let mut fo = Obj::new();
                            fo.str("pc", &format!("{:#x}", f.pc))
                                .str("sp", &format!("{:#x}", f.sp))
                                .opt_str("function", sym(f.pc).as_deref())
                                .str("trust", f.trust.as_str());
                            fo.finish()
                        })
                        .collect();
                    o.raw("stack", &format!("[{}]", frames.join(",")))
                        .str("end", w.stop.as_str());
                }
                o.finish()
            } else {
                let mut t = format!("oops: no __ex_table entry for {addr:#x}");
                if let Some(w) = &stack {
                    for (n, f) in w.frames.iter().enumerate() {
                        t.push_str(&format!(
                            "\n {n:02} {:#x} {}",
                            f.pc,
                            sym(f.pc).unwrap_or_default()
                        ));
                    }
                    t.push_str(&format!("\n -- {}", w.stop.as_str()));
                }
                t
            }
        }
    };
    Ok(vec![line])
}

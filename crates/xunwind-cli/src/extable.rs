//! `xunwind extable FILE [--json] [--ip ADDR] [--system-map FILE] [--format F] [--kernel-version V]`
//! (CONFORMANCE.md section 4).
//!
//! FILE is a vmlinux, a bzImage/vmlinuz or a `.ko`. Entries are printed sorted by `insn`, as
//! the kernel searches them; a module's table is first placed with the module loader's default
//! layout and sorted, and its addresses are printed section-relative (`.text+0x1a`).

use std::fmt::Write as _;
use std::io::Write as _;

use xunwind_extable::{
    decode, format::ExTableEntry, ExTable, ExTableFormat, Extra, FileKind, Fixup, KernelFile,
    KernelVersion, ModuleLayout, Options, SecOff, Symbols,
};

const USAGE: &str = "usage: xunwind extable FILE [--json] [--ip ADDR] [--system-map FILE] [--format absolute64|absolute32|relative|x86-handler|x86-data|type-data] [--kernel-version X.Y]";

/// Where the default module layout puts core and init memory (the x86-64 module area).
const MODULE_CORE_BASE: u64 = 0xffff_ffff_c000_0000;
const MODULE_INIT_BASE: u64 = 0xffff_ffff_e000_0000;

/// Runs `xunwind extable` with the arguments after `extable`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut file = None;
    let mut json = false;
    let mut ip = None;
    let mut map = None;
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--ip" => ip = Some(it.next().ok_or("--ip needs an address")?.clone()),
            "--system-map" => map = Some(it.next().ok_or("--system-map needs a file")?.clone()),
            "--format" => {
                let f = it.next().ok_or("--format needs a name")?;
                opts.format = Some(
                    ExTableFormat::from_name(f).ok_or_else(|| format!("unknown format {f:?}"))?,
                );
            }
            "--kernel-version" => {
                let v = it.next().ok_or("--kernel-version needs X.Y")?;
                opts.version =
                    Some(KernelVersion::parse(v).ok_or_else(|| format!("bad version {v:?}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if file.is_none() => file = Some(s.to_string()),
            s => return Err(format!("unexpected argument {s}\n{USAGE}")),
        }
    }
    let path = file.ok_or_else(|| USAGE.to_string())?;
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let kf = KernelFile::parse_with(&data, opts).map_err(|e| format!("{path}: {e}"))?;
    let symbols = match &map {
        Some(m) => {
            Symbols::from_system_map(&std::fs::read_to_string(m).map_err(|e| format!("{m}: {e}"))?)
        }
        None => kf.symbols.clone(),
    };
    let view = View::new(&kf, symbols)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let r = match ip {
        Some(ip) => view.print_ip(&mut out, &ip, json),
        None => view.print_all(&mut out, json),
    };
    let r = r.and_then(|()| out.flush());
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| format!("write error: {e}")),
    }
}

/// A file's table ready to print: sorted, with module placement and symbols.
struct View<'a> {
    kf: &'a KernelFile,
    table: ExTable,
    layout: Option<ModuleLayout>,
    symbols: Symbols,
}

impl<'a> View<'a> {
    fn new(kf: &'a KernelFile, symbols: Symbols) -> Result<Self, String> {
        let (table, layout) = match kf.kind {
            FileKind::Vmlinux => (kf.vmlinux_table().map_err(|e| e.to_string())?, None),
            FileKind::Module => {
                let layout = ModuleLayout::loader_default(kf, MODULE_CORE_BASE, MODULE_INIT_BASE);
                (
                    kf.module_table(&layout).map_err(|e| e.to_string())?,
                    Some(layout),
                )
            }
        };
        Ok(View {
            kf,
            table,
            layout,
            symbols,
        })
    }

    fn locate(&self, addr: u64) -> Option<SecOff> {
        self.layout.as_ref()?.locate(&self.kf.sections, addr)
    }

    /// An address as printed: absolute hex, or `section+0xoff` in a module.
    fn addr(&self, addr: u64) -> String {
        match self.kf.kind {
            FileKind::Vmlinux => format!("{addr:#x}"),
            FileKind::Module => match self.locate(addr) {
                Some(p) => format!("{}+{:#x}", self.kf.sections[p.section].name, p.offset),
                None => format!("{addr:#x}"),
            },
        }
    }

    /// `func+0xoff` for an address, when symbols name it.
    fn symbol(&self, addr: u64) -> Option<String> {
        let (name, off) = match self.kf.kind {
            FileKind::Vmlinux => self.symbols.lookup(None, addr)?,
            FileKind::Module => {
                let p = self.locate(addr)?;
                self.symbols.lookup(Some(p.section), p.offset)?
            }
        };
        Some(format!("{name}+{off:#x}"))
    }

    fn section_name(&self, addr: u64) -> Option<&str> {
        match self.kf.kind {
            FileKind::Vmlinux => self.kf.section_at(addr).map(|s| s.name.as_str()),
            FileKind::Module => self
                .locate(addr)
                .map(|p| self.kf.sections[p.section].name.as_str()),
        }
    }

    fn is_exec(&self, addr: u64) -> bool {
        match self.kf.kind {
            FileKind::Vmlinux => self.kf.exec_section(addr).is_some(),
            FileKind::Module => self
                .locate(addr)
                .is_some_and(|p| self.kf.sections[p.section].is_exec()),
        }
    }

    fn decode(&self, i: usize, e: &ExTableEntry) -> Fixup {
        let handler_type = match e.extra {
            Extra::Handler(h) => {
                let name = match self.kf.kind {
                    FileKind::Module => self
                        .table
                        .input_index(i)
                        .and_then(|o| self.kf.module_entries[o].handler_symbol.clone()),
                    FileKind::Vmlinux => self
                        .symbols
                        .lookup(None, h)
                        .and_then(|(n, off)| (off == 0).then(|| n.to_string())),
                };
                name.as_deref().and_then(decode::x86_handler_type)
            }
            _ => None,
        };
        decode(e, self.kf.machine, self.kf.version, handler_type)
    }

    /// The problems of one entry, or `None`.
    fn error(&self, e: &ExTableEntry, f: &Fixup) -> Option<String> {
        let mut errs = Vec::new();
        if !self.is_exec(e.insn) {
            errs.push(format!(
                "insn {} is not in an executable section",
                self.addr(e.insn)
            ));
        }
        if self.section_name(e.fixup).is_none() {
            errs.push(format!(
                "fixup {} is outside every section",
                self.addr(e.fixup)
            ));
        }
        if f.type_name.is_none() {
            if let Some(c) = f.type_code {
                match self.kf.version {
                    Some(v) => errs.push(format!("type {c} is not defined in {v}")),
                    None => errs.push(format!("unknown type {c}")),
                }
            }
        }
        (!errs.is_empty()).then(|| errs.join("; "))
    }

    fn json_line(&self, i: usize, e: &ExTableEntry) -> String {
        let f = self.decode(i, e);
        let mut s = String::with_capacity(200);
        s.push_str("{\"insn\":");
        quote(&mut s, &self.addr(e.insn));
        s.push_str(",\"fixup\":");
        quote(&mut s, &self.addr(e.fixup));
        s.push_str(",\"type\":");
        opt_quote(&mut s, f.type_name);
        s.push_str(",\"type_code\":");
        match f.type_code {
            Some(c) => {
                let _ = write!(s, "{c}");
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"reg\":");
        opt_quote(&mut s, f.reg_name());
        if f.reg2.is_some() {
            s.push_str(",\"reg2\":");
            opt_quote(&mut s, f.reg2_name());
        }
        s.push_str(",\"flags\":[");
        for (k, name) in f.flag_names().enumerate() {
            if k > 0 {
                s.push(',');
            }
            quote(&mut s, name);
        }
        let _ = write!(s, "],\"imm\":{}", f.imm);
        if let Extra::Handler(h) = e.extra {
            s.push_str(",\"handler\":");
            quote(&mut s, &self.addr(h));
        }
        s.push_str(",\"section\":");
        opt_quote(&mut s, self.section_name(e.insn));
        s.push_str(",\"error\":");
        opt_quote(&mut s, self.error(e, &f).as_deref());
        s.push('}');
        s
    }

    fn text_line(&self, i: usize, e: &ExTableEntry) -> String {
        let f = self.decode(i, e);
        let mut s = format!(
            "{:<20} {:<20} {:<16}",
            self.addr(e.insn),
            self.addr(e.fixup),
            f.type_name.unwrap_or("?")
        );
        if let Some(r) = f.reg_name() {
            let _ = write!(s, " reg={r}");
        }
        if let Some(r) = f.reg2_name() {
            let _ = write!(s, " reg2={r}");
        }
        let flags: Vec<&str> = f.flag_names().collect();
        if !flags.is_empty() {
            let _ = write!(s, " flags={}", flags.join("|"));
        }
        if f.imm != 0 {
            let _ = write!(s, " imm={}", f.imm);
        }
        if let Some(sym) = self.symbol(e.insn) {
            let _ = write!(s, " {sym}");
        }
        if let Some(err) = self.error(e, &f) {
            let _ = write!(s, " ERROR: {err}");
        }
        s
    }

    fn header(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let kf = self.kf;
        writeln!(
            w,
            "{} {}, kernel {}{}, format {} ({}), {} entries{}",
            match kf.kind {
                FileKind::Vmlinux => "vmlinux",
                FileKind::Module => "module",
            },
            kf.machine.name(),
            kf.version.map_or("?".into(), |v| v.to_string()),
            kf.compression
                .map_or(String::new(), |c| format!(" ({} payload)", c.name())),
            kf.format.name(),
            kf.format_reason,
            self.table.len(),
            if self.table.was_sorted() {
                ""
            } else {
                ", sorted at load"
            }
        )
    }

    fn print_all(&self, w: &mut dyn std::io::Write, json: bool) -> std::io::Result<()> {
        if !json {
            self.header(w)?;
            if !self.kf.has_ex_table {
                writeln!(w, "no __ex_table")?;
            }
        }
        for (i, e) in self.table.entries().iter().enumerate() {
            let line = if json {
                self.json_line(i, e)
            } else {
                self.text_line(i, e)
            };
            writeln!(w, "{line}")?;
        }
        Ok(())
    }

    /// Parses `ADDR` (hex) or, for a module, `section+0xoff`.
    fn parse_ip(&self, s: &str) -> Option<u64> {
        if let Some((sec, off)) = s.rsplit_once('+') {
            let off = parse_hex(off)?;
            let idx = self.kf.section(sec)?.index;
            return Some(self.layout.as_ref()?.address(idx)? + off);
        }
        parse_hex(s)
    }

    fn print_ip(&self, w: &mut dyn std::io::Write, ip: &str, json: bool) -> std::io::Result<()> {
        let found = self
            .parse_ip(ip)
            .and_then(|a| self.table.lookup_index(a).map(|i| (a, i)));
        match (found, json) {
            (Some((_, i)), true) => writeln!(w, "{}", self.json_line(i, &self.table.entries()[i])),
            (Some((_, i)), false) => {
                let e = &self.table.entries()[i];
                let f = self.decode(i, e);
                writeln!(w, "{}", self.text_line(i, e))?;
                let mut effect = f.effect(e);
                // A module's resume address is printed section-relative, as elsewhere.
                if self.kf.kind == FileKind::Module {
                    effect = effect.replace(&format!("{:#x}", e.fixup), &self.addr(e.fixup));
                }
                writeln!(w, "  {effect}")
            }
            (None, true) => {
                let mut s = String::from("{\"ip\":");
                quote(&mut s, ip);
                s.push_str(",\"entry\":null}");
                writeln!(w, "{s}")
            }
            (None, false) => writeln!(w, "no __ex_table entry for {ip}"),
        }
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).ok()
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn opt_quote(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => quote(out, s),
        None => out.push_str("null"),
    }
}

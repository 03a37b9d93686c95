//! `xunwind pe probe`: RtlVirtualUnwind on the synthetic thread of CONFORMANCE.md section 3.

use crate::{io_result, parse_hex};
use std::io::Write;
use xunwind::core::{ContextPointers, MemoryError, MemoryReader, Reg, Regs, UnwindError};
use xunwind::pe::{
    probe_points, virtual_unwind, Compat, PeImage, UnwindOptions, UNW_FLAG_EHANDLER,
    UNW_FLAG_UHANDLER,
};

/// Where the synthetic stack buffer B lives: far from any image base the corpus uses.
const B: u64 = 0x0000_7ff0_0000_0000;
const B_SIZE: u64 = 16 << 20;

/// The synthetic stack: every 8-byte slot at offset `o` holds `0x5AFE000000000000 | o`; it is
/// computed, not stored, and every byte outside B faults.
struct PatternStack;

impl MemoryReader for PatternStack {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let err = MemoryError {
            addr,
            len: buf.len() as u64,
        };
        let off = addr.checked_sub(B).ok_or(err)?;
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > B_SIZE)
        {
            return Err(err);
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            let o = off + i as u64;
            let slot = o & !7;
            *byte = ((0x5AFE_0000_0000_0000u64 | slot) >> ((o & 7) * 8)) as u8;
        }
        Ok(())
    }
}

fn initial_regs() -> Regs {
    let mut gpr = [0u64; 16];
    for (n, g) in gpr.iter_mut().enumerate() {
        *g = 0xA000_0000_0000_0000 | (n as u64) << 48;
    }
    gpr[Reg::Rsp as usize] = B + 0x80_0000;
    gpr[Reg::Rbp as usize] = B + 0x80_1000;
    let mut r = Regs::with_gprs(0, gpr);
    for n in 0..16u8 {
        let lo = 0xE000_0000_0000_0000u64 | (n as u64) << 48;
        r.set_xmm(n, (lo as u128) | ((!lo as u128) << 64));
    }
    r
}

struct Fmt {
    image_base: u64,
    image_size: u64,
}

impl Fmt {
    fn v(&self, v: u64) -> String {
        if v.wrapping_sub(B) < B_SIZE {
            format!("B+0x{:x}", v - B)
        } else if v.wrapping_sub(self.image_base) < self.image_size {
            format!("I+0x{:x}", v - self.image_base)
        } else {
            format!("0x{v:x}")
        }
    }
}

/// One probe's output line.
fn probe_line(
    img: &PeImage<'_>,
    fmt: &Fmt,
    opts: &UnwindOptions,
    with_ptrs: bool,
    begin: u32,
    pc: u32,
    kind: &str,
) -> String {
    let Some((_, f)) = img.function_by_begin(begin) else {
        return format!("E func={begin:x} pc={pc:x} kind={kind} error=no-function\n");
    };
    let base = img.image_base();
    let mem = PatternStack;
    let run = |ty: u8| {
        let mut regs = initial_regs();
        let mut ptrs = ContextPointers::new();
        let r = virtual_unwind(
            img,
            base,
            f,
            base + pc as u64,
            &mut regs,
            Some(&mut ptrs),
            ty,
            &mem,
            opts,
        );
        (regs, ptrs, r)
    };
    let (regs, ptrs, re) = run(UNW_FLAG_EHANDLER);
    let (_, _, ru) = run(UNW_FLAG_UHANDLER);
    let mut fault = false;
    for r in [&re, &ru] {
        match r {
            Err(UnwindError::Memory(_)) => fault = true,
            Err(e) => {
                return format!(
                    "E func={begin:x} pc={pc:x} kind={kind} error={}\n",
                    e.to_string().replace(' ', "_")
                )
            }
            Ok(_) => {}
        }
    }
    let eh = re.as_ref().ok().and_then(|r| r.handler);
    let uh = ru.as_ref().ok().and_then(|r| r.handler);
    let frame = re.as_ref().map_or(0, |r| r.establisher_frame);
    let g = |r: Reg| fmt.v(regs.get_raw(r));
    let mut s = format!(
        "U func={begin:x} end={:x} pc={pc:x} kind={kind} rip={} rsp={} rbp={} rbx={} rsi={} rdi={} r12={} r13={} r14={} r15={}",
        f.end,
        fmt.v(regs.rip().unwrap_or(0)),
        g(Reg::Rsp),
        g(Reg::Rbp),
        g(Reg::Rbx),
        g(Reg::Rsi),
        g(Reg::Rdi),
        g(Reg::R12),
        g(Reg::R13),
        g(Reg::R14),
        g(Reg::R15),
    );
    for n in 6..16u8 {
        let lo = regs.xmm(n).unwrap_or(0) as u64;
        s.push_str(&format!(" x{n}={}", fmt.v(lo)));
    }
    s.push_str(&format!(
        " eh=0x{:x} uh=0x{:x} hd=0x{:x} frame={} fault={}\n",
        eh.map_or(0, |h| h.0),
        uh.map_or(0, |h| h.0),
        eh.map_or(0, |h| h.1),
        fmt.v(frame),
        fault as u8
    ));
    if with_ptrs {
        // Where each non-volatile register was restored from ('-': not restored).
        s.pop();
        let opt = |a: Option<u64>| a.map_or_else(|| "-".to_string(), |a| fmt.v(a));
        for r in [
            Reg::Rbx,
            Reg::Rbp,
            Reg::Rsi,
            Reg::Rdi,
            Reg::R12,
            Reg::R13,
            Reg::R14,
            Reg::R15,
        ] {
            s.push_str(&format!(" p.{}={}", r.name(), opt(ptrs.gpr(r))));
        }
        for n in 6..16u8 {
            s.push_str(&format!(" p.x{n}={}", opt(ptrs.xmm(n))));
        }
        s.push('\n');
    }
    s
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut file = None;
    let mut pcs = None;
    let mut emit = false;
    let mut ptrs = false;
    let mut opts = UnwindOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pcs" => pcs = Some(it.next().ok_or("--pcs needs a file")?.clone()),
            "--emit-pcs" => emit = true,
            "--wine8" => opts.compat = Compat::Wine8,
            "--ptrs" => ptrs = true,
            f if file.is_none() && !f.starts_with("--") => file = Some(f.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let path =
        file.ok_or("usage: xunwind pe probe FILE [--pcs LIST] [--emit-pcs] [--wine8] [--ptrs]")?;
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let img = PeImage::parse(&data).map_err(|e| format!("{path}: {e}"))?;
    let mut probes: Vec<(u32, u32, String)> = Vec::new();
    match pcs {
        Some(list) => {
            let text = std::fs::read_to_string(&list).map_err(|e| format!("{list}: {e}"))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let mut w = line.split_whitespace();
                let (Some(a), Some(b)) = (w.next(), w.next()) else {
                    return Err(format!("{list}:{}: expected '<func> <pc> [kind]'", n + 1));
                };
                let func = u32::try_from(parse_hex(a)?).map_err(|_| format!("{a}: too large"))?;
                let pc = u32::try_from(parse_hex(b)?).map_err(|_| format!("{b}: too large"))?;
                probes.push((func, pc, w.next().unwrap_or("probe").to_string()));
            }
        }
        None => {
            for f in img.functions().iter() {
                for p in probe_points(&img, f) {
                    probes.push((f.begin, p.pc, p.kind.to_string()));
                }
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let fmt = Fmt {
        image_base: img.image_base(),
        image_size: img.size_of_image() as u64,
    };
    for (func, pc, kind) in &probes {
        let line = if emit {
            format!("{func:x} {pc:x} {kind}\n")
        } else {
            probe_line(&img, &fmt, &opts, ptrs, *func, *pc, kind)
        };
        io_result(out.write_all(line.as_bytes()))?;
    }
    io_result(out.flush())
}

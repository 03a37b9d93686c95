//! Choosing the pcs worth unwinding from in a function, for conformance runs against an oracle.

use crate::{PeImage, RuntimeFunction, UnwindOp};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// A pc to probe and why it was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    /// The pc as an RVA.
    pub pc: u32,
    /// `entry`, `prolog`, `mid`, `ret`, `epi` or `last`.
    pub kind: &'static str,
}

fn is_epilog_step(i: &Instruction) -> bool {
    match i.mnemonic() {
        Mnemonic::Pop => i.code() == Code::Pop_r64,
        Mnemonic::Add => i.op0_register() == Register::RSP && i.op1_kind() != OpKind::Register,
        Mnemonic::Lea => i.op0_register() == Register::RSP,
        _ => false,
    }
}

/// The pcs of `f` worth probing: its entry, each prolog code offset, the end of the prolog, the
/// middle, every `ret` (found by decoding the function with iced-x86) and the start of each
/// `add/lea rsp` and `pop` instruction leading up to it, and the last byte. Sorted, unique.
pub fn probe_points(image: &PeImage<'_>, f: RuntimeFunction) -> Vec<ProbePoint> {
    let mut out = Vec::new();
    let len = f.end.saturating_sub(f.begin);
    if len == 0 {
        return out;
    }
    out.push(ProbePoint {
        pc: f.begin,
        kind: "entry",
    });
    let unwind = if f.is_indirect() {
        image
            .runtime_function_at(f.target_rva())
            .map(|t| t.unwind_data)
            .ok()
    } else {
        Some(f.unwind_data)
    };
    if let Some(info) = unwind.and_then(|u| image.unwind_info(u).ok()) {
        for c in info.codes().flatten() {
            if !matches!(c.op, UnwindOp::EpilogHead { .. } | UnwindOp::Epilog { .. })
                && (c.offset as u32) < len
            {
                out.push(ProbePoint {
                    pc: f.begin + c.offset as u32,
                    kind: "prolog",
                });
            }
        }
        if (info.prolog_size() as u32) < len {
            out.push(ProbePoint {
                pc: f.begin + info.prolog_size() as u32,
                kind: "prolog",
            });
        }
    }
    out.push(ProbePoint {
        pc: f.begin + len / 2,
        kind: "mid",
    });
    let code = image.bytes_at(f.begin);
    let code = &code[..code.len().min(len as usize)];
    let mut decoder = Decoder::with_ip(64, code, f.begin as u64, DecoderOptions::NONE);
    let mut window: Vec<Instruction> = Vec::new();
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.code() == Code::INVALID {
            window.clear();
            continue;
        }
        if matches!(ins.mnemonic(), Mnemonic::Ret) {
            out.push(ProbePoint {
                pc: ins.ip() as u32,
                kind: "ret",
            });
            for prev in window.iter().rev() {
                if !is_epilog_step(prev) {
                    break;
                }
                out.push(ProbePoint {
                    pc: prev.ip() as u32,
                    kind: "epi",
                });
            }
            window.clear();
        } else {
            window.push(ins);
            if window.len() > 20 {
                window.remove(0);
            }
        }
    }
    out.push(ProbePoint {
        pc: f.end - 1,
        kind: "last",
    });
    out.sort_by_key(|p| p.pc);
    out.dedup_by_key(|p| p.pc);
    out
}

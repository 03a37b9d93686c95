//! Epilog recognition by Windows' byte rules (RtlVirtualUnwind, unwind version 1).
//!
//! Windows does not decode arbitrary instructions here: it matches a fixed grammar —
//! optional `add rsp, imm` / `lea rsp, [framereg + disp]`, any number of `pop r64`, then a
//! return or a jump out of the function. We match the same grammar on the raw bytes, which also
//! rejects the common case (the first byte cannot start an epilog) in one or two compares.

use xunwind_core::Reg;

/// How the stack pointer is adjusted before the pops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpilogAdjust {
    /// `add rsp, imm` (imm8 sign-extended or imm32).
    Add(i32),
    /// `lea rsp, [frame + disp]`.
    Lea(Reg, i32),
}

/// How the epilog ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpilogEnd {
    /// `ret`, `rep ret`, or `ret imm16` (Windows ignores the immediate when unwinding).
    Ret {
        /// The `ret imm16` operand, 0 for the plain forms.
        imm: u16,
    },
    /// A jump that leaves the function: a tail call, emulated as a return.
    Jmp {
        /// The target RVA for direct jumps, `None` for indirect ones.
        target: Option<u32>,
    },
}

/// A recognised epilog: what it does from the pc on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epilog {
    /// The stack adjustment before the pops, if the pc is at it.
    pub adjust: Option<EpilogAdjust>,
    /// Registers popped, in order.
    pub pops: [Reg; 16],
    /// Number of valid entries in `pops`.
    pub pop_count: u8,
    /// The terminating instruction.
    pub end: EpilogEnd,
}

impl Epilog {
    /// The registers popped, in order.
    pub fn pops(&self) -> &[Reg] {
        &self.pops[..self.pop_count as usize]
    }
}

/// Where a direct jump lands, for deciding whether it leaves the function.
pub trait JumpJudge {
    /// Whether a jump from the function to `target` (an RVA) is a tail call out of it.
    fn leaves_function(&self, target: u32) -> bool;
}

impl<F: Fn(u32) -> bool> JumpJudge for F {
    fn leaves_function(&self, target: u32) -> bool {
        self(target)
    }
}

#[inline]
fn i32_at(code: &[u8], at: usize) -> Option<i32> {
    let b = code.get(at..at + 4)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether the bytes at a pc can start an epilog at all, from their first two bytes only: the
/// cheap filter run before [`match_epilog`], which stays the authority. Never false where
/// [`match_epilog`] accepts (property-tested over random bytes and every corpus probe pc).
///
/// The grammar's first instruction is `add rsp` (48 81/83), `lea rsp` (48/49 8d), a pop
/// (58-5f, REX 58-5f), a `repne` prefix (f2), or a terminator: c2, c3, f3 c3, eb, e9, ff 25,
/// REX.W ff.
#[inline]
pub fn may_start_epilog(code: &[u8]) -> bool {
    let Some(&b0) = code.first() else {
        return false;
    };
    match FIRST_BYTE[b0 as usize] {
        FB_NO => false,
        FB_YES => true,
        FB_FF => code.get(1) == Some(&0x25),
        FB_F3 => code.get(1) == Some(&0xc3),
        // REX: a pop, or (REX.W) jmp r/m; 48 also add rsp, 48/49 also lea rsp.
        _ => match code.get(1) {
            Some(&b1) => {
                b1 & 0xf8 == 0x58
                    || (b0 >= 0x48 && b1 == 0xff)
                    || (b0 & 0xfe == 0x48 && b1 == 0x8d)
                    || (b0 == 0x48 && (b1 == 0x81 || b1 == 0x83))
            }
            None => false,
        },
    }
}

const FB_NO: u8 = 0;
const FB_YES: u8 = 1;
const FB_FF: u8 = 2;
const FB_F3: u8 = 3;
const FB_REX: u8 = 4;

/// Class of each first byte for [`may_start_epilog`].
static FIRST_BYTE: [u8; 256] = {
    let mut t = [FB_NO; 256];
    let mut i = 0x40;
    while i < 0x50 {
        t[i] = FB_REX;
        i += 1;
    }
    let mut i = 0x58;
    while i < 0x60 {
        t[i] = FB_YES;
        i += 1;
    }
    t[0xc2] = FB_YES;
    t[0xc3] = FB_YES;
    t[0xe9] = FB_YES;
    t[0xeb] = FB_YES;
    t[0xf2] = FB_YES;
    t[0xf3] = FB_F3;
    t[0xff] = FB_FF;
    t
};

/// Matches Windows' epilog grammar at the start of `code` (the bytes at the pc, whose RVA is
/// `pc_rva`). `frame_reg` is the function's frame register (None: `lea rsp` is never accepted).
pub fn match_epilog(
    code: &[u8],
    pc_rva: u32,
    frame_reg: Option<Reg>,
    judge: &dyn JumpJudge,
) -> Option<Epilog> {
    let b = |i: usize| code.get(i).copied();
    let mut at = 0usize;
    let mut adjust = None;
    // add rsp, imm8 / imm32: REX exactly 0x48, ModRM c4 (/0, rsp).
    if b(0)? == 0x48 && b(2) == Some(0xc4) {
        match b(1) {
            Some(0x83) => {
                adjust = Some(EpilogAdjust::Add(b(3)? as i8 as i32));
                at = 4;
            }
            Some(0x81) => {
                adjust = Some(EpilogAdjust::Add(i32_at(code, 3)?));
                at = 7;
            }
            _ => {}
        }
    }
    // lea rsp, [framereg + disp8/disp32]: REX.W with optional REX.B, reg field = rsp, base = the
    // frame register (which must exist), mod 1 or 2.
    if at == 0 && b(0)? & 0xfe == 0x48 && b(1) == Some(0x8d) {
        if let (Some(fr), Some(modrm)) = (frame_reg, b(2)) {
            let base = ((b(0)? & 1) << 3) | (modrm & 7);
            if base == fr.number() {
                match modrm & 0xf8 {
                    0x60 => {
                        adjust = Some(EpilogAdjust::Lea(fr, b(3)? as i8 as i32));
                        at = 4;
                    }
                    0xa0 => {
                        adjust = Some(EpilogAdjust::Lea(fr, i32_at(code, 3)?));
                        at = 7;
                    }
                    _ => {}
                }
            }
        }
    }
    let mut pops = [Reg::Rax; 16];
    let mut n = 0usize;
    // Any number of pops; at most 16 distinct registers exist, and more would be garbage, but
    // Windows keeps going, so we only bound by the bytes we have.
    loop {
        let op = b(at)?;
        let (reg, len) = if op & 0xf8 == 0x58 {
            (op & 7, 1)
        } else if op & 0xf0 == 0x40 && b(at + 1)? & 0xf8 == 0x58 {
            (((op & 1) << 3) | (b(at + 1)? & 7), 2)
        } else {
            break;
        };
        if n == pops.len() {
            return None;
        }
        pops[n] = Reg::from_number(reg);
        n += 1;
        at += len;
    }
    // An optional repne (bnd) prefix before the transfer does not change anything.
    if b(at) == Some(0xf2) {
        at += 1;
    }
    let end = match b(at)? {
        0xc3 => EpilogEnd::Ret { imm: 0 },
        0xc2 => EpilogEnd::Ret {
            imm: u16::from_le_bytes([b(at + 1)?, b(at + 2)?]),
        },
        0xf3 if b(at + 1) == Some(0xc3) => EpilogEnd::Ret { imm: 0 },
        0xeb | 0xe9 => {
            let (disp, len) = if b(at)? == 0xeb {
                (b(at + 1)? as i8 as i32, 2)
            } else {
                (i32_at(code, at + 1)?, 5)
            };
            let target = pc_rva
                .wrapping_add((at + len) as u32)
                .wrapping_add(disp as u32);
            if !judge.leaves_function(target) {
                return None;
            }
            EpilogEnd::Jmp {
                target: Some(target),
            }
        }
        // jmp [rip + disp32]
        0xff if b(at + 1) == Some(0x25) => EpilogEnd::Jmp { target: None },
        // REX.W jmp r/m64 (any ModRM with reg field /4)
        op if op & 0xf8 == 0x48 && b(at + 1) == Some(0xff) && b(at + 2)? & 0x38 == 0x20 => {
            EpilogEnd::Jmp { target: None }
        }
        _ => return None,
    };
    Some(Epilog {
        adjust,
        pops,
        pop_count: n as u8,
        end,
    })
}

/// Wine 8.0's epilog grammar (Debian 12's wine64), which deviates from Windows: it accepts
/// `lea rsp, [reg + disp]` through any register, knows no `jmp [rip+disp]`, REX.W `jmp r/m` or
/// `f2` prefix, never treats a jump out of the function (a tail call) as the end of an epilog,
/// and follows a jump inside the function, going on matching pops and returns at its target.
/// `code_at` gives the image bytes at an RVA. Used only to reproduce that oracle.
pub fn match_epilog_wine8<'c>(
    code_at: &dyn Fn(u32) -> &'c [u8],
    pc_rva: u32,
    begin: u32,
    end: u32,
) -> Option<Epilog> {
    let mut code = code_at(pc_rva);
    let mut code_rva = pc_rva;
    let b = |code: &[u8], i: usize| code.get(i).copied();
    let mut jumps = 0;
    let mut at = 0usize;
    let mut adjust = None;
    if b(code, 0)? & 0xf8 == 0x48 {
        match b(code, 1)? {
            0x81 if b(code, 0)? == 0x48 && b(code, 2)? == 0xc4 => {
                adjust = Some(EpilogAdjust::Add(i32_at(code, 3)?));
                at = 7;
            }
            0x83 if b(code, 0)? == 0x48 && b(code, 2)? == 0xc4 => {
                adjust = Some(EpilogAdjust::Add(b(code, 3)? as i8 as i32));
                at = 4;
            }
            0x81 | 0x83 => return None,
            0x8d => {
                let modrm = b(code, 2)?;
                if b(code, 0)? & 0x06 != 0 || (modrm >> 3) & 7 != 4 || modrm & 7 == 4 {
                    return None;
                }
                let reg = Reg::from_number(((b(code, 0)? & 1) << 3) | (modrm & 7));
                match modrm >> 6 {
                    1 => {
                        adjust = Some(EpilogAdjust::Lea(reg, b(code, 3)? as i8 as i32));
                        at = 4;
                    }
                    2 => {
                        adjust = Some(EpilogAdjust::Lea(reg, i32_at(code, 3)?));
                        at = 7;
                    }
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    let mut pops = [Reg::Rax; 16];
    let mut n = 0usize;
    loop {
        let mut rex = 0;
        if b(code, at)? & 0xf0 == 0x40 {
            rex = b(code, at)? & 0x0f;
            at += 1;
        }
        let op = b(code, at)?;
        if op == 0xe9 || op == 0xeb {
            let (disp, len) = if op == 0xeb {
                (b(code, at + 1)? as i8 as i32, 2)
            } else {
                (i32_at(code, at + 1)?, 5)
            };
            let target = code_rva
                .wrapping_add((at + len) as u32)
                .wrapping_add(disp as u32);
            // Wine has no bound here; we stop after a few hops instead of looping forever.
            jumps += 1;
            if !(begin <= target && target < end) || jumps > 32 {
                return None;
            }
            code = code_at(target);
            code_rva = target;
            at = 0;
            continue;
        }
        let end_kind = match op {
            0x58..=0x5f => {
                if n == pops.len() {
                    return None;
                }
                pops[n] = Reg::from_number((op - 0x58) + (rex & 1) * 8);
                n += 1;
                at += 1;
                continue;
            }
            0xc2 => EpilogEnd::Ret {
                imm: u16::from_le_bytes([b(code, at + 1)?, b(code, at + 2)?]),
            },
            0xc3 => EpilogEnd::Ret { imm: 0 },
            0xf3 if b(code, at + 1)? == 0xc3 => EpilogEnd::Ret { imm: 0 },
            _ => return None,
        };
        return Some(Epilog {
            adjust,
            pops,
            pop_count: n as u8,
            end: end_kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outside(begin: u32, end: u32) -> impl Fn(u32) -> bool {
        move |t| t < begin || t >= end || t == begin
    }

    fn m(code: &[u8], fr: Option<Reg>) -> Option<Epilog> {
        match_epilog(code, 0x1050, fr, &outside(0x1000, 0x1100))
    }

    #[test]
    fn accepted_forms() {
        let e = m(&[0x48, 0x83, 0xc4, 0x28, 0x5b, 0x41, 0x5e, 0xc3], None).unwrap();
        assert_eq!(e.adjust, Some(EpilogAdjust::Add(0x28)));
        assert_eq!(e.pops(), &[Reg::Rbx, Reg::R14]);
        assert_eq!(e.end, EpilogEnd::Ret { imm: 0 });
        let e = m(&[0x48, 0x81, 0xc4, 0x00, 0x01, 0x00, 0x00, 0xc3], None).unwrap();
        assert_eq!(e.adjust, Some(EpilogAdjust::Add(0x100)));
        let e = m(&[0x48, 0x8d, 0x65, 0xf0, 0x5d, 0xc3], Some(Reg::Rbp)).unwrap();
        assert_eq!(e.adjust, Some(EpilogAdjust::Lea(Reg::Rbp, -16)));
        let e = m(&[0x49, 0x8d, 0xa5, 0x80, 0, 0, 0, 0xc3], Some(Reg::R13)).unwrap();
        assert_eq!(e.adjust, Some(EpilogAdjust::Lea(Reg::R13, 0x80)));
        assert_eq!(
            m(&[0xc2, 0x10, 0x00], None).unwrap().end,
            EpilogEnd::Ret { imm: 0x10 }
        );
        assert!(m(&[0xf3, 0xc3], None).is_some());
        assert!(m(&[0x5d, 0xf2, 0xc3], None).is_some());
        assert!(m(&[0x40, 0x5d, 0xc3], None).is_some());
        assert!(m(&[0xff, 0x25, 0, 0, 0, 0], None).is_some());
        assert!(m(&[0x48, 0xff, 0xe0], None).is_some());
        assert!(m(&[0x48, 0xff, 0x60, 0x08], None).is_some());
    }

    #[test]
    fn rejected_forms() {
        // add with REX other than 0x48, or not to rsp.
        assert!(m(&[0x49, 0x83, 0xc4, 0x28, 0xc3], None).is_none());
        assert!(m(&[0x48, 0x83, 0xc0, 0x28, 0xc3], None).is_none());
        // lea through a register that is not the frame register, or without one.
        assert!(m(&[0x48, 0x8d, 0x65, 0xf0, 0xc3], Some(Reg::Rbx)).is_none());
        assert!(m(&[0x48, 0x8d, 0x65, 0xf0, 0xc3], None).is_none());
        // jmp without REX.W through a register is not a tail call.
        assert!(m(&[0xff, 0xe0], None).is_none());
        // a call, a mov, or running out of bytes.
        assert!(m(&[0xe8, 0, 0, 0, 0], None).is_none());
        assert!(m(&[0x5d, 0x5b], None).is_none());
        assert!(m(&[], None).is_none());
    }

    #[test]
    fn jumps_inside_are_body_except_to_the_begin() {
        // From 0x1050: eb 10 -> 0x1062 (inside), e9 -> 0x2000 (outside), eb to 0x1000 (begin).
        assert!(m(&[0xeb, 0x10], None).is_none());
        let e = m(&[0xe9, 0xab, 0x0f, 0, 0], None).unwrap();
        assert_eq!(
            e.end,
            EpilogEnd::Jmp {
                target: Some(0x2000)
            }
        );
        assert!(m(&[0xeb, 0xae], None).is_some());
    }

    use iced_x86::{Decoder, DecoderOptions, Mnemonic, Register};
    use proptest::prelude::*;

    /// Bytes biased towards epilog-looking sequences.
    fn epilogish() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(0x48u8),
            Just(0x49),
            Just(0x41),
            Just(0x40),
            Just(0x83),
            Just(0x81),
            Just(0x8d),
            Just(0xc4),
            Just(0x65),
            Just(0xa5),
            Just(0x5b),
            Just(0x5d),
            Just(0x5e),
            Just(0x5f),
            Just(0xc3),
            Just(0xc2),
            Just(0xf3),
            Just(0xf2),
            Just(0xe9),
            Just(0xeb),
            Just(0xff),
            Just(0x25),
            Just(0xe0),
            any::<u8>(),
        ];
        proptest::collection::vec(byte, 0..16)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]
        /// The fast filter never rejects what the full grammar accepts, whatever the frame
        /// register and wherever the jumps land.
        #[test]
        fn fast_reject_is_conservative(
            code in prop_oneof![epilogish(), proptest::collection::vec(any::<u8>(), 0..16)],
            fr in 0u8..17,
            leaves in any::<bool>(),
        ) {
            let judge = move |_t: u32| leaves;
            let fr = (fr < 16).then(|| Reg::from_number(fr));
            if match_epilog(&code, 0x1000, fr, &judge).is_some() {
                prop_assert!(may_start_epilog(&code), "{:02x?}", code);
            }
        }
    }

    /// Every two-byte prefix (followed by each possible tail shape) accepted by the grammar
    /// passes the filter: exhaustive over the bytes the filter looks at.
    #[test]
    fn fast_reject_exhaustive_two_bytes() {
        let judge = |_t: u32| true;
        let tails: [&[u8]; 6] = [
            &[],
            &[0xc4, 0x08, 0xc3, 0, 0, 0, 0, 0xc3],
            &[0xc3],
            &[0x65, 0x10, 0xc3],
            &[0xa5, 0, 0, 0, 0, 0xc3],
            &[0x58, 0xc3],
        ];
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                for tail in tails {
                    let mut code = vec![b0, b1];
                    code.extend_from_slice(tail);
                    for fr in [None, Some(Reg::Rbp), Some(Reg::R13)] {
                        if match_epilog(&code, 0x1000, fr, &judge).is_some() {
                            assert!(may_start_epilog(&code), "{code:02x?}");
                        }
                        if match_epilog(&code[..1], 0x1000, fr, &judge).is_some() {
                            assert!(may_start_epilog(&code[..1]), "{:02x?}", &code[..1]);
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// Whatever the grammar accepts decodes (by an independent decoder) as exactly that
        /// instruction sequence: an rsp adjustment, 64-bit pops, then ret or jmp.
        #[test]
        fn accepted_bytes_decode_as_the_epilog(code in epilogish()) {
            let judge = |_t: u32| true;
            let Some(ep) = match_epilog(&code, 0x1000, Some(Reg::Rbp), &judge) else {
                return Ok(());
            };
            // Windows does not check the terminator's length (`jmp [rbp+disp8]` may be cut
            // off here), so the decoder sees the bytes followed by padding.
            let mut padded = code.clone();
            padded.extend([0u8; 16]);
            let mut d = Decoder::with_ip(64, &padded, 0x1000, DecoderOptions::NONE);
            if ep.adjust.is_some() {
                let i = d.decode();
                prop_assert!(matches!(i.mnemonic(), Mnemonic::Add | Mnemonic::Lea), "{:?}", i.mnemonic());
                prop_assert_eq!(i.op0_register(), Register::RSP);
            }
            for &r in ep.pops() {
                let i = d.decode();
                prop_assert_eq!(i.mnemonic(), Mnemonic::Pop);
                prop_assert_eq!((i.op0_register() as u32 - Register::RAX as u32) as u8, r.number());
            }
            let i = d.decode();
            prop_assert!(matches!(i.mnemonic(), Mnemonic::Ret | Mnemonic::Jmp), "{:?}", i.mnemonic());
        }
    }
}

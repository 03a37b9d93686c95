//! What an entry tells the fault handler: `EX_TYPE_*`, register, flags, immediate, effect.
//!
//! Type numbers are per architecture and per kernel version: x86 renumbered them in 5.17 when
//! `data` grew register/flag/immediate fields, and arm64 dropped `EX_TYPE_FIXUP` in 6.2.

use crate::format::{ExTableEntry, Extra, KernelVersion, Machine};

/// x86 `pt_regs` register names in `EX_DATA_REG` order (the hardware encoding order).
pub const X86_REG_NAMES: [&str; 16] = [
    "ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// x86 `EX_FLAG_CLEAR_AX`: the default handler zeroes ax.
pub const EX_FLAG_CLEAR_AX: u8 = 1;
/// x86 `EX_FLAG_CLEAR_DX`: the default handler zeroes dx.
pub const EX_FLAG_CLEAR_DX: u8 = 2;

/// x86 type names from 5.17 on, by number. Later additions are gated in [`x86_type_name`].
const X86_TYPES: [&str; 22] = [
    "NONE",
    "DEFAULT",
    "FAULT",
    "UACCESS",
    "COPY",
    "CLEAR_FS",
    "FPU_RESTORE",
    "BPF",
    "WRMSR",
    "RDMSR",
    "WRMSR_SAFE",
    "RDMSR_SAFE",
    "WRMSR_IN_MCE",
    "RDMSR_IN_MCE",
    "DEFAULT_MCE_SAFE",
    "FAULT_MCE_SAFE",
    "POP_REG",
    "IMM_REG",
    "FAULT_SGX",
    "UCOPY_LEN",
    "ZEROPAD",
    "ERETU",
];

/// x86 type names of 5.16, when `data` was a bare type number.
const X86_TYPES_5_16: [&str; 14] = [
    "NONE",
    "DEFAULT",
    "FAULT",
    "UACCESS",
    "COPY",
    "CLEAR_FS",
    "FPU_RESTORE",
    "WRMSR",
    "RDMSR",
    "BPF",
    "WRMSR_IN_MCE",
    "RDMSR_IN_MCE",
    "DEFAULT_MCE_SAFE",
    "FAULT_MCE_SAFE",
];

/// The x86 `EX_TYPE_*` name of `code` in kernel `version` (the newest known when `None`).
pub fn x86_type_name(code: u32, version: Option<KernelVersion>) -> Option<&'static str> {
    match version {
        Some(v) if !v.at_least(5, 17) => X86_TYPES_5_16.get(code as usize).copied(),
        // 6.1 defines 0-20; ERETU (21) came with FRED in 6.9.
        Some(v) if code == 21 && !v.at_least(6, 9) => None,
        _ => X86_TYPES.get(code as usize).copied(),
    }
}

/// The arm64 `EX_TYPE_*` name of `code` (6.2 removed FIXUP and renumbered).
pub fn arm64_type_name(code: i16, version: Option<KernelVersion>) -> Option<&'static str> {
    let new = match version {
        Some(v) => v.at_least(6, 2),
        None => true,
    };
    let names: &[&str] = if new {
        &[
            "NONE",
            "BPF",
            "UACCESS_ERR_ZERO",
            "KACCESS_ERR_ZERO",
            "LOAD_UNALIGNED_ZEROPAD",
        ]
    } else {
        &[
            "NONE",
            "FIXUP",
            "BPF",
            "UACCESS_ERR_ZERO",
            "LOAD_UNALIGNED_ZEROPAD",
        ]
    };
    usize::try_from(code)
        .ok()
        .and_then(|i| names.get(i).copied())
}

/// The riscv `EX_TYPE_*` name of `code`.
pub fn riscv_type_name(code: i16) -> Option<&'static str> {
    const NAMES: [&str; 5] = [
        "NONE",
        "FIXUP",
        "BPF",
        "UACCESS_ERR_ZERO",
        "LOAD_UNALIGNED_ZEROPAD",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
}

/// The x86 type a 4.6-5.15 handler function stands for, from its symbol name.
pub fn x86_handler_type(symbol: &str) -> Option<&'static str> {
    Some(match symbol {
        "ex_handler_default" => "DEFAULT",
        "ex_handler_fault" => "FAULT",
        "ex_handler_uaccess" => "UACCESS",
        "ex_handler_copy" => "COPY",
        "ex_handler_clear_fs" => "CLEAR_FS",
        "ex_handler_fprestore" => "FPU_RESTORE",
        "ex_handler_rdmsr_unsafe" => "RDMSR",
        "ex_handler_wrmsr_unsafe" => "WRMSR",
        "ex_handler_bpf" => "BPF",
        "ex_handler_default_mce_safe" | "ex_handler_default_machine_check" => "DEFAULT_MCE_SAFE",
        "ex_handler_fault_mce_safe" => "FAULT_MCE_SAFE",
        "ex_handler_ext" => "EXT",
        "ex_handler_refcount" => "REFCOUNT",
        _ => return None,
    })
}

/// An entry decoded for its architecture and kernel version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixup {
    /// The architecture whose numbering was used.
    pub machine: Machine,
    /// The type number, for formats that have one.
    pub type_code: Option<i64>,
    /// The type name (`WRMSR`, `UACCESS_ERR_ZERO`); `None` when the number is not defined in
    /// that version, or the format carries no type.
    pub type_name: Option<&'static str>,
    /// The register the type acts on (x86: `EX_DATA_REG`; arm64/riscv: the err or data register).
    pub reg: Option<u8>,
    /// arm64/riscv: the second register (zero or address register).
    pub reg2: Option<u8>,
    /// x86 `EX_FLAG_*` bits.
    pub flags: u8,
    /// x86 signed immediate.
    pub imm: i32,
}

/// Decodes an entry's type fields. `handler_type` is the type named by a 4.6-5.15 handler
/// symbol, when symbols are known.
pub fn decode(
    entry: &ExTableEntry,
    machine: Machine,
    version: Option<KernelVersion>,
    handler_type: Option<&'static str>,
) -> Fixup {
    let mut f = Fixup {
        machine,
        type_code: None,
        type_name: None,
        reg: None,
        reg2: None,
        flags: 0,
        imm: 0,
    };
    match entry.extra {
        Extra::None => f.type_name = Some("DEFAULT"),
        Extra::Handler(_) => f.type_name = handler_type,
        Extra::Data(d) => {
            if version.is_some_and(|v| !v.at_least(5, 17)) {
                // 5.16: the whole word is the type.
                f.type_code = Some(d as i64);
                f.type_name = x86_type_name(d, version);
            } else {
                let ty = d & 0xff;
                f.type_code = Some(ty as i64);
                f.type_name = x86_type_name(ty, version);
                f.flags = ((d >> 12) & 0xf) as u8;
                f.imm = (d as i32) >> 16;
                let reg = ((d >> 8) & 0xf) as u8;
                if matches!(
                    f.type_name,
                    Some("WRMSR_SAFE" | "RDMSR_SAFE" | "POP_REG" | "IMM_REG" | "UCOPY_LEN")
                ) {
                    f.reg = Some(reg);
                }
            }
        }
        Extra::TypeData { ty, data } => {
            f.type_code = Some(ty as i64);
            f.type_name = match machine {
                Machine::RiscV => riscv_type_name(ty),
                _ => arm64_type_name(ty, version),
            };
            if matches!(
                f.type_name,
                Some("UACCESS_ERR_ZERO" | "KACCESS_ERR_ZERO" | "LOAD_UNALIGNED_ZEROPAD")
            ) {
                f.reg = Some((data & 0x1f) as u8);
                f.reg2 = Some(((data >> 5) & 0x1f) as u8);
            }
        }
    }
    f
}

impl Fixup {
    /// The register's name (`ax`, `r12`; arm64 `x3`/`xzr`; riscv `x5`).
    pub fn reg_name(&self) -> Option<&'static str> {
        self.reg.map(|r| self.name_of(r))
    }

    /// The second register's name (arm64/riscv).
    pub fn reg2_name(&self) -> Option<&'static str> {
        self.reg2.map(|r| self.name_of(r))
    }

    fn name_of(&self, r: u8) -> &'static str {
        const A64: [&str; 32] = [
            "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13",
            "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25",
            "x26", "x27", "x28", "x29", "x30", "xzr",
        ];
        const RV: [&str; 32] = [
            "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3",
            "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
            "t3", "t4", "t5", "t6",
        ];
        match self.machine {
            Machine::Arm64 => A64[(r & 31) as usize],
            Machine::RiscV => RV[(r & 31) as usize],
            _ => X86_REG_NAMES[(r & 15) as usize],
        }
    }

    /// The names of the set flag bits (`CLEAR_AX`, `CLEAR_DX`, unknown bits as `FLAG_4`/`FLAG_8`).
    pub fn flag_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (EX_FLAG_CLEAR_AX, "CLEAR_AX"),
            (EX_FLAG_CLEAR_DX, "CLEAR_DX"),
            (4, "FLAG_4"),
            (8, "FLAG_8"),
        ]
        .into_iter()
        .filter(|&(b, _)| self.flags & b != 0)
        .map(|(_, n)| n)
    }

    /// What the kernel's handler does to the registers and where it resumes, in words.
    pub fn effect(&self, entry: &ExTableEntry) -> String {
        let fixup = format!("{:#x}", entry.fixup);
        let reg = self.reg_name().unwrap_or("?");
        let reg2 = self.reg2_name().unwrap_or("?");
        let mut clear = String::new();
        if self.flags & EX_FLAG_CLEAR_AX != 0 {
            clear.push_str("ax = 0; ");
        }
        if self.flags & EX_FLAG_CLEAR_DX != 0 {
            clear.push_str("dx = 0; ");
        }
        let resume = format!("{clear}resume at {fixup}");
        let imm = self.imm;
        let Some(name) = self.type_name else {
            return match (entry.extra, self.type_code) {
                (Extra::Handler(h), _) => {
                    format!("call the handler at {h:#x}; it decides (usually resume at {fixup})")
                }
                (_, Some(c)) => format!("type {c} is not defined in this kernel: BUG()"),
                _ => format!("resume at {fixup}"),
            };
        };
        if matches!(self.machine, Machine::Arm64 | Machine::RiscV) {
            return match name {
                "NONE" => "no handler: the fault is not fixed up".into(),
                "FIXUP" => format!("resume at {fixup}"),
                "BPF" => "BPF JIT: clear the load's destination register and skip the load".into(),
                "UACCESS_ERR_ZERO" | "KACCESS_ERR_ZERO" => {
                    format!("{reg} = -EFAULT; {reg2} = 0 (writes to the zero register are dropped); resume at {fixup}")
                }
                "LOAD_UNALIGNED_ZEROPAD" => format!(
                    "{reg} = the aligned word at {reg2} shifted by the misalignment, zero-padded; resume at {fixup}"
                ),
                _ => format!("resume at {fixup}"),
            };
        }
        match name {
            "NONE" => "no handler: BUG()".into(),
            "DEFAULT" => resume,
            "DEFAULT_MCE_SAFE" => format!("{resume} (also recovers from machine checks)"),
            "FAULT" => format!("ax = trap number; {resume}"),
            "FAULT_MCE_SAFE" => {
                format!("ax = trap number; {resume} (also recovers from machine checks)")
            }
            "UACCESS" => format!("warn once on #GP (non-canonical user address); {resume}"),
            "COPY" => format!("warn once on #GP; ax = trap number; {resume}"),
            "CLEAR_FS" => format!("load a null selector into %fs; {resume}"),
            "FPU_RESTORE" => format!(
                "resume at {fixup}; warn once and reset the FPU state to init (flags not applied)"
            ),
            "BPF" => "BPF JIT: zero the pt_regs slot at fixup>>8 (the load's destination) and skip fixup&0xff bytes".into(),
            "WRMSR" => format!("warn once: unchecked MSR access error (WRMSR); {resume}"),
            "RDMSR" => format!(
                "warn once: unchecked MSR access error (RDMSR); ax = dx = 0 (the read returns 0); {resume}"
            ),
            "WRMSR_SAFE" => format!("{reg} = -EIO; {resume}"),
            "RDMSR_SAFE" => format!("ax = dx = 0; {reg} = -EIO; {resume}"),
            "WRMSR_IN_MCE" | "RDMSR_IN_MCE" => {
                "MSR access inside #MC handling: panic(\"MCA architectural violation!\"), never resumes".into()
            }
            "POP_REG" => format!("sp += 8; {reg} = {imm}; {resume}"),
            "IMM_REG" => format!("{reg} = {imm} (sign-extended); {resume}"),
            "FAULT_SGX" => format!("ax = trap number | SGX_ENCLS_FAULT_FLAG; {resume}"),
            "UCOPY_LEN" => format!(
                "cx = {imm} * cx + {reg} (bytes left); warn once on #GP; {resume}"
            ),
            "ZEROPAD" => format!(
                "load_unaligned_zeropad: redo the 8-byte mov from the aligned word, zero-padding past the fault, into the ModRM destination; {resume}"
            ),
            "ERETU" => format!(
                "FRED: a fault on ERETU is re-raised as a user-mode fault on the user pt_regs; {resume}"
            ),
            "EXT" | "REFCOUNT" => format!("handler-specific; {resume}"),
            _ => resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x86(data: u32, v: Option<KernelVersion>) -> Fixup {
        let e = ExTableEntry {
            insn: 0x1000,
            fixup: 0x1010,
            extra: Extra::Data(data),
        };
        decode(&e, Machine::X86_64, v, None)
    }

    const V6_1: Option<KernelVersion> = Some(KernelVersion::new(6, 1, 0));

    #[test]
    fn every_x86_type_of_6_1() {
        for code in 0..=20u32 {
            let f = x86(code, V6_1);
            assert_eq!(f.type_code, Some(code as i64));
            assert_eq!(f.type_name, Some(X86_TYPES[code as usize]));
            let e = ExTableEntry {
                insn: 0x1000,
                fixup: 0x1010,
                extra: Extra::Data(code),
            };
            assert!(!f.effect(&e).is_empty());
        }
        assert_eq!(x86(21, V6_1).type_name, None);
        assert_eq!(
            x86(21, Some(KernelVersion::new(6, 9, 0))).type_name,
            Some("ERETU")
        );
        assert_eq!(x86(21, None).type_name, Some("ERETU"));
        assert_eq!(x86(22, None).type_name, None);
    }

    #[test]
    fn x86_fields() {
        // EX_TYPE_EFAULT_REG on bx with CLEAR_AX|CLEAR_DX.
        let d = 17 | (3 << 8) | (3 << 12) | ((-14i32 as u32) << 16);
        let f = x86(d, V6_1);
        assert_eq!(f.type_name, Some("IMM_REG"));
        assert_eq!(f.reg_name(), Some("bx"));
        assert_eq!(f.imm, -14);
        assert_eq!(f.flag_names().collect::<Vec<_>>(), ["CLEAR_AX", "CLEAR_DX"]);
        let e = ExTableEntry {
            insn: 0,
            fixup: 0x20,
            extra: Extra::Data(d),
        };
        assert_eq!(
            f.effect(&e),
            "bx = -14 (sign-extended); ax = 0; dx = 0; resume at 0x20"
        );
        // WRMSR takes no register even when the field is set; WRMSR_SAFE does.
        assert_eq!(x86(8 | (5 << 8), V6_1).reg, None);
        assert_eq!(x86(10 | (5 << 8), V6_1).reg_name(), Some("bp"));
        // UCOPY_LEN8 on r15.
        let f = x86(19 | (15 << 8) | (8 << 16), V6_1);
        assert_eq!((f.reg_name(), f.imm), (Some("r15"), 8));
        // 5.16: bare type numbers with the old order.
        let f = x86(9, Some(KernelVersion::new(5, 16, 0)));
        assert_eq!(f.type_name, Some("BPF"));
        assert_eq!(x86(8, V6_1).type_name, Some("WRMSR"));
        assert_eq!(x86(14, Some(KernelVersion::new(5, 16, 0))).type_name, None);
    }

    #[test]
    fn arm64_and_riscv() {
        let e = |ty, data| ExTableEntry {
            insn: 0,
            fixup: 4,
            extra: Extra::TypeData { ty, data },
        };
        let old = Some(KernelVersion::new(6, 1, 0));
        let new = Some(KernelVersion::new(6, 6, 0));
        let f = decode(&e(3, 2 | (31 << 5)), Machine::Arm64, old, None);
        assert_eq!(f.type_name, Some("UACCESS_ERR_ZERO"));
        assert_eq!((f.reg_name(), f.reg2_name()), (Some("x2"), Some("xzr")));
        let f = decode(&e(3, 2 | (31 << 5)), Machine::Arm64, new, None);
        assert_eq!(f.type_name, Some("KACCESS_ERR_ZERO"));
        assert_eq!(
            decode(&e(1, 0), Machine::Arm64, old, None).type_name,
            Some("FIXUP")
        );
        assert_eq!(
            decode(&e(1, 0), Machine::Arm64, new, None).type_name,
            Some("BPF")
        );
        assert_eq!(decode(&e(5, 0), Machine::Arm64, new, None).type_name, None);
        assert_eq!(decode(&e(-1, 0), Machine::Arm64, new, None).type_name, None);
        let f = decode(&e(3, 10 | (11 << 5)), Machine::RiscV, old, None);
        assert_eq!((f.reg_name(), f.reg2_name()), (Some("a0"), Some("a1")));
        for ty in 0..5 {
            for m in [Machine::Arm64, Machine::RiscV] {
                let f = decode(&e(ty, 0), m, old, None);
                assert!(f.type_name.is_some());
                assert!(!f.effect(&e(ty, 0)).is_empty());
            }
        }
    }

    #[test]
    fn handler_and_plain_formats() {
        let e = ExTableEntry {
            insn: 0,
            fixup: 4,
            extra: Extra::Handler(0x99),
        };
        let f = decode(
            &e,
            Machine::X86_64,
            None,
            x86_handler_type("ex_handler_fault"),
        );
        assert_eq!(f.type_name, Some("FAULT"));
        assert_eq!(f.type_code, None);
        let f = decode(&e, Machine::X86_64, None, None);
        assert!(f.effect(&e).contains("0x99"));
        let e = ExTableEntry {
            insn: 0,
            fixup: 4,
            extra: Extra::None,
        };
        assert_eq!(
            decode(&e, Machine::X86_64, None, None).type_name,
            Some("DEFAULT")
        );
    }
}

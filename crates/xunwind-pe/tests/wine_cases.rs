//! The cases of Wine's x86-64 `test_virtual_unwind` (`dlls/ntdll/tests/unwind.c`), run through
//! our `virtual_unwind`.
//!
//! Only the facts are taken from Wine: the code bytes, the UNWIND_INFO bytes, the pc offsets
//! probed and the results real Windows returned for them (transcribed from wine-mirror/wine
//! at 0521925cd5881d417153057f41dadc63e991c022, and `function_0` also from the earlier
//! revision at 0a95b94f0969362708c569936450c1f58f95ab09). The harness is ours. The setup
//! follows the one those results were taken with:
//! - "code_mem": the code at RVA 0x400, its UNWIND_INFO at RVA 0x800, the rest zero (freshly
//!   committed memory); no function table unless a case registers one (then it is our `.pdata`);
//! - the stack: 256 qwords where the slot at offset `o` holds the value `o`, so a register
//!   restored from the stack holds the offset of the slot it came from;
//! - every register 0x5555555555555555 except rsp (the stack's start) and rbp (the stack plus
//!   a per-probe offset);
//! - the handler, when a table row expects one, is RVA 0x200 with data `05 06 07 08`.
//!
//! Where Windows versions differ, the rows carry both values: the establisher frame in an
//! epilog of a function with a frame register is the frame-register value before Windows 11
//! (`EpilogFrameRule::FrameRegister`, the default) and the stack pointer after the return
//! minus 8 on Windows 11 (`EpilogFrameRule::ReturnSlot`). Older behaviour that no supported
//! Windows shows any more (before Windows 10 1809 and 2009) is noted where it applies but not
//! asserted.

use xunwind_core::{ContextPointers, MemoryReader, Reg, Regs, SliceMemory};
use xunwind_pe::{
    unwind_leaf, virtual_unwind, CompiledFunction, EpilogFrameRule, PeImage, RuntimeFunction,
    UnwindOptions, UNW_FLAG_EHANDLER,
};
use Reg::{Rbp, Rbx, Rdi, Rsi, R12};

/// Where "code_mem" is loaded.
const CODE_MEM: u64 = 0x0000_7ff6_5a00_0000;
/// RVA of the function's code.
const CODE: u32 = 0x400;
/// RVA of its UNWIND_INFO.
const UNWIND: u32 = 0x800;
/// RVA of the function table, for the cases that register one.
const PDATA: u32 = 0xc00;
/// RVA of the handler the EHANDLER infos name.
const HANDLER: u32 = 0x200;
/// The fake stack: 256 qwords.
const STACK: u64 = 0x0000_00c4_a37f_e000;
const STACK_SLOTS: u64 = 256;
/// The value of every register the unwind does not restore.
const UNSET: u64 = 0x5555_5555_5555_5555;

// ---- UNWIND_INFO spelling ------------------------------------------------------------------

const PUSH_NONVOL: u8 = 0;
const ALLOC_LARGE: u8 = 1;
const ALLOC_SMALL: u8 = 2;
const SET_FPREG: u8 = 3;
const SAVE_NONVOL: u8 = 4;
const PUSH_MACHFRAME: u8 = 10;

/// The op byte of an unwind code: op in bits 0-3, info in bits 4-7.
const fn uwop(op: u8, info: u8) -> u8 {
    op | (info << 4)
}

/// Version 1 and flags, the first UNWIND_INFO byte.
const fn v1(flags: u8) -> u8 {
    1 | (flags << 3)
}

const EHANDLER: u8 = 1;
const CHAININFO: u8 = 4;

// ---- expected results ----------------------------------------------------------------------

/// Where the caller's rsp is expected.
#[derive(Clone, Copy, Debug)]
enum Rsp {
    /// The stack plus this offset.
    Stack(u64),
    /// This absolute value (read from a machine frame, whose slots hold their offsets).
    Abs(u64),
}

/// One probe of a case: Windows' result for the pc at `pc` (offset from the function's code).
#[derive(Clone, Copy, Debug)]
struct Row {
    pc: u32,
    /// rbp before the unwind, as an offset into the stack.
    rbp: u64,
    /// A handler is returned for UNW_FLAG_EHANDLER.
    handler: bool,
    /// The caller's rip (a value read from the stack).
    rip: u64,
    /// The establisher frame (offset into the stack), Windows 10.
    frame: u64,
    /// The establisher frame (offset into the stack), Windows 11.
    frame_win11: u64,
    rsp: Rsp,
    /// The registers restored from the stack, with their values (= their slots' offsets).
    regs: &'static [(Reg, u64)],
}

/// A row whose frame is the same on Windows 10 and 11.
const fn row(
    pc: u32,
    rbp: u64,
    handler: bool,
    rip: u64,
    frame: u64,
    rsp: u64,
    regs: &'static [(Reg, u64)],
) -> Row {
    Row {
        pc,
        rbp,
        handler,
        rip,
        frame,
        frame_win11: frame,
        rsp: Rsp::Stack(rsp),
        regs,
    }
}

impl Row {
    /// The establisher frame Windows 11 returns instead.
    const fn win11(mut self, frame: u64) -> Row {
        self.frame_win11 = frame;
        self
    }

    /// The caller's rsp is this absolute value.
    const fn abs_rsp(mut self, rsp: u64) -> Row {
        self.rsp = Rsp::Abs(rsp);
        self
    }
}

/// One function: its code, its UNWIND_INFO (placed at `UNWIND`), its RUNTIME_FUNCTION and the
/// function table registered while it is probed.
struct Case {
    name: &'static str,
    code: &'static [u8],
    unwind: &'static [u8],
    /// (BeginAddress, EndAddress) of the entry passed to RtlVirtualUnwind; UnwindData is
    /// `UNWIND`. `None`: the whole code.
    entry: Option<(u32, u32)>,
    /// Entries of the function table (BeginAddress, EndAddress, UnwindData).
    table: &'static [(u32, u32, u32)],
    rows: &'static [Row],
}

// ---- the harness ---------------------------------------------------------------------------

fn image_bytes(case: &Case) -> Vec<u8> {
    let mut bytes = vec![0u8; 0x1000];
    let code = CODE as usize;
    bytes[code..code + case.code.len()].copy_from_slice(case.code);
    let unwind = UNWIND as usize;
    bytes[unwind..unwind + case.unwind.len()].copy_from_slice(case.unwind);
    let mut table = case.table.to_vec();
    table.sort();
    for (i, &(b, e, u)) in table.iter().enumerate() {
        let at = PDATA as usize + 12 * i;
        bytes[at..at + 4].copy_from_slice(&b.to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&e.to_le_bytes());
        bytes[at + 8..at + 12].copy_from_slice(&u.to_le_bytes());
    }
    bytes
}

fn stack_bytes() -> Vec<u8> {
    (0..STACK_SLOTS)
        .flat_map(|j| (j * 8).to_le_bytes())
        .collect()
}

/// Offset of the language data in `unwind` (just past the handler RVA), for a non-chained
/// UNWIND_INFO.
fn handler_data_offset(unwind: &[u8]) -> u32 {
    let count = unwind[2] as u32;
    4 + 2 * (count + (count & 1)) + 4
}

fn check_case(case: &Case) {
    let bytes = image_bytes(case);
    let img = PeImage::from_parts(&bytes, CODE_MEM, PDATA, 12 * case.table.len() as u32);
    let (begin, end) = case.entry.unwrap_or((CODE, CODE + case.code.len() as u32));
    let function = RuntimeFunction {
        begin,
        end,
        unwind_data: UNWIND,
    };
    let stack = stack_bytes();
    let mem = SliceMemory::new(STACK, &stack);
    for r in case.rows {
        for (rule, frame) in [
            (EpilogFrameRule::FrameRegister, r.frame),
            (EpilogFrameRule::ReturnSlot, r.frame_win11),
        ] {
            for handler_type in [UNW_FLAG_EHANDLER, 0] {
                check_row(case, &img, function, &mem, r, rule, frame, handler_type);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_row(
    case: &Case,
    img: &PeImage<'_>,
    function: RuntimeFunction,
    mem: &SliceMemory<'_>,
    r: &Row,
    rule: EpilogFrameRule,
    frame: u64,
    handler_type: u8,
) {
    let at = format!(
        "{} pc +{:#04x} ({:?}, handler type {})",
        case.name, r.pc, rule, handler_type
    );
    let pc = CODE_MEM + (CODE + r.pc) as u64;
    let mut gpr = [UNSET; 16];
    gpr[Reg::Rsp as usize] = STACK;
    gpr[Reg::Rbp as usize] = STACK + r.rbp;
    let mut regs = Regs::with_gprs(pc, gpr);
    let mut ptrs = ContextPointers::new();
    let out = virtual_unwind(
        img,
        CODE_MEM,
        function,
        pc,
        &mut regs,
        Some(&mut ptrs),
        handler_type,
        mem as &dyn MemoryReader,
        &UnwindOptions {
            epilog_frame: rule,
            ..UnwindOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{at}: virtual_unwind failed: {e:?}"));

    // The compiled fast path (what `PeUnwinder` runs) gives exactly the same.
    if let Some(c) = CompiledFunction::new(img, function) {
        let mut regs2 = Regs::with_gprs(pc, gpr);
        let mut ptrs2 = ContextPointers::new();
        let out2 = c.unwind(
            img,
            CODE_MEM,
            pc,
            &mut regs2,
            Some(&mut ptrs2),
            handler_type,
            mem,
            &UnwindOptions {
                epilog_frame: rule,
                ..UnwindOptions::default()
            },
        );
        assert_eq!(out2, Ok(out), "{at}: compiled result");
        assert_eq!(regs2, regs, "{at}: compiled registers");
        assert_eq!(ptrs2, ptrs, "{at}: compiled context pointers");
    } else {
        panic!("{at}: a version-1 Wine case must compile");
    }

    // Handler: only when asked for, and then exactly where the table says.
    if r.handler && handler_type & UNW_FLAG_EHANDLER != 0 {
        let (h, data) = out
            .handler
            .unwrap_or_else(|| panic!("{at}: expected the handler, got none"));
        assert_eq!(h, HANDLER, "{at}: handler RVA");
        assert_eq!(
            img.read(data, 4).ok(),
            Some(&[5u8, 6, 7, 8][..]),
            "{at}: handler data at RVA {data:#x}"
        );
        assert_eq!(
            data,
            UNWIND + handler_data_offset(case.unwind),
            "{at}: handler data RVA"
        );
    } else {
        assert_eq!(out.handler, None, "{at}: no handler expected");
    }

    assert_eq!(regs.rip(), Some(r.rip), "{at}: rip");
    let rsp = match r.rsp {
        Rsp::Stack(o) => STACK + o,
        Rsp::Abs(v) => v,
    };
    assert_eq!(regs.get(Reg::Rsp), Some(rsp), "{at}: rsp");
    assert_eq!(ptrs.gpr(Reg::Rsp), None, "{at}: rsp has no context pointer");
    assert_eq!(
        out.establisher_frame,
        STACK + frame,
        "{at}: establisher frame"
    );

    for reg in Reg::ALL {
        if reg == Reg::Rsp {
            continue;
        }
        match r.regs.iter().find(|&&(x, _)| x == reg) {
            Some(&(_, v)) => {
                assert_eq!(regs.get(reg), Some(v), "{at}: {reg} restored");
                assert_eq!(
                    ptrs.gpr(reg),
                    Some(STACK + v),
                    "{at}: {reg} context pointer"
                );
            }
            None => {
                let orig = if reg == Reg::Rbp {
                    STACK + r.rbp
                } else {
                    UNSET
                };
                assert_eq!(regs.get(reg), Some(orig), "{at}: {reg} must be unchanged");
                assert_eq!(ptrs.gpr(reg), None, "{at}: {reg} has no context pointer");
            }
        }
    }
}

// ---- case 0: frame register rbp, SAVE_NONVOL, ALLOC_LARGE; lea rsp epilog -------------------

#[rustfmt::skip]
const FUNCTION_0: &[u8] = &[
    0x57,                                        // 00: push %rdi
    0xff, 0xf5,                                  // 01: push %rbp
    0x48, 0x81, 0xec, 0x10, 0x01, 0x00, 0x00,    // 03: sub $0x110,%rsp
    0x48, 0x8d, 0x6c, 0x24, 0x30,                // 0a: lea 0x30(%rsp),%rbp
    0x48, 0x89, 0x9d, 0xf0, 0x00, 0x00, 0x00,    // 0f: mov %rbx,0xf0(%rbp)
    0x48, 0x89, 0xb5, 0xf8, 0x00, 0x00, 0x00,    // 16: mov %rsi,0xf8(%rbp)
    0x90,                                        // 1d: nop
    0x48, 0x8b, 0x9d, 0xf0, 0x00, 0x00, 0x00,    // 1e: mov 0xf0(%rbp),%rbx
    0x48, 0x8b, 0xb5, 0xf8, 0x00, 0x00, 0x00,    // 25: mov 0xf8(%rbp),%rsi
    0x48, 0x8d, 0xa5, 0xe0, 0x00, 0x00, 0x00,    // 2c: lea 0xe0(%rbp),%rsp
    0x5d,                                        // 33: pop %rbp
    0x5f,                                        // 34: pop %rdi
    0xc3,                                        // 35: ret
];

#[rustfmt::skip]
const UNWIND_INFO_0: &[u8] = &[
    v1(EHANDLER), 0x1d, 9, (0x03 << 4) | Rbp.number(),   // prolog 0x1d, 9 slots, rbp at rsp+0x30
    0x1d, uwop(SAVE_NONVOL, Rsi.number()), 0x25, 0,       // rsi at frame+0x128
    0x16, uwop(SAVE_NONVOL, Rbx.number()), 0x24, 0,       // rbx at frame+0x120
    0x0f, uwop(SET_FPREG, Rbp.number()),
    0x0a, uwop(ALLOC_LARGE, 0), 0x22, 0,         // 0x110
    0x03, uwop(PUSH_NONVOL, Rbp.number()),
    0x01, uwop(PUSH_NONVOL, Rdi.number()),
    0x00, 0x00,                                  // align
    0x00, 0x02, 0x00, 0x00,                      // handler
    0x05, 0x06, 0x07, 0x08,                      // data
];

/// Wine's `results_0` (Windows 11) with the frames of `broken_results_0` (before Windows 11:
/// "output frame in epilogue is set with fpreg even after it is popped").
#[rustfmt::skip]
const RESULTS_0: &[Row] = &[
    //  pc    rbp   handler rip    frame  rsp    registers
    row(0x00, 0x40, false, 0x000, 0x000, 0x008, &[]),
    row(0x01, 0x40, false, 0x008, 0x000, 0x010, &[(Rdi, 0x000)]),
    row(0x03, 0x40, false, 0x010, 0x000, 0x018, &[(Rdi, 0x008), (Rbp, 0x000)]),
    row(0x0a, 0x40, false, 0x120, 0x000, 0x128, &[(Rdi, 0x118), (Rbp, 0x110)]),
    row(0x0f, 0x40, false, 0x130, 0x010, 0x138, &[(Rdi, 0x128), (Rbp, 0x120)]),
    row(0x16, 0x40, false, 0x130, 0x010, 0x138, &[(Rdi, 0x128), (Rbp, 0x120), (Rbx, 0x130)]),
    row(0x1d, 0x40, true,  0x130, 0x010, 0x138, &[(Rdi, 0x128), (Rbp, 0x120), (Rbx, 0x130), (Rsi, 0x138)]),
    row(0x1e, 0x40, true,  0x130, 0x010, 0x138, &[(Rdi, 0x128), (Rbp, 0x120), (Rbx, 0x130), (Rsi, 0x138)]),
    row(0x25, 0x40, true,  0x130, 0x010, 0x138, &[(Rdi, 0x128), (Rbp, 0x120), (Rbx, 0x130), (Rsi, 0x138)]),
    row(0x2c, 0x40, false, 0x130, 0x010, 0x138, &[(Rdi, 0x128), (Rbp, 0x120)]).win11(0x130),
    row(0x33, 0x40, false, 0x010, 0x010, 0x018, &[(Rdi, 0x008), (Rbp, 0x000)]).win11(0x010),
    row(0x34, 0x40, false, 0x008, 0x010, 0x010, &[(Rdi, 0x000)]).win11(0x008),
    row(0x35, 0x40, false, 0x000, 0x010, 0x008, &[]).win11(0x000),
];

// An earlier revision of the same test (before `push %rdi` was added), whose rows were also
// taken on Windows 10 and Windows 11.
#[rustfmt::skip]
const FUNCTION_0_OLD: &[u8] = &[
    0xff, 0xf5,                                  // 00: push %rbp
    0x48, 0x81, 0xec, 0x10, 0x01, 0x00, 0x00,    // 02: sub $0x110,%rsp
    0x48, 0x8d, 0x6c, 0x24, 0x30,                // 09: lea 0x30(%rsp),%rbp
    0x48, 0x89, 0x9d, 0xf0, 0x00, 0x00, 0x00,    // 0e: mov %rbx,0xf0(%rbp)
    0x48, 0x89, 0xb5, 0xf8, 0x00, 0x00, 0x00,    // 15: mov %rsi,0xf8(%rbp)
    0x90,                                        // 1c: nop
    0x48, 0x8b, 0x9d, 0xf0, 0x00, 0x00, 0x00,    // 1d: mov 0xf0(%rbp),%rbx
    0x48, 0x8b, 0xb5, 0xf8, 0x00, 0x00, 0x00,    // 24: mov 0xf8(%rbp),%rsi
    0x48, 0x8d, 0xa5, 0xe0, 0x00, 0x00, 0x00,    // 2b: lea 0xe0(%rbp),%rsp
    0x5d,                                        // 32: pop %rbp
    0xc3,                                        // 33: ret
];

#[rustfmt::skip]
const UNWIND_INFO_0_OLD: &[u8] = &[
    v1(EHANDLER), 0x1c, 8, (0x03 << 4) | Rbp.number(),
    0x1c, uwop(SAVE_NONVOL, Rsi.number()), 0x25, 0,
    0x15, uwop(SAVE_NONVOL, Rbx.number()), 0x24, 0,
    0x0e, uwop(SET_FPREG, Rbp.number()),
    0x09, uwop(ALLOC_LARGE, 0), 0x22, 0,
    0x02, uwop(PUSH_NONVOL, Rbp.number()),
    0x00, 0x02, 0x00, 0x00,                      // handler
    0x05, 0x06, 0x07, 0x08,                      // data
];

/// That revision's `results_0` (Windows 10) with the frames of its `broken_results_0` ("on
/// Win11 output frame in epilogue corresponds to context->Rsp - 0x8 when fpreg is set").
#[rustfmt::skip]
const RESULTS_0_OLD: &[Row] = &[
    row(0x00, 0x40, false, 0x000, 0x000, 0x008, &[]),
    row(0x02, 0x40, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]),
    row(0x09, 0x40, false, 0x118, 0x000, 0x120, &[(Rbp, 0x110)]),
    row(0x0e, 0x40, false, 0x128, 0x010, 0x130, &[(Rbp, 0x120)]),
    row(0x15, 0x40, false, 0x128, 0x010, 0x130, &[(Rbp, 0x120), (Rbx, 0x130)]),
    row(0x1c, 0x40, true,  0x128, 0x010, 0x130, &[(Rbp, 0x120), (Rbx, 0x130), (Rsi, 0x138)]),
    row(0x1d, 0x40, true,  0x128, 0x010, 0x130, &[(Rbp, 0x120), (Rbx, 0x130), (Rsi, 0x138)]),
    row(0x24, 0x40, true,  0x128, 0x010, 0x130, &[(Rbp, 0x120), (Rbx, 0x130), (Rsi, 0x138)]),
    row(0x2b, 0x40, false, 0x128, 0x010, 0x130, &[(Rbp, 0x120)]).win11(0x128),
    row(0x32, 0x40, false, 0x008, 0x010, 0x010, &[(Rbp, 0x000)]).win11(0x008),
    row(0x33, 0x40, false, 0x000, 0x010, 0x008, &[]).win11(0x000),
];

// ---- case 1: pushes (r12 with REX), ALLOC_SMALL; add rsp + pops epilog ----------------------

#[rustfmt::skip]
const FUNCTION_1: &[u8] = &[
    0x53,                     // 00: push %rbx
    0x55,                     // 01: push %rbp
    0x56,                     // 02: push %rsi
    0x57,                     // 03: push %rdi
    0x41, 0x54,               // 04: push %r12
    0x48, 0x83, 0xec, 0x30,   // 06: sub $0x30,%rsp
    0x90, 0x90,               // 0a: nop; nop
    0x48, 0x83, 0xc4, 0x30,   // 0c: add $0x30,%rsp
    0x41, 0x5c,               // 10: pop %r12
    0x5f,                     // 12: pop %rdi
    0x5e,                     // 13: pop %rsi
    0x5d,                     // 14: pop %rbp
    0x5b,                     // 15: pop %rbx
    0xc3,                     // 16: ret
];

#[rustfmt::skip]
const UNWIND_INFO_1: &[u8] = &[
    v1(EHANDLER), 0x0a, 6, 0,
    0x0a, uwop(ALLOC_SMALL, 5),                  // 0x30
    0x06, uwop(PUSH_NONVOL, R12.number()),
    0x04, uwop(PUSH_NONVOL, Rdi.number()),
    0x03, uwop(PUSH_NONVOL, Rsi.number()),
    0x02, uwop(PUSH_NONVOL, Rbp.number()),
    0x01, uwop(PUSH_NONVOL, Rbx.number()),
    0x00, 0x02, 0x00, 0x00,                      // handler
    0x05, 0x06, 0x07, 0x08,                      // data
];

#[rustfmt::skip]
const RESULTS_1: &[Row] = &[
    row(0x00, 0x50, false, 0x000, 0x000, 0x008, &[]),
    row(0x01, 0x50, false, 0x008, 0x000, 0x010, &[(Rbx, 0x000)]),
    row(0x02, 0x50, false, 0x010, 0x000, 0x018, &[(Rbx, 0x008), (Rbp, 0x000)]),
    row(0x03, 0x50, false, 0x018, 0x000, 0x020, &[(Rbx, 0x010), (Rbp, 0x008), (Rsi, 0x000)]),
    row(0x04, 0x50, false, 0x020, 0x000, 0x028, &[(Rbx, 0x018), (Rbp, 0x010), (Rsi, 0x008), (Rdi, 0x000)]),
    row(0x06, 0x50, false, 0x028, 0x000, 0x030, &[(Rbx, 0x020), (Rbp, 0x018), (Rsi, 0x010), (Rdi, 0x008), (R12, 0x000)]),
    row(0x0a, 0x50, true,  0x058, 0x000, 0x060, &[(Rbx, 0x050), (Rbp, 0x048), (Rsi, 0x040), (Rdi, 0x038), (R12, 0x030)]),
    row(0x0c, 0x50, false, 0x058, 0x000, 0x060, &[(Rbx, 0x050), (Rbp, 0x048), (Rsi, 0x040), (Rdi, 0x038), (R12, 0x030)]),
    row(0x10, 0x50, false, 0x028, 0x000, 0x030, &[(Rbx, 0x020), (Rbp, 0x018), (Rsi, 0x010), (Rdi, 0x008), (R12, 0x000)]),
    row(0x12, 0x50, false, 0x020, 0x000, 0x028, &[(Rbx, 0x018), (Rbp, 0x010), (Rsi, 0x008), (Rdi, 0x000)]),
    row(0x13, 0x50, false, 0x018, 0x000, 0x020, &[(Rbx, 0x010), (Rbp, 0x008), (Rsi, 0x000)]),
    row(0x14, 0x50, false, 0x010, 0x000, 0x018, &[(Rbx, 0x008), (Rbp, 0x000)]),
    row(0x15, 0x50, false, 0x008, 0x000, 0x010, &[(Rbx, 0x000)]),
    row(0x16, 0x50, false, 0x000, 0x000, 0x008, &[]),
];

// ---- cases 2 and 3: PUSH_MACHFRAME without and with an error code ----------------------------

#[rustfmt::skip]
const FUNCTION_2: &[u8] = &[
    0x55,                     // 00: push %rbp
    0x90, 0x90,               // 01: nop; nop
    0x5d,                     // 03: pop %rbp
    0xc3,                     // 04: ret
];

#[rustfmt::skip]
const UNWIND_INFO_2: &[u8] = &[
    v1(EHANDLER), 0x00, 2, 0,
    0x01, uwop(PUSH_NONVOL, Rbp.number()),
    0x00, uwop(PUSH_MACHFRAME, 0),
    0x00, 0x02, 0x00, 0x00,                      // handler
    0x05, 0x06, 0x07, 0x08,                      // data
];

/// rip and rsp come from the machine frame: rip from slot 0x08, rsp from slot 0x20.
#[rustfmt::skip]
const RESULTS_2: &[Row] = &[
    row(0x01, 0x50, true, 0x008, 0x000, 0, &[(Rbp, 0x000)]).abs_rsp(0x20),
];

#[rustfmt::skip]
const UNWIND_INFO_3: &[u8] = &[
    v1(EHANDLER), 0x00, 2, 0,
    0x01, uwop(PUSH_NONVOL, Rbp.number()),
    0x00, uwop(PUSH_MACHFRAME, 1),
    0x00, 0x02, 0x00, 0x00,                      // handler
    0x05, 0x06, 0x07, 0x08,                      // data
];

/// With the error code: rip from slot 0x10, rsp from slot 0x28.
#[rustfmt::skip]
const RESULTS_3: &[Row] = &[
    row(0x01, 0x50, true, 0x010, 0x000, 0, &[(Rbp, 0x000)]).abs_rsp(0x28),
];

// ---- case 4: no unwind codes: never an epilog (Windows 10 1809 and later) --------------------

#[rustfmt::skip]
const FUNCTION_4: &[u8] = &[
    0x55,                     // 00: push %rbp
    0x5d,                     // 01: pop %rbp
    0xc3,                     // 02: ret
];

#[rustfmt::skip]
const UNWIND_INFO_4: &[u8] = &[
    v1(EHANDLER), 0x00, 0, 0,
    0x00, 0x02, 0x00, 0x00,                      // handler
    0x05, 0x06, 0x07, 0x08,                      // data
];

/// Before Windows 10 1809 the pop was unwound as an epilog (rip 0x008, rsp 0x010, rbp 0x000,
/// no handler); not asserted.
#[rustfmt::skip]
const RESULTS_4: &[Row] = &[
    row(0x01, 0x50, true, 0x000, 0x000, 0x008, &[]),
];

// ---- case 6: epilogs ending in a jump ------------------------------------------------------

#[rustfmt::skip]
const FUNCTION_6_1: &[u8] = &[
    0x55,                     // 00: push %rbp
    0x90,                     // 01: nop
    0x5d,                     // 02: pop %rbp
    0xeb, 0x02,               // 03: jmp 07 (the function's end: out of it)
    0x90,                     // 05: nop
    0xc3,                     // 06: ret
];

#[rustfmt::skip]
const FUNCTION_6_2: &[u8] = &[
    0x55,                     // 00: push %rbp
    0x90,                     // 01: nop
    0x5d,                     // 02: pop %rbp
    0xeb, 0x01,               // 03: jmp 06 (inside)
    0x90,                     // 05: nop
    0xc3,                     // 06: ret
];

#[rustfmt::skip]
const FUNCTION_6_3: &[u8] = &[
    0x55,                         // 00: push %rbp
    0x90,                         // 01: nop
    0x5d,                         // 02: pop %rbp
    0xe9, 0x55, 0x55, 0x55, 0x55, // 03: jmp away
    0x90,                         // 08: nop
    0xc3,                         // 09: ret
];

#[rustfmt::skip]
const UNWIND_INFO_6: &[u8] = &[
    v1(0), 0x01, 1, 0,
    0x01, uwop(PUSH_NONVOL, Rbp.number()),
    0x00, 0x00,                                  // align
    0x00, 0x00, 0x00, 0x00,                      // handler
    0x00, 0x00, 0x00, 0x00,                      // data
];

/// The jump at 0x03 leaves the function: unwound as a return.
#[rustfmt::skip]
const RESULTS_6_EPILOGUE: &[Row] = &[
    row(0x00, 0x00, false, 0x000, 0x000, 0x008, &[]),
    row(0x01, 0x00, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]),
    row(0x02, 0x00, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]),
    row(0x03, 0x00, false, 0x000, 0x000, 0x008, &[]),
];

/// The instruction at 0x03 is body.
#[rustfmt::skip]
const RESULTS_6_BODY: &[Row] = &[
    row(0x00, 0x00, false, 0x000, 0x000, 0x008, &[]),
    row(0x01, 0x00, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]),
    row(0x02, 0x00, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]),
    row(0x03, 0x00, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]),
];

// ---- case 7: chained unwind info, jumps between the fragments ------------------------------

#[rustfmt::skip]
const FUNCTION_7: &[u8] = &[
    0x48, 0x83, 0xec, 0x30,                    // 00: sub $0x30,%rsp
    0x48, 0x89, 0x5c, 0x24, 0x10,              // 04: mov %rbx,0x10(%rsp)
    0x90,                                      // 09: nop
    0xe9, 0x0b, 0x00, 0x00, 0x00,              // 0a: jmp chained
    0x90,                                      // 0f: nop
    0x48, 0x8b, 0x5c, 0x24, 0x10,              // 10: mov 0x10(%rsp),%rbx
    0x48, 0x83, 0xc4, 0x30,                    // 15: add $0x30,%rsp
    0xc3,                                      // 19: ret
    // chained:
    0x55,                                      // 00: / 1a: push %rbp
    0x48, 0x83, 0xec, 0x50,                    // 01: / 1b: sub $0x50,%rsp
    0x48, 0x8d, 0x6c, 0x24, 0x30,              // 05: / 1f: lea 0x30(%rsp),%rbp
    0x48, 0x89, 0x5d, 0x10,                    // 0a: / 24: mov %rbx,0x10(%rbp)
    0xe9, 0xe3, 0xff, 0xff, 0xff,              // 0e: / 28: jmp 10 (into the parent fragment)
    0xe9, 0x00, 0x00, 0x00, 0x00,              // 13: / 2d: jmp 18 (inside)
    0x90,                                      // 18: / 32: nop
    0x48, 0x8b, 0x5d, 0x10,                    // 19: / 33: mov 0x10(%rbp),%rbx
    0x48, 0x83, 0xc4, 0x50,                    // 1d: / 37: add $0x50,%rsp
    0x5d,                                      // 21: / 3b: pop %rbp
    0xc3,                                      // 22: / 3c: ret
];

/// The entry passed in covers the second fragment (code + 0x1a .. + 0x3d); its info chains to
/// the first fragment (code .. code + 0x1a), whose info follows at UNWIND + 0x1c. The chained
/// RUNTIME_FUNCTION is written with the RVAs the test's setup gives it.
#[rustfmt::skip]
const UNWIND_INFO_7: &[u8] = &[
    v1(CHAININFO), 0x0e, 5, (0x03 << 4) | Rbp.number(),
    0x0e, uwop(SAVE_NONVOL, Rbx.number()), 0x02, 0,       // rbx at frame+0x10
    0x0f, uwop(SET_FPREG, Rbp.number()),
    0x05, uwop(ALLOC_SMALL, 5),                  // 0x30
    0x01, uwop(PUSH_NONVOL, Rbp.number()),
    0x00, 0x00,                                  // align
    // chained RUNTIME_FUNCTION: {CODE, CODE + 0x1a, UNWIND + 0x1c}
    0x00, 0x04, 0x00, 0x00,
    0x1a, 0x04, 0x00, 0x00,
    0x1c, 0x08, 0x00, 0x00,
    // the first fragment's info
    v1(0), 0x09, 3, 0,
    0x09, uwop(SAVE_NONVOL, Rbx.number()), 0x02, 0,       // rbx at frame+0x10
    0x04, uwop(ALLOC_SMALL, 5),                  // 0x30
    0x00, 0x00,                                  // align
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

const ENTRY_7: Option<(u32, u32)> = Some((CODE + 0x1a, CODE + 0x3d));

/// Wine's `results_7` (Windows 11) with the frames of `broken_results_7` (before Windows 11).
#[rustfmt::skip]
const RESULTS_7: &[Row] = &[
    row(0x1a, 0x30, false, 0x030, 0x000, 0x038, &[(Rbx, 0x010)]),
    row(0x1b, 0x30, false, 0x038, 0x000, 0x040, &[(Rbx, 0x010), (Rbp, 0x000)]),
    row(0x1f, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x24, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    // The jump to the first fragment, which is in no function table: a tail jump.
    row(0x28, 0x30, false, 0x000, 0x000, 0x008, &[]),
    // A jump inside the fragment: body.
    row(0x2d, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x32, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x33, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x37, 0x30, false, 0x058, 0x000, 0x060, &[(Rbp, 0x050)]).win11(0x058),
    row(0x3b, 0x30, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]).win11(0x008),
    row(0x3c, 0x30, false, 0x000, 0x000, 0x008, &[]),
];

/// Wine's `results_7_chain_jmp_detected` (the first fragment registered in a function table)
/// with the frames of `broken_results_7_chain_jmp_detected`. Its comment announces the jump to
/// the first fragment (pc 0x28) but the row probes 0x2d, so 0x2d appears twice and 0x28 is not
/// probed in this setup; transcribed as is.
#[rustfmt::skip]
const RESULTS_7_CHAIN_JMP_DETECTED: &[Row] = &[
    row(0x1a, 0x30, false, 0x030, 0x000, 0x038, &[(Rbx, 0x010)]),
    row(0x1b, 0x30, false, 0x038, 0x000, 0x040, &[(Rbx, 0x010), (Rbp, 0x000)]),
    row(0x1f, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x24, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x2d, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x2d, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x32, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x33, 0x30, false, 0x068, 0x000, 0x070, &[(Rbx, 0x010), (Rbp, 0x030)]),
    row(0x37, 0x30, false, 0x058, 0x000, 0x060, &[(Rbp, 0x050)]).win11(0x058),
    row(0x3b, 0x30, false, 0x008, 0x000, 0x010, &[(Rbp, 0x000)]).win11(0x008),
    row(0x3c, 0x30, false, 0x000, 0x000, 0x008, &[]),
];

// ---- the tests -----------------------------------------------------------------------------

const fn case(
    name: &'static str,
    code: &'static [u8],
    unwind: &'static [u8],
    rows: &'static [Row],
) -> Case {
    Case {
        name,
        code,
        unwind,
        entry: None,
        table: &[],
        rows,
    }
}

#[test]
fn case_0_frame_register_and_save_nonvol() {
    check_case(&case("function_0", FUNCTION_0, UNWIND_INFO_0, RESULTS_0));
}

#[test]
fn case_0_earlier_revision() {
    check_case(&case(
        "function_0 (earlier revision)",
        FUNCTION_0_OLD,
        UNWIND_INFO_0_OLD,
        RESULTS_0_OLD,
    ));
}

#[test]
fn case_1_pushes_and_add_rsp_epilog() {
    check_case(&case("function_1", FUNCTION_1, UNWIND_INFO_1, RESULTS_1));
}

#[test]
fn case_2_machine_frame() {
    check_case(&case(
        "function_2/unwind_info_2",
        FUNCTION_2,
        UNWIND_INFO_2,
        RESULTS_2,
    ));
}

#[test]
fn case_3_machine_frame_with_error_code() {
    check_case(&case(
        "function_2/unwind_info_3",
        FUNCTION_2,
        UNWIND_INFO_3,
        RESULTS_3,
    ));
}

#[test]
fn case_4_no_codes_never_an_epilog() {
    check_case(&case("function_4", FUNCTION_4, UNWIND_INFO_4, RESULTS_4));
}

#[test]
fn case_6_jump_out_of_the_function_is_an_epilog() {
    check_case(&case(
        "function_6_1",
        FUNCTION_6_1,
        UNWIND_INFO_6,
        RESULTS_6_EPILOGUE,
    ));
}

#[test]
fn case_6_jump_inside_the_function_is_body() {
    check_case(&case(
        "function_6_2",
        FUNCTION_6_2,
        UNWIND_INFO_6,
        RESULTS_6_BODY,
    ));
}

#[test]
fn case_6_far_jump_away_is_an_epilog() {
    check_case(&case(
        "function_6_3",
        FUNCTION_6_3,
        UNWIND_INFO_6,
        RESULTS_6_EPILOGUE,
    ));
}

#[test]
fn case_7_chained_info() {
    check_case(&Case {
        entry: ENTRY_7,
        ..case("function_7", FUNCTION_7, UNWIND_INFO_7, RESULTS_7)
    });
}

/// `push rbp; nop; pop rbp; [REX] FF modrm 00..00` for REX none and 0x41..0x48 and every ModRM
/// byte: only `FF 25` (no REX or REX.W, jmp [rip+disp32]) and REX.W `FF /4` (jmp r/m64) end
/// an epilog; everything else is body.
#[test]
fn tail_jump_ff_every_rex_and_modrm() {
    let mut epilogs = 0;
    for rex in 0u8..=8 {
        for modrm in 0u8..=255 {
            let mut code = vec![0x55, 0x90, 0x5d];
            if rex != 0 {
                code.push(0x40 | rex);
            }
            code.extend([0xff, modrm]);
            code.resize(15, 0);
            let code: &'static [u8] = Box::leak(code.into_boxed_slice());
            let ext = (modrm >> 3) & 7;
            let epilog = ((rex == 8 || rex == 0) && modrm == 0x25) || (rex == 8 && ext == 4);
            epilogs += epilog as u32;
            let name: &'static str =
                Box::leak(format!("tail jump ff (rex {rex:#x}, modrm {modrm:#04x})").into());
            let rows = if epilog {
                RESULTS_6_EPILOGUE
            } else {
                RESULTS_6_BODY
            };
            check_case(&case(name, code, UNWIND_INFO_6, rows));
        }
    }
    assert_eq!(epilogs, 2 + 32 - 1);
}

/// An entry {code, end + 1} (UnwindData 0: the zeroed start of code_mem).
const TABLE_SAME_BEGIN: &[(u32, u32, u32)] = &[(CODE, CODE + FUNCTION_6_1.len() as u32 + 1, 0)];
/// An entry {code - 1, end + 1}.
const TABLE_OTHER_BEGIN: &[(u32, u32, u32)] =
    &[(CODE - 1, CODE + FUNCTION_6_1.len() as u32 + 1, 0)];

/// The jump at 0x03 lands at 0x07, outside the function, but in a table entry with the same
/// BeginAddress: body (Windows 10 2009 and later; earlier Windows unwound it as an epilog).
#[test]
fn case_6_jump_into_an_entry_with_the_same_begin_is_body() {
    check_case(&Case {
        table: TABLE_SAME_BEGIN,
        ..case(
            "function_6_1, table {code, end+1}",
            FUNCTION_6_1,
            UNWIND_INFO_6,
            RESULTS_6_BODY,
        )
    });
}

/// The same jump into an entry that covers the function but begins elsewhere: an epilog.
#[test]
fn case_6_jump_into_an_entry_with_another_begin_is_an_epilog() {
    check_case(&Case {
        table: TABLE_OTHER_BEGIN,
        ..case(
            "function_6_1, table {code-1, end+1}",
            FUNCTION_6_1,
            UNWIND_INFO_6,
            RESULTS_6_EPILOGUE,
        )
    });
}

/// Case 7 with the first fragment registered in a function table.
#[test]
fn case_7_chained_with_the_parent_fragment_in_a_table() {
    check_case(&Case {
        entry: ENTRY_7,
        table: &[(CODE, CODE + 0x1a, 0)],
        ..case(
            "function_7, table {code, code+0x1a}",
            FUNCTION_7,
            UNWIND_INFO_7,
            RESULTS_7_CHAIN_JMP_DETECTED,
        )
    });
}

/// `function_5`: no function entry (a leaf), rip from [rsp] = 0x1234. Wine keeps this case
/// compiled out ("crashes before Win10 21H2"), so its rows are Wine's expectation, not a
/// result recorded on every Windows; kept as a check of the leaf rule only.
#[test]
fn case_5_leaf_without_function_entry() {
    let mut stack = stack_bytes();
    stack[..8].copy_from_slice(&0x1234u64.to_le_bytes());
    let mem = SliceMemory::new(STACK, &stack);
    for pc in [0x01u32, 0x02] {
        let mut gpr = [UNSET; 16];
        gpr[Reg::Rsp as usize] = STACK;
        gpr[Reg::Rbp as usize] = STACK;
        let mut regs = Regs::with_gprs(CODE_MEM + (CODE + pc) as u64, gpr);
        unwind_leaf(&mut regs, &mem).unwrap();
        assert_eq!(regs.rip(), Some(0x1234), "pc +{pc:#x}: rip");
        assert_eq!(regs.get(Reg::Rsp), Some(STACK + 8), "pc +{pc:#x}: rsp");
        assert_eq!(regs.get(Reg::Rbx), Some(UNSET), "pc +{pc:#x}: rbx");
    }
}

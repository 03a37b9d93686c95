//! RtlVirtualUnwind rules on hand-built images: one rule per test, each able to fail.

use xunwind_core::{ContextPointers, MemoryReader, Reg, Regs, SliceMemory, UnwindError};
use xunwind_pe::{
    virtual_unwind, CompiledFunction, EpilogFrameRule, PeImage, RuntimeFunction, UnwindOptions,
    VirtualUnwind, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};

const BASE: u64 = 0x1_4000_0000;
const STACK: u64 = 0x7000_0000;

/// A flat image: code at 0x1000, unwind data at 0x2000, .pdata at 0x3000.
struct Img {
    bytes: Vec<u8>,
    pdata: Vec<(u32, u32, u32)>,
}

impl Img {
    fn new() -> Self {
        Img {
            bytes: vec![0xcc; 0x4000],
            pdata: Vec::new(),
        }
    }
    fn put(&mut self, rva: u32, b: &[u8]) {
        self.bytes[rva as usize..rva as usize + b.len()].copy_from_slice(b);
    }
    fn func(&mut self, begin: u32, end: u32, unwind: u32) -> RuntimeFunction {
        self.pdata.push((begin, end, unwind));
        RuntimeFunction {
            begin,
            end,
            unwind_data: unwind,
        }
    }
    fn finish(&mut self) -> PeImage<'_> {
        self.pdata.sort();
        let table: Vec<u8> = self
            .pdata
            .iter()
            .flat_map(|&(b, e, u)| [b, e, u])
            .flat_map(u32::to_le_bytes)
            .collect();
        let n = table.len() as u32;
        self.put(0x3000, &table);
        PeImage::from_parts(&self.bytes, BASE, 0x3000, n)
    }
}

/// A stack whose slot at `STACK + 8k` holds `0x5000 + 8k`.
fn stack() -> Vec<u8> {
    (0..0x400u64)
        .flat_map(|k| (0x5000 + 8 * k).to_le_bytes())
        .collect()
}

fn regs() -> Regs {
    let mut g = [0u64; 16];
    for (n, v) in g.iter_mut().enumerate() {
        *v = 0xa000 + n as u64;
    }
    g[Reg::Rsp as usize] = STACK + 0x100;
    g[Reg::Rbp as usize] = STACK + 0x200;
    let mut r = Regs::with_gprs(0, g);
    for n in 0..16 {
        r.set_xmm(n, 0xe000 + n as u128);
    }
    r
}

fn slot(addr: u64) -> u64 {
    0x5000 + (addr - STACK)
}

fn run(
    img: &PeImage<'_>,
    f: RuntimeFunction,
    pc_rva: u32,
    regs: &mut Regs,
    mut ptrs: Option<&mut ContextPointers>,
    ty: u8,
) -> Result<VirtualUnwind, UnwindError> {
    let s = stack();
    let mem = SliceMemory::new(STACK, &s);
    // Every rule below is checked on the compiled fast path too: same result, registers and
    // context pointers as the reference.
    let (mut regs2, mut ptrs2) = (regs.clone(), ptrs.as_deref().copied());
    let want = virtual_unwind(
        img,
        BASE,
        f,
        BASE + pc_rva as u64,
        regs,
        ptrs.as_deref_mut(),
        ty,
        &mem as &dyn MemoryReader,
        &UnwindOptions::default(),
    );
    if let Some(c) = CompiledFunction::new(img, f) {
        let got = c.unwind(
            img,
            BASE,
            BASE + pc_rva as u64,
            &mut regs2,
            ptrs2.as_mut(),
            ty,
            &mem,
            &UnwindOptions::default(),
        );
        assert_eq!(got, want, "compiled result at {pc_rva:#x}");
        assert_eq!(&regs2, regs, "compiled registers at {pc_rva:#x}");
        assert_eq!(
            ptrs2.as_ref(),
            ptrs.as_deref(),
            "compiled pointers at {pc_rva:#x}"
        );
    }
    want
}

/// push rbp; push rbx; sub rsp,0x30; lea rbp,[rsp+0x20]; (body) ; frame rbp offset 0x20.
fn framed(img: &mut Img) -> RuntimeFunction {
    img.put(
        0x1000,
        &[
            0x55, 0x53, 0x48, 0x83, 0xec, 0x30, 0x48, 0x8d, 0x6c, 0x24, 0x20,
        ],
    );
    img.put(0x100b, &[0x90; 0x20]);
    // epilog: lea rsp,[rbp+0x10]; pop rbx; pop rbp; ret
    img.put(0x102b, &[0x48, 0x8d, 0x65, 0x10, 0x5b, 0x5d, 0xc3]);
    #[rustfmt::skip]
    img.put(0x2000, &[
        0x01 | (UNW_FLAG_EHANDLER << 3), 11, 4, 0x25,
        11, 0x03,        // SET_FPREG
        6, 0x52,         // ALLOC_SMALL 0x30
        2, 0x30,         // PUSH_NONVOL rbx
        1, 0x50,         // PUSH_NONVOL rbp
        0x00, 0x18, 0, 0, // handler 0x1800
        0xaa, 0xbb, 0xcc, 0xdd,
    ]);
    img.func(0x1000, 0x1032, 0x2000)
}

#[test]
fn prolog_undoes_only_executed_codes() {
    let mut img = Img::new();
    let f = framed(&mut img);
    let img = img.finish();
    let sp0 = STACK + 0x100;
    // (pc offset, expected rsp after unwind before the return pop, rbx restored?, rbp restored?)
    for (off, sp_before_ret, rbx, rbp) in [
        (0u32, sp0, false, false),
        (1, sp0 + 8, false, true),
        (2, sp0 + 16, true, true),
        (6, sp0 + 0x30 + 16, true, true),
    ] {
        let mut r = regs();
        let out = run(&img, f, 0x1000 + off, &mut r, None, UNW_FLAG_EHANDLER).unwrap();
        assert!(out.in_prolog, "offset {off}");
        assert_eq!(out.handler, None, "no handler in the prolog, offset {off}");
        assert_eq!(
            out.establisher_frame, sp0,
            "SET_FPREG not yet run, offset {off}"
        );
        assert_eq!(r.rsp(), Some(sp_before_ret + 8), "offset {off}");
        assert_eq!(r.rip(), Some(slot(sp_before_ret)), "offset {off}");
        assert_eq!(r.get(Reg::Rbx) != Some(0xa003), rbx, "offset {off}");
        assert_eq!(r.get(Reg::Rbp) != Some(STACK + 0x200), rbp, "offset {off}");
    }
}

#[test]
fn frame_register_defines_rsp_and_establisher_after_set_fpreg() {
    let mut img = Img::new();
    let f = framed(&mut img);
    let img = img.finish();
    let mut r = regs();
    let rbp = STACK + 0x180;
    r.set(Reg::Rbp, rbp);
    r.set(Reg::Rsp, 0xdead); // must not matter once the frame register is set up
    let mut ptrs = ContextPointers::new();
    let out = run(&img, f, 0x1011, &mut r, Some(&mut ptrs), UNW_FLAG_EHANDLER).unwrap();
    let frame = rbp - 0x20;
    assert_eq!(out.establisher_frame, frame);
    assert!(!out.in_prolog && !out.in_epilog);
    // rsp = frame + 0x30 (alloc), then rbx, rbp, return address.
    let rbx_at = frame + 0x30;
    assert_eq!(r.get(Reg::Rbx), Some(slot(rbx_at)));
    assert_eq!(r.get(Reg::Rbp), Some(slot(rbx_at + 8)));
    assert_eq!(r.rip(), Some(slot(rbx_at + 16)));
    assert_eq!(r.rsp(), Some(rbx_at + 24));
    assert_eq!(ptrs.gpr(Reg::Rbx), Some(rbx_at));
    assert_eq!(ptrs.gpr(Reg::Rbp), Some(rbx_at + 8));
    assert_eq!(ptrs.gpr(Reg::Rsi), None);
    assert_eq!(out.handler, Some((0x1800, 0x2000 + 4 + 8 + 4)));
    // At exactly SizeOfProlog the body has begun: the handler is reported.
    let mut r = regs();
    r.set(Reg::Rbp, rbp);
    let out = run(&img, f, 0x100b, &mut r, None, UNW_FLAG_EHANDLER).unwrap();
    assert!(out.handler.is_some());
    // Only the kind asked for.
    let mut r = regs();
    r.set(Reg::Rbp, rbp);
    let out = run(&img, f, 0x100b, &mut r, None, UNW_FLAG_UHANDLER).unwrap();
    assert_eq!(out.handler, None);
}

#[test]
fn v1_epilog_is_emulated_forward() {
    let mut img = Img::new();
    let f = framed(&mut img);
    let img = img.finish();
    let rbp = STACK + 0x180;
    for (pc, rsp_at_pc) in [
        (0x102bu32, 0u64),
        (0x102f, STACK + 0x40),
        (0x1030, STACK + 0x48),
        (0x1031, STACK + 0x50),
    ] {
        let mut r = regs();
        r.set(Reg::Rbp, rbp);
        if rsp_at_pc != 0 {
            r.set(Reg::Rsp, rsp_at_pc);
        }
        let out = run(&img, f, pc, &mut r, None, UNW_FLAG_EHANDLER).unwrap();
        assert!(out.in_epilog, "pc {pc:#x}");
        assert_eq!(out.handler, None, "no handler in an epilog");
        // Default rule: the establisher is still the frame-register value.
        assert_eq!(out.establisher_frame, rbp - 0x20);
        let ret_at = match pc {
            0x102b => rbp + 0x10 + 16,
            _ => rsp_at_pc + (0x1031 - pc as u64) * 8,
        };
        assert_eq!(r.rip(), Some(slot(ret_at)), "pc {pc:#x}");
        assert_eq!(r.rsp(), Some(ret_at + 8), "pc {pc:#x}");
    }
    // Windows 11 rule: the return slot.
    let mut r = regs();
    let s = stack();
    let mem = SliceMemory::new(STACK, &s);
    r.set(Reg::Rsp, STACK + 0x48);
    let opts = UnwindOptions {
        epilog_frame: EpilogFrameRule::ReturnSlot,
        ..UnwindOptions::default()
    };
    let out = virtual_unwind(&img, BASE, f, BASE + 0x1030, &mut r, None, 1, &mem, &opts).unwrap();
    assert_eq!(out.establisher_frame, STACK + 0x50);
}

#[test]
fn zero_codes_means_no_epilog_and_leafless_return() {
    let mut img = Img::new();
    img.put(0x1100, &[0xc3]);
    img.put(0x2100, &[0x01, 0, 0, 0]);
    let f = img.func(0x1100, 0x1101, 0x2100);
    let img = img.finish();
    let mut r = regs();
    let out = run(&img, f, 0x1100, &mut r, None, 0).unwrap();
    assert!(!out.in_epilog);
    assert_eq!(r.rip(), Some(slot(STACK + 0x100)));
}

#[test]
fn tail_jumps_count_only_when_they_leave_the_function() {
    // pop rbx ; jmp <target>, from 0x1230 inside 0x1200..0x1240, whose second fragment
    // 0x1280..0x12a0 chains to it.
    for (target, epilog) in [
        (0x1238u32, false),
        (0x1200, true),
        (0x1500, true),
        (0x1290, false),
    ] {
        let mut img = Img::new();
        img.put(0x1200, &[0x53]);
        img.put(0x2200, &[0x01, 1, 1, 0, 1, 0x30]);
        let f = img.func(0x1200, 0x1240, 0x2200);
        #[rustfmt::skip]
        img.put(0x2300, &[
            0x01 | 4 << 3, 0, 0, 0,
            0x00, 0x12, 0, 0, 0x40, 0x12, 0, 0, 0x00, 0x22, 0, 0,
        ]);
        img.func(0x1280, 0x12a0, 0x2300);
        let pc = 0x1230u32;
        let mut code = vec![0x5b, 0xe9];
        code.extend(((target as i64 - (pc as i64 + 6)) as i32).to_le_bytes());
        img.put(pc, &code);
        let img = img.finish();
        let mut r = regs();
        let out = run(&img, f, pc, &mut r, None, 0).unwrap();
        assert_eq!(out.in_epilog, epilog, "jmp to {target:#x}");
    }
}

#[test]
fn machine_frames_take_rip_and_rsp_from_the_trap_frame() {
    for (info, skip) in [(0u8, 0u64), (1, 8)] {
        let mut img = Img::new();
        img.put(0x2400, &[0x01, 0, 2, 0, 0, 0x02, 0, 0x0a | info << 4]); // ALLOC_SMALL 8; MACHFRAME
        let f = img.func(0x1400, 0x1410, 0x2400);
        let img = img.finish();
        let mut r = regs();
        let out = run(&img, f, 0x1408, &mut r, None, 0).unwrap();
        assert!(out.machine_frame);
        // ALLOC_SMALL 8 first, then the trap frame (after the error code).
        let tf = STACK + 0x108 + skip;
        assert_eq!(r.rip(), Some(slot(tf)));
        assert_eq!(r.rsp(), Some(slot(tf + 24)));
    }
}

#[test]
fn save_xmm_and_far_forms_read_from_the_establisher_frame() {
    let mut img = Img::new();
    #[rustfmt::skip]
    img.put(0x2500, &[
        0x01, 0x10, 8, 0x00,
        0x10, 0x68, 0x02, 0x00,             // SAVE_XMM128 xmm6 at 0x20
        0x0c, 0xf9, 0x40, 0x00, 0x00, 0x00, // SAVE_XMM128_FAR xmm15 at 0x40
        0x08, 0xd5, 0x58, 0x00, 0x00, 0x00, // SAVE_NONVOL_FAR r13 at 0x58
    ]);
    let f = img.func(0x1500, 0x1540, 0x2500);
    let img = img.finish();
    let mut r = regs();
    let mut p = ContextPointers::new();
    run(&img, f, 0x1520, &mut r, Some(&mut p), 0).unwrap();
    let fr = STACK + 0x100;
    let x = |a: u64| slot(a) as u128 | (slot(a + 8) as u128) << 64;
    assert_eq!(r.xmm(6), Some(x(fr + 0x20)));
    assert_eq!(r.xmm(15), Some(x(fr + 0x40)));
    assert_eq!(r.xmm(7), Some(0xe007));
    assert_eq!(p.xmm(15), Some(fr + 0x40));
    assert_eq!(r.get(Reg::R13), Some(slot(fr + 0x58)));
    assert_eq!(p.gpr(Reg::R13), Some(fr + 0x58));
}

#[test]
fn chained_info_applies_parent_codes_and_primary_handler() {
    let mut img = Img::new();
    // parent: push rbx at 1, handler 0x1900 with E flag
    img.put(
        0x2600,
        &[
            0x01 | UNW_FLAG_EHANDLER << 3,
            1,
            1,
            0,
            1,
            0x30,
            0,
            0,
            0x00,
            0x19,
            0,
            0,
        ],
    );
    img.func(0x1600, 0x1640, 0x2600);
    // fragment: push rsi at 1, chained to the parent
    img.put(
        0x2640,
        &[
            0x01 | 4 << 3,
            1,
            1,
            0,
            1,
            0x60,
            0,
            0,
            0x00,
            0x16,
            0,
            0,
            0x40,
            0x16,
            0,
            0,
            0x00,
            0x26,
            0,
            0,
        ],
    );
    let frag = img.func(0x1680, 0x16a0, 0x2640);
    let img = img.finish();
    let mut r = regs();
    let out = run(&img, frag, 0x1690, &mut r, None, UNW_FLAG_EHANDLER).unwrap();
    assert_eq!(r.get(Reg::Rsi), Some(slot(STACK + 0x100)));
    assert_eq!(r.get(Reg::Rbx), Some(slot(STACK + 0x108)));
    assert_eq!(r.rip(), Some(slot(STACK + 0x110)));
    assert_eq!(out.handler, Some((0x1900, 0x2600 + 12)));
}

#[test]
fn cyclic_chains_are_an_error_not_a_hang() {
    let mut img = Img::new();
    img.put(
        0x2700,
        &[
            0x01 | 4 << 3,
            0,
            0,
            0,
            0x00,
            0x17,
            0,
            0,
            0x10,
            0x17,
            0,
            0,
            0x00,
            0x27,
            0,
            0,
        ],
    );
    let f = img.func(0x1700, 0x1710, 0x2700);
    let img = img.finish();
    let mut r = regs();
    assert!(matches!(
        run(&img, f, 0x1705, &mut r, None, 0),
        Err(UnwindError::ChainTooDeep { .. })
    ));
}

#[test]
fn v2_epilog_skips_executed_pops() {
    let mut img = Img::new();
    // push rbp; push r12; push rbx; ...; pop rbx; pop r12; pop rbp; ret  (epilog of 5 bytes at end)
    img.put(0x1800, &[0x55, 0x41, 0x54, 0x53]);
    img.put(0x181b, &[0x5b, 0x41, 0x5c, 0x5d, 0xc3]);
    #[rustfmt::skip]
    img.put(0x2800, &[
        0x02, 4, 5, 0,
        0x05, 0x16,  // EPILOG size 5, at end
        0x00, 0x06,  // padding
        4, 0x30,     // push rbx
        3, 0xc0,     // push r12
        1, 0x50,     // push rbp
    ]);
    let f = img.func(0x1800, 0x1820, 0x2800);
    let img = img.finish();
    let sp = STACK + 0x100;
    // pc, registers still to pop
    for (pc, pops) in [(0x181bu32, 3u64), (0x181c, 2), (0x181e, 1), (0x181f, 0)] {
        let mut r = regs();
        let out = run(&img, f, pc, &mut r, None, 0).unwrap();
        assert!(out.in_epilog, "pc {pc:#x}");
        assert_eq!(r.rip(), Some(slot(sp + 8 * pops)), "pc {pc:#x}");
        assert_eq!(
            r.get(Reg::Rbp) != Some(STACK + 0x200),
            pops >= 1,
            "pc {pc:#x}"
        );
    }
    // Before the epilog: the body, all codes undone.
    let mut r = regs();
    let out = run(&img, f, 0x1810, &mut r, None, 0).unwrap();
    assert!(!out.in_epilog);
    assert_eq!(r.rip(), Some(slot(sp + 24)));
}

#[test]
fn unreadable_stack_is_a_typed_error_with_the_address() {
    let mut img = Img::new();
    let f = framed(&mut img);
    let img = img.finish();
    let mut r = regs();
    r.set(Reg::Rbp, 0x10);
    match run(&img, f, 0x1011, &mut r, None, 0) {
        Err(UnwindError::Memory(e)) => assert_eq!(e.addr, 0x20),
        other => panic!("{other:?}"),
    }
}

/// `FrameWalker::unwind` rewrites registers in place and, carried through a walk, one
/// `ContextPointers` keeps every register's location (as `RtlVirtualUnwind` does), while
/// `step` reports only what its own frame restored; both agree on registers and step info.
#[test]
fn walker_unwind_accumulates_context_pointers_and_matches_step() {
    use xunwind_core::{FrameWalker, PcKind};
    let mut img = Img::new();
    let _ = framed(&mut img);
    // push rsi; sub rsp,0x20; (body)
    img.put(0x1100, &[0x56, 0x48, 0x83, 0xec, 0x20]);
    img.put(0x1105, &[0x90; 0x1b]);
    #[rustfmt::skip]
    img.put(0x2100, &[
        0x01, 5, 2, 0x00,
        5, 0x32,         // ALLOC_SMALL 0x20
        1, 0x60,         // PUSH_NONVOL rsi
    ]);
    img.func(0x1100, 0x1120, 0x2100);
    let u = xunwind_pe::PeUnwinder::new(img.finish(), BASE);
    let mut s = stack();
    // framed's return address (rbp = STACK+0x200: frame at +0x1e0, pops at +0x210/+0x218).
    s[0x220..0x228].copy_from_slice(&(BASE + 0x1110).to_le_bytes());
    let mem = SliceMemory::new(STACK, &s);
    let mut r = regs();
    r.set_rip(BASE + 0x1010);
    let mut p = ContextPointers::new();
    let one = u.step(&r, PcKind::Exact, &mem).unwrap();
    let info = u.unwind(&mut r, PcKind::Exact, &mem, Some(&mut p)).unwrap();
    assert_eq!((&r, &p, info), (&one.regs, &one.pointers, one.info()));
    assert_eq!(r.rip(), Some(BASE + 0x1110));
    assert_eq!(p.gpr(Reg::Rbx), Some(STACK + 0x210));
    assert_eq!(info.handler.map(|h| h.address), Some(BASE + 0x1800));

    let two = u.step(&r, PcKind::ReturnAddress, &mem).unwrap();
    let info = u
        .unwind(&mut r, PcKind::ReturnAddress, &mem, Some(&mut p))
        .unwrap();
    assert_eq!((&r, info), (&two.regs, two.info()));
    assert_eq!(two.pointers.gpr(Reg::Rbx), None);
    assert_eq!(two.pointers.gpr(Reg::Rsi), Some(STACK + 0x248));
    assert_eq!(p.gpr(Reg::Rbx), Some(STACK + 0x210));
    assert_eq!(p.gpr(Reg::Rbp), Some(STACK + 0x218));
    assert_eq!(p.gpr(Reg::Rsi), Some(STACK + 0x248));
    assert_eq!(r.rip(), Some(slot(STACK + 0x250)));
    assert_eq!(r.rsp(), Some(STACK + 0x258));
    // Volatile registers did not survive the calls; nonvolatile ones did.
    assert_eq!((r.get(Reg::Rax), r.xmm(0)), (None, None));
    assert_eq!((r.get(Reg::R12), r.xmm(6)), (Some(0xa00c), Some(0xe006)));
    // Without pointers the registers are the same.
    let mut r2 = regs();
    r2.set_rip(BASE + 0x1010);
    u.unwind(&mut r2, PcKind::Exact, &mem, None).unwrap();
    u.unwind(&mut r2, PcKind::ReturnAddress, &mem, None)
        .unwrap();
    assert_eq!(r2, r);
}

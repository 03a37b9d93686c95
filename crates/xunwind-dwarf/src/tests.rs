//! Hand-built CFI with known answers, and real system libraries against linear scans.

use super::*;
use xunwind_core::{Reg, SliceMemory, Trust};

const EH_ADDR: u64 = 0x10_0000;
const HDR_ADDR: u64 = 0x0f_0000;
const BIAS: u64 = 0x7f00_0000_0000;

// DW_CFA opcodes used below.
const ADVANCE: u8 = 0x40; // | delta
const OFFSET: u8 = 0x80; // | reg, uleb factored offset
const DEF_CFA: u8 = 0x0c;
const DEF_CFA_REGISTER: u8 = 0x0d;
const DEF_CFA_OFFSET: u8 = 0x0e;
const DEF_CFA_EXPRESSION: u8 = 0x0f;
const EXPRESSION: u8 = 0x10;
const VAL_OFFSET: u8 = 0x14;
const REGISTER: u8 = 0x09;
const UNDEFINED: u8 = 0x07;
const SAME_VALUE: u8 = 0x08;
const VAL_EXPRESSION: u8 = 0x16;

/// One FDE to assemble: its range, its CIE's augmentation and its instructions.
struct FdeSpec {
    start: u64,
    len: u32,
    signal: bool,
    insns: Vec<u8>,
}

/// Assembles `.eh_frame` (one CIE per distinct augmentation) and `.eh_frame_hdr` for `fdes`.
fn build(fdes: &[FdeSpec]) -> (Vec<u8>, Vec<u8>) {
    let mut eh = Vec::new();
    let mut cie_at = [0usize; 2];
    for (i, aug) in [&b"zR\0"[..], &b"zRS\0"[..]].iter().enumerate() {
        cie_at[i] = eh.len();
        let mut body = vec![0, 0, 0, 0, 1]; // CIE id, version
        body.extend_from_slice(aug);
        body.extend_from_slice(&[1, 0x78, 16, 1, 0x1b]); // caf 1, daf -8, RA 16, aug len, pcrel|sdata4
                                                         // Initial rules: CFA = rsp+8, RA at CFA-8.
        body.extend_from_slice(&[DEF_CFA, 7, 8, OFFSET | 16, 1]);
        push_entry(&mut eh, body);
    }
    let mut table = Vec::new();
    for f in fdes {
        let at = eh.len();
        let mut body = Vec::new();
        let cie = cie_at[f.signal as usize];
        body.extend_from_slice(&((at + 4 - cie) as u32).to_le_bytes());
        let pc_field = EH_ADDR + at as u64 + 8;
        body.extend_from_slice(&(f.start.wrapping_sub(pc_field) as i32).to_le_bytes());
        body.extend_from_slice(&f.len.to_le_bytes());
        body.push(0); // augmentation data length
        body.extend_from_slice(&f.insns);
        push_entry(&mut eh, body);
        table.push((f.start, EH_ADDR + at as u64));
    }
    eh.extend_from_slice(&[0, 0, 0, 0]);
    table.sort();
    let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
    hdr.extend_from_slice(&((EH_ADDR - (HDR_ADDR + 4)) as i32).to_le_bytes());
    hdr.extend_from_slice(&(table.len() as u32).to_le_bytes());
    for (start, fde) in table {
        hdr.extend_from_slice(&(start.wrapping_sub(HDR_ADDR) as i32).to_le_bytes());
        hdr.extend_from_slice(&(fde.wrapping_sub(HDR_ADDR) as i32).to_le_bytes());
    }
    (eh, hdr)
}

fn push_entry(out: &mut Vec<u8>, mut body: Vec<u8>) {
    while !(body.len() + 4).is_multiple_of(8) {
        body.push(0); // DW_CFA_nop
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
}

fn unwinder<'d>(eh: &'d [u8], hdr: Option<&'d [u8]>) -> DwarfUnwinder<'d> {
    DwarfUnwinder::from_sections(
        CfiSections {
            eh_frame: Some(SectionData {
                data: eh,
                address: EH_ADDR,
            }),
            eh_frame_hdr: hdr.map(|data| SectionData {
                data,
                address: HDR_ADDR,
            }),
            ..Default::default()
        },
        BIAS,
    )
    .unwrap()
}

/// A prolog `push rbp; mov rbp, rsp` at 0x1000, a PLT-style CFA expression at 0x2000, a signal
/// trampoline at 0x3000, an outermost frame at 0x4000 and assorted rules at 0x5000.
fn specs() -> Vec<FdeSpec> {
    vec![
        FdeSpec {
            start: 0x1000,
            len: 0x40,
            signal: false,
            // +1: CFA = rsp+16, rbp at CFA-16; +3: CFA = rbp+16.
            insns: vec![
                ADVANCE | 1,
                DEF_CFA_OFFSET,
                16,
                OFFSET | 6,
                2,
                ADVANCE | 3,
                DEF_CFA_REGISTER,
                6,
            ],
        },
        FdeSpec {
            start: 0x2000,
            len: 0x20,
            signal: false,
            // CFA = rsp + 8 + ((rip & 15) >= 11) << 3, as in .plt.
            insns: vec![
                DEF_CFA_EXPRESSION,
                11,
                0x77, // DW_OP_breg7
                8,
                0x80, // DW_OP_breg16
                0,
                0x3f, // DW_OP_lit15
                0x1a, // DW_OP_and
                0x3b, // DW_OP_lit11
                0x2a, // DW_OP_ge
                0x33, // DW_OP_lit3
                0x24, // DW_OP_shl
                0x22, // DW_OP_plus
            ],
        },
        FdeSpec {
            start: 0x3000,
            len: 0x10,
            signal: true,
            // A ucontext at rsp: CFA = [rsp+0x20]; rip at rsp+0x28, rbx at rsp+0x30, rax at rsp+0x38.
            insns: vec![
                DEF_CFA_EXPRESSION,
                3,
                0x77,
                0x20,
                0x06, // DW_OP_deref
                EXPRESSION,
                16,
                2,
                0x77,
                0x28,
                EXPRESSION,
                3,
                2,
                0x77,
                0x30,
                EXPRESSION,
                0,
                2,
                0x77,
                0x38,
            ],
        },
        FdeSpec {
            start: 0x4000,
            len: 0x10,
            signal: false,
            insns: vec![UNDEFINED, 16],
        },
        FdeSpec {
            start: 0x5000,
            len: 0x10,
            signal: false,
            // r12 = CFA-16 (val_offset 2 * data alignment -8), r13 = rbx, r14 undefined, r15 same value,
            // rcx = CFA + 5 (val_expression: DW_OP_plus_uconst 5 on the pushed CFA).
            insns: vec![
                VAL_OFFSET,
                12,
                2,
                REGISTER,
                13,
                3,
                UNDEFINED,
                14,
                SAME_VALUE,
                15,
                VAL_EXPRESSION,
                2,
                2,
                0x23, // DW_OP_plus_uconst
                5,
            ],
        },
    ]
}

fn regs_at(pc: u64, rsp: u64, rbp: u64) -> Regs {
    let mut g = [0u64; 16];
    for (i, v) in g.iter_mut().enumerate() {
        *v = 0x1111 * (i as u64 + 1);
    }
    g[Reg::Rsp as usize] = rsp;
    g[Reg::Rbp as usize] = rbp;
    Regs::with_gprs(pc, g)
}

fn stack(base: u64, words: &[u64]) -> Vec<u8> {
    let _ = base;
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn prolog_rows() {
    let (eh, hdr) = build(&specs());
    for hdr in [Some(&hdr[..]), None] {
        let u = unwinder(&eh, hdr);
        assert_eq!(
            u.eh_index_source(),
            if hdr.is_some() {
                IndexSource::EhFrameHdr
            } else {
                IndexSource::Scan
            }
        );
        let sp = 0x7000_0000u64;
        let bytes = stack(sp, &[0xaaaa, 0xbbbb, 0xcccc, 0xdddd]);
        let mem = SliceMemory::new(sp, &bytes);
        // At the first instruction: RA at [rsp].
        let s = u
            .step(&regs_at(BIAS + 0x1000, sp, 0x55), PcKind::Exact, &mem)
            .unwrap();
        assert_eq!(s.regs.rip(), Some(0xaaaa));
        assert_eq!(s.regs.rsp(), Some(sp + 8));
        assert_eq!(s.frame, sp + 8);
        assert_eq!(s.regs.get(Reg::Rbp), Some(0x55));
        assert_eq!(
            s.regs.get(Reg::Rax),
            None,
            "volatile registers do not survive a call"
        );
        assert_eq!(
            s.regs.get(Reg::Rbx),
            Some(0x1111 * 4),
            "callee-saved: same value"
        );
        assert_eq!(s.pointers.gpr(Reg::Rbp), None);
        assert_eq!(s.caller_pc, PcKind::ReturnAddress);
        assert_eq!(s.trust, Trust::Cfi);
        assert_eq!(s.handler, None);
        // After push rbp: RA at [rsp+8], rbp at [rsp].
        let s = u
            .step(&regs_at(BIAS + 0x1001, sp, 0x55), PcKind::Exact, &mem)
            .unwrap();
        assert_eq!(s.regs.rip(), Some(0xbbbb));
        assert_eq!(s.regs.rsp(), Some(sp + 16));
        assert_eq!(s.regs.get(Reg::Rbp), Some(0xaaaa));
        assert_eq!(s.pointers.gpr(Reg::Rbp), Some(sp));
        // In the body: CFA = rbp+16 whatever rsp is.
        let s = u
            .step(
                &regs_at(BIAS + 0x1030, sp - 0x100, sp + 8),
                PcKind::Exact,
                &mem,
            )
            .unwrap();
        assert_eq!(s.regs.rip(), Some(0xcccc));
        assert_eq!(s.regs.rsp(), Some(sp + 24));
        assert_eq!(s.regs.get(Reg::Rbp), Some(0xbbbb));
        // A return address just past the end belongs to the function (looked up at pc-1) ...
        assert!(u
            .step(
                &regs_at(BIAS + 0x1040, sp - 0x100, sp + 8),
                PcKind::ReturnAddress,
                &mem
            )
            .is_ok());
        // ... an exact pc there does not, nor does a gap between functions.
        for (pc, kind) in [
            (0x1040, PcKind::Exact),
            (0x1800, PcKind::Exact),
            (0x10, PcKind::Exact),
        ] {
            assert_eq!(
                u.step(&regs_at(BIAS + pc, sp, 0), kind, &mem).unwrap_err(),
                UnwindError::NoUnwindInfo { pc: BIAS + pc }
            );
        }
    }
}

#[test]
fn plt_cfa_expression() {
    let (eh, hdr) = build(&specs());
    let u = unwinder(&eh, Some(&hdr));
    let sp = 0x7000_0000u64;
    let bytes = stack(sp, &[0xaaaa, 0xbbbb]);
    let mem = SliceMemory::new(sp, &bytes);
    // pc & 15 < 11: CFA = rsp + 8; >= 11: rsp + 16 (one push done).
    let s = u
        .step(&regs_at(BIAS + 0x2004, sp, 0), PcKind::Exact, &mem)
        .unwrap();
    assert_eq!((s.frame, s.regs.rip()), (sp + 8, Some(0xaaaa)));
    let s = u
        .step(&regs_at(BIAS + 0x200b, sp, 0), PcKind::Exact, &mem)
        .unwrap();
    assert_eq!((s.frame, s.regs.rip()), (sp + 16, Some(0xbbbb)));
}

#[test]
fn signal_frame_restores_everything_and_is_exact() {
    let (eh, hdr) = build(&specs());
    let u = unwinder(&eh, Some(&hdr));
    let sp = 0x7000_0000u64;
    let bytes = stack(sp, &[0, 0, 0, 0, 0x9000_0000, 0x4242, 0xb0b, 0xa0a]);
    let mem = SliceMemory::new(sp, &bytes);
    // The handler returns to the trampoline one byte into its FDE (glibc starts the FDE at the
    // nop before __restore_rt so that the pc-1 lookup lands in it).
    let s = u
        .step(&regs_at(BIAS + 0x3001, sp, 0), PcKind::ReturnAddress, &mem)
        .unwrap();
    assert_eq!(s.regs.rip(), Some(0x4242));
    assert_eq!(s.regs.rsp(), Some(0x9000_0000));
    assert_eq!(s.frame, 0x9000_0000);
    assert_eq!(s.regs.get(Reg::Rbx), Some(0xb0b));
    assert_eq!(
        s.regs.get(Reg::Rax),
        Some(0xa0a),
        "a signal frame restores volatiles too"
    );
    assert_eq!(s.pointers.gpr(Reg::Rbx), Some(sp + 0x30));
    assert_eq!(s.pointers.gpr(Reg::Rax), Some(sp + 0x38));
    assert_eq!(
        s.caller_pc,
        PcKind::Exact,
        "the interrupted pc is looked up as is"
    );
}

#[test]
fn outermost_frame_has_no_return_address() {
    let (eh, hdr) = build(&specs());
    let u = unwinder(&eh, Some(&hdr));
    let sp = 0x7000_0000u64;
    let bytes = stack(sp, &[0xaaaa]);
    let mem = SliceMemory::new(sp, &bytes);
    let s = u
        .step(&regs_at(BIAS + 0x4004, sp, 0), PcKind::Exact, &mem)
        .unwrap();
    assert_eq!(s.regs.rip(), None);
    assert_eq!(s.regs.rsp(), Some(sp + 8));
}

#[test]
fn assorted_register_rules() {
    let (eh, hdr) = build(&specs());
    let u = unwinder(&eh, Some(&hdr));
    let sp = 0x7000_0000u64;
    let bytes = stack(sp, &[0xaaaa]);
    let mem = SliceMemory::new(sp, &bytes);
    let r = regs_at(BIAS + 0x5004, sp, 0);
    let s = u.step(&r, PcKind::Exact, &mem).unwrap();
    let cfa = sp + 8;
    assert_eq!(
        s.regs.get(Reg::R12),
        Some(cfa - 16),
        "factored by the data alignment"
    );
    assert_eq!(s.regs.get(Reg::R13), r.get(Reg::Rbx));
    // gimli folds an explicit DW_CFA_undefined into "no rule", and no rule for a callee-saved
    // register means "same value" (the psABI convention gdb and libgcc follow).
    assert_eq!(s.regs.get(Reg::R14), r.get(Reg::R14));
    assert_eq!(s.regs.get(Reg::R15), r.get(Reg::R15));
    assert_eq!(s.regs.get(Reg::Rcx), Some(cfa + 5));
    assert_eq!(s.regs.rip(), Some(0xaaaa));
    assert_eq!(s.pointers.gpr(Reg::R12), None);
}

#[test]
fn unreadable_stack_is_a_memory_error() {
    let (eh, hdr) = build(&specs());
    let u = unwinder(&eh, Some(&hdr));
    let mem = SliceMemory::new(0, &[]);
    assert!(matches!(
        u.step(&regs_at(BIAS + 0x1000, 0x7000_0000, 0), PcKind::Exact, &mem),
        Err(UnwindError::Memory(_))
    ));
}

/// A system library's bytes; skipped (or fatal under XUNWIND_REQUIRE_CORPUS) when missing.
fn system_lib(name: &str) -> Option<Vec<u8>> {
    let path = format!("/lib/x86_64-linux-gnu/{name}");
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some() => {
            panic!("{path}: {e} (XUNWIND_REQUIRE_CORPUS is set)")
        }
        Err(e) => {
            eprintln!("skipping {path}: {e}");
            None
        }
    }
}

/// Every FDE of `.eh_frame` by a linear walk: (start, end, offset).
fn linear_fdes(u: &DwarfUnwinder<'_>) -> Vec<(u64, u64, usize)> {
    let eh = u.eh_frame().unwrap();
    let mut out = Vec::new();
    let mut it = eh.entries(u.bases());
    while let Some(e) = it.next().unwrap() {
        if let gimli::CieOrFde::Fde(p) = e {
            let f = p.parse(EhFrame::cie_from_offset).unwrap();
            if f.len() > 0 {
                out.push((f.initial_address(), f.end_address(), f.offset()));
            }
        }
    }
    out
}

fn sections_of(file: &[u8], with_hdr: bool) -> CfiSections<'_> {
    use object::{Object, ObjectSection};
    let obj = object::File::parse(file).unwrap();
    let sec = |n: &str| {
        obj.section_by_name(n).map(|s| SectionData {
            data: s.data().unwrap(),
            address: s.address(),
        })
    };
    CfiSections {
        eh_frame: sec(".eh_frame"),
        eh_frame_hdr: if with_hdr { sec(".eh_frame_hdr") } else { None },
        debug_frame: None,
        text: obj.section_by_name(".text").map_or(0, |s| s.address()),
        got: obj.section_by_name(".got").map_or(0, |s| s.address()),
    }
}

#[test]
fn system_libraries_lookup_agrees_with_linear_scan() {
    for name in ["libc.so.6", "libstdc++.so.6", "libm.so.6"] {
        let Some(bytes) = system_lib(name) else {
            continue;
        };
        let u = DwarfUnwinder::new(&bytes, 0).unwrap();
        assert_eq!(u.eh_index_source(), IndexSource::EhFrameHdr, "{name}");
        let scanned = DwarfUnwinder::from_sections(sections_of(&bytes, false), 0).unwrap();
        assert_eq!(scanned.eh_index_source(), IndexSource::Scan);
        let fdes = linear_fdes(&u);
        assert!(fdes.len() > 500, "{name}: {} FDEs", fdes.len());
        assert_eq!(scanned.eh_index().len(), fdes.len(), "{name}");
        // Every FDE's range looks up to itself, through the header and through the scan.
        for &(start, end, off) in &fdes {
            for a in [start, start + (end - start) / 2, end - 1] {
                for w in [&u, &scanned] {
                    let (which, f) = w.find_fde(a).unwrap().unwrap_or_else(|| {
                        panic!("{name}: {a:#x} in FDE {off:#x} [{start:#x},{end:#x}) not found")
                    });
                    assert_eq!(
                        (which, f.offset()),
                        (CfiSection::EhFrame, off),
                        "{name} {a:#x}"
                    );
                }
            }
        }
        // Random addresses, inside and around the covered span, against a linear scan.
        let lo = fdes
            .iter()
            .map(|f| f.0)
            .min()
            .unwrap()
            .saturating_sub(0x1000);
        let hi = fdes.iter().map(|f| f.1).max().unwrap() + 0x1000;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = lo + x % (hi - lo);
            let want = fdes.iter().find(|f| f.0 <= a && a < f.1).map(|f| f.2);
            for w in [&u, &scanned] {
                let got = w.find_fde(a).unwrap().map(|(_, f)| f.offset());
                assert_eq!(got, want, "{name}: {a:#x}");
            }
        }
    }
}

#[test]
fn garbage_sections_never_panic() {
    let mut x = 0x1234_5678_9abc_def1u64;
    for round in 0..300 {
        let len = (round * 7) % 200;
        let mut eh = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            eh.push(x as u8);
        }
        // Also mutate a valid image so parsing goes deep.
        let (mut good, hdr) = build(&specs());
        if !good.is_empty() {
            let i = (x as usize) % good.len();
            good[i] ^= (x >> 8) as u8 | 1;
        }
        for data in [&eh[..], &good[..]] {
            let secs = CfiSections {
                eh_frame: Some(SectionData {
                    data,
                    address: EH_ADDR,
                }),
                eh_frame_hdr: Some(SectionData {
                    data: &hdr,
                    address: HDR_ADDR,
                }),
                debug_frame: Some(SectionData { data, address: 0 }),
                ..Default::default()
            };
            let Ok(u) = DwarfUnwinder::from_sections(secs, BIAS) else {
                continue;
            };
            let sp = 0x7000_0000u64;
            let bytes = stack(sp, &[0xaaaa; 64]);
            let mem = SliceMemory::new(sp, &bytes);
            for pc in [0x1000, 0x1001, 0x2004, 0x3001, 0x4004, 0x5004, x & 0xffff] {
                let _ = u.step(&regs_at(BIAS + pc, sp, sp + 8), PcKind::Exact, &mem);
            }
        }
    }
}

#[test]
fn debug_frame_only() {
    // .debug_frame: CIE id 0xffffffff, absolute addresses.
    let mut df = Vec::new();
    let mut cie = vec![0xff, 0xff, 0xff, 0xff, 1, 0, 1, 0x78, 16];
    cie.extend_from_slice(&[DEF_CFA, 7, 8, OFFSET | 16, 1]);
    push_entry(&mut df, cie);
    let mut fde = vec![0, 0, 0, 0];
    fde.extend_from_slice(&0x1000u64.to_le_bytes());
    fde.extend_from_slice(&0x20u64.to_le_bytes());
    fde.extend_from_slice(&[ADVANCE | 1, DEF_CFA_OFFSET, 16]);
    push_entry(&mut df, fde);
    let u = DwarfUnwinder::from_sections(
        CfiSections {
            debug_frame: Some(SectionData {
                data: &df,
                address: 0,
            }),
            ..Default::default()
        },
        BIAS,
    )
    .unwrap();
    assert_eq!(u.eh_index_source(), IndexSource::None);
    assert_eq!(u.debug_index().len(), 1);
    let sp = 0x7000_0000u64;
    let bytes = stack(sp, &[0xaaaa, 0xbbbb]);
    let mem = SliceMemory::new(sp, &bytes);
    let s = u
        .step(&regs_at(BIAS + 0x1005, sp, 0), PcKind::Exact, &mem)
        .unwrap();
    assert_eq!(s.regs.rip(), Some(0xbbbb));
    let (which, _) = u.find_fde(0x1005).unwrap().unwrap();
    assert_eq!(which, CfiSection::DebugFrame);
    assert!(u.find_fde(0x1020).unwrap().is_none());
}

/// The rule cache gives exactly the full path's result (registers, CFA, context pointers,
/// handler, pc kind, errors), on every FDE of real libraries, from a cold and a warm cache.
#[test]
fn rule_cache_agrees_with_full_evaluation() {
    for name in ["libc.so.6", "libstdc++.so.6"] {
        let Some(bytes) = system_lib(name) else {
            continue;
        };
        let bias = 0x7f12_3400_0000;
        let cached = DwarfUnwinder::new(&bytes, bias).unwrap();
        let mut full = DwarfUnwinder::new(&bytes, bias).unwrap();
        full.set_rule_cache(false);
        full.set_fast_path(false);
        let probe = DwarfUnwinder::new(&bytes, 0).unwrap();
        let fdes = linear_fdes(&probe);
        // A stack of distinct words, and one with a hole so that some reads fail.
        let base = 0x1000_0000u64;
        let words: Vec<u64> = (0..0x4000u64).map(|i| 0x5000_0000 + i * 8).collect();
        let whole = stack(base, &words);
        let mem_whole = SliceMemory::new(base, &whole);
        let mem_short = SliceMemory::new(base + 0x8020, &whole[0x8020..]);
        let mut g = [0u64; 16];
        for (i, v) in g.iter_mut().enumerate() {
            *v = 0x100 * i as u64;
        }
        g[Reg::Rsp as usize] = base + 0x8010;
        g[Reg::Rbp as usize] = base + 0x9000;
        let mut compared = 0;
        for pass in 0..2 {
            for &(start, end, _) in &fdes {
                for a in [start, start + (end - start) / 2, end - 1] {
                    let r = Regs::with_gprs(a + bias, g);
                    for mem in [&mem_whole, &mem_short] {
                        let want = full.step(&r, PcKind::Exact, mem);
                        let got = cached.step(&r, PcKind::Exact, mem);
                        assert_eq!(
                            format!("{got:?}"),
                            format!("{want:?}"),
                            "{name} {a:#x} pass {pass}"
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert!(
            cached.rule_cache_len() > cache::SLOTS / 2,
            "{name}: cache unused"
        );
        assert_eq!(full.rule_cache_len(), 0);
        eprintln!("{name}: {compared} steps compared");
    }
}

#[test]
fn rule_cache_keeps_expression_rows_out() {
    let (eh, hdr) = build(&specs());
    let u = unwinder(&eh, Some(&hdr));
    let sp = 0x7000_0000u64;
    let bytes = stack(sp, &[0, 0, 0, 0, 0x9000_0000, 0x4242, 0xb0b, 0xa0a]);
    let mem = SliceMemory::new(sp, &bytes);
    for _ in 0..2 {
        // PLT expression, signal frame, outermost frame, val_offset/register rules: never cached.
        for (pc, kind) in [
            (0x2004, PcKind::Exact),
            (0x3001, PcKind::ReturnAddress),
            (0x4004, PcKind::Exact),
            (0x5004, PcKind::Exact),
        ] {
            let _ = u.step(&regs_at(BIAS + pc, sp, 0), kind, &mem);
        }
    }
    assert_eq!(u.rule_cache_len(), 0);
    let s1 = u
        .step(&regs_at(BIAS + 0x1001, sp, 0x55), PcKind::Exact, &mem)
        .unwrap();
    assert_eq!(u.rule_cache_len(), 1);
    assert!(u.is_rule_cached(0x1001));
    assert!(!u.is_rule_cached(0x2004));
    let s2 = u
        .step(&regs_at(BIAS + 0x1001, sp, 0x55), PcKind::Exact, &mem)
        .unwrap();
    assert_eq!(format!("{s1:?}"), format!("{s2:?}"));
    assert_eq!(s2.pointers.gpr(Reg::Rbp), Some(sp));
}

/// Without section headers, `.eh_frame_hdr` and `.eh_frame` are found through
/// `PT_GNU_EH_FRAME`, and every lookup is unchanged.
#[test]
fn no_section_headers_uses_pt_gnu_eh_frame() {
    let Some(bytes) = system_lib("libm.so.6") else {
        return;
    };
    let mut stripped = bytes.clone();
    // e_shoff, e_shnum, e_shstrndx = 0: no section table.
    stripped[0x28..0x30].fill(0);
    stripped[0x3c..0x40].fill(0);
    let with = DwarfUnwinder::new(&bytes, 0).unwrap();
    let without = DwarfUnwinder::new(&stripped, 0).unwrap();
    assert!(
        object::read::elf::ElfFile64::<object::Endianness>::parse(&*stripped)
            .map(|f| object::Object::section_by_name(&f, ".eh_frame").is_none())
            .unwrap()
    );
    assert_eq!(without.eh_index_source(), IndexSource::EhFrameHdr);
    assert_eq!(without.eh_index().len(), with.eh_index().len());
    for &(start, end, off) in &linear_fdes(&with) {
        for a in [start, end - 1] {
            let (_, f) = without.find_fde(a).unwrap().unwrap();
            assert_eq!(f.offset(), off);
        }
    }
}

mod fast;

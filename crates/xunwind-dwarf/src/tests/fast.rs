//! The fast path (own parser and CFA interpreter) against gimli's path, on real libraries and
//! on hand-built CIE/FDE bytes for every opcode it interprets.

use super::*;
use xunwind_core::{Handler, MemoryError};

/// Every address reads as a deterministic pattern except a hole, so that personality pointers
/// resolve (their GOT slots are readable) and some stack reads fail.
struct PatternMemory {
    hole: core::ops::Range<u64>,
}

impl MemoryReader for PatternMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        if addr < self.hole.end && addr.wrapping_add(len) > self.hole.start {
            return Err(MemoryError { addr, len });
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.wrapping_add(i as u64);
            *b = (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8;
        }
        Ok(())
    }
}

/// Row boundaries of an FDE as gimli enumerates them: each row's start, and one before it.
fn probe_addresses(u: &DwarfUnwinder<'_>, off: usize, start: u64, end: u64) -> Vec<u64> {
    let eh = u.eh_frame().unwrap();
    let fde = eh
        .fde_from_offset(u.bases(), off.into(), EhFrame::cie_from_offset)
        .unwrap();
    let mut ctx = Box::new(Context::new_in());
    let mut out = vec![start, end - 1];
    if let Ok(mut rows) = fde.rows(eh, u.bases(), &mut ctx) {
        // Rows are bounded by the FDE's instruction bytes.
        while let Ok(Some(row)) = rows.next_row() {
            let s = row.start_address();
            out.push(s);
            out.push(s.wrapping_sub(1));
            if out.len() > 512 {
                break;
            }
        }
    }
    out.retain(|&a| start <= a && a < end);
    out.sort_unstable();
    out.dedup();
    out
}

/// The known registers and the context pointers after an unwind.
#[derive(Debug, PartialEq)]
struct Known {
    rip: Option<u64>,
    gpr: [Option<u64>; 16],
    xmm: [Option<u128>; 16],
    pointers: ContextPointers,
}

/// Everything an in-place unwind gives: the result, and the registers/pointers on success.
fn unwound(
    u: &DwarfUnwinder<'_>,
    regs: &Regs,
    mem: &dyn MemoryReader,
    with_pointers: bool,
) -> (Result<StepInfo, UnwindError>, Option<Known>) {
    let mut r = regs.clone();
    let mut p = ContextPointers::new();
    // Pointers carried from an earlier frame must survive where this step restores nothing.
    p.set_gpr(Reg::Rbx, 0x1111);
    p.set_gpr(Reg::R9, 0x2222);
    p.set_xmm(3, 0x3333);
    let res = u.unwind(&mut r, PcKind::Exact, mem, with_pointers.then_some(&mut p));
    // Registers compare by what is known: an unknown register's stale bits are not state.
    let state = res.is_ok().then(|| Known {
        rip: r.rip(),
        gpr: Reg::ALL.map(|g| r.get(g)),
        xmm: core::array::from_fn(|n| r.xmm(n as u8)),
        pointers: p,
    });
    (res, state)
}

/// For every FDE of libc, libstdc++ and libLLVM (sampled), at its start, its end - 1 and
/// every row boundary +0/-1: the fast row equals gimli's row whenever the fast path takes it,
/// and the in-place unwind (pointers or not, rule cache cold and hot) is bit-identical to
/// gimli's path in registers, context pointers, step info and errors. More than 99% of rows
/// must take the fast path.
#[test]
fn fast_path_matches_gimli_on_system_libraries() {
    let llvm = ["libLLVM-15.so.1", "libLLVM-14.so.1"]
        .into_iter()
        .find(|n| std::path::Path::new(&format!("/lib/x86_64-linux-gnu/{n}")).exists());
    if llvm.is_none() {
        eprintln!("skipping libLLVM: not installed");
    }
    let mut libs = vec!["libc.so.6", "libstdc++.so.6"];
    libs.extend(llvm);
    for name in libs {
        let Some(bytes) = system_lib(name) else {
            continue;
        };
        let bias = 0x7f12_3400_0000;
        let mut fastu = DwarfUnwinder::new(&bytes, bias).unwrap();
        fastu.set_rule_cache(false);
        let mut refu = DwarfUnwinder::new(&bytes, bias).unwrap();
        refu.set_rule_cache(false);
        refu.set_fast_path(false);
        let cached = DwarfUnwinder::new(&bytes, bias).unwrap();
        let fdes = linear_fdes(&fastu);
        // Keep the run to a few seconds: every FDE of libc and libstdc++ (under 10k each),
        // every 40th or so of libLLVM's ~100k.
        let stride = if fdes.len() > 10_000 {
            fdes.len().div_ceil(2500)
        } else {
            1
        };
        let stack_base = 0x7ffd_0000_0000u64;
        let mem = PatternMemory { hole: 0..0x1000 };
        let short = PatternMemory {
            hole: stack_base + 0x1010..stack_base + 0x1040,
        };
        let mut g = [0u64; 16];
        for (i, v) in g.iter_mut().enumerate() {
            *v = 0x1000_0000 * (i as u64 + 1) + 0x18;
        }
        g[Reg::Rsp as usize] = stack_base + 0x1000;
        g[Reg::Rbp as usize] = stack_base + 0x1100;
        let (mut rows, mut fast, mut steps, mut handlers) = (0usize, 0usize, 0usize, 0usize);
        for &(start, end, off) in fdes.iter().step_by(stride) {
            for a in probe_addresses(&fastu, off, start, end) {
                let want = refu.reference_row(a);
                let got = fastu.fast_row(a);
                // The FDE's compiled rows (compiled at its first probe) give the same row.
                assert_eq!(fastu.compiled_row(a), got, "{name} {a:#x}");
                rows += 1;
                match got {
                    RowLookup::Row(r) => {
                        fast += 1;
                        assert_eq!(want, Ok(RowLookup::Row(r)), "{name} {a:#x}");
                    }
                    RowLookup::NotCovered => panic!("{name} {a:#x}: inside an FDE"),
                    RowLookup::Declined => {}
                }
                let mut regs = Regs::with_gprs(a + bias, g);
                regs.set_xmm(1, 0xabcd);
                for m in [&mem, &short] {
                    for with_pointers in [true, false] {
                        let reference = unwound(&refu, &regs, m, with_pointers);
                        handlers += matches!(
                            reference.0,
                            Ok(StepInfo {
                                handler: Some(_),
                                ..
                            })
                        ) as usize;
                        assert_eq!(
                            unwound(&fastu, &regs, m, with_pointers),
                            reference,
                            "{name} {a:#x}"
                        );
                        // Cold, then a hit in the rule cache.
                        assert_eq!(
                            unwound(&cached, &regs, m, with_pointers),
                            reference,
                            "{name} {a:#x}"
                        );
                        assert_eq!(
                            unwound(&cached, &regs, m, with_pointers),
                            reference,
                            "{name} {a:#x}"
                        );
                        steps += 1;
                    }
                }
                // step (the provided method) agrees with the reference too.
                let s = fastu.step(&regs, PcKind::Exact, &mem);
                let r = refu.step(&regs, PcKind::Exact, &mem);
                assert_eq!(format!("{s:?}"), format!("{r:?}"), "{name} {a:#x}");
            }
        }
        let pct = fast as f64 * 100.0 / rows as f64;
        let probed = fdes.len().div_ceil(stride);
        let (compiled, bytes) = fastu.compiled_stats();
        eprintln!(
            "{name}: {probed} of {} FDEs, {rows} rows probed, {fast} on the fast path ({pct:.2}%), \
             {steps} unwinds compared, {handlers} with a handler; {compiled} FDEs compiled \
             ({bytes} bytes)",
            fdes.len()
        );
        assert!(
            compiled * 100 > probed * 99,
            "{name}: only {compiled} of {probed} FDEs compiled"
        );
        assert!(
            pct > 99.0,
            "{name}: only {pct:.2}% of rows on the fast path"
        );
        // libstdc++ is C++ with exceptions: its personality pointers are indirect (GOT).
        assert!(
            handlers > 0 || name != "libstdc++.so.6",
            "{name}: no handler resolved"
        );
    }
}

/// A CIE and one FDE over [0x1000, 0x1100), assembled by hand.
struct Cfi {
    /// Augmentation string without the NUL.
    aug: &'static [u8],
    /// Augmentation data after the length (built from `aug` when `None`).
    aug_data: Option<Vec<u8>>,
    cie_insns: Vec<u8>,
    /// FDE augmentation data (after its length) when the CIE has `z`.
    fde_aug: Vec<u8>,
    insns: Vec<u8>,
}

const FDE_START: u64 = 0x1000;

impl Cfi {
    fn new(cie_insns: &[u8], insns: &[u8]) -> Cfi {
        Cfi {
            aug: b"zR",
            aug_data: None,
            cie_insns: cie_insns.to_vec(),
            fde_aug: Vec::new(),
            insns: insns.to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut eh = Vec::new();
        let mut body = vec![0, 0, 0, 0, 1];
        body.extend_from_slice(self.aug);
        body.push(0);
        body.extend_from_slice(&[1, 0x78, 16]); // caf 1, daf -8, RA 16
        let pcrel = self.aug.contains(&b'R');
        if self.aug.first() == Some(&b'z') {
            let data = self.aug_data.clone().unwrap_or_else(|| vec![0x1b]);
            body.push(data.len() as u8);
            body.extend_from_slice(&data);
        }
        body.extend_from_slice(&self.cie_insns);
        push_entry(&mut eh, body);
        let at = eh.len();
        let mut body = Vec::new();
        body.extend_from_slice(&((at + 4) as u32).to_le_bytes());
        if pcrel {
            let field = EH_ADDR + at as u64 + 8;
            body.extend_from_slice(&(FDE_START.wrapping_sub(field) as i32).to_le_bytes());
            body.extend_from_slice(&0x100u32.to_le_bytes());
        } else {
            body.extend_from_slice(&FDE_START.to_le_bytes());
            body.extend_from_slice(&0x100u64.to_le_bytes());
        }
        // gimli reads FDE augmentation data whenever the CIE has an augmentation string.
        if !self.aug.is_empty() {
            body.push(self.fde_aug.len() as u8);
            body.extend_from_slice(&self.fde_aug);
        }
        body.extend_from_slice(&self.insns);
        push_entry(&mut eh, body);
        eh.extend_from_slice(&[0, 0, 0, 0]);
        eh
    }
}

/// `.eh_frame_hdr` for the one FDE of `Cfi::bytes`, so that the index holds it even when gimli
/// cannot parse it.
fn hdr_for(eh: &[u8]) -> Vec<u8> {
    let fde_at = u32::from_le_bytes(eh[..4].try_into().unwrap()) as u64 + 4;
    let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
    hdr.extend_from_slice(&((EH_ADDR - (HDR_ADDR + 4)) as i32).to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    hdr.extend_from_slice(&(FDE_START.wrapping_sub(HDR_ADDR) as i32).to_le_bytes());
    hdr.extend_from_slice(&((EH_ADDR + fde_at).wrapping_sub(HDR_ADDR) as i32).to_le_bytes());
    hdr
}

/// The fast row at `addr`, after checking it against gimli's (when the fast path takes it).
fn fast_and_reference(eh: &[u8], addr: u64) -> RowLookup {
    let hdr = hdr_for(eh);
    let u = unwinder(eh, Some(&hdr));
    let fast = u.fast_row(addr);
    if let RowLookup::Row(_) = fast {
        assert_eq!(u.reference_row(addr), Ok(fast), "{addr:#x}");
    }
    // Whatever the fast path says, a step gives exactly gimli's path's answer.
    let mut reference = unwinder(eh, Some(&hdr));
    reference.set_fast_path(false);
    let regs = Regs::with_gprs(
        BIAS + addr,
        core::array::from_fn(|i| 0x7000_0000 + 0x100 * i as u64),
    );
    let mem = PatternMemory { hole: 0..0x1000 };
    for with_pointers in [true, false] {
        assert_eq!(
            unwound(&u, &regs, &mem, with_pointers),
            unwound(&reference, &regs, &mem, with_pointers),
            "{addr:#x}"
        );
    }
    // Through compiled rows (the second lookup into the FDE compiles it), every address in and
    // around the FDE gives the interpreter's row, and a step at `addr` gimli's path's answer.
    let mut c = unwinder(eh, Some(&hdr));
    c.set_rule_cache(false);
    for a in (FDE_START - 2..FDE_START + 0x102).chain([addr]) {
        assert_eq!(c.compiled_row(a), u.fast_row(a), "compiled {a:#x}");
    }
    for with_pointers in [true, false] {
        assert_eq!(
            unwound(&c, &regs, &mem, with_pointers),
            unwound(&reference, &regs, &mem, with_pointers),
            "compiled {addr:#x}"
        );
    }
    fast
}

/// Whether the FDE of `eh` compiles, after the lookups that compile it.
fn compiles(eh: &[u8]) -> bool {
    let hdr = hdr_for(eh);
    let c = unwinder(eh, Some(&hdr));
    assert_eq!(c.compiled_stats().0, 0);
    c.compiled_row(FDE_START);
    assert_eq!(c.compiled_stats().0, 0, "the first lookup only interprets");
    c.compiled_row(FDE_START + 1);
    c.compiled_stats().0 == 1
}

/// An FDE compiles when its whole program is in the subset; one that leaves it anywhere, even
/// after the addresses looked up, stays interpreted with the same rows; rows past the FDE's
/// end are never run.
#[test]
fn compiled_rows_take_only_whole_programs() {
    let ok = [
        ADVANCE | 1,
        DEF_CFA_OFFSET,
        16,
        ADVANCE | 4,
        DEF_CFA_OFFSET,
        8,
    ];
    assert!(compiles(&Cfi::new(&CIE_X64, &ok).bytes()));
    assert_eq!(
        fast_and_reference(&Cfi::new(&CIE_X64, &ok).bytes(), 0x1003),
        row((7, 16), &[RA_RULE])
    );
    // An unknown opcode after the second row: the interpreter gives the rows before it.
    let tail = [ADVANCE | 1, DEF_CFA_OFFSET, 16, ADVANCE | 1, 0x3f];
    let eh = Cfi::new(&CIE_X64, &tail).bytes();
    assert!(!compiles(&eh));
    assert_eq!(fast_and_reference(&eh, 0x1000), row((7, 8), &[RA_RULE]));
    assert_eq!(fast_and_reference(&eh, 0x1001), row((7, 16), &[RA_RULE]));
    assert_eq!(fast_and_reference(&eh, 0x1002), RowLookup::Declined);
    // The unknown opcode after an advance past the FDE's end (0x200 > 0x100) is never run.
    let past = [0x03, 0x00, 0x02, DEF_CFA_OFFSET, 16, 0x3f];
    let eh = Cfi::new(&CIE_X64, &past).bytes();
    assert!(compiles(&eh));
    assert_eq!(fast_and_reference(&eh, 0x10ff), row((7, 8), &[RA_RULE]));
    // An FDE over 2 MiB (its range patched): its offsets would not fit a row word, so it
    // stays interpreted, with the same rows.
    let mut eh = Cfi::new(&CIE_X64, &ok).bytes();
    let fde_at = u32::from_le_bytes(eh[..4].try_into().unwrap()) as usize + 4;
    eh[fde_at + 12..fde_at + 16].copy_from_slice(&0x20_0000u32.to_le_bytes());
    assert!(!compiles(&eh));
    assert_eq!(fast_and_reference(&eh, 0x1003), row((7, 16), &[RA_RULE]));
    eh[fde_at + 12..fde_at + 16].copy_from_slice(&0x10_0000u32.to_le_bytes());
    assert!(compiles(&eh), "1 MiB still compiles");
    // Empty rows (advance by 0) and rows equal to the one before them.
    let empty = [
        ADVANCE,
        DEF_CFA_OFFSET,
        16,
        ADVANCE | 2,
        DEF_CFA_OFFSET,
        16,
        ADVANCE | 2,
        0x0a,
        DEF_CFA_OFFSET,
        24,
        ADVANCE | 1,
        0x0b,
    ];
    let eh = Cfi::new(&CIE_X64, &empty).bytes();
    assert!(compiles(&eh));
    assert_eq!(fast_and_reference(&eh, 0x1000), row((7, 16), &[RA_RULE]));
    assert_eq!(fast_and_reference(&eh, 0x1004), row((7, 24), &[RA_RULE]));
    assert_eq!(fast_and_reference(&eh, 0x1005), row((7, 16), &[RA_RULE]));
}

fn row(cfa: (u16, i64), rules: &[(u16, Rule)]) -> RowLookup {
    RowLookup::Row(CompactRow::from_parts(cfa.0, cfa.1, false, rules.iter().copied()).unwrap())
}

const RA_RULE: (u16, Rule) = (16, Rule::Offset(-8));
/// CIE initial instructions of every x86-64 compiler: CFA = rsp + 8, RA at CFA - 8.
const CIE_X64: [u8; 5] = [DEF_CFA, 7, 8, OFFSET | 16, 1];

/// Every opcode of the subset, each at an address before and after it takes effect, against
/// a row written out by hand and against gimli.
#[test]
fn each_opcode_gives_the_expected_row() {
    use Rule::*;
    let rbp = 6u16;
    type Case = (&'static str, Vec<u8>, Vec<(u64, RowLookup)>);
    let cases: Vec<Case> = vec![
        (
            "advance_loc",
            vec![ADVANCE | 4, DEF_CFA_OFFSET, 16],
            vec![
                (0x1003, row((7, 8), &[RA_RULE])),
                (0x1004, row((7, 16), &[RA_RULE])),
            ],
        ),
        (
            "advance_loc1/2/4",
            vec![
                0x02,
                0x10,
                DEF_CFA_OFFSET,
                16,
                0x03,
                0x10,
                0,
                DEF_CFA_OFFSET,
                24,
                0x04,
                0x10,
                0,
                0,
                0,
                DEF_CFA_OFFSET,
                32,
            ],
            vec![
                (0x100f, row((7, 8), &[RA_RULE])),
                (0x1010, row((7, 16), &[RA_RULE])),
                (0x101f, row((7, 16), &[RA_RULE])),
                (0x1020, row((7, 24), &[RA_RULE])),
                (0x1030, row((7, 32), &[RA_RULE])),
                (0x10ff, row((7, 32), &[RA_RULE])),
            ],
        ),
        (
            "def_cfa/def_cfa_register/def_cfa_offset",
            vec![
                ADVANCE | 1,
                DEF_CFA,
                6,
                16,
                ADVANCE | 1,
                DEF_CFA_REGISTER,
                3,
                ADVANCE | 1,
                DEF_CFA_OFFSET,
                0x80,
                0x01,
            ],
            vec![
                (0x1001, row((6, 16), &[RA_RULE])),
                (0x1002, row((3, 16), &[RA_RULE])),
                (0x1003, row((3, 128), &[RA_RULE])),
            ],
        ),
        (
            "def_cfa_sf/def_cfa_offset_sf",
            vec![ADVANCE | 1, 0x12, 6, 0x7e, ADVANCE | 1, 0x13, 0x7d],
            vec![
                (0x1001, row((6, 16), &[RA_RULE])),
                (0x1002, row((6, 24), &[RA_RULE])),
            ],
        ),
        (
            "offset/offset_extended/offset_extended_sf",
            vec![
                ADVANCE | 1,
                OFFSET | 6,
                2,
                0x05,
                3,
                3,
                0x11,
                12,
                0x7c,
                ADVANCE | 1,
                0x11,
                6,
                0x7e,
            ],
            vec![
                (
                    0x1001,
                    row(
                        (7, 8),
                        &[
                            RA_RULE,
                            (rbp, Offset(-16)),
                            (3, Offset(-24)),
                            (12, Offset(32)),
                        ],
                    ),
                ),
                (
                    0x1002,
                    row(
                        (7, 8),
                        &[
                            RA_RULE,
                            (rbp, Offset(16)),
                            (3, Offset(-24)),
                            (12, Offset(32)),
                        ],
                    ),
                ),
            ],
        ),
        (
            "restore/restore_extended",
            vec![
                OFFSET | 6,
                2,
                OFFSET | 16,
                3,
                ADVANCE | 1,
                0xc0 | 6,
                ADVANCE | 1,
                0x06,
                16,
            ],
            vec![
                (
                    0x1000,
                    row((7, 8), &[(16, Offset(-24)), (rbp, Offset(-16))]),
                ),
                // rbp had no initial rule: restoring it removes it (gimli swap-removes).
                (0x1001, row((7, 8), &[(16, Offset(-24))])),
                (0x1002, row((7, 8), &[RA_RULE])),
            ],
        ),
        (
            "same_value/undefined/register",
            vec![
                OFFSET | 3,
                2,
                OFFSET | 6,
                3,
                ADVANCE | 1,
                SAME_VALUE,
                3,
                ADVANCE | 1,
                UNDEFINED,
                16,
                ADVANCE | 1,
                REGISTER,
                6,
                0,
            ],
            vec![
                (
                    0x1001,
                    row((7, 8), &[RA_RULE, (3, SameValue), (rbp, Offset(-24))]),
                ),
                // Undefined swap-removes the return address: the last rule takes its place.
                (0x1002, row((7, 8), &[(rbp, Offset(-24)), (3, SameValue)])),
                (0x1003, row((7, 8), &[(rbp, Register(0)), (3, SameValue)])),
            ],
        ),
        (
            "remember/restore_state",
            vec![
                ADVANCE | 1,
                DEF_CFA_OFFSET,
                16,
                OFFSET | 6,
                2,
                0x0a,
                ADVANCE | 1,
                DEF_CFA,
                7,
                8,
                0xc0 | 6,
                0x0a,
                ADVANCE | 1,
                DEF_CFA_OFFSET,
                64,
                ADVANCE | 1,
                0x0b,
                ADVANCE | 1,
                0x0b,
                ADVANCE | 1,
            ],
            vec![
                (0x1001, row((7, 16), &[RA_RULE, (rbp, Offset(-16))])),
                (0x1002, row((7, 8), &[RA_RULE])),
                (0x1003, row((7, 64), &[RA_RULE])),
                (0x1004, row((7, 8), &[RA_RULE])),
                (0x1005, row((7, 16), &[RA_RULE, (rbp, Offset(-16))])),
            ],
        ),
        (
            "nop/GNU_args_size",
            vec![
                0x00,
                ADVANCE | 1,
                0x2e,
                0x80,
                0x01,
                0x00,
                DEF_CFA_OFFSET,
                16,
            ],
            vec![
                (0x1000, row((7, 8), &[RA_RULE])),
                (0x1001, row((7, 16), &[RA_RULE])),
            ],
        ),
    ];
    let mut checked = 0;
    for (name, insns, probes) in cases {
        let eh = Cfi::new(&CIE_X64, &insns).bytes();
        for (addr, want) in probes {
            assert_eq!(fast_and_reference(&eh, addr), want, "{name} at {addr:#x}");
            checked += 1;
        }
        // Outside the FDE: not covered.
        assert_eq!(
            unwinder(&eh, None).fast_row(0x1100),
            RowLookup::NotCovered,
            "{name}"
        );
    }
    assert_eq!(checked, 28);
}

/// Programs outside the subset decline, and the step still gives gimli's answer.
#[test]
fn outside_the_subset_declines() {
    let cases: Vec<(&str, Cfi)> = vec![
        (
            "def_cfa_expression",
            Cfi::new(&CIE_X64, &[DEF_CFA_EXPRESSION, 2, 0x77, 8]),
        ),
        (
            "expression",
            Cfi::new(&CIE_X64, &[EXPRESSION, 6, 2, 0x70, 0]),
        ),
        ("val_offset", Cfi::new(&CIE_X64, &[VAL_OFFSET, 6, 2])),
        (
            "val_expression",
            Cfi::new(&CIE_X64, &[VAL_EXPRESSION, 6, 2, 0x70, 0]),
        ),
        ("set_loc", Cfi::new(&CIE_X64, &[0x01, 0, 0, 0, 0])),
        ("xmm register rule", Cfi::new(&CIE_X64, &[0x05, 17, 2])),
        ("rsp rule", Cfi::new(&CIE_X64, &[SAME_VALUE, 7])),
        ("register from xmm", Cfi::new(&CIE_X64, &[REGISTER, 3, 20])),
        ("CFA in xmm", Cfi::new(&CIE_X64, &[DEF_CFA_REGISTER, 17])),
        (
            "GNU_negative_offset_extended",
            Cfi::new(&CIE_X64, &[0x2f, 6, 2]),
        ),
        ("unknown opcode", Cfi::new(&CIE_X64, &[0x3f])),
        (
            "offset beyond 32 KiB",
            Cfi::new(&CIE_X64, &[OFFSET | 6, 0x80, 0x80, 0x01]),
        ),
        (
            "restore in CIE",
            Cfi::new(&[DEF_CFA, 7, 8, OFFSET | 16, 1, 0xc6], &[]),
        ),
        (
            "remember_state in CIE",
            Cfi::new(&[DEF_CFA, 7, 8, OFFSET | 16, 1, 0x0a], &[]),
        ),
        (
            "advance in CIE",
            Cfi::new(&[DEF_CFA, 7, 8, ADVANCE | 1, OFFSET | 16, 1], &[]),
        ),
        (
            "restore_state without remember",
            Cfi::new(&CIE_X64, &[0x0b]),
        ),
        (
            "three nested remember_state",
            Cfi::new(&CIE_X64, &[0x0a, 0x0a, 0x0a, ADVANCE | 1]),
        ),
        (
            "augmentation without z",
            Cfi {
                aug: b"S",
                ..Cfi::new(&CIE_X64, &[])
            },
        ),
        (
            "unknown augmentation",
            Cfi {
                aug: b"zRX",
                ..Cfi::new(&CIE_X64, &[])
            },
        ),
        (
            "aligned pointer encoding",
            Cfi {
                aug_data: Some(vec![0x53]),
                ..Cfi::new(&CIE_X64, &[])
            },
        ),
        (
            "omitted LSDA encoding",
            Cfi {
                aug: b"zLR",
                aug_data: Some(vec![0xff, 0x1b]),
                fde_aug: vec![0; 4],
                ..Cfi::new(&CIE_X64, &[])
            },
        ),
    ];
    for (name, cfi) in cases {
        let eh = cfi.bytes();
        assert_eq!(
            fast_and_reference(&eh, FDE_START),
            RowLookup::Declined,
            "{name}"
        );
    }
    // Two nested remember_state are followed.
    let eh = Cfi::new(&CIE_X64, &[0x0a, 0x0a, ADVANCE | 1]).bytes();
    assert_eq!(fast_and_reference(&eh, FDE_START), row((7, 8), &[RA_RULE]));
}

/// A program cut at every byte (its entry's length cut with it), and entries whose length
/// runs past the section: the fast path declines or agrees with gimli, and never panics.
#[test]
fn truncated_programs_decline_or_agree() {
    let insns = [
        ADVANCE | 1,
        DEF_CFA_OFFSET,
        0x90,
        0x01,
        OFFSET | 6,
        2,
        0x03,
        0x10,
        0,
        0x0a,
        0x12,
        6,
        0x7e,
        0x11,
        12,
        0x7c,
        0x0b,
        0x2e,
        0x10,
        REGISTER,
        3,
        0,
    ];
    let (mut rows, mut declined) = (0, 0);
    for cut in 0..=insns.len() {
        let eh = Cfi::new(&CIE_X64, &insns[..cut]).bytes();
        for addr in [0x1000, 0x1001, 0x1011, 0x10ff] {
            match fast_and_reference(&eh, addr) {
                RowLookup::Row(_) => rows += 1,
                RowLookup::Declined => declined += 1,
                RowLookup::NotCovered => panic!("cut {cut} {addr:#x}"),
            }
        }
        // The FDE entry's own bytes cut short: its length now runs past the section (the
        // index then covers only its first byte: its range cannot be read).
        let whole = Cfi::new(&CIE_X64, &insns).bytes();
        let cie_len = u32::from_le_bytes(whole[..4].try_into().unwrap()) as usize + 4;
        let short = &whole[..cie_len + 12 + cut];
        assert_eq!(
            fast_and_reference(short, FDE_START),
            RowLookup::Declined,
            "cut {cut}"
        );
    }
    assert!(rows > 0 && declined > 0, "{rows} rows, {declined} declined");
}

/// The personality (indirect, through a GOT slot) and the LSDA (pcrel) are resolved as on
/// gimli's path, cold and from the rule cache.
#[test]
fn personality_and_lsda_are_resolved() {
    let got: u64 = 0x20_0000;
    // Personality: indirect|pcrel|sdata4 (0x9b) to the GOT slot; LSDA: pcrel|sdata4 (0x1b).
    let mut cfi = Cfi {
        aug: b"zPLR",
        fde_aug: Vec::new(),
        ..Cfi::new(&CIE_X64, &[ADVANCE | 1, DEF_CFA_OFFSET, 16])
    };
    // The personality field sits at CIE offset 4 (length) + 4 (id) + 1 (version) + 5 ("zPLR\0")
    // + 3 (caf, daf, RA) + 1 (aug length) + 1 (encoding) = 19.
    let p_field = EH_ADDR + 19;
    let mut data = vec![0x9b];
    data.extend_from_slice(&(got.wrapping_sub(p_field) as i32).to_le_bytes());
    data.extend_from_slice(&[0x1b, 0x1b]);
    cfi.aug_data = Some(data);
    // The LSDA field's address depends on the CIE's padded size: build once to find it.
    let eh0 = {
        cfi.fde_aug = vec![0; 4];
        cfi.bytes()
    };
    let cie_size = u32::from_le_bytes(eh0[..4].try_into().unwrap()) as u64 + 4;
    let lsda_field = EH_ADDR + cie_size + 4 + 4 + 4 + 4 + 1;
    let lsda = 0x30_0000u64;
    cfi.fde_aug = (lsda.wrapping_sub(lsda_field) as i32)
        .to_le_bytes()
        .to_vec();
    let eh = cfi.bytes();
    assert!(matches!(fast_and_reference(&eh, 0x1001), RowLookup::Row(_)));
    let u = unwinder(&eh, None);
    let regs = Regs::with_gprs(BIAS + 0x1001, [0x7000_0000; 16]);
    let mem = PatternMemory { hole: 0..0x1000 };
    let want_personality = mem.read_u64(BIAS + got).unwrap();
    // The GOT slot unreadable: no handler, and the row is not cached with that answer.
    let no_got = PatternMemory {
        hole: BIAS + got..BIAS + got + 8,
    };
    let mut r = regs.clone();
    let info = u.unwind(&mut r, PcKind::Exact, &no_got, None).unwrap();
    assert_eq!(info.handler, None);
    assert!(!u.is_rule_cached(0x1001));
    for _ in 0..2 {
        let mut r = regs.clone();
        let info = u.unwind(&mut r, PcKind::Exact, &mem, None).unwrap();
        assert_eq!(
            info.handler,
            Some(Handler {
                address: want_personality,
                data: BIAS + lsda,
                flags: 0
            })
        );
    }
    assert!(u.is_rule_cached(0x1001));
}

/// `compile_all` compiles (nearly) every FDE of libc and libstdc++ at once, and every address
/// then gets the interpreter's row from the compiled rows without compiling anything more.
#[test]
fn compile_all_gives_the_interpreters_rows() {
    for name in ["libc.so.6", "libstdc++.so.6"] {
        let Some(bytes) = system_lib(name) else {
            continue;
        };
        let u = DwarfUnwinder::new(&bytes, 0).unwrap();
        let interp = DwarfUnwinder::new(&bytes, 0).unwrap();
        let t = std::time::Instant::now();
        let n = u.compile_all();
        let took = t.elapsed();
        let (compiled, bytes_held) = u.compiled_stats();
        let fdes = linear_fdes(&u);
        eprintln!(
            "{name}: compile_all: {n} of {} FDEs in {took:?}, {bytes_held} bytes",
            fdes.len()
        );
        assert_eq!(n, compiled);
        assert!(n * 100 > fdes.len() * 99, "{name}: {n} of {}", fdes.len());
        assert_eq!(u.compile_all(), n, "a second call compiles nothing new");
        for &(start, end, _) in &fdes {
            for a in [start, start + 1, start + (end - start) / 2, end - 1] {
                assert_eq!(u.compiled_row(a), interp.fast_row(a), "{name} {a:#x}");
            }
        }
        assert_eq!(u.compiled_stats(), (compiled, bytes_held), "{name}");
    }
}

/// A `.debug_frame` of one CIE (`version`, augmentation `aug`, address and segment sizes for
/// version 4) and one FDE over [0x2000, 0x2040) pointing at it (section offset 0).
fn debug_frame(version: u8, aug: &[u8], sizes: (u8, u8), cie: &[u8], insns: &[u8]) -> Vec<u8> {
    let mut df = Vec::new();
    let mut body = vec![0xff, 0xff, 0xff, 0xff, version];
    body.extend_from_slice(aug);
    body.push(0);
    if version == 4 {
        body.extend_from_slice(&[sizes.0, sizes.1]);
    }
    // Code and data alignment, then the return-address column (a byte in version 1, a
    // ULEB128 after it: 16 reads the same either way).
    body.extend_from_slice(&[1, 0x78, 16]);
    body.extend_from_slice(cie);
    push_entry(&mut df, body);
    let mut fde = vec![0, 0, 0, 0];
    fde.extend_from_slice(&0x2000u64.to_le_bytes());
    fde.extend_from_slice(&0x40u64.to_le_bytes());
    fde.extend_from_slice(insns);
    push_entry(&mut df, fde);
    df
}

/// An unwinder over `eh` (optional, with its header) and `.debug_frame` `df`, rule cache off.
fn with_debug<'d>(eh: Option<&'d [u8]>, hdr: Option<&'d [u8]>, df: &'d [u8]) -> DwarfUnwinder<'d> {
    let mut u = DwarfUnwinder::from_sections(
        CfiSections {
            eh_frame: eh.map(|data| SectionData {
                data,
                address: EH_ADDR,
            }),
            eh_frame_hdr: hdr.map(|data| SectionData {
                data,
                address: HDR_ADDR,
            }),
            debug_frame: Some(SectionData {
                data: df,
                address: 0,
            }),
            ..Default::default()
        },
        BIAS,
    )
    .unwrap();
    u.set_rule_cache(false);
    u
}

/// At every address of `addrs`: the fast path gives a row or not as `taken` says, compiled
/// rows give the same, and a step gives gimli's path's answer, registers and pointers included.
fn check_debug(
    fast: &DwarfUnwinder<'_>,
    reference: &DwarfUnwinder<'_>,
    addrs: &[u64],
    taken: bool,
) {
    let mem = PatternMemory { hole: 0..0x1000 };
    for &a in addrs {
        let row = fast.fast_row(a);
        assert_eq!(matches!(row, RowLookup::Row(_)), taken, "{a:#x}: {row:?}");
        let regs = Regs::with_gprs(
            BIAS + a,
            core::array::from_fn(|i| 0x7000_0000 + 0x100 * i as u64),
        );
        for with_pointers in [true, false, true] {
            assert_eq!(
                unwound(fast, &regs, &mem, with_pointers),
                unwound(reference, &regs, &mem, with_pointers),
                "{a:#x}"
            );
        }
        assert_eq!(fast.compiled_row(a), row, "{a:#x}");
    }
}

/// `.debug_frame` takes the fast path (CIE versions 1, 3 and 4, alone and behind an
/// `.eh_frame` that does not cover the address) with gimli's answers; what is outside its
/// subset (augmentations, other address or segment sizes) declines to gimli's path.
#[test]
fn debug_frame_takes_the_fast_path() {
    let insns = [
        ADVANCE | 1,
        DEF_CFA_OFFSET,
        16,
        OFFSET | 6,
        2,
        ADVANCE | 3,
        DEF_CFA_REGISTER,
        6,
        ADVANCE | 8,
        0x0a,
        DEF_CFA,
        7,
        8,
        ADVANCE | 1,
        0x0b,
    ];
    let inside: Vec<u64> = (0x2000..0x2040).collect();
    for version in [1u8, 3, 4] {
        let df = debug_frame(version, b"", (8, 0), &CIE_X64, &insns);
        let fast = with_debug(None, None, &df);
        let mut reference = with_debug(None, None, &df);
        reference.set_fast_path(false);
        check_debug(&fast, &reference, &inside, true);
        check_debug(&fast, &reference, &[0x1fff, 0x2040], false);
        // Compiled by now (each address was looked up more than once); compile_all finds it.
        assert_eq!(fast.compile_all(), 1, "version {version}");
        check_debug(&fast, &reference, &inside, true);
        // Behind an .eh_frame whose one FDE covers [0x1000, 0x1100) only.
        let eh = Cfi::new(&CIE_X64, &[ADVANCE | 1, DEF_CFA_OFFSET, 32]).bytes();
        let hdr = hdr_for(&eh);
        let fast = with_debug(Some(&eh), Some(&hdr), &df);
        let mut reference = with_debug(Some(&eh), Some(&hdr), &df);
        reference.set_fast_path(false);
        check_debug(&fast, &reference, &inside, true);
        check_debug(&fast, &reference, &[0x1000, 0x1001, 0x10ff], true);
        check_debug(&fast, &reference, &[0xfff, 0x1100, 0x1fff, 0x2040], false);
    }
    let declined = [
        (
            "augmentation",
            debug_frame(1, b"zR", (8, 0), &CIE_X64, &insns),
        ),
        (
            "4-byte addresses",
            debug_frame(4, b"", (4, 0), &CIE_X64, &insns),
        ),
        (
            "segment selector",
            debug_frame(4, b"", (8, 1), &CIE_X64, &insns),
        ),
        ("version 2", debug_frame(2, b"", (8, 0), &CIE_X64, &insns)),
    ];
    for (name, df) in declined {
        let fast = with_debug(None, None, &df);
        let mut reference = with_debug(None, None, &df);
        reference.set_fast_path(false);
        assert!(
            inside
                .iter()
                .all(|&a| fast.fast_row(a) == RowLookup::Declined
                    || fast.fast_row(a) == RowLookup::NotCovered),
            "{name}"
        );
        check_debug(&fast, &reference, &[0x2000, 0x2005, 0x1fff], false);
    }
}

/// Our own C functions built by gcc with `.debug_frame` only (`-fno-asynchronous-unwind-tables`)
/// at -O0 and -O2: every address of every `.debug_frame` FDE takes the fast path and steps
/// exactly as gimli's path does.
#[test]
fn gcc_debug_frame_matches_gimli() {
    const SRC: &str = r#"
#include <string.h>
int leaf(int x) { return x * 3 + 1; }
__attribute__((noinline)) long many(long a, long b, long c, long d, long e, long f) {
  volatile long v[16]; for (int i = 0; i < 16; i++) v[i] = a * i + b;
  long s = 0; for (int i = 0; i < 16; i++) s += v[i] ^ (c + d * e - f);
  return s + leaf((int)s);
}
__attribute__((noinline)) int rec(int n, char *buf) {
  if (n <= 0) return 0; char tmp[64]; memcpy(tmp, buf, 64); tmp[n % 64] ^= 1;
  return rec(n - 1, tmp) + tmp[0];
}
__attribute__((noinline)) int vla(int n) { char a[n]; memset(a, n, n); return a[n / 2] + rec(n, a); }
int entry(int n) { return vla(n) + (int)many(n, 2, 3, 4, 5, 6); }
"#;
    let dir = std::env::temp_dir().join(format!("xunwind-debug-frame-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("df.c");
    std::fs::write(&src, SRC).unwrap();
    for opt in ["-O0", "-O2"] {
        let out = dir.join(format!("df{opt}.so"));
        let built = std::process::Command::new("gcc")
            .args([
                opt,
                "-g",
                "-fno-asynchronous-unwind-tables",
                "-shared",
                "-fPIC",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status();
        match built {
            Ok(s) if s.success() => {}
            other if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some() => {
                panic!("gcc failed: {other:?} (XUNWIND_REQUIRE_CORPUS is set)")
            }
            other => {
                eprintln!("skipping: gcc failed: {other:?}");
                return;
            }
        }
        let bytes = std::fs::read(&out).unwrap();
        let mut fast = DwarfUnwinder::new(&bytes, BIAS).unwrap();
        fast.set_rule_cache(false);
        let mut reference = DwarfUnwinder::new(&bytes, BIAS).unwrap();
        reference.set_rule_cache(false);
        reference.set_fast_path(false);
        // The FDEs' ranges, read with gimli from the section itself.
        let file = object::File::parse(&*bytes).unwrap();
        let data = object::ObjectSection::data(
            &object::Object::section_by_name(&file, ".debug_frame").unwrap(),
        )
        .unwrap();
        let mut df = gimli::DebugFrame::new(data, gimli::LittleEndian);
        df.set_address_size(8);
        let bases = BaseAddresses::default();
        let mut entries = df.entries(&bases);
        let mut ranges = Vec::new();
        while let Some(e) = entries.next().unwrap() {
            if let gimli::CieOrFde::Fde(p) = e {
                let f = p.parse(gimli::DebugFrame::cie_from_offset).unwrap();
                ranges.push(f.initial_address()..f.end_address());
            }
        }
        assert!(ranges.len() >= 5, "{opt}: {} FDEs", ranges.len());
        assert_eq!(fast.debug_index().len(), ranges.len(), "{opt}");
        let mut probes = 0;
        for r in &ranges {
            let addrs: Vec<u64> = r.clone().collect();
            check_debug(&fast, &reference, &addrs, true);
            probes += addrs.len();
        }
        let (compiled, _) = fast.compiled_stats();
        assert!(compiled >= ranges.len(), "{opt}: {compiled} compiled");
        eprintln!(
            "{opt}: {} .debug_frame FDEs, {probes} addresses",
            ranges.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Differential: the exact `__ex_table` lookup (`ExTable`, RangeTable-indexed) and the ORC
//! lookups (`orc_lookup` accelerator, full search, RangeTable) against linear scans, on tables
//! built from the input, sorted or not, with duplicates.
//!
//! Input: a byte choosing the ORC text span, then 4-byte records `[gap, flag, lo, hi]`: the
//! insn/ip steps forward by `gap` (flag bit 0 steps back, bit 1 repeats the previous one), and
//! `lo`/`hi` form the ORC entry's flags word.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_extable::orc::{OrcLayout, OrcTable};
use xunwind_extable::{ExTable, ExTableEntry, Extra, FixupKind};

const MAX: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&span, rest)) = data.split_first() else {
        return;
    };
    let base = 0xffff_ffff_8100_0000u64;
    let mut at = base;
    let mut ex = Vec::new();
    let mut orc = Vec::new();
    for c in rest.chunks_exact(4).take(MAX) {
        if c[1] & 2 == 0 {
            at = if c[1] & 1 == 1 {
                at.saturating_sub(c[0] as u64)
            } else {
                at + c[0] as u64
            };
        }
        ex.push(ExTableEntry {
            insn: at,
            fixup: at + 2,
            extra: Extra::Data(c[2] as u32),
        });
        orc.push((at, [0, 0, 0, 0, c[2], c[3]]));
    }
    let probes: Vec<u64> = ex
        .iter()
        .flat_map(|e| [e.insn.wrapping_sub(1), e.insn, e.insn + 1])
        .chain([0, u64::MAX, base])
        .collect();

    let t = ExTable::new(ex.clone(), FixupKind::Address).unwrap();
    for &ip in &probes {
        let want = ex.iter().any(|e| e.insn == ip);
        let got = t.lookup(ip);
        assert_eq!(got.is_some(), want, "{ip:#x}");
        if let Some(g) = got {
            assert_eq!(g.insn, ip);
        }
        assert_eq!(got, t.lookup_bsearch(ip));
    }

    let text_end = base + 64 * (span as u64 + 1);
    for layout in [OrcLayout::Pre6_3, OrcLayout::V6_4] {
        let t = OrcTable::new(orc.clone(), layout, (base, text_end)).unwrap();
        let ips = t.ips();
        assert!(ips.windows(2).all(|w| w[0] <= w[1]));
        for &pc in probes.iter().chain(&[text_end - 1, text_end]) {
            let linear = ips.iter().rposition(|&ip| ip <= pc);
            assert_eq!(t.find_full(pc), linear, "full {pc:#x}");
            if pc >= base && pc < text_end {
                assert_eq!(t.find(pc), linear, "orc_lookup {pc:#x}");
            }
            let end = ips.last().map_or(0, |&l| l + 1).max(text_end);
            if pc < end {
                assert_eq!(t.find_indexed(pc), linear, "indexed {pc:#x}");
            }
        }
    }
});

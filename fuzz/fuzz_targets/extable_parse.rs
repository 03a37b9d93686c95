//! The kernel-file readers on arbitrary bytes: ELF (vmlinux and module relocations), bzImage
//! payload search, entry decoding in every format, ORC sections. Nothing may panic, and what
//! parses must be consistent: a vmlinux table indexes and looks up each of its insns, a module
//! table places and sorts under the loader's layout, ORC lookups agree with a plain search.
//!
//! Input: one option byte (bits 0-2: forced format or none; bit 3: force version 5.15 instead of
//! reading it), then the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xunwind_extable::orc::OrcTable;
use xunwind_extable::{
    decode, ExTableFormat, FileKind, KernelFile, KernelVersion, ModuleLayout, Options,
};

const FORMATS: [ExTableFormat; 6] = [
    ExTableFormat::Absolute64,
    ExTableFormat::Absolute32,
    ExTableFormat::Relative,
    ExTableFormat::X86Handler,
    ExTableFormat::X86Data,
    ExTableFormat::TypeData,
];

fuzz_target!(|data: &[u8]| {
    let Some((&opt, file)) = data.split_first() else {
        return;
    };
    let opts = Options {
        format: FORMATS.get((opt & 7) as usize).copied(),
        version: (opt & 8 != 0).then_some(KernelVersion::new(5, 15, 0)),
    };
    let Ok(kf) = KernelFile::parse_with(file, opts) else {
        return;
    };
    match kf.kind {
        FileKind::Vmlinux => {
            if let Ok(t) = kf.vmlinux_table() {
                for e in t.entries() {
                    assert_eq!(t.lookup(e.insn).map(|x| x.insn), Some(e.insn));
                    let f = decode(e, kf.machine, kf.version, None);
                    let _ = f.effect(e);
                }
            }
        }
        FileKind::Module => {
            let layout =
                ModuleLayout::loader_default(&kf, 0xffff_ffff_c000_0000, 0xffff_ffff_e000_0000);
            if let Ok(t) = kf.module_table(&layout) {
                assert!(t.entries().windows(2).all(|w| w[0].insn <= w[1].insn));
            }
        }
    }
    if let Some(orc) = &kf.orc {
        if let Ok(t) = OrcTable::from_sections(orc, kf.version) {
            let (s, e) = t.text();
            for pc in [s, e.wrapping_sub(1), s.wrapping_add(e.wrapping_sub(s) / 2)] {
                let plain = t.ips().partition_point(|&ip| ip <= pc).checked_sub(1);
                assert_eq!(t.find_full(pc), plain);
                if pc >= s && pc < e {
                    assert_eq!(t.find(pc), plain);
                }
            }
        }
    }
});

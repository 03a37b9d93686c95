//! The kernel resolver over Debian's real kernel (corpus/manifest-kernel): for every
//! `__ex_table` entry of vmlinux the answer at its insn is that entry (fixup, decoded type,
//! register, flags, immediate equal to the table decoded independently, entry by entry, with
//! the extable crate's own decoder), and insn+1 is an oops unless it is itself an entry; the
//! same for every entry of kvm-intel.ko (whose table is only sorted at load) placed among other
//! modules. Without the corpus the test says it was skipped, unless XUNWIND_REQUIRE_CORPUS is
//! set. The ORC stack an oops would print is checked on a planted two-frame stack.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use xunwind::core::PcKind;
use xunwind::extable::orc::{OrcReg, OrcTable, OrcType};
use xunwind::extable::{decode, KernelFile};
use xunwind::{KernelResolution, KernelResolver};
use xunwind::{Reg, Regs, SliceMemory, StopReason, Trust};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kernel_files() -> Option<(PathBuf, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(repo().join("corpus/manifest-kernel")).ok()?;
    let root = std::env::var_os("XUNWIND_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("corpus"))
        .join("unpacked");
    let mut vmlinuz = None;
    let mut modules = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 5 || f[0] != "kernel" {
            continue;
        }
        let p = root.join(f[1]).join(f[3]);
        if f[3].starts_with("boot/vmlinuz-") {
            vmlinuz = Some(p);
        } else if f[3].ends_with("kvm-intel.ko") || f[3].ends_with("kvm-amd.ko") {
            modules.push(p);
        }
    }
    let v = vmlinuz.filter(|p| p.exists());
    if v.is_none() {
        assert!(
            std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
            "kernel corpus missing: run corpus/fetch"
        );
        eprintln!("skipped: no kernel corpus (run corpus/fetch)");
        return None;
    }
    Some((v?, modules.into_iter().filter(|p| p.exists()).collect()))
}

#[test]
fn every_ex_table_entry_and_its_neighbour() {
    let Some((vmlinuz, module_paths)) = kernel_files() else {
        return;
    };
    let kf = KernelFile::parse(&std::fs::read(&vmlinuz).unwrap()).unwrap();
    let expected = kf.vmlinux_table().unwrap();
    let (machine, version) = (kf.machine, kf.version);
    let mut mods = Vec::new();
    for p in &module_paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        mods.push((name, KernelFile::parse(&std::fs::read(p).unwrap()).unwrap()));
    }
    let r = KernelResolver::new(kf, mods).unwrap();
    let insns: HashSet<u64> = expected.entries().iter().map(|e| e.insn).collect();
    assert!(expected.len() >= 500, "only {} entries", expected.len());
    for e in expected.entries() {
        let want = decode(e, machine, version, None);
        match r.resolve(e.insn) {
            KernelResolution::Fixup(f) => {
                assert_eq!(f.entry, *e);
                assert_eq!(f.fixup, want);
                assert_eq!(f.module, None);
                assert_eq!(f.insn_text, format!("{:#x}", e.insn));
                assert_eq!(f.fixup_text, format!("{:#x}", e.fixup));
                assert!(
                    f.effect.contains(&format!("{:#x}", e.fixup)) || f.fixup.type_name.is_some()
                );
            }
            KernelResolution::Oops => panic!("no fixup for entry {:#x}", e.insn),
        }
        if !insns.contains(&(e.insn + 1)) {
            assert!(
                matches!(r.resolve(e.insn + 1), KernelResolution::Oops),
                "{:#x}",
                e.insn + 1
            );
        }
    }
    // Modules: every entry, by section-relative ip, after the loader's sort.
    let mut checked = 0;
    for p in &module_paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let m = KernelFile::parse(&std::fs::read(p).unwrap()).unwrap();
        for me in &m.module_entries {
            let sec = &m.sections[me.insn.section].name;
            let ip = r.module_address(&name, sec, me.insn.offset).unwrap();
            match r.resolve(ip) {
                KernelResolution::Fixup(f) => {
                    assert_eq!(f.module.as_deref(), Some(name.as_str()));
                    assert_eq!(f.insn_text, format!("{sec}+{:#x}", me.insn.offset));
                    let fsec = &m.sections[me.fixup.section].name;
                    assert_eq!(f.fixup_text, format!("{fsec}+{:#x}", me.fixup.offset));
                    checked += 1;
                }
                KernelResolution::Oops => {
                    panic!("{name}: no fixup for {sec}+{:#x}", me.insn.offset)
                }
            }
        }
    }
    if !module_paths.is_empty() {
        assert!(checked > 100, "only {checked} module entries");
    }
}

/// The stack an oops prints: an ORC walk. Two call frames are planted on a synthetic stack,
/// each at the place the ORC rule of the frame below says its return address is.
#[test]
fn oops_stack_follows_orc() {
    let Some((vmlinuz, _)) = kernel_files() else {
        return;
    };
    let kf = KernelFile::parse(&std::fs::read(&vmlinuz).unwrap()).unwrap();
    let orc = OrcTable::from_sections(kf.orc.as_ref().unwrap(), kf.version).unwrap();
    let call_frame = |pc: u64, kind: PcKind| {
        orc.rule(pc, kind).filter(|e| {
            e.ty == OrcType::Call
                && e.sp_reg == OrcReg::Sp
                && e.bp_reg == OrcReg::Undefined
                && e.sp_offset >= 8
        })
    };
    // Two ips with plain "sp + offset" call-frame rules, from the middle of the table.
    let ips = orc.ips();
    let mut picks = ips[ips.len() / 2..]
        .iter()
        .copied()
        .filter(|&ip| call_frame(ip, PcKind::Exact).is_some());
    let a = picks.next().unwrap();
    let b = picks
        .find(|&ip| ip > a + 64 && call_frame(ip, PcKind::Exact).is_some())
        .unwrap();
    let ret_b = b + 1; // looked up at ret_b - 1 = b
    let r0 = call_frame(a, PcKind::Exact).unwrap();
    let r1 = call_frame(ret_b, PcKind::ReturnAddress).unwrap();
    let base = 0xffff_c900_0000_0000u64;
    let mut stack = vec![0u8; 0x2000];
    let sp0 = base + 0x100;
    let sp1 = sp0 + r0.sp_offset as u64;
    let at = (sp1 - 8 - base) as usize;
    stack[at..at + 8].copy_from_slice(&ret_b.to_le_bytes());
    // The frame above returns to 0: the end of the stack.
    let sp2 = sp1 + r1.sp_offset as u64;
    assert!(sp2 - base < 0x2000);
    let mem = SliceMemory::new(base, &stack);
    let mut regs = Regs::new();
    regs.set_rip(a);
    regs.set(Reg::Rsp, sp0);
    regs.set(Reg::Rbp, 0x1234);
    let r = KernelResolver::new(kf, Vec::new()).unwrap();
    let w = r.oops_stack(&regs, &mem, 16).unwrap();
    let pcs: Vec<u64> = w.frames.iter().map(|f| f.pc).collect();
    assert_eq!(pcs, [a, ret_b], "{w:?}");
    assert_eq!(w.frames[1].sp, sp1);
    assert_eq!(w.frames[1].trust, Trust::Orc);
    assert_eq!(w.stop, StopReason::EndOfStack);
}

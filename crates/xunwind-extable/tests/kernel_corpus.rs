//! Over Debian's real kernel (corpus/manifest-kernel): every `__ex_table` entry of vmlinux and of
//! each module decodes, tables are sorted without duplicates (modules after the loader's sort),
//! each insn lies in code, lookup hits each insn and misses insn+1, and the type histograms
//! match corpus/expected/kernel/ (regenerate with XUNWIND_UPDATE=1). ORC: the `orc_lookup`
//! accelerator, the full search and the RangeTable index agree with a plain rightmost-<= search
//! on random text addresses.
//!
//! The files are found under `$XUNWIND_CORPUS/unpacked/<package>/` (default: the repository's
//! corpus/); without them the tests say they were skipped, unless XUNWIND_REQUIRE_CORPUS is set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use xunwind_extable::orc::OrcTable;
use xunwind_extable::{decode, ExTable, FileKind, KernelFile, ModuleLayout};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(package, path)` of every file of the kernel set, from the manifest.
fn manifest() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("corpus/manifest-kernel")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 5 && f[0] == "kernel").then(|| (f[1].to_string(), f[3].to_string()))
        })
        .collect()
}

fn package_root(package: &str) -> PathBuf {
    std::env::var_os("XUNWIND_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("corpus"))
        .join("unpacked")
        .join(package)
}

/// The kernel files present: the vmlinuz and the modules (all `.ko` under the package's
/// lib/modules, so a full unpack is covered too).
struct Corpus {
    vmlinuz: PathBuf,
    modules: Vec<PathBuf>,
    release: String,
}

fn corpus() -> Option<&'static Corpus> {
    static C: OnceLock<Option<Corpus>> = OnceLock::new();
    C.get_or_init(|| {
        let m = manifest();
        let (pkg, vmlinuz) = m.iter().find(|(_, p)| p.starts_with("boot/vmlinuz-"))?;
        let root = package_root(pkg);
        let vmlinuz_path = root.join(vmlinuz);
        if !vmlinuz_path.exists() {
            return None;
        }
        let mut modules = Vec::new();
        let mut stack = vec![root.join("lib/modules")];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    stack.push(p);
                } else if name.ends_with(".ko") || name.contains(".ko.") {
                    modules.push(p);
                }
            }
        }
        modules.sort();
        Some(Corpus {
            vmlinuz: vmlinuz_path,
            modules,
            release: vmlinuz.trim_start_matches("boot/vmlinuz-").to_string(),
        })
    })
    .as_ref()
}

fn skip() -> bool {
    if corpus().is_some() {
        return false;
    }
    assert!(
        std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
        "kernel corpus missing: run corpus/fetch"
    );
    eprintln!("skipped: no kernel corpus (run corpus/fetch; see corpus/manifest-kernel)");
    true
}

fn vmlinux() -> &'static KernelFile {
    static K: OnceLock<KernelFile> = OnceLock::new();
    K.get_or_init(|| {
        let data = std::fs::read(&corpus().unwrap().vmlinuz).unwrap();
        KernelFile::parse(&data).expect("vmlinuz parses")
    })
}

/// Compares `actual` with the checked-in expected file, or rewrites it with XUNWIND_UPDATE=1.
fn expect(name: &str, actual: &str) {
    let path = repo().join("corpus/expected/kernel").join(name);
    if std::env::var_os("XUNWIND_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with XUNWIND_UPDATE=1", path.display()));
    assert_eq!(
        actual,
        want,
        "{} differs (XUNWIND_UPDATE=1 rewrites it)",
        path.display()
    );
}

/// Checks a sorted table against the file's sections; returns the type histogram.
fn check_table(
    kf: &KernelFile,
    t: &ExTable,
    in_code: impl Fn(u64) -> bool,
    what: &str,
) -> BTreeMap<String, usize> {
    let mut hist = BTreeMap::new();
    let e = t.entries();
    for (i, x) in e.iter().enumerate() {
        if i > 0 {
            assert!(
                e[i - 1].insn < x.insn,
                "{what}: entry {i} not strictly sorted"
            );
        }
        assert!(in_code(x.insn), "{what}: insn {:#x} not in code", x.insn);
        let f = decode(x, kf.machine, kf.version, None);
        let name = f
            .type_name
            .unwrap_or_else(|| panic!("{what}: entry {i} has an undefined type {:?}", f.type_code));
        *hist.entry(name.to_string()).or_default() += 1;
        assert!(!f.effect(x).is_empty());
        assert_eq!(
            t.lookup(x.insn),
            Some(x),
            "{what}: lookup of insn {:#x}",
            x.insn
        );
        let next_is_entry = e.get(i + 1).is_some_and(|n| n.insn == x.insn + 1);
        if !next_is_entry {
            assert_eq!(
                t.lookup(x.insn + 1),
                None,
                "{what}: insn+1 {:#x} hit",
                x.insn + 1
            );
        }
        assert_eq!(t.lookup(x.insn - 1), t.lookup_bsearch(x.insn - 1));
    }
    assert_eq!(t.duplicates(), 0, "{what}: duplicate insns");
    hist
}

fn hist_lines(out: &mut String, who: &str, hist: &BTreeMap<String, usize>) {
    for (k, v) in hist {
        let _ = writeln!(out, "{who} type {k} {v}");
    }
}

#[test]
fn vmlinux_ex_table() {
    if skip() {
        return;
    }
    let kf = vmlinux();
    assert_eq!(kf.kind, FileKind::Vmlinux);
    let t = kf.vmlinux_table().unwrap();
    assert!(
        t.was_sorted(),
        "vmlinux __ex_table must be sorted at build time"
    );
    let hist = check_table(kf, &t, |a| kf.exec_section(a).is_some(), "vmlinux");
    for x in t.entries() {
        assert!(
            kf.section_at(x.fixup).is_some(),
            "fixup {:#x} outside sections",
            x.fixup
        );
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vmlinux {} version {} compression {} format {} entries {}",
        corpus().unwrap().release,
        kf.version.map_or("?".into(), |v| v.to_string()),
        kf.compression.map_or("none", |c| c.name()),
        kf.format.name(),
        t.len()
    );
    hist_lines(&mut out, "vmlinux", &hist);
    expect("vmlinux-extable.txt", &out);
}

#[test]
fn module_ex_tables() {
    if skip() {
        return;
    }
    let c = corpus().unwrap();
    let mut out = String::new();
    let mut with_table = 0;
    for path in &c.modules {
        let data = std::fs::read(path).unwrap();
        let kf = KernelFile::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(kf.kind, FileKind::Module);
        if !kf.has_ex_table {
            continue;
        }
        with_table += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let layout =
            ModuleLayout::loader_default(&kf, 0xffff_ffff_c000_0000, 0xffff_ffff_e000_0000);
        let t = kf.module_table(&layout).unwrap();
        let hist = check_table(
            &kf,
            &t,
            |a| {
                layout
                    .locate(&kf.sections, a)
                    .is_some_and(|p| kf.sections[p.section].is_exec())
            },
            &name,
        );
        // Every fixup lands in a loaded section of the module.
        for x in t.entries() {
            assert!(
                layout.locate(&kf.sections, x.fixup).is_some(),
                "{name}: fixup outside"
            );
        }
        let _ = writeln!(
            out,
            "module {name} entries {} sorted-in-file {}",
            t.len(),
            if t.was_sorted() { "yes" } else { "no" }
        );
        hist_lines(&mut out, &format!("module {name}"), &hist);
    }
    let _ = writeln!(out, "modules-with-table {with_table}");
    expect("modules-extable.txt", &out);
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn orc_lookup_agrees() {
    if skip() {
        return;
    }
    let kf = vmlinux();
    let orc = kf.orc.as_ref().expect("vmlinux has ORC sections");
    let t = OrcTable::from_sections(orc, kf.version).unwrap();
    // The slots are what the kernel sized `.orc_lookup` for.
    assert_eq!(Some(t.lookup_table().len() as u64 * 4), orc.lookup_size);
    for (i, &slot) in t.lookup_table().iter().enumerate() {
        let ip = (t.text().0 + 256 * i as u64).min(t.text().1);
        assert_eq!(t.find_full(ip), Some(slot as usize), "slot {i}");
    }
    let ips = t.ips();
    let lo = ips[0];
    let code_end = kf
        .sections
        .iter()
        .filter(|s| s.is_exec())
        .map(|s| s.address + s.size)
        .max()
        .unwrap();
    let hi = code_end.max(t.text().1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 300_000;
    for k in 0..n {
        // Half inside [_stext, _etext) where the accelerator applies, half anywhere in code.
        let pc = if k % 2 == 0 {
            t.text().0 + rng.next() % (t.text().1 - t.text().0)
        } else {
            lo + rng.next() % (hi - lo)
        };
        let plain = ips.partition_point(|&ip| ip <= pc).checked_sub(1);
        assert_eq!(t.find_full(pc), plain, "full {pc:#x}");
        assert_eq!(t.find(pc), plain, "orc_lookup {pc:#x}");
        assert_eq!(t.find_indexed(pc), plain, "RangeTable {pc:#x}");
    }
    // Every entry's own ip finds the rightmost entry at that ip, and decodes to a known type.
    let mut types = BTreeMap::new();
    for i in 0..t.len() {
        let e = t.entry(i).unwrap();
        *types.entry(format!("{:?}", e.ty)).or_insert(0usize) += 1;
        let at = t.find(ips[i]).unwrap();
        assert_eq!(ips[at], ips[i]);
        assert!(at >= i);
    }
    let mut out = format!(
        "orc layout {:?} entries {} lookup-slots {}\n",
        t.layout(),
        t.len(),
        t.lookup_table().len()
    );
    for (k, v) in &types {
        let _ = writeln!(out, "orc type {k} {v}");
    }
    expect("vmlinux-orc.txt", &out);
}

/// The compact rule a pc-keyed cache applies equals the ORC unwind at random text addresses,
/// both pc kinds, over a stack whose every word is distinct; also with rbp unknown.
#[test]
fn orc_compact_rules_equal_unwind() {
    use xunwind_core::{
        unwind_by_rule, ContextPointers, FrameWalker, PcKind, Reg, Regs, SliceMemory,
    };
    if skip() {
        return;
    }
    let kf = vmlinux();
    let orc = kf.orc.as_ref().expect("vmlinux has ORC sections");
    let t = OrcTable::from_sections(orc, kf.version).unwrap();
    const STACK: u64 = 0xffff_c900_0000_0000;
    let words: Vec<u8> = (0..0x4000u64)
        .flat_map(|k| (0x5afe_0000_0000_0000 | (k * 8)).to_le_bytes())
        .collect();
    let mem = SliceMemory::new(STACK, &words);
    let mut rng = Rng(0x0dd5_eed5);
    let (mut rules, mut probes) = (0usize, 0usize);
    let mut declined = BTreeMap::new();
    for _ in 0..100_000 {
        let pc = t.text().0 + rng.next() % (t.text().1 - t.text().0);
        for kind in [PcKind::Exact, PcKind::ReturnAddress] {
            let rule = FrameWalker::rule(&t, pc, kind, &mem);
            rules += rule.is_some() as usize;
            if rule.is_none() {
                if let Some(e) = t.rule(pc, kind) {
                    *declined
                        .entry(format!("{:?} sp {:?} bp {:?}", e.ty, e.sp_reg, e.bp_reg))
                        .or_insert(0usize) += 1;
                }
            }
            probes += 1;
            for rbp_known in [true, false] {
                let mut start = Regs::with_gprs(pc, [0xa000_0000_0000_0000; 16]);
                start.set(Reg::Rsp, STACK + 0x8000);
                start.set(Reg::Rbp, STACK + 0x9000);
                if !rbp_known {
                    start.invalidate(Reg::Rbp);
                }
                let (mut r1, mut p1) = (start.clone(), ContextPointers::new());
                let want = t.unwind(&mut r1, kind, &mem, Some(&mut p1));
                let (mut r2, mut p2) = (start.clone(), ContextPointers::new());
                let got = unwind_by_rule(&t, &mut r2, kind, &mem, Some(&mut p2));
                assert_eq!(got, want, "{pc:#x} {kind:?} rule {rule:?}");
                if want.is_ok() {
                    assert_eq!((r2, p2), (r1, p1), "{pc:#x} {kind:?} rule {rule:?}");
                }
            }
        }
    }
    eprintln!("orc compact rules: {rules} of {probes} probes; declined: {declined:?}");
    // Of the pcs with an sp rule at all (the rest is padding and code ORC leaves undefined),
    // nearly all are CALL entries off sp or bp.
    let undefined: usize = declined
        .iter()
        .filter(|(k, _)| k.contains("sp Undefined"))
        .map(|(_, v)| v)
        .sum();
    assert!(
        rules * 100 > (probes - undefined) * 97,
        "{rules} of {probes}"
    );
}

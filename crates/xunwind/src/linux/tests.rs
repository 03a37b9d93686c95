//! Hand-built core files with known contents; truncated and mangled ones never panic.

use super::*;
use crate::StackWalker;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

fn note(out: &mut Vec<u8>, ty: u32, desc: &[u8]) {
    out.extend_from_slice(&5u32.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(b"CORE\0\0\0\0");
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn prstatus(pid: u32, seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; 336];
    d[PR_PID_OFFSET..PR_PID_OFFSET + 4].copy_from_slice(&pid.to_le_bytes());
    for i in 0..PR_REG_WORDS {
        let at = PR_REG_OFFSET + 8 * i;
        d[at..at + 8].copy_from_slice(&(seed + i as u64).to_le_bytes());
    }
    d
}

struct Seg {
    ty: u32,
    vaddr: u64,
    flags: u32,
    data: Vec<u8>,
}

fn core_file(segs: &[Seg], machine: u16, e_type: u16) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    out[16..18].copy_from_slice(&e_type.to_le_bytes());
    out[18..20].copy_from_slice(&machine.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    let mut data_at = 64 + 56 * segs.len();
    let mut phdrs = Vec::new();
    for s in segs {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&s.ty.to_le_bytes());
        p[4..8].copy_from_slice(&s.flags.to_le_bytes());
        p[8..16].copy_from_slice(&(data_at as u64).to_le_bytes());
        p[16..24].copy_from_slice(&s.vaddr.to_le_bytes());
        p[32..40].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
        p[40..48].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
        p[48..56].copy_from_slice(&4u64.to_le_bytes());
        phdrs.extend_from_slice(&p);
        data_at += s.data.len();
    }
    out.extend_from_slice(&phdrs);
    for s in segs {
        out.extend_from_slice(&s.data);
    }
    out
}

fn sample_core(module_path: &str) -> Vec<u8> {
    let mut notes = Vec::new();
    note(&mut notes, NT_PRSTATUS, &prstatus(100, 0x1000));
    let mut fx = vec![0u8; 512];
    for n in 0..16usize {
        fx[160 + 16 * n] = n as u8 + 1;
    }
    note(&mut notes, NT_FPREGSET, &fx);
    let mut si = vec![0u8; 128];
    si[0..4].copy_from_slice(&11u32.to_le_bytes());
    si[8..12].copy_from_slice(&1u32.to_le_bytes());
    si[16..24].copy_from_slice(&0xdead_0000u64.to_le_bytes());
    note(&mut notes, NT_SIGINFO, &si);
    note(&mut notes, NT_PRSTATUS, &prstatus(101, 0x2000));
    // NT_FILE: the module in two mappings (offset 0 and page 1), and a data file.
    let mut f = Vec::new();
    for v in [3u64, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (s, e, pg) in [
        (0x10000u64, 0x11000u64, 0u64),
        (0x11000, 0x13000, 1),
        (0x20000, 0x21000, 0),
    ] {
        for v in [s, e, pg] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    }
    for name in [module_path, module_path, "/nonexistent/data.bin"] {
        f.extend_from_slice(name.as_bytes());
        f.push(0);
    }
    note(&mut notes, NT_FILE, &f);
    let mut auxv = Vec::new();
    for v in [6u64, 0x1000, 0, 0] {
        auxv.extend_from_slice(&v.to_le_bytes());
    }
    note(&mut notes, NT_AUXV, &auxv);
    let mut stack = Vec::new();
    for w in 0..64u64 {
        stack.extend_from_slice(&(0x4000_0000 + w).to_le_bytes());
    }
    core_file(
        &[
            Seg {
                ty: PT_NOTE,
                vaddr: 0,
                flags: 0,
                data: notes,
            },
            Seg {
                ty: PT_LOAD,
                vaddr: 0x7000,
                flags: 6,
                data: stack,
            },
            Seg {
                ty: PT_LOAD,
                vaddr: 0x20000,
                flags: 4,
                data: b"not an ELF file".to_vec(),
            },
        ],
        62,
        4,
    )
}

fn module_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("xunwind-linux-core-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("LIBFOO.so"), b"\x7fELF not really").unwrap();
    d
}

#[test]
fn reads_threads_registers_signal_files_and_memory() {
    let dir = module_dir();
    let options = LoadOptions {
        module_dirs: vec![dir.clone()],
        ..Default::default()
    };
    let t = read_core(sample_core("/build/machine/libfoo.so"), &options).unwrap();
    assert_eq!(t.platform, Platform::Linux);
    assert_eq!(t.threads.len(), 2);
    let r = &t.threads[0].regs;
    assert_eq!(t.threads[0].id, 100);
    assert_eq!(t.threads[1].id, 101);
    // user_regs_struct: r15 is word 0, rbx word 5, rax word 10, rdi 14, rip 16, rsp 19.
    assert_eq!(r.get(Reg::R15), Some(0x1000));
    assert_eq!(r.get(Reg::Rbx), Some(0x1005));
    assert_eq!(r.get(Reg::Rax), Some(0x100a));
    assert_eq!(r.get(Reg::Rdi), Some(0x100e));
    assert_eq!(r.rip(), Some(0x1010));
    assert_eq!(r.rsp(), Some(0x1013));
    assert_eq!(r.xmm(0), Some(1));
    assert_eq!(r.xmm(15), Some(16));
    assert_eq!(t.threads[1].regs.xmm(0), None, "no FPREGSET for thread 2");
    assert_eq!(t.threads[1].regs.rip(), Some(0x2010));
    let e = t.exception.as_ref().unwrap();
    assert_eq!((e.thread_id, e.code, e.address), (100, 11, 0xdead_0000));
    assert_eq!(t.default_thread().unwrap().id, 100);
    // The library, found by name in a module dir whatever its case; the data file is left out.
    assert_eq!(t.modules.len(), 1, "{:?}", t.modules);
    let m = &t.modules[0];
    assert_eq!(m.name, "libfoo.so");
    assert_eq!((m.base, m.size), (0x10000, 0x3000));
    assert_eq!(m.located.as_deref(), Some(dir.join("LIBFOO.so").as_path()));
    assert_eq!(t.memory.read_u64(0x7008).unwrap(), 0x4000_0001);
    assert!(t.memory.read_u64(0x7000 + 64 * 8).is_err());
    // Not a real ELF image: no unwinder, and the walk stops with a reason.
    assert!(module_unwinder(m, &t.memory).is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wrong_kinds_of_elf_are_typed_errors() {
    let good = sample_core("/x/libfoo.so");
    let mut exec = good.clone();
    exec[16] = 2; // ET_EXEC
    assert!(matches!(
        read_core(exec, &LoadOptions::default()),
        Err(TargetError::Malformed(_))
    ));
    let mut arm = good.clone();
    arm[18] = 183; // EM_AARCH64
    assert!(matches!(
        read_core(arm, &LoadOptions::default()),
        Err(TargetError::Unsupported(_))
    ));
    let no_threads = core_file(&[], 62, 4);
    assert!(matches!(
        read_core(no_threads, &LoadOptions::default()),
        Err(TargetError::Malformed(_))
    ));
}

#[test]
fn truncated_and_mangled_cores_never_panic() {
    let good = sample_core("/x/libfoo.so");
    let walk = |bytes: Vec<u8>| {
        if let Ok(t) = crate::Target::from_bytes(bytes, &LoadOptions::default()) {
            let space = t.address_space();
            if let Some(th) = t.default_thread() {
                let w = StackWalker::default().walk(&space, &th.regs, &t.memory);
                assert!(!w.frames.is_empty());
            }
            let syms = t.symbols(&LoadOptions::default());
            let _ = syms.lookup(0x10010);
        }
    };
    let mut ok = 0;
    for len in 0..good.len() {
        let cut = good[..len].to_vec();
        ok += crate::Target::from_bytes(cut.clone(), &LoadOptions::default()).is_ok() as usize;
        walk(cut);
    }
    // Only cuts that keep every note parse (the memory may be short).
    assert!(ok > 0 && ok < good.len() / 2, "{ok} of {}", good.len());
    let mut x = 0x243f_6a88_85a3_08d3u64;
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        walk(b);
    }
}

#[test]
fn elf_symbols_of_a_system_library() {
    let path = "/lib/x86_64-linux-gnu/libc.so.6";
    let Ok(bytes) = std::fs::read(path) else {
        assert!(
            std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
            "{path} missing"
        );
        eprintln!("skipping: no {path}");
        return;
    };
    let elf = object::File::parse(&bytes[..]).unwrap();
    let raise = elf
        .dynamic_symbols()
        .find(|s| s.name() == Ok("raise"))
        .unwrap();
    let m = ModuleImage {
        name: "libc.so.6".into(),
        path: path.into(),
        base: 0x7f00_0000_0000,
        size: 0x20_0000,
        located: Some(path.into()),
        file: Some(bytes.clone()),
        pe: None,
    };
    let syms = module_symbols(&m, &LoadOptions::default()).unwrap();
    let s = syms.symbolize(raise.address() + 3).unwrap();
    assert_eq!(s.offset, 3);
    // raise has aliases (gsignal); any of them names the same address.
    let aliases: Vec<_> = elf
        .dynamic_symbols()
        .filter(|d| d.address() == raise.address())
        .map(|d| d.name().unwrap().to_string())
        .collect();
    assert!(aliases.contains(&s.name), "{} not in {aliases:?}", s.name);
    // Past the end of a sized function and before the first one: no symbol.
    assert!(syms
        .symbolize(raise.address() + raise.size())
        .is_none_or(|t| t.name != s.name));
    assert_eq!(syms.symbolize(0), None);
    // The unwinder's executable ranges are the R+X PT_LOADs, at the load bias.
    let mem = RegionMemory::new();
    let u = module_unwinder(&m, &mem).unwrap();
    assert!(u.is_executable(m.base + raise.address()));
    assert!(!u.is_executable(m.base));
}

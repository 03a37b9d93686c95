//! Minidump reading, module location, PE unwinding and PE symbols on hand-built dumps.
//!
//! The dumps are written by `windows_builder.rs` with known contents; the module is the bundled
//! fixture `corpus/fixtures/msvc/msvc.dll` (clang-14 + lld-link, with `msvc.pdb`). The
//! expected values come from `llvm-readobj-14 --coff-debug-directory` (TimeDateStamp 0x94cec75f,
//! SizeOfImage 0x5000, PDB GUID {D1D66107-12BE-53A0-4C4C-44205044422E} age 1),
//! `llvm-pdbutil-14 dump --symbols` (touch at 0x1000, 212 bytes; `?filt$0@0@seh_except@@` at
//! 0x1550) and `pe dump` of the unwind data (large_frame_16: ALLOC_LARGE 0x2028; many_pushes:
//! ALLOC_SMALL 40 then pushes of rbx rbp rdi rsi r12 r13 r14 r15).

#[path = "windows_builder.rs"]
mod builder;

mod common;
use builder::*;
use std::path::{Path, PathBuf};
use xunwind::{
    LoadOptions, MemoryReader, Reg, StackWalker, StopReason, Target, TargetError, Trust,
};

const BASE: u64 = 0x7ff6_0000_0000;
const SIZE: u32 = 0x5000;
const STAMP: u32 = 0x94ce_c75f;
const GUID: [u8; 16] = [
    0x07, 0x61, 0xd6, 0xd1, 0xbe, 0x12, 0xa0, 0x53, 0x4c, 0x4c, 0x44, 0x20, 0x50, 0x44, 0x42, 0x2e,
];
const OTHER: u64 = 0x7ff7_0000_0000;
const STACK: u64 = 0x10_0000;
const TID: u32 = 0x1234;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus/fixtures/msvc")
}

fn msvc_dll() -> Vec<u8> {
    std::fs::read(fixture_dir().join("msvc.dll")).expect("bundled fixture msvc.dll")
}

/// A fresh directory under the target's temp area.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xunwind-h3-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A directory holding msvc.dll under an upper-case name (the dump names it in lower case).
fn module_dir(name: &str) -> PathBuf {
    let d = temp_dir(name);
    std::fs::write(d.join("MSVC.DLL"), msvc_dll()).unwrap();
    d
}

/// Registers pushed by many_pushes, in the order it pops them.
const POPPED: [(Reg, u64); 8] = [
    (Reg::Rbx, 0x1111),
    (Reg::Rbp, 0x5),
    (Reg::Rdi, 0x3333),
    (Reg::Rsi, 0x4444),
    (Reg::R12, 0x1212),
    (Reg::R13, 0x1313),
    (Reg::R14, 0x1414),
    (Reg::R15, 0x1515),
];

/// The stack: touch (a leaf, no pdata) <- large_frame_16+0x27 <- many_pushes+0x20 <- other.dll.
fn stack_image() -> Vec<u8> {
    let mut s = vec![0u8; 0x2100];
    poke(&mut s, 0, BASE + 0x1117);
    poke(&mut s, 0x2030, BASE + 0x1460);
    for (i, (_, v)) in POPPED.iter().enumerate() {
        poke(&mut s, 0x2060 + 8 * i, *v);
    }
    poke(&mut s, 0x20a0, OTHER + 0x123);
    s
}

fn thread_context() -> Vec<u8> {
    let mut gpr = [0u64; 16];
    gpr[Reg::Rsp as usize] = STACK;
    gpr[Reg::Rax as usize] = 0xaaaa;
    gpr[Reg::Rbp as usize] = 0x5;
    let mut xmm = [0u128; 16];
    xmm[0] = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
    xmm[15] = 0xffee;
    context(CONTEXT_FULL, BASE + 0x1004, gpr, xmm)
}

struct Dump {
    stamp: u32,
    cv: Vec<u8>,
    with_exception: bool,
}

impl Default for Dump {
    fn default() -> Self {
        Dump {
            stamp: STAMP,
            cv: codeview(GUID, 1, "msvc.pdb"),
            with_exception: false,
        }
    }
}

impl Dump {
    fn build(&self) -> Vec<u8> {
        let stack = stack_image();
        let ctx = thread_context();
        let mut b = DumpBuilder::new();
        b.system_info(9);
        let other_ctx = context(CONTEXT_FULL, 0x1, [7; 16], [0; 16]);
        b.thread_list(&[
            (0x99, 0x20_0000, &[0u8; 16], &other_ctx),
            (TID, STACK, &stack, &ctx),
        ]);
        b.module_list(&[
            (
                BASE,
                SIZE,
                0,
                self.stamp,
                "C:\\Fixtures\\msvc.dll",
                &self.cv,
            ),
            (OTHER, 0x1000, 0, 1, "C:\\Windows\\other.dll", &[]),
        ]);
        if self.with_exception {
            let mut gpr = [0u64; 16];
            gpr[Reg::Rsp as usize] = STACK;
            let ectx = context(CONTEXT_AMD64 | CONTEXT_CONTROL, BASE + 0x1008, gpr, [0; 16]);
            b.exception(TID, 0xc000_0005, BASE + 0x1008, &[1, 0xdead], &ectx);
        }
        b.finish()
    }
}

fn open(bytes: Vec<u8>, options: &LoadOptions) -> Target {
    Target::from_bytes(bytes, options).expect("dump opens")
}

#[test]
fn walks_hand_built_stack_through_msvc_dll() {
    let dir = module_dir("walk");
    let options = LoadOptions {
        module_dirs: vec![dir.clone()],
        ..LoadOptions::default()
    };
    let t = open(Dump::default().build(), &options);
    assert_eq!(t.threads.len(), 2);
    assert_eq!(t.modules.len(), 2);
    assert_eq!(t.modules[0].name, "msvc.dll");
    assert_eq!(t.modules[0].path, "C:\\Fixtures\\msvc.dll");
    assert_eq!(
        t.modules[0].located.as_deref(),
        Some(dir.join("MSVC.DLL").as_path())
    );
    assert!(t.modules[1].located.is_none());
    let pe = t.modules[0].pe.as_ref().unwrap();
    assert_eq!(pe.time_date_stamp, STAMP);
    let cv = pe.codeview.as_ref().unwrap();
    assert_eq!(
        (cv.guid, cv.age, cv.pdb_name.as_str()),
        (GUID, 1, "msvc.pdb")
    );

    let th = t.threads.iter().find(|th| th.id == u64::from(TID)).unwrap();
    let space = t.address_space();
    let walk = common::walk_all_ways(&StackWalker::default(), &space, &th.regs, &t.memory);
    let got: Vec<(u64, u64, Trust)> = walk.frames.iter().map(|f| (f.pc, f.sp, f.trust)).collect();
    assert_eq!(
        got,
        vec![
            (BASE + 0x1004, STACK, Trust::Context),
            (BASE + 0x1117, STACK + 8, Trust::Pdata),
            (BASE + 0x1460, STACK + 0x2038, Trust::Pdata),
            (OTHER + 0x123, STACK + 0x20a8, Trust::Pdata),
        ]
    );
    for (r, v) in POPPED {
        assert_eq!(walk.frames[3].regs.get(r), Some(v), "{r}");
    }
    // Volatile registers do not survive the calls.
    assert_eq!(walk.frames[3].regs.get(Reg::Rax), None);
    // other.dll has no file: no unwind info, rbp 5 is no frame, the scan runs off the stack.
    assert_eq!(walk.stop, StopReason::NoCaller);
}

#[test]
fn image_in_dump_memory_is_unwound_in_mapped_layout() {
    // No module file anywhere: the dump's memory holds the image as the loader mapped it.
    let file = msvc_dll();
    let pe = object::read::pe::PeFile64::parse(&*file).unwrap();
    let mut mapped = vec![0u8; SIZE as usize];
    let headers = pe
        .nt_headers()
        .optional_header
        .size_of_headers
        .get(object::LittleEndian);
    mapped[..headers as usize].copy_from_slice(&file[..headers as usize]);
    for s in pe.section_table().iter() {
        let va = s.virtual_address.get(object::LittleEndian) as usize;
        let raw = s.pointer_to_raw_data.get(object::LittleEndian) as usize;
        let len = (s.size_of_raw_data.get(object::LittleEndian) as usize)
            .min(s.virtual_size.get(object::LittleEndian) as usize);
        mapped[va..va + len].copy_from_slice(&file[raw..raw + len]);
    }
    let mut bytes = Dump::default().build();
    // Rebuild with the image in a Memory64 list.
    let stack = stack_image();
    let ctx = thread_context();
    let mut b = DumpBuilder::new();
    b.system_info(9);
    b.thread_list(&[(TID, STACK, &stack, &ctx)]);
    b.module_list(&[
        (BASE, SIZE, 0, STAMP, "C:\\nowhere\\msvc.dll", &[]),
        (OTHER, 0x1000, 0, 1, "C:\\Windows\\other.dll", &[]),
    ]);
    b.memory64_list(&[
        (BASE, &mapped[..0x3000]),
        (BASE + 0x3000, &mapped[0x3000..]),
    ]);
    bytes.clear();
    bytes.extend(b.finish());
    let t = open(bytes, &LoadOptions::default());
    assert!(t.modules[0].located.is_none());
    let space = t.address_space();
    let walk = common::walk_all_ways(
        &StackWalker::default(),
        &space,
        &t.threads[0].regs,
        &t.memory,
    );
    let pcs: Vec<u64> = walk.frames.iter().map(|f| f.pc).collect();
    assert_eq!(
        pcs,
        vec![BASE + 0x1004, BASE + 0x1117, BASE + 0x1460, OTHER + 0x123]
    );
    assert!(walk.frames[1..].iter().all(|f| f.trust == Trust::Pdata));
    // Names from the mapped image's export table (the PDB and COFF data are not mapped).
    let symbols = t.symbols(&LoadOptions::default());
    let name = |a| {
        symbols
            .lookup(a)
            .and_then(|l| l.symbol)
            .map(|s| (s.name, s.offset))
    };
    assert_eq!(name(BASE + 0x1553), Some(("seh_except".into(), 0x33)));
    assert_eq!(name(BASE + 0x10d4), Some(("touch".into(), 0xd4)));
}

#[test]
fn module_file_must_match_the_dump_record() {
    let dir = module_dir("mismatch");
    let options = LoadOptions {
        module_dirs: vec![dir],
        ..LoadOptions::default()
    };
    let t = open(
        Dump {
            stamp: STAMP + 1,
            ..Dump::default()
        }
        .build(),
        &options,
    );
    assert!(t.modules[0].located.is_none() && t.modules[0].file.is_none());
    // Without unwind data frame 1 is found only by scanning (touch's return address is code).
    let space = t.address_space();
    let th = t.threads.iter().find(|th| th.id == u64::from(TID)).unwrap();
    let walk = common::walk_all_ways(&StackWalker::default(), &space, &th.regs, &t.memory);
    assert_eq!(walk.frames[1].pc, BASE + 0x1117);
    assert_eq!(walk.frames[1].trust, Trust::Scan);
}

fn symbol_at(t: &Target, options: &LoadOptions, rva: u64) -> Option<(String, u64)> {
    let s = t.symbols(options);
    let loc = s.lookup(BASE + rva)?;
    assert_eq!(loc.module, "msvc.dll");
    assert_eq!(loc.module_offset, rva);
    loc.symbol.map(|s| (s.name, s.offset))
}

#[test]
fn pdb_symbols_flat_directory_and_symbol_store() {
    let dir = module_dir("pdb");
    let store = temp_dir("store");
    let key = store
        .join("msvc.pdb")
        .join("D1D6610712BE53A04C4C44205044422E1");
    std::fs::create_dir_all(&key).unwrap();
    std::fs::copy(fixture_dir().join("msvc.pdb"), key.join("msvc.pdb")).unwrap();
    for symbols in [fixture_dir(), store] {
        let options = LoadOptions {
            module_dirs: vec![dir.clone()],
            symbol_dirs: vec![symbols.clone()],
        };
        let t = open(Dump::default().build(), &options);
        let at = |rva| symbol_at(&t, &options, rva);
        assert_eq!(
            at(0x1004),
            Some(("touch".into(), 4)),
            "{}",
            symbols.display()
        );
        assert_eq!(at(0x10d3), Some(("touch".into(), 0xd3)));
        // Past touch's 212 bytes: padding no procedure covers.
        assert_eq!(at(0x10d4), None);
        // A filter funclet: in the PDB, not among the exports.
        assert_eq!(at(0x1553), Some(("?filt$0@0@seh_except@@".into(), 3)));
        assert_eq!(at(0x1117), Some(("large_frame_16".into(), 0x27)));
    }
}

#[test]
fn exports_without_a_matching_pdb() {
    let dir = module_dir("exports");
    // The dump's CodeView GUID differs from the PDB's: the PDB must be refused.
    let mut guid = GUID;
    guid[0] ^= 1;
    for cv in [codeview(guid, 1, "msvc.pdb"), codeview(GUID, 2, "msvc.pdb")] {
        let options = LoadOptions {
            module_dirs: vec![dir.clone()],
            symbol_dirs: vec![fixture_dir()],
        };
        let t = open(
            Dump {
                cv,
                ..Dump::default()
            }
            .build(),
            &options,
        );
        let at = |rva| symbol_at(&t, &options, rva);
        assert_eq!(at(0x1004), Some(("touch".into(), 4)));
        // Nearest preceding export, as WinDbg without symbols.
        assert_eq!(at(0x10d4), Some(("touch".into(), 0xd4)));
        assert_eq!(at(0x1553), Some(("seh_except".into(), 0x33)));
    }
}

#[test]
fn pdb_found_through_the_files_codeview_record() {
    // No CodeView record in the dump (Wine writes none): the file's debug directory names it.
    let dir = module_dir("filecv");
    std::fs::copy(fixture_dir().join("msvc.pdb"), dir.join("msvc.pdb")).unwrap();
    let options = LoadOptions {
        module_dirs: vec![dir],
        ..LoadOptions::default()
    };
    let t = open(
        Dump {
            cv: Vec::new(),
            ..Dump::default()
        }
        .build(),
        &options,
    );
    assert!(t.modules[0].pe.as_ref().unwrap().codeview.is_none());
    assert_eq!(
        symbol_at(&t, &options, 0x1553),
        Some(("?filt$0@0@seh_except@@".into(), 3))
    );
}

#[test]
fn exception_stream_and_default_thread() {
    let t = open(
        Dump {
            with_exception: true,
            ..Dump::default()
        }
        .build(),
        &LoadOptions::default(),
    );
    let e = t.exception.as_ref().unwrap();
    assert_eq!(
        (e.thread_id, e.code, e.flags, e.address),
        (u64::from(TID), 0xc000_0005, 1, BASE + 0x1008)
    );
    assert_eq!(e.parameters, vec![1, 0xdead]);
    let ctx = e.context.as_ref().unwrap();
    assert_eq!((ctx.rip(), ctx.rsp()), (Some(BASE + 0x1008), Some(STACK)));
    // CONTEXT_CONTROL only: rax, rbp and xmm are unknown.
    assert_eq!(ctx.get(Reg::Rbp), None);
    assert_eq!(ctx.xmm(0), None);
    assert_eq!(t.default_thread().unwrap().id, u64::from(TID));
    // Without an exception the first thread is the default.
    let t = open(Dump::default().build(), &LoadOptions::default());
    assert_eq!(t.default_thread().unwrap().id, 0x99);
}

#[test]
fn context_flags_decide_what_is_known() {
    let mut gpr = [0u64; 16];
    for (i, g) in gpr.iter_mut().enumerate() {
        *g = 0x100 + i as u64;
    }
    let mut xmm = [0u128; 16];
    xmm[3] = 0x33;
    let cases: [(u32, usize); 6] = [
        (CONTEXT_FULL, 0x4d0),
        (CONTEXT_AMD64 | CONTEXT_CONTROL, 0x4d0),
        (CONTEXT_AMD64 | CONTEXT_INTEGER, 0x4d0),
        (
            CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_FLOATING_POINT,
            0x4d0,
        ),
        // Truncated after the GPRs: xmm unknown whatever the flags say.
        (CONTEXT_FULL, 0x100),
        // Truncated inside the GPRs (rip at 0xf8 is lost).
        (CONTEXT_FULL, 0xa0),
    ];
    for (flags, len) in cases {
        let ctx = context(flags, 0x4000, gpr, xmm);
        let mut b = DumpBuilder::new();
        b.thread_list(&[(1, 0, &[], &ctx[..len])]);
        let t = open(b.finish(), &LoadOptions::default());
        let r = &t.threads[0].regs;
        let amd64 = flags & CONTEXT_AMD64 != 0;
        let control = amd64 && flags & CONTEXT_CONTROL != 0;
        let integer = amd64 && flags & CONTEXT_INTEGER != 0;
        let fp = amd64 && flags & CONTEXT_FLOATING_POINT != 0 && len >= 0x2a0;
        assert_eq!(
            r.rip(),
            (control && len >= 0x100).then_some(0x4000),
            "{flags:#x} {len:#x}"
        );
        assert_eq!(r.rsp(), control.then_some(0x104), "{flags:#x} {len:#x}");
        assert_eq!(r.get(Reg::Rbp), (integer && len >= 0xa8).then_some(0x105));
        assert_eq!(r.get(Reg::Rax), integer.then_some(0x100));
        assert_eq!(r.get(Reg::R15), (integer && len >= 0xf8).then_some(0x10f));
        assert_eq!(r.xmm(3), fp.then_some(0x33));
        assert_eq!(r.xmm(0), fp.then_some(0));
    }
}

#[test]
fn memory_lists_overlaps_and_truncation() {
    let mut b = DumpBuilder::new();
    b.memory_list(&[(0x1000, &[1u8; 0x100]), (0x1080, &[2u8; 0x100])]);
    b.memory64_list(&[
        (0x3000, &[3u8; 0x10]),
        (0x3010, &[4u8; 0x10]),
        (0x5000, &[5u8; 0x40]),
    ]);
    let t = open(b.finish(), &LoadOptions::default());
    let m = &t.memory;
    // The first range listed wins where two overlap; the rest of the second still reads.
    assert_eq!(m.read_u64(0x1078).unwrap(), 0x0101_0101_0101_0101);
    assert_eq!(m.read_u64(0x10fc).unwrap(), 0x0202_0202_0101_0101);
    assert_eq!(m.read_u64(0x1178).unwrap(), 0x0202_0202_0202_0202);
    assert!(m.read_u64(0x117c).is_err());
    // Memory64 ranges follow each other in the file; adjacent ones read as one.
    assert_eq!(m.read_u64(0x300c).unwrap(), 0x0404_0404_0303_0303);
    assert_eq!(m.read_u64(0x5038).unwrap(), 0x0505_0505_0505_0505);
    assert!(m.read_u64(0x3020).is_err());
    // A last range whose size runs past the end of the file: its bytes in the file still read.
    let mut b = DumpBuilder::new();
    let base = (b.len() as u64).next_multiple_of(4) + 32;
    let mut s = 1u64.to_le_bytes().to_vec();
    s.extend_from_slice(&base.to_le_bytes());
    s.extend_from_slice(&0x7000u64.to_le_bytes());
    s.extend_from_slice(&0x1000u64.to_le_bytes());
    b.stream(MEMORY64_LIST, &s);
    b.put(&[6u8; 0x40]);
    let t = open(b.finish(), &LoadOptions::default());
    assert_eq!(t.memory.read_u64(0x7038).unwrap(), 0x0606_0606_0606_0606);
    assert!(t.memory.read_u64(0x703c).is_err());
}

#[test]
fn malformed_dumps_are_typed_errors() {
    let o = LoadOptions::default();
    assert!(matches!(
        Target::from_bytes(b"MDMP".to_vec(), &o),
        Err(TargetError::Malformed(_))
    ));
    assert!(matches!(
        Target::from_bytes(b"XXXX".to_vec(), &o),
        Err(TargetError::UnknownFormat)
    ));
    // A directory of 1000 entries in a small file.
    let mut bytes = DumpBuilder::new().finish();
    bytes[8..12].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        Target::from_bytes(bytes, &o),
        Err(TargetError::Malformed(_))
    ));
    // Not x64.
    let mut b = DumpBuilder::new();
    b.system_info(12);
    assert!(matches!(
        Target::from_bytes(b.finish(), &o),
        Err(TargetError::Unsupported(_))
    ));
    // Counts far beyond the streams, locations beyond the file: clipped, not trusted.
    let mut b = DumpBuilder::new();
    b.stream(THREAD_LIST, &u32::MAX.to_le_bytes());
    b.stream(MODULE_LIST, &u32::MAX.to_le_bytes());
    b.stream(MEMORY64_LIST, &[0xff; 16]);
    b.raw_directory_entry(MEMORY_LIST, 0xffff_ffff, 0xffff_fff0);
    let t = Target::from_bytes(b.finish(), &o).unwrap();
    assert!(t.threads.is_empty() && t.modules.is_empty() && t.memory.regions().is_empty());
}

#[test]
fn every_truncation_and_byte_flip_opens_or_fails_cleanly() {
    let dir = module_dir("fuzzish");
    let options = LoadOptions {
        module_dirs: vec![dir],
        ..LoadOptions::default()
    };
    let full = Dump {
        with_exception: true,
        ..Dump::default()
    }
    .build();
    let walker = StackWalker {
        max_frames: 64,
        ..StackWalker::default()
    };
    let check = |bytes: Vec<u8>| {
        if let Ok(t) = Target::from_bytes(bytes, &options) {
            let space = t.address_space();
            let symbols = t.symbols(&options);
            for th in &t.threads {
                let w = common::walk_all_ways(&walker, &space, &th.regs, &t.memory);
                assert!(w.frames.len() <= 64);
                for f in &w.frames {
                    let _ = symbols.lookup(f.pc);
                }
            }
        }
    };
    // Header and directory region byte by byte, the rest at a stride.
    for len in (0..full.len()).filter(|&n| n < 0x200 || n % 97 == 0) {
        check(full[..len].to_vec());
    }
    for i in (0..full.len()).filter(|&n| n < 0x400 || n % 61 == 0) {
        let mut b = full.clone();
        b[i] ^= 0xa5;
        check(b);
    }
}

#[test]
fn thread_ex_list_when_there_is_no_thread_list() {
    // MINIDUMP_THREAD_EX: MINIDUMP_THREAD plus a BackingStore descriptor (64 bytes).
    let mut b = DumpBuilder::new();
    let ctx = context(CONTEXT_FULL, 0x4242, [0x10; 16], [0; 16]);
    let (csize, crva) = b.put(&ctx);
    let (ssize, srva) = b.put(&[0x77; 32]);
    let mut s = 2u32.to_le_bytes().to_vec();
    for id in [5u32, 6] {
        let mut t = vec![0u8; 64];
        t[0..4].copy_from_slice(&id.to_le_bytes());
        t[24..32].copy_from_slice(&0x9000u64.to_le_bytes());
        t[32..36].copy_from_slice(&ssize.to_le_bytes());
        t[36..40].copy_from_slice(&srva.to_le_bytes());
        t[40..44].copy_from_slice(&csize.to_le_bytes());
        t[44..48].copy_from_slice(&crva.to_le_bytes());
        s.extend_from_slice(&t);
    }
    b.stream(8, &s);
    let t = open(b.finish(), &LoadOptions::default());
    let ids: Vec<u64> = t.threads.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![5, 6]);
    assert_eq!(t.threads[1].regs.rip(), Some(0x4242));
    // The thread's stack descriptor is memory too (both name the same range: read once).
    assert_eq!(t.memory.read_u64(0x9018).unwrap(), 0x7777_7777_7777_7777);
    assert!(t.memory.read_u64(0x9020).is_err());
}

#[test]
fn module_list_is_capped() {
    // 10000 records (the module map and file search cost per module): the first 4096 are read.
    // Each names the file's first bytes as its name (a "string" as long as the file) and
    // CodeView record: bounded per module, so memory stays far below 10000 copies of the file.
    let mut b = DumpBuilder::new();
    let mut s = 10_000u32.to_le_bytes().to_vec();
    for i in 0..10_000u64 {
        let mut m = vec![0u8; 108];
        m[0..8].copy_from_slice(&(0x1_0000_0000 + i * 0x10000).to_le_bytes());
        m[8..12].copy_from_slice(&0x1000u32.to_le_bytes());
        m[76..80].copy_from_slice(&u32::MAX.to_le_bytes());
        s.extend_from_slice(&m);
    }
    b.stream(MODULE_LIST, &s);
    let t = open(b.finish(), &LoadOptions::default());
    assert_eq!(t.modules.len(), 4096);
    assert!(t.modules.iter().all(|m| m.path.len() <= 3 * 2048));
    assert_eq!(t.address_space().len(), 4096);
}

#[test]
fn thread_list_is_capped() {
    // 70000 thread records sharing one context: the first 65536 are read.
    let mut b = DumpBuilder::new();
    let ctx = context(CONTEXT_FULL, 0x4242, [0x10; 16], [0; 16]);
    let (csize, crva) = b.put(&ctx);
    let mut s = 70_000u32.to_le_bytes().to_vec();
    for id in 0..70_000u32 {
        let mut t = [0u8; 48];
        t[0..4].copy_from_slice(&id.to_le_bytes());
        t[40..44].copy_from_slice(&csize.to_le_bytes());
        t[44..48].copy_from_slice(&crva.to_le_bytes());
        s.extend_from_slice(&t);
    }
    b.stream(THREAD_LIST, &s);
    let t = open(b.finish(), &LoadOptions::default());
    assert_eq!(t.threads.len(), 65536);
    assert_eq!(t.threads[65535].regs.rip(), Some(0x4242));
}

#[test]
fn damaged_pdbs_fall_back_to_exports() {
    // Truncated and overwritten copies of msvc.pdb: each either still matches and names the
    // filter funclet, or is refused and the exports name the address; never a panic.
    let pdb = std::fs::read(fixture_dir().join("msvc.pdb")).unwrap();
    let dir = module_dir("damaged");
    let syms = temp_dir("damaged-syms");
    let mut damaged: Vec<Vec<u8>> = [0x20, 0x400, 0x1000, 0x3000, pdb.len() / 2]
        .iter()
        .map(|&n| pdb[..n].to_vec())
        .collect();
    for page in [1usize, 2, 3, 5, 8, 13] {
        let mut p = pdb.clone();
        let at = (page * 0x1000).min(p.len() - 0x100);
        p[at..at + 0x100].fill(0xff);
        damaged.push(p);
    }
    for bytes in damaged {
        std::fs::write(syms.join("msvc.pdb"), &bytes).unwrap();
        let options = LoadOptions {
            module_dirs: vec![dir.clone()],
            symbol_dirs: vec![syms.clone()],
        };
        let t = open(Dump::default().build(), &options);
        let got = symbol_at(&t, &options, 0x1553);
        assert!(
            got == Some(("?filt$0@0@seh_except@@".into(), 3))
                || got == Some(("seh_except".into(), 0x33)),
            "{got:?}"
        );
    }
}

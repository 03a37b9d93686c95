//! The gdb oracle: our C/C++ programs (corpus/fixtures/linux), built here with gcc at several
//! optimisation and frame-pointer settings, are stopped under gdb at a known breakpoint and
//! `gcore`d; gdb's own backtrace of the live process (frame pcs from its Python API) must equal
//! our walk of the core file frame by frame.
//!
//! Needs gcc, g++ and gdb. Without them the tests skip with a message, unless
//! XUNWIND_REQUIRE_CORPUS is set, when they fail.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;
use xunwind::{LoadOptions, StackWalker, StopReason, Target, Trust};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus/fixtures/linux")
}

/// Whether the tools are here; panics under XUNWIND_REQUIRE_CORPUS when they are not.
fn have_tools() -> bool {
    for tool in ["gcc", "g++", "gdb"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some() {
                panic!("{tool} is missing and XUNWIND_REQUIRE_CORPUS is set");
            }
            eprintln!("skipping the gdb oracle: {tool} is missing");
            return false;
        }
    }
    true
}

fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("linux_gdb")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Compiles `sources` (C, or C++ for .cpp) into `dir/out` with `flags` (plus -g).
fn build(dir: &Path, out: &str, sources: &[&str], flags: &[&str], extra: &[String]) -> PathBuf {
    let cxx = sources.iter().any(|s| s.ends_with(".cpp"));
    let exe = dir.join(out);
    let mut c = Command::new(if cxx { "g++" } else { "gcc" });
    c.args(flags).arg("-g").arg("-o").arg(&exe);
    for s in sources {
        c.arg(fixtures().join(s));
    }
    c.args(extra);
    run(&mut c);
    exe
}

/// Runs `exe args` under gdb to `breakpoint`, writes `core`, and returns gdb's frame pcs of
/// the stopped thread.
fn gdb_oracle(exe: &Path, args: &[&str], breakpoint: &str, core: &Path) -> Vec<(u64, String)> {
    gdb_oracle_threads(exe, args, breakpoint, core)
        .swap_remove(0)
        .1
}

/// As [`gdb_oracle`], for every thread: (LWP id, frames), the stopped thread first.
///
/// gdb also shows frames that are not on the stack: functions inlined into a frame (from DWARF
/// debug info, when the system has it) and tail-call frames it infers from call-site records.
/// No unwinder can recover those from registers and memory, so they are left out (and counted).
fn gdb_oracle_threads(
    exe: &Path,
    args: &[&str],
    breakpoint: &str,
    core: &Path,
) -> Vec<(u64, Vec<(u64, String)>)> {
    let script = exe.with_extension("gdb");
    std::fs::write(
        &script,
        format!(
            "set pagination off\nset confirm off\nset debuginfod enabled off\n\
             set backtrace past-main on\nset backtrace past-entry on\n\
             handle SIGSEGV nostop noprint pass\nhandle SIGUSR1 nostop noprint pass\n\
             break {breakpoint}\nrun {args}\ngcore {core}\n\
             python\nsel = gdb.selected_thread()\n\
             ths = [sel] + [t for t in gdb.selected_inferior().threads() if t.num != sel.num]\n\
             for t in ths:\n    t.switch()\n    print('XUTHREAD %d' % t.ptid[1])\n    \
             f = gdb.newest_frame()\n    n = 0\n    while f is not None and n < 64:\n        \
             virtual = f.type() in (gdb.INLINE_FRAME, gdb.TAILCALL_FRAME)\n        \
             print('%s %#x %s' % ('XUVIRT' if virtual else 'XUPC', f.pc(), f.name()))\n        \
             f = f.older()\n        n += 1\nend\n\
             kill\n",
            args = args.join(" "),
            core = core.display(),
        ),
    )
    .unwrap();
    let out = run(Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&script)
        .arg(exe));
    let mut threads: Vec<(u64, Vec<(u64, String)>)> = Vec::new();
    for l in out.lines() {
        if let Some(id) = l.strip_prefix("XUTHREAD ") {
            threads.push((id.trim().parse().unwrap(), Vec::new()));
        } else if let (Some(l), Some(t)) = (l.strip_prefix("XUPC 0x"), threads.last_mut()) {
            let (pc, name) = l.split_once(' ').unwrap_or((l, ""));
            t.1.push((u64::from_str_radix(pc, 16).unwrap(), name.to_string()));
        }
    }
    let virtual_frames = out.lines().filter(|l| l.starts_with("XUVIRT ")).count();
    if virtual_frames > 0 {
        eprintln!(
            "{}: gdb shows {virtual_frames} inlined/tail-call frames, left out",
            exe.display()
        );
    }
    assert!(
        threads.first().is_some_and(|t| t.1.len() >= 2) && core.exists(),
        "gdb did not stop or write {}:\n{out}",
        core.display()
    );
    threads
}

/// Walks the core's default thread and compares with gdb frame by frame; returns the number of
/// frames compared.
fn compare(label: &str, core: &Path, gdb: &[(u64, String)]) -> usize {
    compare_thread(label, core, gdb, None, "main")
}

/// Walks thread `id` (default: the core's default thread) and compares with gdb frame by frame,
/// through the frame named `anchor` at least.
fn compare_thread(
    label: &str,
    core: &Path,
    gdb: &[(u64, String)],
    id: Option<u64>,
    anchor: &str,
) -> usize {
    let target = Target::open(core, &LoadOptions::default()).unwrap();
    let thread = match id {
        Some(id) => target.threads.iter().find(|t| t.id == id).unwrap(),
        None => target.default_thread().unwrap(),
    };
    let space = target.address_space();
    let walk = common::walk_all_ways(
        &StackWalker::default(),
        &space,
        &thread.regs,
        &target.memory,
    );
    let ours: Vec<u64> = walk.frames.iter().map(|f| f.pc).collect();
    let report = || {
        let mut s = format!("{label}: stop {:?}\n  gdb / ours:\n", walk.stop);
        for i in 0..gdb.len().max(ours.len()) {
            s += &format!(
                "  #{i:<2} {:>18} {:>18} {:?}  {}\n",
                gdb.get(i).map_or("-".into(), |g| format!("{:#x}", g.0)),
                ours.get(i).map_or("-".into(), |p| format!("{p:#x}")),
                walk.frames.get(i).map(|f| f.trust),
                gdb.get(i).map_or("", |g| g.1.as_str()),
            );
        }
        s
    };
    let main = gdb
        .iter()
        .position(|g| g.1 == anchor)
        .unwrap_or_else(|| panic!("gdb shows no {anchor}\n{}", report()));
    let n = gdb.len().min(ours.len());
    assert!(n > main, "our walk ends before {anchor}\n{}", report());
    for i in 0..n {
        assert_eq!(ours[i], gdb[i].0, "frame {i} differs\n{}", report());
    }
    // Every frame up to main came from CFI: the match is not a frame-pointer or scan accident.
    for f in &walk.frames[1..=main] {
        assert_eq!(f.trust, Trust::Cfi, "{}", report());
    }
    // Our ELF symbols name the frames of our own program and library as gdb does (plain C names:
    // gdb demangles C++). Return addresses belong to the call before them.
    let symbols = target.symbols(&LoadOptions::default());
    let exe_name = core.file_name().unwrap().to_string_lossy();
    let mut named = 0;
    for (i, (pc, name)) in gdb.iter().enumerate().take(n) {
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let at = if i == 0 || gdb[i - 1].1 == "__restore_rt" {
            *pc
        } else {
            pc - 1
        };
        let Some(loc) = symbols.lookup(at) else {
            continue;
        };
        if plain && (exe_name.starts_with(loc.module) || loc.module == "libxu.so") {
            let ours = loc.symbol.map(|s| s.name);
            assert_eq!(
                ours.as_deref(),
                Some(name.as_str()),
                "frame {i}\n{}",
                report()
            );
            named += 1;
        }
    }
    assert!(
        named >= 1,
        "no frame of our program was named\n{}",
        report()
    );
    // Both reach the outermost frame (_start, clone3), where the CFI ends the stack.
    assert_eq!(ours.len(), gdb.len(), "{}", report());
    assert_eq!(walk.stop, StopReason::EndOfStack, "{}", report());
    eprintln!("{label}: {n} frames equal to gdb's ({anchor} is #{main})");
    n
}

#[test]
fn gdb_chain() {
    if !have_tools() {
        return;
    }
    let dir = work_dir("chain");
    let mut total = 0;
    for (tag, flags) in [
        ("O0", &["-O0"][..]),
        ("O0-nofp", &["-O0", "-fomit-frame-pointer"][..]),
        ("O2", &["-O2", "-fno-omit-frame-pointer"][..]),
        ("O2-nofp", &["-O2", "-fomit-frame-pointer"][..]),
        // Linked at a fixed address: load bias 0, symbols at 0x400000 and up.
        ("O2-nopie", &["-O2", "-no-pie"][..]),
    ] {
        let exe = build(&dir, &format!("chain-{tag}"), &["chain.c"], flags, &[]);
        // At the first instruction (CFA = rsp+8) and after the prologue.
        for (bp, bptag) in [("*stop_here", "entry"), ("stop_here", "body")] {
            let core = dir.join(format!("chain-{tag}-{bptag}.core"));
            let gdb = gdb_oracle(&exe, &[], bp, &core);
            total += compare(&format!("chain {tag} {bptag}"), &core, &gdb);
        }
    }
    eprintln!("chain: {total} frames compared over 10 cores");
}

#[test]
fn gdb_signal_handler() {
    if !have_tools() {
        return;
    }
    let dir = work_dir("signal");
    let mut total = 0;
    for (tag, flags) in [
        ("O0", &["-O0"][..]),
        ("O2-nofp", &["-O2", "-fomit-frame-pointer"][..]),
    ] {
        let exe = build(&dir, &format!("signal-{tag}"), &["signal.c"], flags, &[]);
        for mode in ["segv", "usr1"] {
            let core = dir.join(format!("signal-{tag}-{mode}.core"));
            let gdb = gdb_oracle(&exe, &[mode], "stop_here", &core);
            assert!(
                gdb.iter().any(|g| g.1 == "faulter"),
                "gdb shows no interrupted frame: {gdb:?}"
            );
            total += compare(&format!("signal {tag} {mode}"), &core, &gdb);
        }
    }
    eprintln!("signal: {total} frames compared over 4 cores");
}

#[test]
fn gdb_shared_library() {
    if !have_tools() {
        return;
    }
    let dir = work_dir("shlib");
    let mut total = 0;
    for (tag, flags) in [
        ("O0", &["-O0"][..]),
        ("O2-nofp", &["-O2", "-fomit-frame-pointer"][..]),
    ] {
        let sub = dir.join(tag);
        std::fs::create_dir_all(&sub).unwrap();
        let mut lib_flags = flags.to_vec();
        lib_flags.extend(["-shared", "-fPIC"]);
        build(&sub, "libxu.so", &["libxu.c"], &lib_flags, &[]);
        let exe = build(
            &sub,
            "shlib",
            &["shlib.c"],
            flags,
            &[
                format!("-L{}", sub.display()),
                "-lxu".into(),
                format!("-Wl,-rpath,{}", sub.display()),
            ],
        );
        let core = sub.join("shlib.core");
        let gdb = gdb_oracle(&exe, &[], "stop_here", &core);
        assert!(gdb.iter().any(|g| g.1 == "lib_inner"), "{gdb:?}");
        total += compare(&format!("shlib {tag}"), &core, &gdb);
    }
    eprintln!("shlib: {total} frames compared over 2 cores");
}

#[test]
fn gdb_cxx() {
    if !have_tools() {
        return;
    }
    let dir = work_dir("cxx");
    let mut total = 0;
    for (tag, flags) in [
        ("O0", &["-O0"][..]),
        ("O2-nofp", &["-O2", "-fomit-frame-pointer"][..]),
    ] {
        let exe = build(&dir, &format!("cxx-{tag}"), &["cxx.cpp"], flags, &[]);
        let core = dir.join(format!("cxx-{tag}.core"));
        let gdb = gdb_oracle(&exe, &[], "stop_here", &core);
        total += compare(&format!("cxx {tag}"), &core, &gdb);
    }
    eprintln!("cxx: {total} frames compared over 2 cores");
}

#[test]
fn gdb_threads() {
    if !have_tools() {
        return;
    }
    let dir = work_dir("threads");
    let exe = build(&dir, "threads", &["threads.c"], &["-O2", "-pthread"], &[]);
    let core = dir.join("threads.core");
    let gdb = gdb_oracle_threads(&exe, &[], "stop_here", &core);
    assert_eq!(gdb.len(), 4, "{gdb:?}");
    let target = Target::open(&core, &LoadOptions::default()).unwrap();
    assert_eq!(target.threads.len(), 4);
    let mut total = 0;
    for (id, frames) in &gdb {
        let anchor = ["main", "stopper", "waiter", "sleeper"]
            .into_iter()
            .find(|a| frames.iter().any(|f| f.1 == *a))
            .unwrap_or_else(|| panic!("thread {id}: {frames:?}"));
        total += compare_thread(&format!("thread {id}"), &core, frames, Some(*id), anchor);
    }
    eprintln!("threads: {total} frames compared over 4 threads");
}

/// Demangling against gdb: every frame of our C++ program is named by our demangled ELF symbol
/// exactly as gdb names it (`ns::Box<int>::get`: gdb's short form, from its debug info), with
/// the linkage name kept; a constructor, an operator, a function template, a const member of a
/// class template and an anonymous namespace each have a frame (corpus/fixtures/linux/names.cpp).
#[test]
fn gdb_cxx_demangled_names() {
    if !have_tools() {
        return;
    }
    let dir = work_dir("names");
    let mut total = 0;
    for (tag, flags) in [
        ("O0", &["-O0"][..]),
        ("O2-nofp", &["-O2", "-fomit-frame-pointer"][..]),
    ] {
        let exe = build(&dir, &format!("names-{tag}"), &["names.cpp"], flags, &[]);
        let core = dir.join(format!("names-{tag}.core"));
        let gdb = gdb_oracle(&exe, &[], "stop_here", &core);
        compare(&format!("names {tag}"), &core, &gdb);
        let target = Target::open(&core, &LoadOptions::default()).unwrap();
        let symbols = target.symbols(&LoadOptions::default());
        let exe_name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let mut demangled = Vec::new();
        for (i, (pc, name)) in gdb.iter().enumerate() {
            let at = if i == 0 { *pc } else { pc - 1 };
            let Some(loc) = symbols.lookup(at).filter(|l| l.module == exe_name) else {
                continue;
            };
            let sym = loc
                .symbol
                .unwrap_or_else(|| panic!("{tag} frame {i} ({name}) has no symbol"));
            assert_eq!(&sym.name, name, "{tag} frame {i}: {sym:?}");
            if let Some(m) = &sym.mangled {
                assert!(m.starts_with("_Z"), "{tag} frame {i}: {sym:?}");
                demangled.push(sym.name.clone());
            } else {
                assert!(!sym.name.contains("::"), "{tag} frame {i}: {sym:?}");
            }
        }
        assert_eq!(
            demangled,
            [
                "ns::operator+",
                "(anonymous namespace)::helper",
                "ns::Box<int>::get",
                "ns::twice<int>",
                "ns::Klass::operator()",
                "ns::Klass::Klass",
            ],
            "{tag}: {gdb:?}"
        );
        total += demangled.len();
    }
    eprintln!("names: {total} demangled frames equal to gdb's names over 2 cores");
}

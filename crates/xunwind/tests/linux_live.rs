//! A live process (feature `live`): a C program of ours, built here with gcc, blocks in a known
//! call chain (main → a → b → c → pause); we attach with ptrace, walk its main thread with
//! memory read through `process_vm_readv`, and name the frames from its ELF symbol table.
//!
//! Needs gcc (missing: fails under XUNWIND_REQUIRE_CORPUS, else skips) and permission to
//! ptrace a child (refused by Yama or a container: skips unless XUNWIND_REQUIRE_CORPUS and
//! XUNWIND_REQUIRE_PTRACE are both set, when it fails).
#![cfg(feature = "live")]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use xunwind::{LiveError, LiveProcess, LoadOptions, MemoryReader, StackWalker, StopReason};

/// Two threads: the leader sleeps in main, a second one blocks in worker → a → b → c.
const THREADED: &str = r#"
#include <pthread.h>
#include <unistd.h>
__attribute__((noinline, noclone)) void c(void) {
    if (write(1, "c", 1) != 1) _exit(2);
    for (;;) pause();
}
__attribute__((noinline, noclone)) void b(void) { c(); __asm__ volatile(""); }
__attribute__((noinline, noclone)) void a(void) { b(); __asm__ volatile(""); }
void *worker(void *p) { a(); return p; }
int main(void) {
    pthread_t t;
    if (pthread_create(&t, 0, worker, 0)) return 1;
    for (;;) pause();
}
"#;

const PROGRAM: &str = r#"
#include <unistd.h>
int depth;
__attribute__((noinline, noclone)) void c(void) {
    depth = 3;
    /* Tell the test we are here, then block for good. */
    if (write(1, "c", 1) != 1) _exit(2);
    for (;;) pause();
}
__attribute__((noinline, noclone)) void b(void) { depth = 2; c(); depth = 20; }
__attribute__((noinline, noclone)) void a(void) { depth = 1; b(); depth = 10; }
int main(void) { a(); return depth; }
"#;

fn have_gcc() -> bool {
    let ok = Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some() {
            panic!("gcc is missing and XUNWIND_REQUIRE_CORPUS is set");
        }
        eprintln!("skipping the live-process test: gcc is missing");
    }
    ok
}

fn work_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("linux_live")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(dir: &Path, program: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join("chain.c");
    std::fs::write(&src, program).unwrap();
    let exe = dir.join("chain");
    let out = Command::new("gcc")
        .args(flags)
        .arg("-g")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-pthread")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Kills and reaps the child on every path (declared before the `LiveProcess`, so dropped
/// after it has detached).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a refusal to ptrace is a skip (true) or a failure (panics).
fn ptrace_refused(e: &LiveError) -> bool {
    let required = std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some()
        && std::env::var_os("XUNWIND_REQUIRE_PTRACE").is_some();
    if e.is_permission_denied() && !required {
        eprintln!(
            "skipping the live-process test: ptrace is not permitted here ({e}); \
             set XUNWIND_REQUIRE_CORPUS=1 and XUNWIND_REQUIRE_PTRACE=1 to make this a failure"
        );
        return true;
    }
    panic!("attach failed: {e}");
}

fn walk_chain(name: &str, flags: &[&str]) {
    if !have_gcc() {
        return;
    }
    let dir = work_dir(name);
    let exe = build(&dir, PROGRAM, flags);
    let mut child = Kill(Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap());
    let mut byte = [0u8; 1];
    child
        .0
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut byte)
        .expect("the child never reached c");
    assert_eq!(&byte, b"c");

    let live = match LiveProcess::attach(child.0.id()) {
        Ok(l) => l,
        Err(e) if ptrace_refused(&e) => return,
        Err(_) => unreachable!(),
    };
    assert_eq!(live.threads().len(), 1, "{live:?}");
    assert_eq!(live.threads()[0].id, u64::from(child.0.id()));
    assert!(live.stopped_threads() >= 1);

    // The module list names our program, mapped at an ELF header, with its file read.
    let exe_name = exe.file_name().unwrap().to_str().unwrap();
    let m = live
        .target()
        .modules
        .iter()
        .find(|m| m.name == exe_name)
        .unwrap_or_else(|| panic!("{exe_name} not among {:?}", live.target().modules));
    assert!(m.file.is_some());
    let mut magic = [0u8; 4];
    live.memory().read(m.base, &mut magic).unwrap();
    assert_eq!(&magic, b"\x7fELF");
    assert!(
        live.target()
            .modules
            .iter()
            .any(|m| m.name.starts_with("libc")),
        "no libc among {:?}",
        live.target().modules
    );

    let space = live.address_space();
    let symbols = live.symbols(&LoadOptions::default());
    let (walk, names) = walk_thread(&live, &space, &symbols, 0);
    let ci = names
        .iter()
        .position(|n| n == "c")
        .unwrap_or_else(|| panic!("no frame in c: {names:?}"));
    assert_eq!(
        names.get(ci..ci + 4),
        Some(&["c", "b", "a", "main"].map(String::from)[..]),
        "frames: {names:?}"
    );
    assert!(
        walk.stop == StopReason::EndOfStack || names.last().is_some_and(|n| n == "_start"),
        "walk ended with {:?} at {:?}",
        walk.stop,
        names.last()
    );
    eprintln!("{name}: {names:?} ({:?})", walk.stop);
    drop(symbols);
    drop(space);
    live.detach();

    // Detached: the child runs on into pause() (a tracee left stopped would stay in 't').
    let stat = format!("/proc/{}/stat", child.0.id());
    let state = (0..200)
        .map(|_| {
            let s = std::fs::read_to_string(&stat).unwrap();
            let state = s.rsplit(')').next().unwrap().trim_start().chars().next();
            std::thread::sleep(std::time::Duration::from_millis(10));
            state
        })
        .find(|s| *s == Some('S'));
    assert!(state.is_some(), "{stat}: never back asleep after detach");
}

/// Walks thread `i` and names its frames (return addresses looked up at pc - 1).
fn walk_thread(
    live: &LiveProcess,
    space: &xunwind::AddressSpace<'_>,
    symbols: &xunwind::Symbols<'_>,
    i: usize,
) -> (xunwind::Walk, Vec<String>) {
    let walk = StackWalker::default().walk(space, &live.threads()[i].regs, live.memory());
    let names = walk
        .frames
        .iter()
        .map(|f| {
            symbols
                .lookup(f.pc.wrapping_sub(u64::from(f.trust != xunwind::Trust::Context)))
                .and_then(|l| l.symbol)
                .map_or_else(|| format!("?{:#x}", f.pc), |s| s.name)
        })
        .collect();
    (walk, names)
}

/// Every thread is stopped and walked: the leader is in main, the second thread in its chain.
#[test]
fn live_walk_two_threads() {
    if !have_gcc() {
        return;
    }
    let dir = work_dir("threads");
    let exe = build(&dir, THREADED, &["-O1"]);
    let mut child = Kill(Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap());
    let mut byte = [0u8; 1];
    let out = child.0.stdout.as_mut().unwrap();
    out.read_exact(&mut byte)
        .expect("the worker never reached c");
    let live = match LiveProcess::attach(child.0.id()) {
        Ok(l) => l,
        Err(e) if ptrace_refused(&e) => return,
        Err(_) => unreachable!(),
    };
    assert_eq!(live.threads().len(), 2, "{live:?}");
    assert_eq!(live.stopped_threads(), 2);
    assert_eq!(live.threads()[0].id, u64::from(child.0.id()));
    assert_ne!(live.threads()[1].id, live.threads()[0].id);
    let space = live.address_space();
    let symbols = live.symbols(&LoadOptions::default());
    let (_, leader) = walk_thread(&live, &space, &symbols, 0);
    assert!(leader.iter().any(|n| n == "main"), "leader: {leader:?}");
    assert!(!leader.iter().any(|n| n == "c"), "leader: {leader:?}");
    let (walk, worker) = walk_thread(&live, &space, &symbols, 1);
    let ci = worker
        .iter()
        .position(|n| n == "c")
        .unwrap_or_else(|| panic!("no frame in c: {worker:?}"));
    assert_eq!(
        worker.get(ci..ci + 4),
        Some(&["c", "b", "a", "worker"].map(String::from)[..]),
        "worker: {worker:?} ({:?})",
        walk.stop
    );
    eprintln!(
        "threads: leader {leader:?}, worker {worker:?} ({:?})",
        walk.stop
    );
}

#[test]
fn live_walk_o0() {
    walk_chain("o0", &["-O0"]);
}

#[test]
fn live_walk_o2_no_frame_pointer() {
    walk_chain(
        "o2",
        &["-O2", "-fomit-frame-pointer", "-fno-optimize-sibling-calls"],
    );
}

#[test]
fn attach_to_nothing_is_an_error() {
    // Pid 0 is never a process; a pid past the kernel's limit has no /proc entry.
    assert!(matches!(LiveProcess::attach(0), Err(LiveError::BadPid(0))));
    assert!(matches!(
        LiveProcess::attach(i32::MAX as u32),
        Err(LiveError::Io(..))
    ));
}

/// Blocks in the pause system call with known values in xmm7 (reloaded before every pause) and
/// xmm15: the kernel keeps a thread's FPU state across a system call.
const XMM: &str = r#"
#include <unistd.h>
int main(void) {
    if (write(1, "x", 1) != 1) _exit(2);
    for (;;)
        __asm__ volatile(
            "movq %0, %%xmm7\n\tpinsrq $1, %1, %%xmm7\n\t"
            "movq %1, %%xmm15\n\t"
            "mov $34, %%eax\n\tsyscall"
            :: "r"(0x1122334455667788ULL), "r"(0x99aabbccddeeff00ULL)
            : "rax", "rcx", "r11", "xmm7", "xmm15", "memory");
}
"#;

/// A live thread's xmm registers are read (glibc targets): xmm7 and xmm15 hold what the
/// program put there.
#[cfg(target_env = "gnu")]
#[test]
fn live_threads_have_xmm_registers() {
    if !have_gcc() {
        return;
    }
    let dir = work_dir("xmm");
    let exe = build(&dir, XMM, &["-O1", "-msse4.1"]);
    let mut child = Kill(Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap());
    let mut byte = [0u8; 1];
    let out = child.0.stdout.as_mut().unwrap();
    out.read_exact(&mut byte).expect("the child never started");
    // Past the write: give it time to load the registers and enter pause.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let live = match LiveProcess::attach(child.0.id()) {
        Ok(l) => l,
        Err(e) if ptrace_refused(&e) => return,
        Err(_) => unreachable!(),
    };
    let regs = &live.threads()[0].regs;
    assert_eq!(
        regs.xmm(7),
        Some(0x99aa_bbcc_ddee_ff00_1122_3344_5566_7788),
        "{regs:?}"
    );
    assert_eq!(regs.xmm(15), Some(0x99aa_bbcc_ddee_ff00), "{regs:?}");
    live.detach();
}

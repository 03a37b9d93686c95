//! `xunwind stack --pid`: a C program of ours, built here with gcc, blocks in a known call
//! chain (main → a → b → c → pause); the command stops it, walks its main thread, names the
//! frames from the program's symbol table (human and JSON forms of CONFORMANCE section 5) and
//! lets it run on.
//!
//! Needs gcc (missing: fails under XUNWIND_REQUIRE_CORPUS, else skips) and permission to ptrace
//! (the program allows any tracer with PR_SET_PTRACER; refused anyway, e.g. in a container, the
//! test skips unless XUNWIND_REQUIRE_CORPUS and XUNWIND_REQUIRE_PTRACE are both set).
#![cfg(all(feature = "live", target_os = "linux"))]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const PROGRAM: &str = r#"
#include <sys/prctl.h>
#include <unistd.h>
int depth;
__attribute__((noinline, noclone)) void c(void) {
    depth = 3;
    if (write(1, "c", 1) != 1) _exit(2);
    for (;;) pause();
}
__attribute__((noinline, noclone)) void b(void) { depth = 2; c(); depth = 20; }
__attribute__((noinline, noclone)) void a(void) { depth = 1; b(); depth = 10; }
int main(void) {
    /* The test's xunwind is a sibling, not our parent: let it trace us where Yama asks. */
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    a();
    return depth;
}
"#;

/// Kills the child when the test ends, however it ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs xunwind; `None` when ptrace was refused and that is a skip.
fn xunwind(args: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_xunwind"))
        .args(args)
        .output()
        .expect("run xunwind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let required = std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_some()
        && std::env::var_os("XUNWIND_REQUIRE_PTRACE").is_some();
    if !out.status.success() && stderr.contains("ptrace") && stderr.contains("not permitted") {
        assert!(!required, "xunwind {args:?}: {stderr}");
        eprintln!("skipping: ptrace is not permitted here ({stderr})");
        return None;
    }
    assert!(out.status.success(), "xunwind {args:?}: {stderr}");
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn stack_of_a_live_process() {
    let gcc = Command::new("gcc").arg("--version").output();
    if !gcc.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
            "gcc is missing and XUNWIND_REQUIRE_CORPUS is set"
        );
        eprintln!("skipping: gcc is missing");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stack_live");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("chain.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.join("chain");
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Kill(Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap());
    let mut byte = [0u8; 1];
    let out = child.0.stdout.as_mut().unwrap();
    out.read_exact(&mut byte)
        .expect("the child never reached c");
    let pid = child.0.id().to_string();

    let Some(human) = xunwind(&["stack", "--pid", &pid]) else {
        return;
    };
    // `NN chain!c+0x..`: the chain in order, then the end of the stack.
    let names: Vec<&str> = human
        .lines()
        .filter_map(|l| l.split_once(' ')?.1.strip_prefix("chain!"))
        .map(|s| s.split('+').next().unwrap())
        .collect();
    let at = names
        .iter()
        .position(|&n| n == "c")
        .unwrap_or_else(|| panic!("no frame in c:\n{human}"));
    assert_eq!(
        names.get(at..at + 4),
        Some(&["c", "b", "a", "main"][..]),
        "{human}"
    );
    assert!(
        human.lines().next().unwrap().starts_with("00 libc"),
        "{human}"
    );
    assert!(human.ends_with("-- end_of_stack\n"), "{human}");

    // The process runs on: a second attach, in JSON, gives the same frames.
    let json = xunwind(&["stack", "--pid", &pid, "--json", "--thread", "0"]).unwrap();
    let lines: Vec<&str> = json.lines().collect();
    assert!(lines[0].starts_with("{\"frame\":0,") && lines[0].contains("\"trust\":\"context\""));
    assert_eq!(*lines.last().unwrap(), "{\"end\":\"end_of_stack\"}");
    assert_eq!(lines.len(), human.lines().count(), "{json}");
    let chain = ["c", "b", "a", "main"].map(|n| format!("\"function\":\"{n}\""));
    let frame_c = human.lines().position(|l| l.contains(" chain!c+")).unwrap();
    for (l, n) in lines[frame_c..].iter().zip(&chain) {
        assert!(l.contains(n.as_str()), "{l}");
    }
    // A thread the process does not have is an error.
    let bad = Command::new(env!("CARGO_BIN_EXE_xunwind"))
        .args(["stack", "--pid", &pid, "--thread", "7"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no thread 7"));
}

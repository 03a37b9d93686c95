//! Helpers shared by the CLI tests.

use std::process::Command;

/// Runs the `xunwind` binary built for these tests; panics with its stderr unless it succeeds.
pub fn xunwind(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xunwind"))
        .args(args)
        .output()
        .expect("run xunwind");
    assert!(
        out.status.success(),
        "xunwind {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

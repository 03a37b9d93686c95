//! `xunwind dispatch VMLINUX --ip ADDR --json` against `xunwind extable VMLINUX --json`
//! (CONFORMANCE sections 4 and 6) on Debian's kernel: for entries of several types the fixup
//! line carries section 4's fields with the same values; insn+1 is an oops; a module ip
//! (`kvm-intel.ko:.text+0xOFF`) finds the module's entry. (Every entry is checked in-process by
//! crates/xunwind/tests/dispatch_kernel.rs; this covers the command line.) Skipped without the
//! corpus unless XUNWIND_REQUIRE_CORPUS is set.

mod common;

use common::xunwind;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kernel() -> Option<(PathBuf, Option<PathBuf>)> {
    let text = std::fs::read_to_string(repo().join("corpus/manifest-kernel")).ok()?;
    let root = repo().join("corpus/unpacked");
    let (mut v, mut kvm) = (None, None);
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() == 5 && f[0] == "kernel" {
            let p = root.join(f[1]).join(f[3]);
            if f[3].starts_with("boot/vmlinuz-") {
                v = Some(p);
            } else if f[3].ends_with("/kvm-intel.ko") {
                kvm = Some(p);
            }
        }
    }
    match v.filter(|p| p.exists()) {
        Some(v) => Some((v, kvm.filter(|p| p.exists()))),
        None => {
            assert!(
                std::env::var_os("XUNWIND_REQUIRE_CORPUS").is_none(),
                "kernel corpus missing: run corpus/fetch"
            );
            eprintln!("skipped: no kernel corpus (run corpus/fetch)");
            None
        }
    }
}

/// The raw JSON text of `key`'s value in one of our flat lines.
fn value<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    let rest = &line[at..];
    if rest.starts_with('[') {
        return &rest[..=rest.find(']').unwrap()];
    }
    if let Some(s) = rest.strip_prefix('"') {
        return &rest[..s.find('"').unwrap() + 2];
    }
    &rest[..rest.find([',', '}']).unwrap()]
}

#[test]
fn fixup_lines_carry_the_extable_fields() {
    let Some((vmlinuz, kvm)) = kernel() else {
        return;
    };
    let v = vmlinuz.to_str().unwrap();
    let table = xunwind(&["extable", v, "--json"]);
    // One entry of each of the first four types (each run decompresses the kernel again).
    let mut seen = Vec::new();
    let mut picks = Vec::new();
    for l in table.lines() {
        let t = value(l, "type").to_string();
        if !seen.contains(&t) && picks.len() < 4 {
            seen.push(t);
            picks.push(l.to_string());
        }
    }
    assert!(picks.len() >= 3, "{seen:?}");
    for want in &picks {
        let insn = value(want, "insn").trim_matches('"').to_string();
        let got = xunwind(&["dispatch", v, "--ip", &insn, "--json"]);
        let got = got.trim();
        assert_eq!(value(got, "kind"), "\"fixup\"");
        for k in [
            "insn",
            "fixup",
            "type",
            "type_code",
            "reg",
            "flags",
            "imm",
            "section",
        ] {
            assert_eq!(value(got, k), value(want, k), "{k}: {got} vs {want}");
        }
        let next = format!("{:#x}", u64::from_str_radix(&insn[2..], 16).unwrap() + 1);
        let oops = xunwind(&["dispatch", v, "--ip", &next, "--json"]);
        assert_eq!(
            oops.trim(),
            format!("{{\"kind\":\"oops\",\"ip\":\"{next}\"}}")
        );
    }
    // An oops with registers and (empty) stack memory: the ORC walk, here one frame, and a
    // System.map naming it.
    let dir = std::env::temp_dir().join(format!("xunwind-dispatch-oops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stack = dir.join("stack");
    std::fs::write(&stack, vec![0u8; 0x1000]).unwrap();
    let first = value(&picks[0], "insn").trim_matches('"').to_string();
    let ip = u64::from_str_radix(&first[2..], 16).unwrap() + 1;
    let map = dir.join("System.map");
    std::fs::write(&map, format!("{:x} t planted_symbol\n", ip - 0x10)).unwrap();
    let got = xunwind(&[
        "dispatch",
        v,
        "--ip",
        &format!("{ip:#x}"),
        "--rsp",
        "0xffffc90000000100",
        "--stack",
        &format!("{}@0xffffc90000000000", stack.display()),
        "--system-map",
        map.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        got.trim(),
        format!(
            "{{\"kind\":\"oops\",\"ip\":\"{ip:#x}\",\"stack\":[{{\"pc\":\"{ip:#x}\",\
             \"sp\":\"0xffffc90000000100\",\"function\":\"planted_symbol+0x10\",\
             \"trust\":\"context\"}}],\"end\":\"end_of_stack\"}}"
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(kvm) = kvm {
        let dir = std::env::temp_dir().join(format!("xunwind-dispatch-ko-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&kvm, dir.join("kvm-intel.ko")).unwrap();
        let first = xunwind(&["extable", kvm.to_str().unwrap(), "--json"]);
        let first = first.lines().next().unwrap();
        let ip = format!("kvm-intel.ko:{}", value(first, "insn").trim_matches('"'));
        let got = xunwind(&[
            "dispatch",
            v,
            "--modules",
            dir.to_str().unwrap(),
            "--ip",
            &ip,
            "--json",
        ]);
        for k in ["insn", "fixup", "type", "type_code", "section"] {
            assert_eq!(value(&got, k), value(first, k), "{k}: {got} vs {first}");
        }
        assert_eq!(value(&got, "module"), "\"kvm-intel.ko\"");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! A live Linux process (feature `live`): every thread stopped with ptrace, memory read with
//! `process_vm_readv`, modules from `/proc/PID/maps`.
//!
//! [`LiveProcess::attach`] seizes and interrupts every thread of the process, reads its
//! registers and builds a [`Target`] whose `memory` is empty: the stack walker reads memory
//! through [`LiveProcess::memory`] instead, so nothing is copied up front. The module list,
//! unwinders and symbols are the core-file reader's (the maps play the part of `NT_FILE`).
//! Threads are resumed when the [`LiveProcess`] is dropped.
//!
//! ptrace ties a tracee to the tracing *thread*: the [`LiveProcess`] must be used and dropped
//! on the thread that attached, which is why it is neither `Send` nor `Sync`.

use super::{FileMapping, MAX_VDSO, PR_REG_WORDS, USER_REGS, USER_RIP};
use crate::space::AddressSpace;
use crate::target::{LoadOptions, Platform, Symbols, Target, Thread};
use core::fmt;
use core::marker::PhantomData;
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::IoSliceMut;
use std::path::PathBuf;
use xunwind_core::{MemoryError, MemoryReader, RegionMemory, Regs};

/// Most threads attached (a process has far fewer; bounds the task-list passes).
const MAX_THREADS: usize = 1 << 16;
/// Passes over `/proc/PID/task` looking for threads created while attaching.
const MAX_TASK_PASSES: usize = 8;
/// Most wait reports taken while waiting for one thread to stop.
const MAX_WAITS: usize = 64;
/// Most lines of `/proc/PID/maps` used.
const MAX_MAPS: usize = 1 << 20;

/// Memory of a live process, read with `process_vm_readv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveMemory {
    /// The process id.
    pub pid: u32,
}

impl MemoryReader for LiveMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let err = MemoryError {
            addr,
            len: buf.len() as u64,
        };
        if buf.is_empty() {
            return Ok(());
        }
        let (Ok(base), Ok(pid)) = (usize::try_from(addr), i32::try_from(self.pid)) else {
            return Err(err);
        };
        if base.checked_add(buf.len()).is_none() {
            return Err(err);
        }
        let remote = [RemoteIoVec {
            base,
            len: buf.len(),
        }];
        let want = buf.len();
        let mut local = [IoSliceMut::new(buf)];
        // A short read means part of the range is unmapped: no partial results.
        match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
            Ok(n) if n == want => Ok(()),
            _ => Err(err),
        }
    }
}

/// Why a live process could not be attached to.
#[derive(Debug)]
#[non_exhaustive]
pub enum LiveError {
    /// A ptrace or wait call failed on a thread (`PermissionDenied`: Yama, a container, or
    /// another tracer).
    Ptrace {
        /// The thread.
        tid: u32,
        /// The operation (`seize`, `interrupt`, `waitpid`, `getregs`).
        op: &'static str,
        /// The OS error.
        error: std::io::Error,
    },
    /// A `/proc` file could not be read.
    Io(PathBuf, std::io::Error),
    /// The process has no threads left (it exited).
    NoThreads(u32),
    /// The pid does not fit the OS's pid type.
    BadPid(u32),
}

impl LiveError {
    /// Whether the OS refused to let us trace the process (EPERM/EACCES).
    pub fn is_permission_denied(&self) -> bool {
        match self {
            LiveError::Ptrace { error, .. } | LiveError::Io(_, error) => {
                error.kind() == std::io::ErrorKind::PermissionDenied
            }
            _ => false,
        }
    }
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveError::Ptrace { tid, op, error } => {
                write!(f, "ptrace {op} of thread {tid}: {error}")
            }
            LiveError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            LiveError::NoThreads(pid) => write!(f, "process {pid} has no threads"),
            LiveError::BadPid(pid) => write!(f, "{pid} is not a valid pid"),
        }
    }
}

impl std::error::Error for LiveError {}

fn ptrace_err(tid: Pid, op: &'static str, e: Errno) -> LiveError {
    LiveError::Ptrace {
        tid: tid.as_raw() as u32,
        op,
        error: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// Threads we stopped, and the signal each was stopped for (to be delivered on detach).
struct Attached(Vec<(Pid, Option<Signal>)>);

impl Drop for Attached {
    fn drop(&mut self) {
        for &(tid, sig) in &self.0 {
            // A thread that exited meanwhile is not an error worth reporting from drop.
            let _ = ptrace::detach(tid, sig);
        }
    }
}

/// A stopped live process: its threads, modules and memory. Resumes the threads on drop.
pub struct LiveProcess {
    target: Target,
    memory: LiveMemory,
    attached: Attached,
    /// ptrace requests must come from the thread that attached.
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for LiveProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveProcess")
            .field("pid", &self.memory.pid)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl LiveProcess {
    /// Stops every thread of `pid` and reads its registers and module list.
    pub fn attach(pid: u32) -> Result<LiveProcess, LiveError> {
        LiveProcess::attach_with(pid, &LoadOptions::default())
    }

    /// As [`LiveProcess::attach`], looking for module files that are not at their mapped
    /// path in `options.module_dirs`.
    pub fn attach_with(pid: u32, options: &LoadOptions) -> Result<LiveProcess, LiveError> {
        let raw = i32::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .ok_or(LiveError::BadPid(pid))?;
        let mut attached = Attached(Vec::new());
        for _ in 0..MAX_TASK_PASSES {
            let mut added = false;
            for tid in tasks(pid)? {
                if attached.0.len() >= MAX_THREADS {
                    break;
                }
                if attached.0.iter().any(|&(t, _)| t.as_raw() == tid) {
                    continue;
                }
                added = true;
                if let Some(sig) = stop_thread(Pid::from_raw(tid))? {
                    attached.0.push((Pid::from_raw(tid), sig));
                }
            }
            // Stopped threads cannot clone: a pass that finds nothing new finds everything.
            if !added {
                break;
            }
        }
        // The thread-group leader first, as a core file lists it.
        attached
            .0
            .sort_by_key(|&(t, _)| (t.as_raw() != raw, t.as_raw()));
        let mut threads = Vec::with_capacity(attached.0.len());
        for &(tid, _) in &attached.0 {
            match ptrace::getregs(tid) {
                Ok(r) => {
                    let mut regs = user_regs(&r);
                    fp_regs(tid, &mut regs);
                    threads.push(Thread {
                        id: tid.as_raw() as u64,
                        regs,
                    })
                }
                // Killed while stopped: it has no registers to show.
                Err(Errno::ESRCH) => {}
                Err(e) => return Err(ptrace_err(tid, "getregs", e)),
            }
        }
        if threads.is_empty() {
            return Err(LiveError::NoThreads(pid));
        }
        let memory = LiveMemory { pid };
        let modules = modules(pid, memory, options)?;
        Ok(LiveProcess {
            target: Target {
                platform: Platform::Linux,
                memory: RegionMemory::new(),
                threads,
                modules,
                exception: None,
            },
            memory,
            attached,
            _not_send: PhantomData,
        })
    }

    /// The process as a [`Target`]; its `memory` is empty (read [`LiveProcess::memory`]).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The process's memory.
    pub fn memory(&self) -> &LiveMemory {
        &self.memory
    }

    /// The stopped threads, the thread-group leader first.
    pub fn threads(&self) -> &[Thread] {
        &self.target.threads
    }

    /// The module map with an unwinder per module.
    pub fn address_space(&self) -> AddressSpace<'_> {
        self.target.address_space()
    }

    /// Symbolizers for every module.
    pub fn symbols(&self, options: &LoadOptions) -> Symbols<'_> {
        self.target.symbols(options)
    }

    /// Resumes every thread (as dropping does).
    pub fn detach(self) {
        drop(self);
    }

    /// How many threads are held stopped.
    pub fn stopped_threads(&self) -> usize {
        self.attached.0.len()
    }
}

/// The thread ids in `/proc/PID/task`.
fn tasks(pid: u32) -> Result<Vec<i32>, LiveError> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = std::fs::read_dir(&dir).map_err(|e| LiveError::Io(dir.clone(), e))?;
    let mut out: Vec<i32> = entries
        .flatten()
        .take(MAX_THREADS)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Seizes and interrupts one thread and waits for it to stop. `Ok(None)`: it exited first;
/// `Ok(Some(sig))`: stopped, with the signal it was stopped delivering (to re-deliver).
fn stop_thread(tid: Pid) -> Result<Option<Option<Signal>>, LiveError> {
    match ptrace::seize(tid, ptrace::Options::empty()) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Ok(None),
        Err(e) => return Err(ptrace_err(tid, "seize", e)),
    }
    // From here the thread is ours: detach it on every error path.
    let guard = Attached(vec![(tid, None)]);
    match ptrace::interrupt(tid) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Ok(None),
        Err(e) => return Err(ptrace_err(tid, "interrupt", e)),
    }
    for _ in 0..MAX_WAITS {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(..)) => {
                std::mem::forget(guard);
                return Ok(Some(None));
            }
            // A signal-delivery stop: stopped, and the signal must not be lost.
            Ok(WaitStatus::Stopped(_, sig)) => {
                std::mem::forget(guard);
                return Ok(Some(Some(sig)));
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                std::mem::forget(guard);
                return Ok(None);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(ptrace_err(tid, "waitpid", e)),
        }
    }
    Err(ptrace_err(tid, "waitpid", Errno::EAGAIN))
}

/// `user_regs_struct` in the order of `NT_PRSTATUS`'s `pr_reg`, mapped as the core reader does.
fn user_regs(r: &nix::libc::user_regs_struct) -> Regs {
    let words: [u64; PR_REG_WORDS] = [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ];
    let mut gpr = [0u64; 16];
    for (i, reg) in USER_REGS {
        gpr[reg as usize] = words[i];
    }
    Regs::with_gprs(words[USER_RIP], gpr)
}

/// The thread's xmm registers, from its FXSAVE area (`NT_PRFPREG`); a thread whose floating-point
/// state cannot be read keeps them unknown, as a core file without `NT_FPREGSET` does.
#[cfg(target_env = "gnu")]
fn fp_regs(tid: Pid, regs: &mut Regs) {
    let Ok(fp) = ptrace::getregset::<ptrace::regset::NT_PRFPREG>(tid) else {
        return;
    };
    for (n, w) in fp.xmm_space.chunks_exact(4).enumerate().take(16) {
        let v = w
            .iter()
            .rev()
            .fold(0u128, |acc, &x| acc << 32 | u128::from(x));
        regs.set_xmm(n as u8, v);
    }
}

/// Without glibc's register-set types the xmm registers stay unknown.
#[cfg(not(target_env = "gnu"))]
fn fp_regs(_: Pid, _: &mut Regs) {}

/// One line of `/proc/PID/maps`: `start-end perms offset dev inode [path]`.
fn parse_maps_line(line: &str) -> Option<(FileMapping, bool)> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let _perms = field();
    let offset = field();
    let _dev = field();
    let inode = field();
    let path = rest.trim().to_string();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let page_offset = u64::from_str_radix(offset, 16).ok()?;
    let file_backed = inode != "0" && path.starts_with('/');
    (end > start).then_some((
        FileMapping {
            start,
            end,
            page_offset,
            path,
        },
        file_backed,
    ))
}

/// The modules of `/proc/PID/maps`: file-backed mappings grouped per path (as `NT_FILE` is),
/// their files read from disk, and the vDSO read from memory.
fn modules(
    pid: u32,
    memory: LiveMemory,
    options: &LoadOptions,
) -> Result<Vec<crate::target::ModuleImage>, LiveError> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text = std::fs::read_to_string(&path).map_err(|e| LiveError::Io(path.clone(), e))?;
    let mut files = Vec::new();
    let mut vdso = None;
    // What the module grouping checks in memory: the first bytes of each image, and the vDSO.
    let mut seen = RegionMemory::new();
    for line in text.lines().take(MAX_MAPS) {
        let Some((m, file_backed)) = parse_maps_line(line) else {
            continue;
        };
        if file_backed {
            if m.page_offset == 0 {
                let mut magic = [0u8; 4];
                if memory.read(m.start, &mut magic).is_ok() {
                    seen.add(m.start, magic.to_vec());
                }
            }
            files.push(m);
        } else if m.path == "[vdso]" && vdso.is_none() {
            let mut image = vec![0u8; (m.end - m.start).min(MAX_VDSO) as usize];
            if memory.read(m.start, &mut image).is_ok() {
                seen.add(m.start, image);
                vdso = Some(m.start);
            }
        }
    }
    let mut modules = super::modules_from_files(&files, &seen, options);
    if let Some(m) = vdso.and_then(|base| super::vdso_module(base, &seen)) {
        modules.push(m);
    }
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let (m, fb) = parse_maps_line(
            "7f0c1a000000-7f0c1a022000 r-xp 00001000 fd:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert!(fb);
        assert_eq!(
            (m.start, m.end, m.page_offset),
            (0x7f0c1a000000, 0x7f0c1a022000, 0x1000)
        );
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let (m, fb) =
            parse_maps_line("7ffd1000-7ffd3000 r-xp 00000000 00:00 0                  [vdso]")
                .unwrap();
        assert!(!fb);
        assert_eq!(m.path, "[vdso]");
        let (m, fb) = parse_maps_line("1000-2000 rw-p 00000000 00:00 0").unwrap();
        assert!(!fb);
        assert_eq!(m.path, "");
        let (m, _) =
            parse_maps_line("1000-2000 r--p 00000000 08:01 77 /tmp/a b (deleted)").unwrap();
        assert_eq!(m.path, "/tmp/a b (deleted)");
        assert!(parse_maps_line("garbage").is_none());
        assert!(parse_maps_line("2000-1000 r--p 0 0 0 /x").is_none());
        assert!(parse_maps_line("").is_none());
    }

    #[test]
    fn unreadable_memory_names_the_address() {
        let me = LiveMemory {
            pid: std::process::id(),
        };
        let mut b = [0u8; 8];
        assert_eq!(me.read(0, &mut b), Err(MemoryError { addr: 0, len: 8 }));
        assert_eq!(
            me.read(u64::MAX - 3, &mut b),
            Err(MemoryError {
                addr: u64::MAX - 3,
                len: 8
            })
        );
        // Our own memory is readable (process_vm_readv on ourselves needs no ptrace).
        let x = 0x1122_3344_5566_7788u64;
        let addr = &x as *const u64 as u64;
        assert_eq!(me.read_u64(addr), Ok(x));
    }

    #[test]
    fn short_read_at_a_mapping_end_is_an_error() {
        let me = LiveMemory {
            pid: std::process::id(),
        };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let spans: Vec<(u64, u64)> = maps
            .lines()
            .filter_map(parse_maps_line)
            .map(|(m, _)| (m.start, m.end))
            .collect();
        // A readable mapping with a hole after it: the read straddling its end comes back short.
        let end = spans
            .iter()
            .map(|s| s.1)
            .find(|&end| {
                !spans.iter().any(|s| s.0 == end)
                    && me.read(end - 8, &mut [0u8; 8]).is_ok()
                    && end < 1 << 47
            })
            .expect("a readable mapping followed by a hole");
        let mut b = [0u8; 16];
        assert_eq!(
            me.read(end - 8, &mut b),
            Err(MemoryError {
                addr: end - 8,
                len: 16
            })
        );
    }
}

//! The PE unwinder behind the common [`FrameWalker`] interface.

use crate::compiled::virtual_unwind_generic;
use crate::{
    unwind_leaf, CompiledFunction, PeImage, RuntimeFunction, UnwindOptions, VirtualUnwind,
    UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};
use std::sync::OnceLock;
use xunwind_core::{
    CompactRule, ContextPointers, FrameWalker, Handler, MemoryReader, PcKind, Reg, Regs, StepInfo,
    Trust, UnwindError,
};

/// A PE image loaded at `base`, unwound with its `.pdata`/`.xdata`.
///
/// Each function's unwind rules are decoded once, the first time a pc in it is unwound
/// ([`CompiledFunction`]), and kept for the unwinder's lifetime: one slot per `.pdata` entry,
/// allocated at the first step, so memory is bounded by the image's own table (about 100 bytes
/// per entry, the compiled header inline, plus one allocation of its codes and epilog pcs per
/// entry actually unwound through; nothing is evicted, and no step allocates once its function
/// has been seen). The slots fill through `OnceLock`, so the unwinder stays `Send + Sync` and
/// usable through `&self` from any number of threads.
#[derive(Clone, Debug)]
pub struct PeUnwinder<'a> {
    image: PeImage<'a>,
    base: u64,
    options: UnwindOptions,
    cache: RuleCache,
}

/// What a `.pdata` entry resolves to, decoded once.
#[derive(Clone, Debug)]
enum Slot {
    /// An indirect entry whose target cannot be read: `RtlLookupFunctionEntry` finds nothing.
    NoEntry,
    /// Not compiled (malformed, version 2, too long): the reference `virtual_unwind` runs.
    Reference(RuntimeFunction),
    /// Compiled rules.
    Compiled(CompiledFunction),
}

/// One lazily filled slot per `.pdata` entry.
#[derive(Clone, Default)]
struct RuleCache {
    slots: OnceLock<Box<[OnceLock<Slot>]>>,
}

impl std::fmt::Debug for RuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = self
            .slots
            .get()
            .map_or(0, |s| s.iter().filter(|s| s.get().is_some()).count());
        write!(f, "RuleCache {{ filled: {filled} }}")
    }
}

impl<'a> PeUnwinder<'a> {
    /// Unwinds `image` as loaded at `base`.
    pub fn new(image: PeImage<'a>, base: u64) -> Self {
        PeUnwinder {
            image,
            base,
            options: UnwindOptions::default(),
            cache: RuleCache::default(),
        }
    }

    /// Sets the unwind options (epilog establisher-frame rule).
    pub fn with_options(mut self, options: UnwindOptions) -> Self {
        self.options = options;
        self
    }

    /// The image.
    pub fn image(&self) -> &PeImage<'a> {
        &self.image
    }

    /// The load address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The decoded slot of the entry covering `rva` (`RtlLookupFunctionEntry`), filled on first use.
    #[inline]
    fn slot(&self, rva: u32) -> Option<&Slot> {
        let functions = self.image.functions();
        let i = functions.find(rva)?;
        let slots = self
            .cache
            .slots
            .get_or_init(|| (0..functions.len()).map(|_| OnceLock::new()).collect());
        Some(slots.get(i)?.get_or_init(|| {
            // The same entry `lookup_function_entry` returns: one level of indirection.
            let Some(entry) = self.image.lookup_function_entry(rva) else {
                return Slot::NoEntry;
            };
            match CompiledFunction::new(&self.image, entry) {
                Some(c) => Slot::Compiled(c),
                None => Slot::Reference(entry),
            }
        }))
    }

    /// Number of `.pdata` entries whose rules have been decoded so far.
    pub fn cached_functions(&self) -> usize {
        self.cache
            .slots
            .get()
            .map_or(0, |s| s.iter().filter(|s| s.get().is_some()).count())
    }

    /// `RtlLookupFunctionEntry` at `lookup_pc` then `RtlVirtualUnwind` at `pc` (usually the
    /// same; a return address is looked up at `pc - 1`), with the cached rules: the results of
    /// [`crate::virtual_unwind`] on the same entry, including errors. `Ok(None)`: no entry
    /// covers `lookup_pc` (the caller applies the leaf rule, [`unwind_leaf`], if it wants).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn virtual_unwind<M: MemoryReader + ?Sized>(
        &self,
        lookup_pc: u64,
        pc: u64,
        regs: &mut Regs,
        pointers: Option<&mut ContextPointers>,
        handler_type: u8,
        mem: &M,
    ) -> Result<Option<VirtualUnwind>, UnwindError> {
        let Ok(rva) = u32::try_from(lookup_pc.wrapping_sub(self.base)) else {
            return Ok(None);
        };
        match self.slot(rva) {
            None | Some(Slot::NoEntry) => Ok(None),
            Some(Slot::Compiled(c)) => c
                .unwind(
                    &self.image,
                    self.base,
                    pc,
                    regs,
                    pointers,
                    handler_type,
                    mem,
                    &self.options,
                )
                .map(Some),
            Some(Slot::Reference(f)) => virtual_unwind_generic(
                &self.image,
                self.base,
                *f,
                pc,
                regs,
                pointers,
                handler_type,
                mem,
                &self.options,
            )
            .map(Some),
        }
    }
}

/// Registers the Windows x64 ABI lets a call destroy: rax, rcx, rdx, r8-r11 and xmm0-5.
pub(crate) const VOLATILE: u64 = Regs::bit(Reg::Rax)
    | Regs::bit(Reg::Rcx)
    | Regs::bit(Reg::Rdx)
    | Regs::bit(Reg::R8)
    | Regs::bit(Reg::R9)
    | Regs::bit(Reg::R10)
    | Regs::bit(Reg::R11)
    | Regs::xmm_bit(0)
    | Regs::xmm_bit(1)
    | Regs::xmm_bit(2)
    | Regs::xmm_bit(3)
    | Regs::xmm_bit(4)
    | Regs::xmm_bit(5);

impl FrameWalker for PeUnwinder<'_> {
    /// Bodies and version 1 epilogs of compiled functions, and leaves (no entry).
    fn rule(&self, pc: u64, pc_kind: PcKind, _: &dyn MemoryReader) -> Option<CompactRule> {
        let lookup = pc_kind.lookup_address(pc);
        let slot = u32::try_from(lookup.wrapping_sub(self.base))
            .ok()
            .and_then(|rva| self.slot(rva));
        match slot {
            // The leaf rule: the return address is at rsp.
            None | Some(Slot::NoEntry) => {
                Some(CompactRule::new(Reg::Rsp, 8, -8, Trust::Pdata).with_frame(-8))
            }
            Some(Slot::Compiled(c)) => c.rule(
                self.base,
                pc,
                UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER,
                &self.options,
            ),
            Some(Slot::Reference(_)) => None,
        }
    }

    /// Looks the pc up (at `pc - 1` for return addresses, so a call ending a function still
    /// finds it), then runs `RtlVirtualUnwind` at the pc itself, as Windows does; without an
    /// entry, the leaf rule.
    #[inline]
    fn unwind(
        &self,
        regs: &mut Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
        pointers: Option<&mut ContextPointers>,
    ) -> Result<StepInfo, UnwindError> {
        let pc = regs.rip().ok_or(UnwindError::MissingRip)?;
        let r = self.virtual_unwind(
            pc_kind.lookup_address(pc),
            pc,
            regs,
            pointers,
            UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER,
            mem,
        )?;
        let Some(r) = r else {
            let frame = regs
                .get(Reg::Rsp)
                .ok_or(UnwindError::MissingRegister(Reg::Rsp))?;
            unwind_leaf(regs, mem)?;
            return Ok(StepInfo {
                trust: Trust::Pdata,
                frame,
                handler: None,
                caller_pc: PcKind::ReturnAddress,
            });
        };
        // Volatile registers do not survive a call: a debugger must not show stale values.
        if !r.machine_frame {
            regs.retain(!VOLATILE);
        }
        Ok(StepInfo {
            trust: Trust::Pdata,
            frame: r.establisher_frame,
            handler: r.handler.map(|(h, d)| Handler {
                address: self.base.wrapping_add(h as u64),
                data: self.base.wrapping_add(d as u64),
                flags: r.handler_flags,
            }),
            caller_pc: if r.machine_frame {
                PcKind::Exact
            } else {
                PcKind::ReturnAddress
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_size_and_thread_safety() {
        // The cache is one slot per .pdata entry: keep the slot within two cache lines.
        eprintln!("slot: {} bytes", std::mem::size_of::<OnceLock<Slot>>());
        assert!(std::mem::size_of::<OnceLock<Slot>>() <= 128);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PeUnwinder<'static>>();
    }
}

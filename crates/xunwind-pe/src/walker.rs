//! The PE unwinder behind the common [`FrameWalker`] interface.

use crate::{
    unwind_leaf, virtual_unwind, PeImage, UnwindOptions, UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER,
};
use xunwind_core::{
    ContextPointers, FrameWalker, Handler, MemoryReader, PcKind, Reg, Regs, Step, Trust,
    UnwindError,
};

/// A PE image loaded at `base`, unwound with its `.pdata`/`.xdata`.
#[derive(Clone, Debug)]
pub struct PeUnwinder<'a> {
    image: PeImage<'a>,
    base: u64,
    options: UnwindOptions,
}

impl<'a> PeUnwinder<'a> {
    /// Unwinds `image` as loaded at `base`.
    pub fn new(image: PeImage<'a>, base: u64) -> Self {
        PeUnwinder {
            image,
            base,
            options: UnwindOptions::default(),
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
}

impl FrameWalker for PeUnwinder<'_> {
    /// Looks the pc up (at `pc - 1` for return addresses, so a call ending a function still
    /// finds it), then runs `RtlVirtualUnwind` at the pc itself, as Windows does; without an
    /// entry, the leaf rule.
    fn step(
        &self,
        regs: &Regs,
        pc_kind: PcKind,
        mem: &dyn MemoryReader,
    ) -> Result<Step, UnwindError> {
        let pc = regs.rip().ok_or(UnwindError::MissingRip)?;
        let rva = pc_kind.lookup_address(pc).wrapping_sub(self.base);
        let mut caller = regs.clone();
        let mut pointers = ContextPointers::new();
        let func = u32::try_from(rva)
            .ok()
            .and_then(|rva| self.image.lookup_function_entry(rva));
        let Some(func) = func else {
            let frame = regs
                .get(Reg::Rsp)
                .ok_or(UnwindError::MissingRegister(Reg::Rsp))?;
            unwind_leaf(&mut caller, mem)?;
            return Ok(Step {
                regs: caller,
                trust: Trust::Pdata,
                frame,
                pointers,
                handler: None,
                caller_pc: PcKind::ReturnAddress,
            });
        };
        let r = virtual_unwind(
            &self.image,
            self.base,
            func,
            pc,
            &mut caller,
            Some(&mut pointers),
            UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER,
            mem,
            &self.options,
        )?;
        // Volatile registers do not survive a call: a debugger must not show stale values.
        if !r.machine_frame {
            for v in [
                Reg::Rax,
                Reg::Rcx,
                Reg::Rdx,
                Reg::R8,
                Reg::R9,
                Reg::R10,
                Reg::R11,
            ] {
                caller.invalidate(v);
            }
            for x in 0..6 {
                caller.invalidate_xmm(x);
            }
        }
        Ok(Step {
            regs: caller,
            trust: Trust::Pdata,
            frame: r.establisher_frame,
            pointers,
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

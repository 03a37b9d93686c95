//! `.xdata`: UNWIND_INFO and its codes, versions 1 and 2.

use crate::{PeError, RuntimeFunction};
use xunwind_core::Reg;

/// UNWIND_INFO flag: the function has an exception handler.
pub const UNW_FLAG_EHANDLER: u8 = 1;
/// UNWIND_INFO flag: the function has a termination (unwind) handler.
pub const UNW_FLAG_UHANDLER: u8 = 2;
/// UNWIND_INFO flag: a parent RUNTIME_FUNCTION follows the codes.
pub const UNW_FLAG_CHAININFO: u8 = 4;

/// One decoded unwind operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindOp {
    /// `push reg`.
    PushNonvol(Reg),
    /// `sub rsp, size` with a 16-bit (size/8) or 32-bit operand.
    AllocLarge {
        /// Bytes allocated.
        size: u32,
        /// Whether the 32-bit form (info 1, three slots) was used.
        long: bool,
    },
    /// `sub rsp, size` for 8..=128 bytes.
    AllocSmall(u32),
    /// `lea framereg, [rsp + 16*FrameOffset]`.
    SetFpreg,
    /// `mov [rsp + offset], reg` (offset from the establisher frame; 16-bit form scaled by 8).
    SaveNonvol {
        /// Register saved.
        reg: Reg,
        /// Byte offset.
        offset: u32,
    },
    /// `mov [rsp + offset], reg` with a 32-bit unscaled offset.
    SaveNonvolFar {
        /// Register saved.
        reg: Reg,
        /// Byte offset.
        offset: u32,
    },
    /// `movaps [rsp + offset], xmm` (16-bit form scaled by 16).
    SaveXmm128 {
        /// xmm register number.
        xmm: u8,
        /// Byte offset.
        offset: u32,
    },
    /// `movaps [rsp + offset], xmm` with a 32-bit unscaled offset.
    SaveXmm128Far {
        /// xmm register number.
        xmm: u8,
        /// Byte offset.
        offset: u32,
    },
    /// A machine (trap) frame was pushed, with or without an error code.
    PushMachframe {
        /// Whether an error code sits below the trap frame.
        error_code: bool,
    },
    /// Version 2: the first EPILOG code gives the epilog size and whether one ends the function.
    EpilogHead {
        /// Size of each epilog in bytes.
        size: u8,
        /// Whether an epilog ends exactly at the function's end.
        at_end: bool,
    },
    /// Version 2: a further epilog, `distance` bytes back from the function's end (0: padding).
    Epilog {
        /// Distance from the end of the function to the epilog's start.
        distance: u16,
    },
    /// An op this version does not define.
    Unknown {
        /// The op nibble.
        op: u8,
        /// The info nibble.
        info: u8,
    },
}

/// An unwind code: its prolog offset, the operation, and its first slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindCode {
    /// Offset in the prolog of the end of the instruction (CodeOffset).
    pub offset: u8,
    /// The operation.
    pub op: UnwindOp,
    /// Index of the code's first slot.
    pub slot: u8,
    /// Number of slots it occupies.
    pub slots: u8,
}

/// A parsed UNWIND_INFO, borrowing the image bytes.
#[derive(Clone, Copy, Debug)]
pub struct UnwindInfo<'a> {
    rva: u32,
    header: [u8; 4],
    codes: &'a [u8],
    tail: &'a [u8],
}

impl<'a> UnwindInfo<'a> {
    /// Parses the UNWIND_INFO whose bytes start `bytes` (`rva` is used in errors and in the
    /// handler-data address). Alignment is not required: hand-written assembly leaves it unaligned.
    pub fn parse(bytes: &'a [u8], rva: u32) -> Result<Self, PeError> {
        let header: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(PeError::OutOfImage { rva, len: 4 })?;
        let version = header[0] & 7;
        if version != 1 && version != 2 {
            return Err(PeError::BadVersion { rva, version });
        }
        let count = header[2] as usize;
        let codes = bytes.get(4..4 + 2 * count).ok_or(PeError::OutOfImage {
            rva,
            len: 4 + 2 * count as u32,
        })?;
        let tail = bytes.get(4 + 2 * (count + (count & 1))..).unwrap_or(&[]);
        Ok(UnwindInfo {
            rva,
            header,
            codes,
            tail,
        })
    }

    /// RVA of this UNWIND_INFO.
    #[inline]
    pub fn rva(&self) -> u32 {
        self.rva
    }

    /// Version (1 or 2).
    #[inline]
    pub fn version(&self) -> u8 {
        self.header[0] & 7
    }

    /// Flags (`UNW_FLAG_*`).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.header[0] >> 3
    }

    /// SizeOfProlog in bytes.
    #[inline]
    pub fn prolog_size(&self) -> u8 {
        self.header[1]
    }

    /// CountOfCodes (slots, not codes).
    #[inline]
    pub fn count_of_codes(&self) -> u8 {
        self.header[2]
    }

    /// The frame register, or `None` when the field is 0.
    #[inline]
    pub fn frame_register(&self) -> Option<Reg> {
        let r = self.header[3] & 15;
        (r != 0).then(|| Reg::from_number(r))
    }

    /// FrameOffset scaled to bytes (16 * the field).
    #[inline]
    pub fn frame_offset(&self) -> u32 {
        (self.header[3] >> 4) as u32 * 16
    }

    /// The raw code slots.
    #[inline]
    pub fn code_bytes(&self) -> &'a [u8] {
        self.codes
    }

    /// The codes in stored order.
    pub fn codes(&self) -> UnwindCodes<'a> {
        UnwindCodes {
            bytes: self.codes,
            slot: 0,
            version: self.version(),
            seen_epilog: false,
            rva: self.rva,
            done: false,
        }
    }

    /// The first problem with the codes (undefined op, overrun), if any.
    pub fn validate(&self) -> Result<(), PeError> {
        for c in self.codes() {
            if let UnwindOp::Unknown { op, .. } = c?.op {
                return Err(PeError::UnknownOp {
                    rva: self.rva,
                    slot: 0,
                    op,
                });
            }
        }
        Ok(())
    }

    /// RVA of the bytes that follow the (even-padded) codes.
    #[inline]
    pub fn tail_rva(&self) -> u32 {
        let n = self.header[2] as u32;
        self.rva.wrapping_add(4 + 2 * (n + (n & 1)))
    }

    /// The parent entry of chained info (`UNW_FLAG_CHAININFO`), or `None` without the flag.
    pub fn chained(&self) -> Result<Option<RuntimeFunction>, PeError> {
        if self.flags() & UNW_FLAG_CHAININFO == 0 {
            return Ok(None);
        }
        let b = self.tail.get(..12).ok_or(PeError::OutOfImage {
            rva: self.tail_rva(),
            len: 12,
        })?;
        Ok(Some(RuntimeFunction::from_bytes(b.try_into().expect("12"))))
    }

    /// `(handler RVA, handler-data RVA)` when EHANDLER or UHANDLER is set.
    pub fn handler(&self) -> Result<Option<(u32, u32)>, PeError> {
        if self.flags() & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER) == 0 {
            return Ok(None);
        }
        let b = self.tail.get(..4).ok_or(PeError::OutOfImage {
            rva: self.tail_rva(),
            len: 4,
        })?;
        let handler = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        Ok(Some((handler, self.tail_rva().wrapping_add(4))))
    }

    /// The language-specific handler data bytes (after the handler RVA), as far as readable.
    pub fn handler_data(&self) -> &'a [u8] {
        self.tail.get(4..).unwrap_or(&[])
    }
}

/// Iterator over the codes of an UNWIND_INFO; stops after an error or an op of unknown size.
#[derive(Clone, Debug)]
pub struct UnwindCodes<'a> {
    bytes: &'a [u8],
    slot: usize,
    version: u8,
    seen_epilog: bool,
    rva: u32,
    done: bool,
}

impl Iterator for UnwindCodes<'_> {
    type Item = Result<UnwindCode, PeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let i = self.slot;
        let (&offset, &opinfo) = match (self.bytes.get(2 * i), self.bytes.get(2 * i + 1)) {
            (Some(a), Some(b)) => (a, b),
            _ => return None,
        };
        let (op, info) = (opinfo & 15, opinfo >> 4);
        let slot_u16 = |k: usize| -> Option<u32> {
            let b = self.bytes.get(2 * (i + k)..2 * (i + k) + 2)?;
            Some(u16::from_le_bytes([b[0], b[1]]) as u32)
        };
        let slot_u32 = || -> Option<u32> {
            let b = self.bytes.get(2 * (i + 1)..2 * (i + 1) + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let reg = Reg::from_number(info);
        // Slot counts are Windows' (and LLVM's) table; undefined ops 11-15 have no known size.
        let (decoded, slots) = match op {
            0 => (Some(UnwindOp::PushNonvol(reg)), 1),
            1 if info == 0 => (
                slot_u16(1).map(|s| UnwindOp::AllocLarge {
                    size: s * 8,
                    long: false,
                }),
                2,
            ),
            1 => (
                slot_u32().map(|size| UnwindOp::AllocLarge { size, long: true }),
                3,
            ),
            2 => (Some(UnwindOp::AllocSmall(info as u32 * 8 + 8)), 1),
            3 => (Some(UnwindOp::SetFpreg), 1),
            4 => (
                slot_u16(1).map(|s| UnwindOp::SaveNonvol { reg, offset: s * 8 }),
                2,
            ),
            5 => (
                slot_u32().map(|offset| UnwindOp::SaveNonvolFar { reg, offset }),
                3,
            ),
            6 if self.version >= 2 => {
                let op = if self.seen_epilog {
                    UnwindOp::Epilog {
                        distance: offset as u16 | (info as u16) << 8,
                    }
                } else {
                    UnwindOp::EpilogHead {
                        size: offset,
                        at_end: info & 1 != 0,
                    }
                };
                self.seen_epilog = true;
                // One slot each in version 2 (LLVM pads a lone epilog with a distance-0 code).
                (Some(op), 1)
            }
            6 => (Some(UnwindOp::Unknown { op, info }), 2),
            7 => (Some(UnwindOp::Unknown { op, info }), 3),
            8 => (
                slot_u16(1).map(|s| UnwindOp::SaveXmm128 {
                    xmm: info,
                    offset: s * 16,
                }),
                2,
            ),
            9 => (
                slot_u32().map(|offset| UnwindOp::SaveXmm128Far { xmm: info, offset }),
                3,
            ),
            10 if info <= 1 => (
                Some(UnwindOp::PushMachframe {
                    error_code: info == 1,
                }),
                1,
            ),
            _ => {
                self.done = true;
                (Some(UnwindOp::Unknown { op, info }), 1)
            }
        };
        let Some(op) = decoded else {
            self.done = true;
            return Some(Err(PeError::CodesOverrun {
                rva: self.rva,
                slot: i as u8,
            }));
        };
        self.slot += slots;
        Some(Ok(UnwindCode {
            offset,
            op,
            slot: i as u8,
            slots: slots as u8,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(bytes: &[u8]) -> UnwindInfo<'_> {
        UnwindInfo::parse(bytes, 0x2000).unwrap()
    }

    #[test]
    fn header_fields_and_every_v1_op() {
        #[rustfmt::skip]
        let bytes = [
            0x01 | (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER) << 3, 0x40, 20, 0x35,
            0x40, 0x30,             // PUSH_NONVOL rbx
            0x3c, 0x01, 0x10, 0x00, // ALLOC_LARGE 16*8
            0x38, 0x11, 0x00, 0x00, 0x02, 0x00, // ALLOC_LARGE 0x20000
            0x30, 0x72,             // ALLOC_SMALL 7*8+8
            0x2c, 0x03,             // SET_FPREG
            0x28, 0xc4, 0x03, 0x00, // SAVE_NONVOL r12 at 3*8
            0x24, 0xd5, 0x10, 0x32, 0x54, 0x00, // SAVE_NONVOL_FAR r13 at 0x543210
            0x20, 0x68, 0x02, 0x00, // SAVE_XMM128 xmm6 at 2*16
            0x1c, 0xf9, 0x08, 0x00, 0x01, 0x00, // SAVE_XMM128_FAR xmm15 at 0x10008
            0x18, 0x0a,             // PUSH_MACHFRAME
            0x14, 0x1a,             // PUSH_MACHFRAME with error code
            0x78, 0x56, 0x34, 0x12, // handler
            0xaa, 0xbb,             // handler data
        ];
        let ui = info(&bytes);
        assert_eq!(ui.version(), 1);
        assert_eq!(ui.flags(), 3);
        assert_eq!(ui.prolog_size(), 0x40);
        assert_eq!(ui.frame_register(), Some(Reg::Rbp));
        assert_eq!(ui.frame_offset(), 0x30);
        let ops: Vec<_> = ui.codes().map(|c| c.unwrap().op).collect();
        assert_eq!(
            ops,
            [
                UnwindOp::PushNonvol(Reg::Rbx),
                UnwindOp::AllocLarge {
                    size: 0x80,
                    long: false
                },
                UnwindOp::AllocLarge {
                    size: 0x20000,
                    long: true
                },
                UnwindOp::AllocSmall(0x40),
                UnwindOp::SetFpreg,
                UnwindOp::SaveNonvol {
                    reg: Reg::R12,
                    offset: 0x18
                },
                UnwindOp::SaveNonvolFar {
                    reg: Reg::R13,
                    offset: 0x543210
                },
                UnwindOp::SaveXmm128 {
                    xmm: 6,
                    offset: 0x20
                },
                UnwindOp::SaveXmm128Far {
                    xmm: 15,
                    offset: 0x10008
                },
                UnwindOp::PushMachframe { error_code: false },
                UnwindOp::PushMachframe { error_code: true },
            ]
        );
        assert!(ui.validate().is_ok());
        assert_eq!(
            ui.handler().unwrap(),
            Some((0x12345678, 0x2000 + 4 + 40 + 4))
        );
        assert_eq!(ui.handler_data(), &[0xaa, 0xbb]);
        assert_eq!(ui.chained().unwrap(), None);
    }

    #[test]
    fn odd_count_is_padded_before_chained_entry() {
        #[rustfmt::skip]
        let bytes = [
            0x01 | UNW_FLAG_CHAININFO << 3, 0x04, 1, 0x00,
            0x04, 0x52,  // ALLOC_SMALL 0x30
            0xff, 0xff,  // padding slot
            0x00, 0x10, 0, 0, 0x80, 0x10, 0, 0, 0x00, 0x30, 0, 0,
        ];
        let ui = info(&bytes);
        assert_eq!(ui.frame_register(), None);
        assert_eq!(ui.codes().count(), 1);
        assert_eq!(
            ui.chained().unwrap(),
            Some(RuntimeFunction {
                begin: 0x1000,
                end: 0x1080,
                unwind_data: 0x3000
            })
        );
        assert_eq!(ui.handler().unwrap(), None);
    }

    #[test]
    fn version2_epilog_codes() {
        #[rustfmt::skip]
        let bytes = [
            0x02, 0x06, 6, 0x00,
            0x03, 0x16,  // EPILOG head: size 3, at end
            0x20, 0x06,  // EPILOG distance 0x20
            0x05, 0x16,  // EPILOG distance 0x105
            0x06, 0x50,  // PUSH_NONVOL rbp
            0x02, 0x30,  // PUSH_NONVOL rbx
            0x01, 0x70,  // PUSH_NONVOL rdi
        ];
        let ui = info(&bytes);
        let ops: Vec<_> = ui.codes().map(|c| c.unwrap().op).collect();
        assert_eq!(
            ops[0],
            UnwindOp::EpilogHead {
                size: 3,
                at_end: true
            }
        );
        assert_eq!(ops[1], UnwindOp::Epilog { distance: 0x20 });
        assert_eq!(ops[2], UnwindOp::Epilog { distance: 0x105 });
        assert_eq!(ops[5], UnwindOp::PushNonvol(Reg::Rdi));
    }

    #[test]
    fn bad_input_is_typed() {
        assert_eq!(
            UnwindInfo::parse(&[0x03, 0, 0, 0], 0x10).unwrap_err(),
            PeError::BadVersion {
                rva: 0x10,
                version: 3
            }
        );
        assert_eq!(
            UnwindInfo::parse(&[0x01, 0, 2, 0, 0, 0], 0x10).unwrap_err(),
            PeError::OutOfImage { rva: 0x10, len: 8 }
        );
        assert!(UnwindInfo::parse(&[0x01, 0], 0x10).is_err());
        // ALLOC_LARGE whose operand slot lies beyond CountOfCodes.
        let ui = info(&[0x01, 0, 1, 0, 0x04, 0x01]);
        assert_eq!(
            ui.codes().next().unwrap(),
            Err(PeError::CodesOverrun {
                rva: 0x2000,
                slot: 0
            })
        );
        // Op 6 is EPILOG only in version 2; op 11 has no known size: stop after it.
        let ui = info(&[0x01, 0, 3, 0, 0, 0x06, 0, 0, 0, 0x0b]);
        let ops: Vec<_> = ui.codes().map(|c| c.unwrap().op).collect();
        assert_eq!(
            ops,
            [
                UnwindOp::Unknown { op: 6, info: 0 },
                UnwindOp::Unknown { op: 11, info: 0 }
            ]
        );
        assert!(ui.validate().is_err());
        // Handler flag but the handler RVA is cut off.
        let ui = info(&[0x01 | UNW_FLAG_EHANDLER << 3, 0, 0, 0, 1, 2]);
        assert!(ui.handler().is_err());
    }
}

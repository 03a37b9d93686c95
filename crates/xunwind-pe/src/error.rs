//! Errors of PE unwind-data parsing.

use core::fmt;

/// What is wrong with a PE image or its unwind data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeError {
    /// The headers are not those of a PE32+ image.
    BadHeader(&'static str),
    /// The image is not for x64.
    UnsupportedMachine(u16),
    /// An RVA (and length) lies outside the image's readable bytes.
    OutOfImage {
        /// First byte asked for.
        rva: u32,
        /// Number of bytes asked for.
        len: u32,
    },
    /// The exception directory's size is not a multiple of 12.
    BadPdataSize(u32),
    /// UNWIND_INFO has a version other than 1 or 2.
    BadVersion {
        /// RVA of the UNWIND_INFO.
        rva: u32,
        /// The version found.
        version: u8,
    },
    /// An unwind code with an op this version does not define.
    UnknownOp {
        /// RVA of the UNWIND_INFO.
        rva: u32,
        /// Slot index of the code.
        slot: u8,
        /// The op.
        op: u8,
    },
    /// An unwind code needs more slots than CountOfCodes leaves.
    CodesOverrun {
        /// RVA of the UNWIND_INFO.
        rva: u32,
        /// Slot index of the code.
        slot: u8,
    },
    /// Chained unwind info nests deeper than Windows allows, or loops.
    ChainTooDeep {
        /// RVA of the UNWIND_INFO where the limit was hit.
        rva: u32,
    },
}

impl fmt::Display for PeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PeError::BadHeader(why) => write!(f, "not a PE32+ image: {why}"),
            PeError::UnsupportedMachine(m) => write!(f, "machine {m:#x} is not x64"),
            PeError::OutOfImage { rva, len } => {
                write!(f, "{len} bytes at rva {rva:#x} lie outside the image")
            }
            PeError::BadPdataSize(s) => {
                write!(f, "exception directory size {s:#x} is not a multiple of 12")
            }
            PeError::BadVersion { rva, version } => {
                write!(
                    f,
                    "unwind info at {rva:#x} has unsupported version {version}"
                )
            }
            PeError::UnknownOp { rva, slot, op } => {
                write!(
                    f,
                    "unwind info at {rva:#x}: slot {slot} has undefined op {op}"
                )
            }
            PeError::CodesOverrun { rva, slot } => write!(
                f,
                "unwind info at {rva:#x}: code at slot {slot} runs past CountOfCodes"
            ),
            PeError::ChainTooDeep { rva } => {
                write!(f, "chained unwind info at {rva:#x} is too deep or cyclic")
            }
        }
    }
}

impl std::error::Error for PeError {}

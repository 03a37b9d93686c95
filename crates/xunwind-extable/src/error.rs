//! Errors of kernel-table reading.

use core::fmt;
use xunwind_core::RangeTableError;

use crate::Compression;

/// What is wrong with a kernel file or one of its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The ELF container could not be parsed.
    Elf(&'static str),
    /// Neither an ELF file nor a bzImage with a payload we can find.
    NotKernel,
    /// The payload is compressed with a method this build cannot decompress.
    UnsupportedCompression(Compression),
    /// Decompressing the payload failed.
    Decompress(Compression),
    /// The file has no `__ex_table` section.
    NoExTable,
    /// The table's size is not a whole number of entries.
    BadTableSize {
        /// Section size in bytes.
        size: u64,
        /// Entry size of the chosen format.
        entry_size: u8,
    },
    /// A relocation of a module table cannot be applied.
    BadRelocation {
        /// Offset of the relocated field in the section.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The table cannot be indexed (too wide a span, too many entries).
    Table(RangeTableError),
    /// The ORC tables are missing or inconsistent.
    BadOrc(&'static str),
    /// An input exceeds a fixed bound (entries, output size).
    TooLarge(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Elf(m) => write!(f, "ELF: {m}"),
            Error::NotKernel => f.write_str("not an ELF file or a bzImage with a payload"),
            Error::UnsupportedCompression(c) => {
                write!(f, "payload compressed with {}, not supported", c.name())
            }
            Error::Decompress(c) => write!(f, "{} payload does not decompress", c.name()),
            Error::NoExTable => f.write_str("no __ex_table section"),
            Error::BadTableSize { size, entry_size } => write!(
                f,
                "__ex_table size {size:#x} is not a multiple of the {entry_size}-byte entry"
            ),
            Error::BadRelocation { offset, reason } => {
                write!(f, "relocation at __ex_table+{offset:#x}: {reason}")
            }
            Error::Table(e) => write!(f, "table: {e}"),
            Error::BadOrc(m) => write!(f, "ORC: {m}"),
            Error::TooLarge(m) => write!(f, "too large: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<object::Error> for Error {
    fn from(e: object::Error) -> Self {
        // object's errors are static strings; keep the text, drop the wrapper.
        let _ = e;
        Error::Elf("malformed ELF")
    }
}

impl From<RangeTableError> for Error {
    fn from(e: RangeTableError) -> Self {
        Error::Table(e)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

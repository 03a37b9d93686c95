//! Reading the memory of the thread being unwound.

use core::fmt;

/// An attempt to read memory that is not available; carries the address and length asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryError {
    /// First byte that was asked for.
    pub addr: u64,
    /// Number of bytes asked for.
    pub len: u64,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot read {} bytes at {:#x}", self.len, self.addr)
    }
}

impl std::error::Error for MemoryError {}

/// Read access to an address space (a live process, a dump, a synthetic stack).
///
/// Only [`MemoryReader::read`] is required; the typed helpers read little-endian values.
pub trait MemoryReader {
    /// Fills `buf` with the bytes at `addr`, or fails without a partial result.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Reads a little-endian u64.
    #[inline]
    fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian u32.
    #[inline]
    fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u128 (an xmm slot).
    #[inline]
    fn read_u128(&self, addr: u64) -> Result<u128, MemoryError> {
        let mut b = [0; 16];
        self.read(addr, &mut b)?;
        Ok(u128::from_le_bytes(b))
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for &M {
    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(addr, buf)
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for Box<M> {
    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(addr, buf)
    }
}

/// A byte slice mapped at a base address; everything else is unreadable.
#[derive(Clone, Copy, Debug)]
pub struct SliceMemory<'a> {
    base: u64,
    data: &'a [u8],
}

impl<'a> SliceMemory<'a> {
    /// Maps `data` at `base`.
    pub const fn new(base: u64, data: &'a [u8]) -> Self {
        SliceMemory { base, data }
    }

    /// The base address.
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// The mapped bytes.
    pub const fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The bytes at `addr..addr+len`, if all are mapped.
    #[inline]
    pub fn slice(&self, addr: u64, len: usize) -> Option<&'a [u8]> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        self.data.get(off..off.checked_add(len)?)
    }
}

impl MemoryReader for SliceMemory<'_> {
    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        match self.slice(addr, buf.len()) {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(MemoryError {
                addr,
                len: buf.len() as u64,
            }),
        }
    }
}

/// One mapped region of a [`RegionMemory`].
#[derive(Clone, Debug)]
pub struct Region<'a> {
    /// Address of the first byte.
    pub base: u64,
    /// The contents.
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// Several non-overlapping regions (a dump's memory list, a core file's segments).
///
/// A read must lie inside one region; reads spanning two adjacent regions are stitched.
#[derive(Clone, Debug, Default)]
pub struct RegionMemory<'a> {
    regions: Vec<Region<'a>>,
}

impl<'a> RegionMemory<'a> {
    /// An empty address space.
    pub fn new() -> Self {
        RegionMemory {
            regions: Vec::new(),
        }
    }

    /// Adds a region; regions are kept sorted. Overlapping bytes of a later region are ignored.
    pub fn add(&mut self, base: u64, data: impl Into<std::borrow::Cow<'a, [u8]>>) {
        let data = data.into();
        let at = self.regions.partition_point(|r| r.base < base);
        self.regions.insert(at, Region { base, data });
    }

    /// The regions, sorted by base.
    pub fn regions(&self) -> &[Region<'a>] {
        &self.regions
    }

    fn find(&self, addr: u64) -> Option<(&Region<'a>, usize)> {
        let i = self
            .regions
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &self.regions[i];
        let off = usize::try_from(addr - r.base).ok()?;
        (off < r.data.len()).then_some((r, off))
    }
}

impl MemoryReader for RegionMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let err = MemoryError {
            addr,
            len: buf.len() as u64,
        };
        let mut done = 0usize;
        // Bounded by the buffer length: each pass copies at least one byte or fails.
        while done < buf.len() {
            let at = addr.checked_add(done as u64).ok_or(err)?;
            let (r, off) = self.find(at).ok_or(err)?;
            let n = (r.data.len() - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&r.data[off..off + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let m = SliceMemory::new(0x1000, &bytes);
        assert_eq!(m.read_u64(0x1000).unwrap(), 0x0807060504030201);
        assert_eq!(m.read_u64(0x1001).unwrap(), 0x0908070605040302);
        assert_eq!(
            m.read_u64(0x1002),
            Err(MemoryError {
                addr: 0x1002,
                len: 8
            })
        );
        assert!(m.read_u32(0xfff).is_err());
        assert!(m.read_u64(u64::MAX - 3).is_err());
    }

    #[test]
    fn regions_stitch_and_fault() {
        let mut m = RegionMemory::new();
        m.add(0x2000, vec![0xbb; 4]);
        m.add(0x1ffc, vec![0xaa; 4]);
        assert_eq!(m.read_u64(0x1ffc).unwrap(), 0xbbbbbbbbaaaaaaaa);
        assert!(m.read_u64(0x2000).is_err());
        assert!(m.read_u32(0x1ff0).is_err());
        assert_eq!(m.read_u32(0x2000).unwrap(), 0xbbbbbbbb);
    }
}

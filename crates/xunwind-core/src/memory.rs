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

    /// The contiguous bytes containing `addr` and the address of their first byte, when the
    /// reader holds them in memory: a read inside them must give exactly these bytes.
    ///
    /// Lets hot loops read a stack without a call per word ([`SpanReader`]); readers that
    /// fetch on demand (a live process) keep the default, `None`.
    #[inline]
    fn span(&self, addr: u64) -> Option<(u64, &[u8])> {
        let _ = addr;
        None
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for &M {
    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(addr, buf)
    }

    #[inline]
    fn span(&self, addr: u64) -> Option<(u64, &[u8])> {
        (**self).span(addr)
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for Box<M> {
    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(addr, buf)
    }

    #[inline]
    fn span(&self, addr: u64) -> Option<(u64, &[u8])> {
        (**self).span(addr)
    }
}

/// A reader that serves reads inside one span of another reader (a thread's stack) from the
/// span's bytes, inline, and every other read through that reader.
///
/// Reads give the same bytes and errors as the inner reader's: one that leaves the span, even
/// by a byte, is the inner reader's to answer (it may stitch regions the span does not cover).
#[derive(Clone, Copy)]
pub struct SpanReader<'a, M: MemoryReader + ?Sized> {
    base: u64,
    bytes: &'a [u8],
    inner: &'a M,
}

impl<M: MemoryReader + ?Sized> fmt::Debug for SpanReader<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanReader")
            .field("base", &self.base)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl<'a, M: MemoryReader + ?Sized> SpanReader<'a, M> {
    /// Reads `inner`, with its span containing `addr` (if it has one) served directly.
    #[inline]
    pub fn new(inner: &'a M, addr: u64) -> Self {
        let (base, mut bytes) = inner.span(addr).unwrap_or((0, &[]));
        // Bytes past 2^64 have no address of their own; dropping them lets `get` find an
        // offset with one wrapping subtraction. Reads running into them go to `inner`.
        if let Some(room) = (u64::MAX - base).checked_add(1) {
            bytes = &bytes[..bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        }
        SpanReader { base, bytes, inner }
    }

    /// The span served directly: its first address and its bytes (empty when there is none).
    pub fn direct(&self) -> (u64, &'a [u8]) {
        (self.base, self.bytes)
    }

    /// The `N` bytes at `addr` if all lie in the span.
    #[inline(always)]
    fn get<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        // An address below the base wraps to an offset past the span, which ends below 2^64.
        let off = usize::try_from(addr.wrapping_sub(self.base)).ok()?;
        self.bytes.get(off..)?.first_chunk::<N>().copied()
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for SpanReader<'_, M> {
    #[inline]
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let s = addr
            .checked_sub(self.base)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.bytes.get(off..off.checked_add(buf.len())?));
        match s {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => self.inner.read(addr, buf),
        }
    }

    #[inline]
    fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        match self.get(addr) {
            Some(b) => Ok(u64::from_le_bytes(b)),
            None => self.inner.read_u64(addr),
        }
    }

    #[inline]
    fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        match self.get(addr) {
            Some(b) => Ok(u32::from_le_bytes(b)),
            None => self.inner.read_u32(addr),
        }
    }

    #[inline]
    fn read_u128(&self, addr: u64) -> Result<u128, MemoryError> {
        match self.get(addr) {
            Some(b) => Ok(u128::from_le_bytes(b)),
            None => self.inner.read_u128(addr),
        }
    }

    #[inline]
    fn span(&self, addr: u64) -> Option<(u64, &[u8])> {
        match addr.checked_sub(self.base) {
            Some(off) if off < self.bytes.len() as u64 => Some((self.base, self.bytes)),
            _ => self.inner.span(addr),
        }
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

    #[inline]
    fn span(&self, addr: u64) -> Option<(u64, &[u8])> {
        self.slice(addr, 1).map(|_| (self.base, self.data))
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

    /// The region holding `addr`, cut at the next region's base: a later region's bytes win
    /// from there on in [`RegionMemory::read`], so they cannot be part of this span.
    fn span(&self, addr: u64) -> Option<(u64, &[u8])> {
        let i = self
            .regions
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &self.regions[i];
        let mut data = &r.data[..];
        if let Some(next) = self.regions.get(i + 1) {
            // Sorted with `next.base > addr >= r.base`, so the difference is positive.
            let room = usize::try_from(next.base - r.base).unwrap_or(usize::MAX);
            data = &data[..data.len().min(room)];
        }
        let off = usize::try_from(addr - r.base).ok()?;
        (off < data.len()).then_some((r.base, data))
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

    /// Every read of 1-16 bytes at every address of `lo..hi`, through a `SpanReader` taken at
    /// `at`, gives what `inner` gives: the same bytes or the same error.
    fn same_as_inner<M: MemoryReader>(inner: &M, at: u64, lo: u64, hi: u64) {
        let r = SpanReader::new(inner, at);
        for addr in lo..hi {
            for len in [1usize, 2, 4, 8, 16] {
                let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
                let ra = r.read(addr, &mut a[..len]);
                let rb = inner.read(addr, &mut b[..len]);
                assert_eq!(
                    (ra, a),
                    (rb, b),
                    "read of {len} at {addr:#x} (span at {at:#x})"
                );
            }
            assert_eq!(r.read_u64(addr), inner.read_u64(addr), "u64 at {addr:#x}");
            assert_eq!(r.read_u32(addr), inner.read_u32(addr), "u32 at {addr:#x}");
            assert_eq!(
                r.read_u128(addr),
                inner.read_u128(addr),
                "u128 at {addr:#x}"
            );
            let (rs, is) = (r.span(addr), inner.span(addr));
            assert_eq!(rs.is_some(), is.is_some(), "span at {addr:#x}");
            if let Some((base, bytes)) = rs {
                let off = (addr - base) as usize;
                assert!(off < bytes.len());
                let mut one = [0u8];
                inner.read(addr, &mut one).unwrap();
                assert_eq!(bytes[off], one[0], "span byte at {addr:#x}");
            }
        }
    }

    #[test]
    fn slice_span() {
        let bytes: Vec<u8> = (0..32).collect();
        let m = SliceMemory::new(0x1000, &bytes);
        assert_eq!(m.span(0x1000), Some((0x1000, &bytes[..])));
        assert_eq!(m.span(0x101f), Some((0x1000, &bytes[..])));
        assert_eq!(m.span(0x1020), None);
        assert_eq!(m.span(0xfff), None);
        assert_eq!(SliceMemory::new(0x1000, &[]).span(0x1000), None);
        let r = SpanReader::new(&m, 0x1010);
        assert_eq!(r.direct(), (0x1000, &bytes[..]));
        // Inside, the last whole word, straddling the end, past it, below the base.
        assert_eq!(r.read_u64(0x1000), Ok(0x0706050403020100));
        assert_eq!(r.read_u64(0x1018), Ok(0x1f1e1d1c1b1a1918));
        let straddle = Err(MemoryError {
            addr: 0x1019,
            len: 8,
        });
        assert_eq!(r.read_u64(0x1019), straddle);
        assert!(r.read_u64(0x1020).is_err());
        assert!(r.read_u64(0xff8).is_err());
        same_as_inner(&m, 0x1010, 0xff0, 0x1030);
        // A span taken outside the memory serves nothing directly; reads still work.
        let none = SpanReader::new(&m, 0x5000);
        assert_eq!(none.direct().1.len(), 0);
        same_as_inner(&m, 0x5000, 0xff0, 0x1030);
        // A slice ending at the top of the address space: no address below it wraps into it.
        let top = SliceMemory::new(u64::MAX - 15, &bytes[..16]);
        same_as_inner(&top, u64::MAX, u64::MAX - 20, u64::MAX);
        same_as_inner(&top, u64::MAX, 0, 20);
        // One whose bytes run past 2^64: reads may run into them, but low addresses do not
        // wrap around into them.
        let past = SliceMemory::new(u64::MAX - 7, &bytes[..16]);
        same_as_inner(&past, u64::MAX, u64::MAX - 20, u64::MAX);
        same_as_inner(&past, u64::MAX, 0, 20);
        assert_eq!(SpanReader::new(&past, u64::MAX).direct().1.len(), 8);
    }

    #[test]
    fn region_span() {
        let empty = RegionMemory::new();
        assert_eq!(empty.span(0), None);
        assert_eq!(empty.span(0x1000), None);
        let r = SpanReader::new(&empty, 0x1000);
        assert_eq!(
            r.read_u64(0x1000),
            Err(MemoryError {
                addr: 0x1000,
                len: 8
            })
        );

        // Adjacent regions, which reads stitch: the span is one region, and a read that
        // crosses into the next one is stitched by the inner reader, not refused.
        let mut m = RegionMemory::new();
        m.add(0x2000, vec![0xbb; 16]);
        m.add(0x1ff0, (0..16).collect::<Vec<u8>>());
        let (base, bytes) = m.span(0x1ff8).unwrap();
        assert_eq!((base, bytes.len()), (0x1ff0, 16));
        assert_eq!(m.span(0x2000).unwrap().0, 0x2000);
        let r = SpanReader::new(&m, 0x1ff8);
        assert_eq!(r.read_u64(0x1ffc), Ok(0xbbbbbbbb0f0e0d0c));
        same_as_inner(&m, 0x1ff8, 0x1fe0, 0x2020);
        same_as_inner(&m, 0x2008, 0x1fe0, 0x2020);

        // Overlapping regions: from a later base on, the later region's bytes are read, so
        // the earlier region's span stops there.
        let mut m = RegionMemory::new();
        m.add(0x3000, vec![0xaa; 64]);
        m.add(0x3010, vec![0xcc; 8]);
        m.add(0x3100, vec![0xdd; 8]);
        assert_eq!(
            m.span(0x3008).map(|(b, s)| (b, s.len())),
            Some((0x3000, 16))
        );
        assert_eq!(m.span(0x3010).map(|(b, s)| (b, s.len())), Some((0x3010, 8)));
        assert_eq!(m.span(0x3018), None);
        for at in [0x3000, 0x3010, 0x3018, 0x3100, 0] {
            same_as_inner(&m, at, 0x2ff0, 0x3110);
        }
        // Through a `&dyn` and a `Box`, the span is the same.
        let d: &dyn MemoryReader = &m;
        assert_eq!(d.span(0x3008), m.span(0x3008));
        let b: Box<dyn MemoryReader + '_> = Box::new(m.clone());
        assert_eq!(b.span(0x3010), m.span(0x3010));
    }
}

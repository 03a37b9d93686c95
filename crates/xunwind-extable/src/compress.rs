//! Finding and decompressing the vmlinux inside a bzImage/vmlinuz.
//!
//! Boot protocol 2.08+ records the payload's offset and length in the setup header (offsets
//! 0x248/0x24c, relative to the protected-mode code after `(setup_sects + 1) * 512` bytes); the
//! payload is one of the kernel's `vmlinux.bin.*` compressions followed by the 4-byte
//! uncompressed size. Older images are searched for a compression magic.

use crate::error::{Error, Result};
use crate::format::find;

/// The compression of a bzImage payload (`CONFIG_KERNEL_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (`CONFIG_KERNEL_GZIP`).
    Gzip,
    /// xz (`CONFIG_KERNEL_XZ`; Debian's choice).
    Xz,
    /// Legacy .lzma (`CONFIG_KERNEL_LZMA`).
    Lzma,
    /// zstd (`CONFIG_KERNEL_ZSTD`).
    Zstd,
    /// LZ4 legacy frames (`CONFIG_KERNEL_LZ4`).
    Lz4,
    /// bzip2 (`CONFIG_KERNEL_BZIP2`).
    Bzip2,
    /// LZO (`CONFIG_KERNEL_LZO`): recognised, not decompressed (no maintained pure-Rust crate).
    Lzo,
}

impl Compression {
    /// Its name (`gzip`, `xz`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "lzo",
        }
    }

    /// Whether this build can decompress it.
    pub const fn supported(self) -> bool {
        match self {
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Xz | Compression::Lzma => cfg!(feature = "xz"),
            Compression::Zstd => cfg!(feature = "zstd"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Bzip2 => cfg!(feature = "bzip2"),
            Compression::Lzo => false,
        }
    }

    /// The compression whose magic starts `data`.
    pub fn sniff(data: &[u8]) -> Option<Self> {
        MAGICS
            .iter()
            .find(|(m, _)| data.starts_with(m))
            .map(|&(_, c)| c)
    }
}

const MAGICS: [(&[u8], Compression); 7] = [
    (&[0x1f, 0x8b], Compression::Gzip),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
    (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
    (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
    (b"BZh", Compression::Bzip2),
    (&[0x89, b'L', b'Z', b'O', 0], Compression::Lzo),
    // lzma_alone with the kernel's `lzma -9` properties (lc=3 lp=0 pb=2).
    (&[0x5d, 0, 0], Compression::Lzma),
];

/// Largest decompressed kernel accepted (real payloads, stripped vmlinux, are tens of MB).
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// The compressed payload of a bzImage: its bytes and method.
pub fn find_payload(image: &[u8]) -> Option<(&[u8], Compression)> {
    if image.get(0x202..0x206) == Some(b"HdrS") {
        let version = u16::from_le_bytes([image[0x206], image[0x207]]);
        let setup_sects = match image.get(0x1f1) {
            Some(0) | None => 4,
            Some(&n) => n as usize,
        };
        if version >= 0x208 {
            let rd = |o: usize| {
                image
                    .get(o..o + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            };
            if let (Some(off), Some(len)) = (rd(0x248), rd(0x24c)) {
                let start = (setup_sects + 1) * 512 + off;
                if let Some(p) = start.checked_add(len).and_then(|end| image.get(start..end)) {
                    if let Some(c) = Compression::sniff(p) {
                        return Some((p, c));
                    }
                }
            }
        }
    }
    // No usable header: the first strong magic anywhere (gzip's two bytes and lzma's three are
    // too weak to search for, so only the longer magics are tried).
    MAGICS[1..6]
        .iter()
        .filter_map(|&(m, c)| find(image, m).map(|p| (p, c)))
        .min_by_key(|&(p, _)| p)
        .map(|(p, c)| (&image[p..], c))
}

/// Decompresses a payload; trailing bytes after the stream (the appended size) are ignored.
pub fn decompress(payload: &[u8], method: Compression) -> Result<Vec<u8>> {
    if !method.supported() {
        return Err(Error::UnsupportedCompression(method));
    }
    let out = match method {
        #[cfg(feature = "gzip")]
        Compression::Gzip => read_all(flate2::read::GzDecoder::new(payload), method)?,
        #[cfg(feature = "xz")]
        Compression::Xz => {
            // One stream: the kernel's is followed by the 4-byte size, not another stream.
            read_all(lzma_rust2::XzReader::new(payload, false), method)?
        }
        #[cfg(feature = "xz")]
        Compression::Lzma => read_all(
            lzma_rust2::LzmaReader::new_mem_limit(payload, 128 << 10, None)
                .map_err(|_| Error::Decompress(method))?,
            method,
        )?,
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let mut input = payload;
            let dec =
                ruzstd::StreamingDecoder::new(&mut input).map_err(|_| Error::Decompress(method))?;
            read_all(dec, method)?
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4_legacy(payload)?,
        #[cfg(feature = "bzip2")]
        Compression::Bzip2 => read_all(bzip2::read::BzDecoder::new(payload), method)?,
        _ => return Err(Error::UnsupportedCompression(method)),
    };
    Ok(out)
}

#[allow(dead_code)]
fn read_all(r: impl std::io::Read, method: Compression) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Error::Decompress(method))?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(Error::TooLarge("decompressed kernel over 256 MiB"));
    }
    Ok(out)
}

/// LZ4 legacy format (`lz4 -l`, what the kernel's `unlz4` reads): a magic, then blocks of
/// `u32 compressed size` + data, each decompressing to at most 8 MiB; a repeated magic starts a
/// new stream, and a size that does not fit what is left is the appended length.
#[cfg(feature = "lz4")]
fn lz4_legacy(p: &[u8]) -> Result<Vec<u8>> {
    const MAGIC: u32 = 0x184c_2102;
    const BLOCK: usize = 8 << 20;
    let bad = Error::Decompress(Compression::Lz4);
    let mut pos = 4;
    let mut out = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    while pos + 4 <= p.len() {
        let size = u32::from_le_bytes([p[pos], p[pos + 1], p[pos + 2], p[pos + 3]]);
        pos += 4;
        if size == MAGIC {
            continue;
        }
        let Some(block) = p.get(pos..pos + size as usize) else {
            break;
        };
        let n = lz4_flex::block::decompress_into(block, &mut buf).map_err(|_| bad)?;
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_DECOMPRESSED {
            return Err(Error::TooLarge("decompressed kernel over 256 MiB"));
        }
        pos += size as usize;
    }
    if out.is_empty() {
        return Err(bad);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magics() {
        assert_eq!(
            Compression::sniff(&[0x1f, 0x8b, 8]),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::sniff(b"\xfd7zXZ\0\0"), Some(Compression::Xz));
        assert_eq!(Compression::sniff(b"BZh9"), Some(Compression::Bzip2));
        assert_eq!(Compression::sniff(b"\x7fELF"), None);
    }

    #[test]
    fn finds_payload_by_header() {
        let mut img = vec![0u8; 0x1000];
        img[0x1f1] = 1; // setup_sects: payload base = 2 * 512
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&6u32.to_le_bytes());
        img[0x410..0x416].copy_from_slice(b"\xfd7zXZ\0");
        let (p, c) = find_payload(&img).unwrap();
        assert_eq!((p.len(), c), (6, Compression::Xz));
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn gzip_roundtrip() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"\x7fELF hello").unwrap();
        let mut z = enc.finish().unwrap();
        z.extend(10u32.to_le_bytes()); // the appended size
        assert_eq!(decompress(&z, Compression::Gzip).unwrap(), b"\x7fELF hello");
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_legacy_roundtrip() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let block = lz4_flex::block::compress(&data);
        let mut p = 0x184c_2102u32.to_le_bytes().to_vec();
        p.extend((block.len() as u32).to_le_bytes());
        p.extend(&block);
        p.extend((data.len() as u32).to_le_bytes());
        assert_eq!(decompress(&p, Compression::Lz4).unwrap(), data);
    }

    #[test]
    fn lzo_is_reported() {
        assert_eq!(
            decompress(b"\x89LZO\0", Compression::Lzo),
            Err(Error::UnsupportedCompression(Compression::Lzo))
        );
    }
}

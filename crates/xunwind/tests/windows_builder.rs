//! A minidump writer for tests: hand-built dumps with known contents (layouts from
//! `minidumpapiset.h`). Included as a module by the minidump tests here and by the CLI's
//! `stack` tests; on its own it is an empty test crate.
#![allow(
    dead_code,
    missing_docs,
    clippy::len_without_is_empty,
    clippy::type_complexity
)]

/// Stream types.
pub const THREAD_LIST: u32 = 3;
pub const MODULE_LIST: u32 = 4;
pub const MEMORY_LIST: u32 = 5;
pub const EXCEPTION: u32 = 6;
pub const SYSTEM_INFO: u32 = 7;
pub const MEMORY64_LIST: u32 = 9;

/// ContextFlags bits.
pub const CONTEXT_AMD64: u32 = 0x10_0000;
pub const CONTEXT_CONTROL: u32 = 0x1;
pub const CONTEXT_INTEGER: u32 = 0x2;
pub const CONTEXT_FLOATING_POINT: u32 = 0x8;
pub const CONTEXT_FULL: u32 =
    CONTEXT_AMD64 | CONTEXT_CONTROL | CONTEXT_INTEGER | CONTEXT_FLOATING_POINT;

const DIRECTORY_SLOTS: usize = 16;
const DATA_START: usize = 32 + 12 * DIRECTORY_SLOTS;

/// A dump under construction: data blobs are appended, streams point at them.
pub struct DumpBuilder {
    buf: Vec<u8>,
    dir: Vec<(u32, u32, u32)>,
}

impl Default for DumpBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DumpBuilder {
    pub fn new() -> Self {
        DumpBuilder {
            buf: vec![0; DATA_START],
            dir: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends bytes (4-aligned); returns (size, rva).
    pub fn put(&mut self, b: &[u8]) -> (u32, u32) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        let rva = self.buf.len() as u32;
        self.buf.extend_from_slice(b);
        (b.len() as u32, rva)
    }

    /// Adds a stream with the given contents.
    pub fn stream(&mut self, kind: u32, b: &[u8]) {
        let (size, rva) = self.put(b);
        self.raw_directory_entry(kind, size, rva);
    }

    /// A directory entry with any location (for malformed dumps).
    pub fn raw_directory_entry(&mut self, kind: u32, size: u32, rva: u32) {
        assert!(self.dir.len() < DIRECTORY_SLOTS);
        self.dir.push((kind, size, rva));
    }

    pub fn system_info(&mut self, arch: u16) {
        let mut s = vec![0u8; 56];
        s[0..2].copy_from_slice(&arch.to_le_bytes());
        self.stream(SYSTEM_INFO, &s);
    }

    /// MINIDUMP_STRING; returns its rva.
    pub fn string(&mut self, s: &str) -> u32 {
        let units: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut b = (units.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&units);
        b.extend_from_slice(&[0, 0]);
        self.put(&b).1
    }

    /// Threads: (id, stack start, stack bytes, context bytes).
    pub fn thread_list(&mut self, threads: &[(u32, u64, &[u8], &[u8])]) {
        let mut s = (threads.len() as u32).to_le_bytes().to_vec();
        for &(id, start, stack, ctx) in threads {
            let (ssize, srva) = self.put(stack);
            let (csize, crva) = self.put(ctx);
            let mut t = vec![0u8; 48];
            t[0..4].copy_from_slice(&id.to_le_bytes());
            t[24..32].copy_from_slice(&start.to_le_bytes());
            t[32..36].copy_from_slice(&ssize.to_le_bytes());
            t[36..40].copy_from_slice(&srva.to_le_bytes());
            t[40..44].copy_from_slice(&csize.to_le_bytes());
            t[44..48].copy_from_slice(&crva.to_le_bytes());
            s.extend_from_slice(&t);
        }
        self.stream(THREAD_LIST, &s);
    }

    /// Modules: (base, size, checksum, time stamp, path, CodeView record bytes).
    pub fn module_list(&mut self, modules: &[(u64, u32, u32, u32, &str, &[u8])]) {
        let mut s = (modules.len() as u32).to_le_bytes().to_vec();
        for &(base, size, checksum, stamp, name, cv) in modules {
            let name_rva = self.string(name);
            let (cv_size, cv_rva) = if cv.is_empty() { (0, 0) } else { self.put(cv) };
            let mut m = vec![0u8; 108];
            m[0..8].copy_from_slice(&base.to_le_bytes());
            m[8..12].copy_from_slice(&size.to_le_bytes());
            m[12..16].copy_from_slice(&checksum.to_le_bytes());
            m[16..20].copy_from_slice(&stamp.to_le_bytes());
            m[20..24].copy_from_slice(&name_rva.to_le_bytes());
            m[76..80].copy_from_slice(&cv_size.to_le_bytes());
            m[80..84].copy_from_slice(&cv_rva.to_le_bytes());
            s.extend_from_slice(&m);
        }
        self.stream(MODULE_LIST, &s);
    }

    /// MemoryListStream: (address, bytes).
    pub fn memory_list(&mut self, ranges: &[(u64, &[u8])]) {
        let mut s = (ranges.len() as u32).to_le_bytes().to_vec();
        for &(start, data) in ranges {
            let (size, rva) = self.put(data);
            s.extend_from_slice(&start.to_le_bytes());
            s.extend_from_slice(&size.to_le_bytes());
            s.extend_from_slice(&rva.to_le_bytes());
        }
        self.stream(MEMORY_LIST, &s);
    }

    /// Memory64ListStream: the bytes follow each other from one base rva.
    pub fn memory64_list(&mut self, ranges: &[(u64, &[u8])]) {
        let all: Vec<u8> = ranges.iter().flat_map(|r| r.1.iter().copied()).collect();
        let (_, base) = self.put(&all);
        let mut s = (ranges.len() as u64).to_le_bytes().to_vec();
        s.extend_from_slice(&u64::from(base).to_le_bytes());
        for &(start, data) in ranges {
            s.extend_from_slice(&start.to_le_bytes());
            s.extend_from_slice(&(data.len() as u64).to_le_bytes());
        }
        self.stream(MEMORY64_LIST, &s);
    }

    /// ExceptionStream.
    pub fn exception(&mut self, thread: u32, code: u32, address: u64, params: &[u64], ctx: &[u8]) {
        let (csize, crva) = self.put(ctx);
        let mut s = vec![0u8; 168];
        s[0..4].copy_from_slice(&thread.to_le_bytes());
        s[8..12].copy_from_slice(&code.to_le_bytes());
        s[12..16].copy_from_slice(&1u32.to_le_bytes());
        s[24..32].copy_from_slice(&address.to_le_bytes());
        s[32..36].copy_from_slice(&(params.len() as u32).to_le_bytes());
        for (i, p) in params.iter().enumerate().take(15) {
            s[40 + 8 * i..48 + 8 * i].copy_from_slice(&p.to_le_bytes());
        }
        s[160..164].copy_from_slice(&csize.to_le_bytes());
        s[164..168].copy_from_slice(&crva.to_le_bytes());
        self.stream(EXCEPTION, &s);
    }

    /// The finished file.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[0..4].copy_from_slice(b"MDMP");
        self.buf[4..8].copy_from_slice(&0xa793u32.to_le_bytes());
        self.buf[8..12].copy_from_slice(&(self.dir.len() as u32).to_le_bytes());
        self.buf[12..16].copy_from_slice(&32u32.to_le_bytes());
        for (i, &(kind, size, rva)) in self.dir.iter().enumerate() {
            let o = 32 + 12 * i;
            self.buf[o..o + 4].copy_from_slice(&kind.to_le_bytes());
            self.buf[o + 4..o + 8].copy_from_slice(&size.to_le_bytes());
            self.buf[o + 8..o + 12].copy_from_slice(&rva.to_le_bytes());
        }
        self.buf
    }
}

/// An x64 CONTEXT (0x4d0 bytes): flags, rip, the GPRs in encoding order, xmm0-15.
pub fn context(flags: u32, rip: u64, gpr: [u64; 16], xmm: [u128; 16]) -> Vec<u8> {
    let mut c = vec![0u8; 0x4d0];
    c[0x30..0x34].copy_from_slice(&flags.to_le_bytes());
    for (i, v) in gpr.iter().enumerate() {
        c[0x78 + 8 * i..0x80 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    c[0xf8..0x100].copy_from_slice(&rip.to_le_bytes());
    for (i, v) in xmm.iter().enumerate() {
        c[0x1a0 + 16 * i..0x1b0 + 16 * i].copy_from_slice(&v.to_le_bytes());
    }
    c
}

/// A CodeView RSDS record.
pub fn codeview(guid: [u8; 16], age: u32, pdb: &str) -> Vec<u8> {
    let mut b = b"RSDS".to_vec();
    b.extend_from_slice(&guid);
    b.extend_from_slice(&age.to_le_bytes());
    b.extend_from_slice(pdb.as_bytes());
    b.push(0);
    b
}

/// A little-endian u64 written into a stack image at byte offset `at`.
pub fn poke(stack: &mut [u8], at: usize, v: u64) {
    stack[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

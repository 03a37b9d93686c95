//! MSVC C++ exception data for `__CxxFrameHandler3` (FuncInfo, "FH3"): the IP-to-state map,
//! try blocks with their catch clauses, and the unwind map of destructor funclets.
//!
//! On x64 the handler data is a 32-bit RVA of the FuncInfo; every pointer inside is an RVA.
//! `__CxxFrameHandler4`'s compressed FuncInfo4 is not decoded ([`FuncInfo::parse`] is only
//! for FH3 data; see [`CxxError::Unsupported`]).

use crate::{PeError, PeImage};
use core::fmt;

/// Most entries of any FuncInfo table that are read, and most catch clauses in all (each is
/// bounded by the image anyway, but tables may share entries).
pub const MAX_CXX_ENTRIES: u32 = 1 << 16;

/// What is wrong with (or unsupported in) C++ exception data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CxxError {
    /// A table lies outside the image.
    Image(PeError),
    /// The magic number is not an FH3 one (0x19930520..=0x19930522).
    BadMagic(u32),
    /// A count larger than [`MAX_CXX_ENTRIES`] or a state out of range.
    BadCount(u32),
    /// A format this decoder does not read (FH4).
    Unsupported(&'static str),
}

impl fmt::Display for CxxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CxxError::Image(e) => write!(f, "{e}"),
            CxxError::BadMagic(m) => write!(f, "FuncInfo magic {m:#x} is not FH3"),
            CxxError::BadCount(n) => write!(f, "FuncInfo count or state {n} is out of range"),
            CxxError::Unsupported(w) => write!(f, "unsupported: {w}"),
        }
    }
}

impl std::error::Error for CxxError {}

impl From<PeError> for CxxError {
    fn from(e: PeError) -> Self {
        CxxError::Image(e)
    }
}

/// One catch clause (HandlerType).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchClause {
    /// Adjectives (const, volatile, reference, ...).
    pub adjectives: u32,
    /// RVA of the TypeDescriptor; 0 for `catch (...)`.
    pub type_descriptor: u32,
    /// The TypeDescriptor's decorated name (`.H` for int, `.?AVfoo@@`), when readable.
    pub type_name: Option<String>,
    /// RVA of the catch funclet.
    pub handler: u32,
}

/// One try block (TryBlockMapEntry): the states it guards and its catch clauses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TryBlock {
    /// Lowest guarded state.
    pub try_low: i32,
    /// Highest guarded state.
    pub try_high: i32,
    /// Highest state inside its catch blocks.
    pub catch_high: i32,
    /// Catch clauses in the order they are tried.
    pub catches: Vec<CatchClause>,
}

impl TryBlock {
    /// Whether `state` is guarded.
    pub fn guards(&self, state: i32) -> bool {
        self.try_low <= state && state <= self.try_high
    }
}

/// A decoded FH3 FuncInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncInfo {
    /// The magic number (low 29 bits).
    pub magic: u32,
    /// Unwind map: (toState, action RVA or 0) per state.
    pub unwind_map: Vec<(i32, u32)>,
    /// Try blocks, innermost first (as the compiler orders them).
    pub try_blocks: Vec<TryBlock>,
    /// IP-to-state map: (ip RVA, state), sorted by ip.
    pub ip_to_state: Vec<(u32, i32)>,
    /// EHFlags (magic 0x19930522 and later): bit 0 = compiled with /EHs (synchronous only).
    pub eh_flags: u32,
}

fn read_u32(img: &PeImage<'_>, rva: u32) -> Result<u32, CxxError> {
    Ok(img.read_u32(rva)?)
}

fn count(n: u32) -> Result<u32, CxxError> {
    if n > MAX_CXX_ENTRIES {
        Err(CxxError::BadCount(n))
    } else {
        Ok(n)
    }
}

/// The decorated name of a TypeDescriptor (after the vftable pointer and spare word).
fn type_name(img: &PeImage<'_>, rva: u32) -> Option<String> {
    let b = img.bytes_at(rva.checked_add(16)?);
    let end = b.iter().take(1024).position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&b[..end]).into_owned())
}

impl FuncInfo {
    /// Decodes the FuncInfo at `rva`.
    pub fn parse(img: &PeImage<'_>, rva: u32) -> Result<FuncInfo, CxxError> {
        let raw_magic = read_u32(img, rva)?;
        let magic = raw_magic & 0x1fff_ffff;
        if !(0x1993_0520..=0x1993_0522).contains(&magic) {
            return Err(if raw_magic & 0xff == 0 || raw_magic < 0x100 {
                CxxError::Unsupported("not FH3 data (FH4's FuncInfo4 is compressed)")
            } else {
                CxxError::BadMagic(raw_magic)
            });
        }
        let f = |i: u32| read_u32(img, rva.wrapping_add(4 * i));
        let max_state = count(f(1)?)?;
        let unwind_rva = f(2)?;
        let n_try = count(f(3)?)?;
        let try_rva = f(4)?;
        let n_ip = count(f(5)?)?;
        let ip_rva = f(6)?;
        let eh_flags = if magic >= 0x1993_0522 { f(9)? } else { 0 };
        let mut unwind_map = Vec::new();
        for i in 0..max_state {
            let at = unwind_rva.wrapping_add(8 * i);
            unwind_map.push((
                read_u32(img, at)? as i32,
                read_u32(img, at.wrapping_add(4))?,
            ));
        }
        let mut try_blocks = Vec::new();
        // Every try block may name the same handler array: bound the clauses in total.
        let mut clauses = 0u32;
        for i in 0..n_try {
            let at = try_rva.wrapping_add(20 * i);
            let g = |k: u32| read_u32(img, at.wrapping_add(4 * k));
            let n_catch = count(g(3)?)?;
            clauses = count(clauses.saturating_add(n_catch))?;
            let arr = g(4)?;
            let mut catches = Vec::new();
            for c in 0..n_catch {
                let h = arr.wrapping_add(20 * c);
                let hg = |k: u32| read_u32(img, h.wrapping_add(4 * k));
                let td = hg(1)?;
                catches.push(CatchClause {
                    adjectives: hg(0)?,
                    type_descriptor: td,
                    type_name: if td == 0 { None } else { type_name(img, td) },
                    handler: hg(3)?,
                });
            }
            try_blocks.push(TryBlock {
                try_low: g(0)? as i32,
                try_high: g(1)? as i32,
                catch_high: g(2)? as i32,
                catches,
            });
        }
        let mut ip_to_state = Vec::new();
        for i in 0..n_ip {
            let at = ip_rva.wrapping_add(8 * i);
            ip_to_state.push((
                read_u32(img, at)?,
                read_u32(img, at.wrapping_add(4))? as i32,
            ));
        }
        Ok(FuncInfo {
            magic,
            unwind_map,
            try_blocks,
            ip_to_state,
            eh_flags,
        })
    }

    /// The state at `pc_rva`: the state of the last map entry at or before it (-1 before the
    /// first), as the frame handler computes it from the dispatcher's ControlPc.
    pub fn state_at(&self, pc_rva: u32) -> i32 {
        let n = self.ip_to_state.partition_point(|&(ip, _)| ip <= pc_rva);
        if n == 0 {
            -1
        } else {
            self.ip_to_state[n - 1].1
        }
    }

    /// The try blocks guarding `state`, in table order (innermost first).
    pub fn try_blocks_at(&self, state: i32) -> impl Iterator<Item = &TryBlock> {
        self.try_blocks.iter().filter(move |t| t.guards(state))
    }

    /// The destructor funclets run when unwinding from `state` down to `target` (exclusive),
    /// in run order: the unwind map's chain of toState links. Bounded by the map's size.
    pub fn unwind_actions(&self, state: i32, target: i32) -> Vec<(i32, u32)> {
        let mut out = Vec::new();
        let mut s = state;
        for _ in 0..=self.unwind_map.len() {
            if s <= target || s < 0 {
                break;
            }
            let Some(&(to, action)) = self.unwind_map.get(s as usize) else {
                break;
            };
            if action != 0 {
                out.push((s, action));
            }
            s = to;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(buf: &mut [u8], at: usize, vals: &[u32]) {
        for (i, v) in vals.iter().enumerate() {
            buf[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }

    #[test]
    fn fh3_tables() {
        let mut b = vec![0u8; 0x400];
        // FuncInfo at 0x100.
        put(
            &mut b,
            0x100,
            &[0x1993_0522, 3, 0x200, 1, 0x240, 3, 0x280, 0x28, 0, 1],
        );
        // Unwind map: state 0 -> -1 (dtor 0x1000), 1 -> 0 (none), 2 -> 1 (dtor 0x1100).
        put(&mut b, 0x200, &[u32::MAX, 0x1000, 0, 0, 1, 0x1100]);
        // One try block guarding states 1..=1, one catch clause of type at 0x300.
        put(&mut b, 0x240, &[1, 1, 2, 2, 0x260]);
        put(&mut b, 0x260, &[0, 0x300, 0x30, 0x1200, 0x40]);
        put(&mut b, 0x274, &[0, 0, 0, 0x1300, 0x40]);
        b[0x310..0x313].copy_from_slice(b".H\0");
        put(&mut b, 0x280, &[0x900, u32::MAX, 0x910, 1, 0x920, 2]);
        let img = PeImage::from_parts(&b, 0x1_4000_0000, 0, 0);
        let fi = FuncInfo::parse(&img, 0x100).unwrap();
        assert_eq!(fi.eh_flags, 1);
        assert_eq!(fi.state_at(0x8ff), -1);
        assert_eq!(fi.state_at(0x915), 1);
        assert_eq!(fi.state_at(0x930), 2);
        let tb: Vec<_> = fi.try_blocks_at(1).collect();
        assert_eq!(tb.len(), 1);
        assert_eq!(tb[0].catches[0].type_name.as_deref(), Some(".H"));
        assert_eq!(tb[0].catches[1].type_descriptor, 0);
        assert_eq!(fi.unwind_actions(2, -1), [(2, 0x1100), (0, 0x1000)]);
        assert_eq!(fi.unwind_actions(2, 0), [(2, 0x1100)]);
        // FH4 data and absurd counts are typed errors.
        put(&mut b, 0x100, &[0x08]);
        let img = PeImage::from_parts(&b, 0, 0, 0);
        assert!(matches!(
            FuncInfo::parse(&img, 0x100),
            Err(CxxError::Unsupported(_))
        ));
        // Try blocks sharing one handler array cannot multiply into billions of clauses.
        let mut big = vec![0u8; 0x8000];
        put(&mut big, 0, &[0x1993_0520, 0, 0, 300, 0x100, 0, 0]);
        for i in 0..300 {
            put(&mut big, 0x100 + 20 * i, &[0, 0, 0, 300, 0x2000]);
        }
        let img = PeImage::from_parts(&big, 0, 0, 0);
        assert_eq!(FuncInfo::parse(&img, 0), Err(CxxError::BadCount(65_700)));
        put(&mut b, 0x100, &[0x1993_0520, u32::MAX]);
        let img = PeImage::from_parts(&b, 0, 0, 0);
        assert!(matches!(
            FuncInfo::parse(&img, 0x100),
            Err(CxxError::BadCount(_))
        ));
    }
}

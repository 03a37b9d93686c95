//! The x64 register set, with validity: an unknown register is not zero.

use core::fmt;

/// A general-purpose register, numbered as in the x64 encoding and Windows' CONTEXT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Reg {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

/// Register names in encoding order (`rax rcx rdx rbx rsp rbp rsi rdi r8 .. r15`).
pub const REG_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

impl Reg {
    /// All sixteen registers in encoding order.
    pub const ALL: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    /// The register with encoding number `n` (only the low 4 bits are used).
    #[inline]
    pub const fn from_number(n: u8) -> Reg {
        Reg::ALL[(n & 15) as usize]
    }

    /// The encoding number.
    #[inline]
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The lower-case name (`rax`, `r12`).
    #[inline]
    pub const fn name(self) -> &'static str {
        REG_NAMES[self as usize]
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const RIP_BIT: u64 = 1 << 16;
const XMM_SHIFT: u32 = 17;

/// An x64 register set: rip, the sixteen GPRs, xmm0-15, and which of them are known.
///
/// Reading a register that is not known gives `None`; unwinders mark a register unknown when the
/// caller's value cannot be recovered, so a debugger never shows a made-up zero.
///
/// Two sets are equal when the same registers are known with the same values; what an unknown
/// register's storage happens to hold does not count.
#[derive(Clone, Default)]
pub struct Regs {
    gpr: [u64; 16],
    rip: u64,
    xmm: [u128; 16],
    valid: u64,
}

impl Regs {
    /// A register set in which nothing is known.
    pub const fn new() -> Regs {
        Regs {
            gpr: [0; 16],
            rip: 0,
            xmm: [0; 16],
            valid: 0,
        }
    }

    /// A register set with rip, rsp and every other GPR known (xmm unknown).
    pub fn with_gprs(rip: u64, gpr: [u64; 16]) -> Regs {
        Regs {
            gpr,
            rip,
            xmm: [0; 16],
            valid: 0xffff | RIP_BIT,
        }
    }

    /// The value of `reg`, if known.
    #[inline]
    pub fn get(&self, reg: Reg) -> Option<u64> {
        let i = reg as usize;
        (self.valid & (1 << i) != 0).then_some(self.gpr[i])
    }

    /// The value of `reg` whether known or not (0 when it never was set).
    #[inline]
    pub fn get_raw(&self, reg: Reg) -> u64 {
        self.gpr[reg as usize]
    }

    /// Sets `reg` and marks it known.
    #[inline]
    pub fn set(&mut self, reg: Reg, value: u64) {
        let i = reg as usize;
        self.gpr[i] = value;
        self.valid |= 1 << i;
    }

    /// Marks `reg` unknown.
    #[inline]
    pub fn invalidate(&mut self, reg: Reg) {
        self.valid &= !(1 << reg as usize);
    }

    /// The instruction pointer, if known.
    #[inline]
    pub fn rip(&self) -> Option<u64> {
        (self.valid & RIP_BIT != 0).then_some(self.rip)
    }

    /// Sets the instruction pointer.
    #[inline]
    pub fn set_rip(&mut self, value: u64) {
        self.rip = value;
        self.valid |= RIP_BIT;
    }

    /// The stack pointer, if known.
    #[inline]
    pub fn rsp(&self) -> Option<u64> {
        self.get(Reg::Rsp)
    }

    /// xmm register `n` (0-15), if known.
    #[inline]
    pub fn xmm(&self, n: u8) -> Option<u128> {
        let n = (n & 15) as u32;
        (self.valid & (1 << (XMM_SHIFT + n)) != 0).then_some(self.xmm[n as usize])
    }

    /// Sets xmm register `n` (0-15) and marks it known.
    #[inline]
    pub fn set_xmm(&mut self, n: u8, value: u128) {
        let n = (n & 15) as u32;
        self.xmm[n as usize] = value;
        self.valid |= 1 << (XMM_SHIFT + n);
    }

    /// Marks xmm register `n` unknown.
    #[inline]
    pub fn invalidate_xmm(&mut self, n: u8) {
        self.valid &= !(1 << (XMM_SHIFT + (n & 15) as u32));
    }

    /// Marks every register unknown.
    pub fn clear(&mut self) {
        self.valid = 0;
    }

    /// Keeps only the registers whose bits are set in `mask` (layout as [`Regs::valid_mask`]);
    /// the rest become unknown. One instruction for a whole calling convention's volatile set.
    #[inline]
    pub fn retain(&mut self, mask: u64) {
        self.valid &= mask;
    }

    /// The [`Regs::valid_mask`] bit of `reg`.
    #[inline]
    pub const fn bit(reg: Reg) -> u64 {
        1 << reg as u32
    }

    /// The [`Regs::valid_mask`] bit of rip.
    #[inline]
    pub const fn rip_bit() -> u64 {
        RIP_BIT
    }

    /// The [`Regs::valid_mask`] bit of xmm register `n` (0-15).
    #[inline]
    pub const fn xmm_bit(n: u8) -> u64 {
        1 << (XMM_SHIFT + (n & 15) as u32)
    }

    /// Bit mask of known registers: bits 0-15 GPRs, 16 rip, 17-32 xmm0-15.
    #[inline]
    pub fn valid_mask(&self) -> u64 {
        self.valid
    }
}

impl PartialEq for Regs {
    fn eq(&self, other: &Regs) -> bool {
        if self.valid != other.valid {
            return false;
        }
        let gprs = (0..16).all(|i| self.valid & (1 << i) == 0 || self.gpr[i] == other.gpr[i]);
        let xmm = (0..16u32).all(|i| {
            self.valid & (1 << (XMM_SHIFT + i)) == 0
                || self.xmm[i as usize] == other.xmm[i as usize]
        });
        gprs && xmm && (self.valid & RIP_BIT == 0 || self.rip == other.rip)
    }
}

impl Eq for Regs {}

impl fmt::Debug for Regs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        match self.rip() {
            Some(v) => m.entry(&"rip", &format_args!("{v:#x}")),
            None => m.entry(&"rip", &"?"),
        };
        for r in Reg::ALL {
            if let Some(v) = self.get(r) {
                m.entry(&r.name(), &format_args!("{v:#x}"));
            }
        }
        for n in 0..16u8 {
            if let Some(v) = self.xmm(n) {
                m.entry(&format_args!("xmm{n}"), &format_args!("{v:#x}"));
            }
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_not_zero() {
        let mut r = Regs::new();
        assert_eq!(r.get(Reg::Rbx), None);
        r.set(Reg::Rbx, 0);
        assert_eq!(r.get(Reg::Rbx), Some(0));
        r.invalidate(Reg::Rbx);
        assert_eq!(r.get(Reg::Rbx), None);
        assert_eq!(r.rip(), None);
        r.set_rip(5);
        assert_eq!(r.rip(), Some(5));
        r.set_xmm(15, u128::MAX);
        assert_eq!(r.xmm(15), Some(u128::MAX));
        assert_eq!(r.xmm(14), None);
        assert_eq!(r.valid_mask(), RIP_BIT | 1 << (XMM_SHIFT + 15));
        r.set(Reg::R12, 1);
        r.retain(!Regs::xmm_bit(15));
        assert_eq!(r.xmm(15), None);
        assert_eq!(r.get(Reg::R12), Some(1));
        r.retain(!Regs::bit(Reg::R12));
        assert_eq!(r.get(Reg::R12), None);
        assert_eq!(r.rip(), Some(5));
    }

    #[test]
    fn equality_ignores_unknown_storage() {
        let mut a = Regs::new();
        let mut b = Regs::new();
        a.set(Reg::Rax, 1);
        a.invalidate(Reg::Rax);
        assert_eq!(a, b);
        b.set(Reg::Rax, 2);
        assert_ne!(a, b);
        a.set(Reg::Rax, 2);
        a.set_xmm(3, 9);
        assert_ne!(a, b);
        b.set_xmm(3, 9);
        assert_eq!(a, b);
        a.set_rip(1);
        b.set_rip(2);
        assert_ne!(a, b);
    }

    #[test]
    fn names_follow_encoding() {
        assert_eq!(Reg::from_number(12).name(), "r12");
        assert_eq!(Reg::from_number(4), Reg::Rsp);
        assert_eq!(Reg::Rdi.number(), 7);
    }
}

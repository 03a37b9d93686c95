//! GCC's language-specific data area (LSDA, `.gcc_except_table`), as `__gxx_personality_seh0`
//! and `__gnat_personality_seh0` read it on Windows x64 (mingw): header, call-site table,
//! action table and type table.
//!
//! The handler data of such a frame is a 32-bit RVA of the LSDA. Addresses here are absolute
//! (image base already added), because `pcrel` values are relative to where the field lives.

use core::fmt;

/// `DW_EH_PE_omit`: the field is absent.
pub const DW_EH_PE_OMIT: u8 = 0xff;

/// Most call-site or action records read from one table (hostile input cannot make us loop
/// longer than this).
pub const MAX_LSDA_RECORDS: usize = 1 << 16;

/// What is wrong with an LSDA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LsdaError {
    /// A field runs past the readable bytes.
    Truncated {
        /// Offset from the LSDA's start.
        offset: usize,
    },
    /// A pointer encoding this reader does not know (or one not allowed in that field).
    BadEncoding {
        /// Offset of the field.
        offset: usize,
        /// The `DW_EH_PE_*` byte.
        encoding: u8,
    },
    /// A LEB128 number longer than 64 bits.
    BadLeb {
        /// Offset of the number.
        offset: usize,
    },
    /// An action or type index points outside its table.
    BadIndex {
        /// The offending value.
        value: i64,
    },
    /// An action chain is longer than [`MAX_LSDA_RECORDS`] or loops.
    ActionLoop,
    /// An indirect (`DW_EH_PE_indirect`) pointer whose target could not be read.
    Unreadable {
        /// The address of the pointer.
        addr: u64,
    },
}

impl fmt::Display for LsdaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LsdaError::Truncated { offset } => write!(f, "LSDA truncated at offset {offset:#x}"),
            LsdaError::BadEncoding { offset, encoding } => {
                write!(
                    f,
                    "LSDA offset {offset:#x}: bad pointer encoding {encoding:#x}"
                )
            }
            LsdaError::BadLeb { offset } => write!(f, "LSDA offset {offset:#x}: LEB128 too long"),
            LsdaError::BadIndex { value } => write!(f, "LSDA index {value} is out of its table"),
            LsdaError::ActionLoop => f.write_str("LSDA action chain too long or cyclic"),
            LsdaError::Unreadable { addr } => {
                write!(f, "cannot read indirect pointer at {addr:#x}")
            }
        }
    }
}

impl std::error::Error for LsdaError {}

/// A cursor over LSDA bytes; offsets are from the LSDA's start.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Result<u8, LsdaError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(LsdaError::Truncated { offset: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], LsdaError> {
        let s = self
            .data
            .get(self.pos..)
            .and_then(|s| s.get(..N))
            .ok_or(LsdaError::Truncated { offset: self.pos })?;
        self.pos += N;
        Ok(s.try_into().expect("N bytes"))
    }

    fn uleb(&mut self) -> Result<u64, LsdaError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..).step_by(7).take(10) {
            let b = self.u8()?;
            let bits = (b & 0x7f) as u64;
            if shift == 63 && bits > 1 {
                return Err(LsdaError::BadLeb { offset: start });
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(LsdaError::BadLeb { offset: start })
    }

    fn sleb(&mut self) -> Result<i64, LsdaError> {
        let start = self.pos;
        let mut v = 0i64;
        let mut shift = 0u32;
        loop {
            if shift >= 70 {
                return Err(LsdaError::BadLeb { offset: start });
            }
            let b = self.u8()?;
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Ok(v);
            }
        }
    }

    /// A `DW_EH_PE_*` encoded value; `pcrel` is relative to the field's own address.
    fn encoded(&mut self, enc: u8, lsda_addr: u64, func: u64) -> Result<Encoded, LsdaError> {
        let at = self.pos;
        let field_addr = lsda_addr.wrapping_add(at as u64);
        let raw: u64 = match enc & 0x0f {
            0x00 | 0x04 => u64::from_le_bytes(self.bytes::<8>()?),
            0x01 => self.uleb()?,
            0x02 => u16::from_le_bytes(self.bytes::<2>()?) as u64,
            0x03 => u32::from_le_bytes(self.bytes::<4>()?) as u64,
            0x09 => self.sleb()? as u64,
            0x0a => i16::from_le_bytes(self.bytes::<2>()?) as i64 as u64,
            0x0b => i32::from_le_bytes(self.bytes::<4>()?) as i64 as u64,
            0x0c => i64::from_le_bytes(self.bytes::<8>()?) as u64,
            _ => {
                return Err(LsdaError::BadEncoding {
                    offset: at,
                    encoding: enc,
                })
            }
        };
        let value = match enc & 0x70 {
            0x00 => raw,
            0x10 => raw.wrapping_add(field_addr),
            0x40 => raw.wrapping_add(func),
            // textrel/datarel/aligned need bases GCC never uses on x64 Windows.
            _ => {
                return Err(LsdaError::BadEncoding {
                    offset: at,
                    encoding: enc,
                })
            }
        };
        Ok(Encoded {
            value,
            indirect: enc & 0x80 != 0,
        })
    }
}

/// A decoded pointer: its value, and whether it is the address of the real pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The value after applying the encoding's base.
    pub value: u64,
    /// `DW_EH_PE_indirect`: `value` is where the pointer is stored.
    pub indirect: bool,
}

/// One call-site record: a code range, its landing pad and first action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSite {
    /// First address covered (absolute).
    pub start: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// The landing pad (absolute), or `None` for "no handler here: keep unwinding".
    pub landing_pad: Option<u64>,
    /// 0 for a pure cleanup; otherwise 1 + the offset of the first action record.
    pub action: u64,
}

impl CallSite {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: u64) -> bool {
        ip.wrapping_sub(self.start) < self.len
    }
}

/// One action record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Filter 0: a cleanup (destructors) runs here.
    Cleanup,
    /// Filter > 0: a `catch` clause; the index into the type table (1-based, counting back).
    Catch {
        /// The type-table index.
        index: u64,
        /// The `type_info` address; `None` for `catch (...)` (type 0).
        type_info: Option<u64>,
    },
    /// Filter < 0: an exception specification; the byte offset (1-based) of its list.
    Spec {
        /// The negative filter value.
        filter: i64,
    },
}

/// A parsed LSDA.
#[derive(Clone, Copy, Debug)]
pub struct Lsda<'a> {
    data: &'a [u8],
    addr: u64,
    /// LPStart: the base landing pads are relative to (the function's start unless given).
    pub landing_pad_base: u64,
    /// The type table's encoding (`DW_EH_PE_omit` without a type table).
    pub ttype_encoding: u8,
    /// Offset of the type table's base (its end: entries are indexed backwards from it).
    ttype_base: Option<usize>,
    /// The call-site table's encoding.
    pub call_site_encoding: u8,
    cs_start: usize,
    cs_end: usize,
    func: u64,
}

/// How an indirect pointer is read (from the image or the target's memory).
pub type ReadPtr<'r> = &'r dyn Fn(u64) -> Option<u64>;

impl<'a> Lsda<'a> {
    /// Parses the header of the LSDA at absolute address `addr` whose readable bytes start
    /// `data`, for the function starting at `func_start`.
    pub fn parse(data: &'a [u8], addr: u64, func_start: u64) -> Result<Self, LsdaError> {
        let mut c = Cursor { data, pos: 0 };
        let lp_enc = c.u8()?;
        let landing_pad_base = if lp_enc == DW_EH_PE_OMIT {
            func_start
        } else {
            let e = c.encoded(lp_enc, addr, func_start)?;
            if e.indirect {
                return Err(LsdaError::BadEncoding {
                    offset: 0,
                    encoding: lp_enc,
                });
            }
            e.value
        };
        let ttype_encoding = c.u8()?;
        let ttype_base = if ttype_encoding == DW_EH_PE_OMIT {
            None
        } else {
            let off = c.uleb()?;
            Some(
                usize::try_from(off)
                    .ok()
                    .and_then(|o| c.pos.checked_add(o))
                    .ok_or(LsdaError::Truncated { offset: c.pos })?,
            )
        };
        let call_site_encoding = c.u8()?;
        let len = c.uleb()?;
        let cs_start = c.pos;
        let cs_end = usize::try_from(len)
            .ok()
            .and_then(|l| cs_start.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or(LsdaError::Truncated { offset: cs_start })?;
        Ok(Lsda {
            data,
            addr,
            landing_pad_base,
            ttype_encoding,
            ttype_base,
            call_site_encoding,
            cs_start,
            cs_end,
            func: func_start,
        })
    }

    /// The LSDA's absolute address.
    pub fn address(&self) -> u64 {
        self.addr
    }

    /// The call-site records in table order.
    pub fn call_sites(&self) -> CallSites<'a> {
        CallSites {
            lsda: *self,
            cursor: Cursor {
                data: self.data,
                pos: self.cs_start,
            },
            count: 0,
        }
    }

    /// The call site the personality finds for `ip` (already adjusted: GCC looks up
    /// `ControlPc - 1`). `Ok(None)` means no record covers it, which the C++ personality
    /// answers with `std::terminate`. The table is sorted, so the search stops at the first
    /// record starting after `ip`, as GCC's does.
    pub fn find_call_site(&self, ip: u64) -> Result<Option<CallSite>, LsdaError> {
        for cs in self.call_sites() {
            let cs = cs?;
            if ip < cs.start {
                return Ok(None);
            }
            if cs.contains(ip) {
                return Ok(Some(cs));
            }
        }
        Ok(None)
    }

    /// The action chain starting at a call site's `action` (1 + offset into the action table).
    pub fn actions(&self, action: u64, read: ReadPtr<'_>) -> Result<Vec<Action>, LsdaError> {
        let mut out = Vec::new();
        if action == 0 {
            return Ok(out);
        }
        let mut pos = usize::try_from(action - 1)
            .ok()
            .and_then(|o| self.cs_end.checked_add(o))
            .ok_or(LsdaError::BadIndex {
                value: action as i64,
            })?;
        for _ in 0..MAX_LSDA_RECORDS {
            let mut c = Cursor {
                data: self.data,
                pos,
            };
            let filter = c.sleb()?;
            let disp_at = c.pos;
            let disp = c.sleb()?;
            out.push(match filter {
                0 => Action::Cleanup,
                f if f > 0 => Action::Catch {
                    index: f as u64,
                    type_info: self.type_entry(f as u64, read)?,
                },
                f => Action::Spec { filter: f },
            });
            if disp == 0 {
                return Ok(out);
            }
            pos = (disp_at as i64)
                .checked_add(disp)
                .and_then(|p| usize::try_from(p).ok())
                .ok_or(LsdaError::BadIndex { value: disp })?;
        }
        Err(LsdaError::ActionLoop)
    }

    fn entry_size(&self) -> Result<usize, LsdaError> {
        Ok(match self.ttype_encoding & 0x0f {
            0x00 | 0x04 | 0x0c => 8,
            0x02 | 0x0a => 2,
            0x03 | 0x0b => 4,
            _ => {
                return Err(LsdaError::BadEncoding {
                    offset: 1,
                    encoding: self.ttype_encoding,
                })
            }
        })
    }

    /// Type-table entry `index` (1-based, counted back from the table's base): the
    /// `type_info` address, `None` for a catch-all.
    pub fn type_entry(&self, index: u64, read: ReadPtr<'_>) -> Result<Option<u64>, LsdaError> {
        let base = self.ttype_base.ok_or(LsdaError::BadIndex {
            value: index as i64,
        })?;
        let size = self.entry_size()?;
        let pos = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(size))
            .and_then(|o| base.checked_sub(o))
            .ok_or(LsdaError::BadIndex {
                value: index as i64,
            })?;
        let mut c = Cursor {
            data: self.data,
            pos,
        };
        let e = c.encoded(self.ttype_encoding, self.addr, self.func)?;
        // A zero entry is catch (...), whatever the encoding (GCC writes 0, not pcrel 0).
        let raw_zero = self.data[pos..pos + size].iter().all(|&b| b == 0);
        if raw_zero {
            return Ok(None);
        }
        let v = if e.indirect {
            read(e.value).ok_or(LsdaError::Unreadable { addr: e.value })?
        } else {
            e.value
        };
        Ok((v != 0).then_some(v))
    }

    /// The type indices of an exception specification (filter < 0), in order.
    pub fn spec_types(&self, filter: i64) -> Result<Vec<u64>, LsdaError> {
        let base = self
            .ttype_base
            .ok_or(LsdaError::BadIndex { value: filter })?;
        let mut c = Cursor {
            data: self.data,
            pos: base
                .checked_add(filter.unsigned_abs() as usize - 1)
                .ok_or(LsdaError::BadIndex { value: filter })?,
        };
        let mut out = Vec::new();
        for _ in 0..MAX_LSDA_RECORDS {
            match c.uleb()? {
                0 => return Ok(out),
                i => out.push(i),
            }
        }
        Err(LsdaError::ActionLoop)
    }
}

/// Iterator over call-site records; stops after the first error.
#[derive(Clone)]
pub struct CallSites<'a> {
    lsda: Lsda<'a>,
    cursor: Cursor<'a>,
    count: usize,
}

impl Iterator for CallSites<'_> {
    type Item = Result<CallSite, LsdaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cursor.pos >= self.lsda.cs_end || self.count >= MAX_LSDA_RECORDS {
            return None;
        }
        self.count += 1;
        let l = &self.lsda;
        let mut rec = || -> Result<CallSite, LsdaError> {
            let enc = l.call_site_encoding & 0x0f;
            let start = self.cursor.encoded(enc, l.addr, l.func)?.value;
            let len = self.cursor.encoded(enc, l.addr, l.func)?.value;
            let lp = self.cursor.encoded(enc, l.addr, l.func)?.value;
            let action = self.cursor.uleb()?;
            Ok(CallSite {
                start: l.landing_pad_base.wrapping_add(start),
                len,
                landing_pad: (lp != 0).then(|| l.landing_pad_base.wrapping_add(lp)),
                action,
            })
        };
        let r = rec();
        if r.is_err() {
            self.cursor.pos = usize::MAX;
        }
        Some(r)
    }
}

/// What the C++ personality decides for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CxxFound {
    /// No record covers the pc: `std::terminate`.
    Terminate,
    /// A record without a landing pad: nothing to do in this frame.
    Nothing,
    /// Only cleanups (destructors) at `landing_pad`.
    Cleanup {
        /// The landing pad.
        landing_pad: u64,
    },
    /// A `catch` clause matched.
    Handler {
        /// The landing pad.
        landing_pad: u64,
        /// The matching clause's type (`None`: `catch (...)`).
        type_info: Option<u64>,
        /// Its type-table index (the selector value the landing pad sees).
        index: u64,
    },
    /// A clause's decision needs the thrown type, which is unknown.
    NeedsType {
        /// The clause's type.
        type_info: u64,
    },
}

/// The `__gxx_personality_seh0` search for `ip` (= ControlPc - 1): walks the action chain,
/// matching catch clauses with `matches(type_info)` (`None` when the thrown type is
/// unknown). Exception specifications are taken as satisfied (a violating throw would call
/// `std::unexpected`, which this model does not follow).
pub fn cxx_search(
    lsda: &Lsda<'_>,
    ip: u64,
    read: ReadPtr<'_>,
    matches: &dyn Fn(u64) -> Option<bool>,
) -> Result<(CallSite, Vec<Action>, CxxFound), LsdaError> {
    let Some(cs) = lsda.find_call_site(ip)? else {
        let none = CallSite {
            start: ip,
            len: 0,
            landing_pad: None,
            action: 0,
        };
        return Ok((none, Vec::new(), CxxFound::Terminate));
    };
    let Some(landing_pad) = cs.landing_pad else {
        return Ok((cs, Vec::new(), CxxFound::Nothing));
    };
    if cs.action == 0 {
        return Ok((cs, Vec::new(), CxxFound::Cleanup { landing_pad }));
    }
    let actions = lsda.actions(cs.action, read)?;
    let mut saw_cleanup = false;
    for a in &actions {
        match *a {
            Action::Cleanup => saw_cleanup = true,
            Action::Catch { index, type_info } => {
                let hit = match type_info {
                    None => Some(true),
                    Some(t) => matches(t),
                };
                match hit {
                    Some(true) => {
                        return Ok((
                            cs,
                            actions.clone(),
                            CxxFound::Handler {
                                landing_pad,
                                type_info,
                                index,
                            },
                        ))
                    }
                    Some(false) => {}
                    None => {
                        let t = type_info.unwrap_or(0);
                        return Ok((cs, actions.clone(), CxxFound::NeedsType { type_info: t }));
                    }
                }
            }
            Action::Spec { .. } => {}
        }
    }
    let found = if saw_cleanup {
        CxxFound::Cleanup { landing_pad }
    } else {
        CxxFound::Nothing
    };
    Ok((cs, actions, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// An LSDA as g++ writes it: LPStart omitted, ttype 0x9b (indirect|pcrel|sdata4),
    /// uleb128 call sites; three sites: cleanup, catch(A) then cleanup, catch(...).
    fn sample() -> (Vec<u8>, u64) {
        let addr = 0x1000_0000u64;
        let mut cs = Vec::new();
        for (s, l, lp, a) in [
            (0x10u64, 5u64, 0x80u64, 0u64),
            (0x20, 5, 0x90, 1),
            (0x30, 5, 0xa0, 5),
            (0x40, 4, 0, 0),
        ] {
            uleb(s, &mut cs);
            uleb(l, &mut cs);
            uleb(lp, &mut cs);
            uleb(a, &mut cs);
        }
        // Actions: @0 {filter 1 (type A), next +1 from its field -> @2}; @2 {filter 0, end};
        // @4 {filter 2 (catch all), end}.
        let actions = [1u8, 1, 0, 0, 2, 0];
        let mut d = vec![0xff, 0x9b];
        // ttype offset: from after this uleb to the type base = 1 (cs enc) + 1 (cs len) + cs + actions + 2*4.
        let rest = 1 + 1 + cs.len() + actions.len() + 8;
        uleb(rest as u64, &mut d);
        d.push(0x01);
        uleb(cs.len() as u64, &mut d);
        d.extend(&cs);
        d.extend(actions);
        // Type table, backwards: index 2 = 0 (catch all), index 1 = pcrel to a slot.
        let slot = 0x2000_0000u64;
        d.extend(0i32.to_le_bytes());
        // Index 1 is nearest the base.
        let idx1_at = d.len();
        let rel1 = (slot as i64 - (addr as i64 + idx1_at as i64)) as i32;
        d.extend(rel1.to_le_bytes());
        (d, addr)
    }

    #[test]
    fn call_sites_actions_and_types() {
        let (d, addr) = sample();
        let func = 0x40_0000;
        let l = Lsda::parse(&d, addr, func).unwrap();
        assert_eq!(l.landing_pad_base, func);
        let sites: Vec<_> = l.call_sites().map(Result::unwrap).collect();
        assert_eq!(sites.len(), 4);
        assert_eq!(sites[1].start, func + 0x20);
        assert_eq!(sites[1].landing_pad, Some(func + 0x90));
        assert_eq!(sites[3].landing_pad, None);
        let read = |a: u64| (a == 0x2000_0000).then_some(0x7777u64);
        let acts = l.actions(1, &read).unwrap();
        assert_eq!(
            acts,
            [
                Action::Catch {
                    index: 1,
                    type_info: Some(0x7777)
                },
                Action::Cleanup
            ]
        );
        assert_eq!(
            l.actions(5, &read).unwrap(),
            [Action::Catch {
                index: 2,
                type_info: None
            }]
        );
        // Lookups: sorted search, terminate when uncovered.
        let yes = |t: u64| Some(t == 0x7777);
        let no = |_t: u64| Some(false);
        let unknown = |_t: u64| None;
        let f = |ip, m: &dyn Fn(u64) -> Option<bool>| cxx_search(&l, ip, &read, m).unwrap().2;
        assert_eq!(
            f(func + 0x12, &yes),
            CxxFound::Cleanup {
                landing_pad: func + 0x80
            }
        );
        assert_eq!(
            f(func + 0x22, &yes),
            CxxFound::Handler {
                landing_pad: func + 0x90,
                type_info: Some(0x7777),
                index: 1
            }
        );
        assert_eq!(
            f(func + 0x22, &no),
            CxxFound::Cleanup {
                landing_pad: func + 0x90
            }
        );
        assert_eq!(
            f(func + 0x22, &unknown),
            CxxFound::NeedsType { type_info: 0x7777 }
        );
        assert_eq!(
            f(func + 0x34, &no),
            CxxFound::Handler {
                landing_pad: func + 0xa0,
                type_info: None,
                index: 2
            }
        );
        assert_eq!(f(func + 0x41, &no), CxxFound::Nothing);
        assert_eq!(f(func + 0x25, &no), CxxFound::Terminate);
        assert_eq!(f(func + 0x5, &no), CxxFound::Terminate);
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let (d, addr) = sample();
        for n in 0..d.len() {
            let cut = &d[..n];
            if let Ok(l) = Lsda::parse(cut, addr, 0) {
                for cs in l.call_sites().flatten() {
                    let _ = l.actions(cs.action, &|_| None);
                }
            }
        }
        // A self-referencing action loops forever without the bound.
        let d = [0xff, 0xff, 0x01, 0x04, 0x00, 0x01, 0x00, 0x01, 0x00, 0x7f];
        let l = Lsda::parse(&d, 0, 0).unwrap();
        assert_eq!(l.actions(1, &|_| None), Err(LsdaError::ActionLoop));
        assert!(Cursor {
            data: &[0xff; 11],
            pos: 0
        }
        .uleb()
        .is_err());
        assert_eq!(
            Cursor {
                data: &[0x7f],
                pos: 0
            }
            .sleb(),
            Ok(-1)
        );
    }
}

//! Shared pieces of the benchmarks: synthetic function tables shaped like real `.pdata`, query
//! address sets, and the lookups xunwind's [`RangeTable`](xunwind::RangeTable) is measured
//! against (the standard library's binary searches and an Eytzinger layout).
//!
//! They live in the library, not in the bench file, so `cargo test -p xunwind-benches` checks
//! that every competitor answers exactly what a linear scan answers: a fast wrong lookup would
//! make the comparison meaningless.
#![deny(missing_docs)]

/// Number of precomputed query addresses per pattern (a power of two, so `i & (BATCH - 1)`
/// indexes without a bounds check).
pub const BATCH: usize = 1 << 14;

/// A small deterministic generator (SplitMix64): the same seed gives the same tables and
/// queries on every machine, so runs compare.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + ((self.next_u64() as u128 * (hi - lo) as u128) >> 64) as u64
    }

    /// Standard normal, by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()
    }
}

/// A sorted, non-overlapping table of `n` function ranges `[begin, end)` starting at RVA
/// `0x1000`, shaped like Wine's and MinGW's `.pdata`.
///
/// Sizes are log-normal with a median of 130 bytes and sigma 1.25 (Wine's ntdll.dll: 10% under
/// 27 bytes, median 130, 90% under 673, mean 318), clamped to `[1, 64 KiB]`. Each function
/// starts 16-byte aligned, so the padding gap after it is 0 to 15 bytes; 2% of the gaps are
/// 16 bytes to 4 KiB more (code without unwind data, data islands), so some lookups miss.
pub fn synthetic_table(n: usize, seed: u64) -> Vec<(u32, u32)> {
    let mut rng = SplitMix64::new(seed);
    let mut at = 0x1000u64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let size = (130.0 * (1.25 * rng.normal()).exp()).clamp(1.0, 65536.0) as u64;
        out.push((at as u32, (at + size) as u32));
        at = (at + size + 15) & !15;
        if rng.range(0, 100) < 2 {
            at += rng.range(1, 256) * 16;
        }
    }
    assert!(at <= u32::MAX as u64, "synthetic table outgrew u32 RVAs");
    out
}

/// `BATCH` addresses drawn uniformly from the span of `table` (first begin to last end), so
/// larger functions and the gaps between functions are hit in proportion to their size, as
/// sampled program counters are.
pub fn random_addrs(table: &[(u32, u32)], seed: u64) -> Box<[u64; BATCH]> {
    let mut rng = SplitMix64::new(seed);
    let (lo, hi) = (table[0].0 as u64, table[table.len() - 1].1 as u64);
    let mut a = Box::new([0u64; BATCH]);
    for x in a.iter_mut() {
        *x = rng.range(lo, hi);
    }
    a
}

/// The same addresses in ascending order: consecutive queries land in the same or a nearby
/// part of the table, as when symbolizing a sorted address list.
pub fn sequential_addrs(random: &[u64; BATCH]) -> Box<[u64; BATCH]> {
    let mut a = Box::new(*random);
    a.sort_unstable();
    a
}

/// The entry holding `addr`, by a linear scan: the reference every lookup must agree with.
pub fn linear(table: &[(u32, u32)], addr: u64) -> Option<usize> {
    table
        .iter()
        .position(|&(b, e)| b as u64 <= addr && addr < e as u64)
}

/// `slice::binary_search_by` with a three-way range comparison, as most Rust code writes it.
#[inline]
pub fn std_binary_search_by(table: &[(u32, u32)], addr: u64) -> Option<usize> {
    use core::cmp::Ordering;
    let a = u32::try_from(addr).ok()?;
    table
        .binary_search_by(|&(b, e)| {
            if a < b {
                Ordering::Greater
            } else if a >= e {
                Ordering::Less
            } else {
                Ordering::Equal
            }
        })
        .ok()
}

/// `slice::partition_point` on the begins, then one end check.
#[inline]
pub fn std_partition_point(table: &[(u32, u32)], addr: u64) -> Option<usize> {
    let a = u32::try_from(addr).ok()?;
    let i = table.partition_point(|&(b, _)| b <= a).checked_sub(1)?;
    (a < table[i].1).then_some(i)
}

/// Ranges in Eytzinger (BFS) order, begin and end of a node in the same 8 bytes, searched
/// branch-free with a prefetch four levels ahead (Khuong and Morin, "Array layouts for
/// comparison-based searching", 2017): the strongest plain search layout for large tables.
///
/// The tree is padded to a full one (`2^h - 1` nodes, the padding beginning at `u32::MAX`) so
/// every search takes exactly `h` steps and the loop branch is always predicted, and the nodes
/// start on a cache line so a node's 16 descendants four levels down fill two whole lines.
///
/// [`Eytzinger::lookup`] returns the node position, not the sorted index: payloads are stored
/// permuted the same way, so a caller never needs the sorted index ([`Eytzinger::sorted_index`]
/// maps it back for tests).
pub struct Eytzinger {
    /// Node `k` (1-based) is `nodes[first + k]`; `first` puts node 0 on a cache line.
    nodes: Vec<[u32; 2]>,
    first: usize,
    levels: u32,
    /// Node position to sorted index (`u32::MAX` for padding).
    order: Vec<u32>,
}

impl Eytzinger {
    /// Lays out a sorted, non-overlapping table.
    pub fn new(table: &[(u32, u32)]) -> Self {
        let levels = usize::BITS - table.len().leading_zeros();
        let m = (1usize << levels) - 1;
        // Eight spare nodes to align node 0 to 64 bytes.
        let mut nodes = vec![[u32::MAX; 2]; m + 1 + 8];
        let addr = nodes.as_ptr() as usize;
        let first = (64 - addr % 64) % 64 / 8;
        debug_assert_eq!((addr + first * 8) % 64, 0);
        let mut order = vec![u32::MAX; m + 1];
        // An in-order walk of the implicit tree visits positions in sorted order.
        let mut next = 0usize;
        let mut stack = Vec::new();
        let mut k = 1usize;
        loop {
            while k <= m {
                stack.push(k);
                k *= 2;
            }
            let Some(top) = stack.pop() else { break };
            if let Some(&(b, e)) = table.get(next) {
                nodes[first + top] = [b, e];
                order[top] = next as u32;
            }
            next += 1;
            k = 2 * top + 1;
        }
        Eytzinger {
            nodes,
            first,
            levels,
            order,
        }
    }

    /// Position of the node holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<usize> {
        let a = u32::try_from(addr).ok()?;
        let t = &self.nodes[self.first..];
        let mut k = 1usize;
        for _ in 0..self.levels {
            prefetch(t.as_ptr().wrapping_add(16 * k));
            k = 2 * k + (t[k][0] <= a) as usize;
        }
        // The answer is the last node where the search went right: drop the trailing left
        // turns and that right turn. All-left paths give 0, "no begin <= addr".
        let k = k >> (k.trailing_zeros() + 1);
        (k != 0 && a < t[k][1]).then_some(k)
    }

    /// The sorted index of node `k`.
    pub fn sorted_index(&self, k: usize) -> usize {
        self.order[k] as usize
    }

    /// Bytes of heap memory the layout holds (without the test-only order map).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.len() * 8
    }
}

#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and has no architectural effect, so any
    // address (here possibly past the allocation, computed with wrapping_add) is allowed.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(table: &[(u32, u32)]) -> Vec<u64> {
        let mut p: Vec<u64> = random_addrs(table, 7).to_vec();
        for &(b, e) in table {
            p.extend([b as u64 - 1, b as u64, e as u64 - 1, e as u64]);
        }
        p.extend([0, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX]);
        p
    }

    #[test]
    fn synthetic_tables_are_valid_and_shaped_like_pdata() {
        let t = synthetic_table(10_000, 1);
        assert!(t.windows(2).all(|w| w[0].1 <= w[1].0));
        assert!(t.iter().all(|&(b, e)| b < e && b % 16 == 0));
        let mut sizes: Vec<u32> = t.iter().map(|&(b, e)| e - b).collect();
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        assert!((100..170).contains(&median), "median {median}");
        let gaps = t.windows(2).filter(|w| w[1].0 - w[0].1 >= 16).count();
        assert!((100..300).contains(&gaps), "{gaps} large gaps");
        // A million entries still fit u32 RVAs.
        let big = synthetic_table(1_000_000, 4);
        assert!(big.last().unwrap().1 < u32::MAX);
    }

    #[test]
    fn competitors_agree_with_a_linear_scan() {
        let mut tables: Vec<Vec<(u32, u32)>> = [1usize, 2, 3, 7, 8, 9, 15, 16, 17, 100, 1000, 1025]
            .iter()
            .map(|&n| synthetic_table(n, n as u64))
            .collect();
        // A dense cluster of tiny functions beside huge ones: a few blocks far fuller than the
        // rest, so the prototypes' fallback search runs too.
        let mut clustered: Vec<(u32, u32)> =
            (0..300).map(|i| (0x1000 + 4 * i, 0x1003 + 4 * i)).collect();
        clustered.push((0x2000, 0x80_0000));
        clustered.extend((0..50).map(|i| (0x80_0000 + 0x1000 * i, 0x80_0800 + 0x1000 * i)));
        tables.push(clustered);
        for t in tables {
            let n = t.len();
            let ey = Eytzinger::new(&t);
            let rt = xunwind::RangeTable::<u32>::new(t.iter().map(|&(b, e)| (b as u64, e as u64)))
                .unwrap();
            let protos: Vec<_> = (0..3)
                .flat_map(|f| {
                    [
                        (16, proto::Search::Window),
                        (4, proto::Search::Window),
                        (16, proto::Search::Unrolled),
                        (2, proto::Search::Unrolled),
                        (16, proto::Search::Variable),
                    ]
                    .map(|(w, k)| proto::FixedStepTable::new(&t, f, w, k))
                })
                .collect();
            for a in probes(&t) {
                let want = linear(&t, a);
                assert_eq!(std_binary_search_by(&t, a), want, "n {n} addr {a:#x}");
                assert_eq!(std_partition_point(&t, a), want, "n {n} addr {a:#x}");
                let ey_got = ey.lookup(a).map(|k| ey.sorted_index(k));
                assert_eq!(ey_got, want, "n {n} addr {a:#x}");
                assert_eq!(rt.lookup(a), want, "n {n} addr {a:#x}");
                for p in &protos {
                    assert_eq!(p.lookup(a), want, "n {n} {:?} addr {a:#x}", p.shape());
                }
            }
        }
    }

    #[test]
    fn sequential_addresses_are_the_random_ones_sorted() {
        let t = synthetic_table(1000, 3);
        let r = random_addrs(&t, 5);
        let s = sequential_addrs(&r);
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        let mut rs = r.to_vec();
        rs.sort_unstable();
        assert_eq!(&rs[..], &s[..]);
    }
}

pub mod elf_stacks;
pub mod proto;
pub mod stacks;

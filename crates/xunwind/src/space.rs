//! The module map: which unwinder owns an address.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
use xunwind_core::{
    ContextPointers, FrameWalker, MemoryReader, PcKind, RangeTable, RangeTableError, Regs,
    StepInfo, UnwindError,
};

/// A loaded module: its address range, how to unwind it, and its executable ranges.
pub struct Module<'a> {
    /// Name shown in frames (`ntdll.dll`, `libc.so.6`, `vmlinux`).
    pub name: String,
    /// First address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// The unwinder for code in this module.
    pub walker: Box<dyn FrameWalker + 'a>,
    /// Executable address ranges, for telling return addresses from data when scanning.
    pub executable: Vec<(u64, u64)>,
}

impl fmt::Debug for Module<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .finish_non_exhaustive()
    }
}

impl Module<'_> {
    /// Whether `addr` lies in one of the executable ranges.
    pub fn is_executable(&self, addr: u64) -> bool {
        self.executable.iter().any(|&(b, e)| b <= addr && addr < e)
    }
}

/// The walker of a module without usable unwind information: every step fails, so the stack
/// walker falls back to the frame pointer and the scan.
pub(crate) struct NoUnwindInfo;

impl FrameWalker for NoUnwindInfo {
    fn unwind(
        &self,
        regs: &mut Regs,
        _: PcKind,
        _: &dyn MemoryReader,
        _: Option<&mut ContextPointers>,
    ) -> Result<StepInfo, UnwindError> {
        Err(UnwindError::NoUnwindInfo {
            pc: regs.rip().unwrap_or(0),
        })
    }
}

/// Identifies a module in an [`AddressSpace`]; stays valid until the module is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModuleId(pub(crate) usize);

/// The modules of a process or kernel, searchable by address.
///
/// Lookups go through a [`RangeTable`] over 64-bit addresses, rebuilt when modules are added or
/// removed (rare next to lookups). Overlapping modules are refused.
pub struct AddressSpace<'a> {
    slots: Vec<Option<Module<'a>>>,
    /// Slot indices in address order, parallel to the range table's entries.
    order: Vec<usize>,
    index: RangeTable<u64>,
    generation: u64,
    /// Differs between spaces, so a cache filled from one is never taken for another's.
    id: u64,
}

impl Default for AddressSpace<'_> {
    fn default() -> Self {
        AddressSpace {
            slots: Vec::new(),
            order: Vec::new(),
            index: RangeTable::default(),
            generation: 0,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for AddressSpace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.order.iter().filter_map(|&i| self.slots[i].as_ref()))
            .finish()
    }
}

impl<'a> AddressSpace<'a> {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    fn rebuild(&mut self) -> Result<(), RangeTableError> {
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect();
        let range = |i: usize| {
            let m = self.slots[i].as_ref().expect("live slot");
            (m.base, m.base.saturating_add(m.size))
        };
        order.sort_by_key(|&i| range(i));
        let index = RangeTable::new(order.iter().map(|&i| range(i)))?;
        self.order = order;
        self.index = index;
        self.generation += 1;
        Ok(())
    }

    /// Puts `module` in the first free slot (ids of removed modules are reused) without
    /// rebuilding the index.
    fn store(&mut self, module: Module<'a>) -> usize {
        let id = self
            .slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.slots.len());
        if id == self.slots.len() {
            self.slots.push(None);
        }
        self.slots[id] = Some(module);
        id
    }

    /// Adds a module; fails (and leaves the space unchanged) if it overlaps another.
    pub fn add_module(&mut self, module: Module<'a>) -> Result<ModuleId, RangeTableError> {
        let id = self.store(module);
        if let Err(e) = self.rebuild() {
            self.slots[id] = None;
            self.rebuild().expect("the previous table was valid");
            return Err(e);
        }
        Ok(ModuleId(id))
    }

    /// Adds many modules with one index rebuild (a dump names hundreds; adding them one by one
    /// rebuilds the index each time). A module overlapping one already present or one earlier
    /// in `modules` is left out and returned, so the result never mis-attributes an address.
    pub fn add_modules(
        &mut self,
        modules: impl IntoIterator<Item = Module<'a>>,
    ) -> (Vec<ModuleId>, Vec<Module<'a>>) {
        let mut added = Vec::new();
        let mut rejected = Vec::new();
        // Ranges already taken, sorted by begin; kept disjoint as modules are accepted.
        let mut taken: Vec<(u64, u64)> = self
            .order
            .iter()
            .filter_map(|&i| self.slots[i].as_ref())
            .map(|m| (m.base, m.base.saturating_add(m.size)))
            .collect();
        for m in modules {
            let (b, e) = (m.base, m.base.saturating_add(m.size));
            let at = taken.partition_point(|&(tb, _)| tb < b);
            let overlaps_prev = at > 0 && taken[at - 1].1 > b;
            let overlaps_next = at < taken.len() && taken[at].0 < e;
            if b >= e || overlaps_prev || overlaps_next {
                rejected.push(m);
                continue;
            }
            taken.insert(at, (b, e));
            added.push(ModuleId(self.store(m)));
        }
        if !added.is_empty() {
            self.rebuild()
                .expect("accepted modules are non-empty and disjoint");
        }
        (added, rejected)
    }

    /// Removes a module, returning it.
    pub fn remove_module(&mut self, id: ModuleId) -> Option<Module<'a>> {
        let m = self.slots.get_mut(id.0)?.take()?;
        self.rebuild().expect("removing keeps the table valid");
        Some(m)
    }

    /// The module holding `addr`.
    #[inline]
    pub fn module_at(&self, addr: u64) -> Option<(ModuleId, &Module<'a>)> {
        let slot = *self.order.get(self.index.lookup(addr)?)?;
        Some((ModuleId(slot), self.slots[slot].as_ref()?))
    }

    /// A module by id.
    pub fn module(&self, id: ModuleId) -> Option<&Module<'a>> {
        self.slots.get(id.0)?.as_ref()
    }

    /// Whether `addr` is executable code of some module.
    pub fn is_code(&self, addr: u64) -> bool {
        self.module_at(addr)
            .is_some_and(|(_, m)| m.is_executable(addr))
    }

    /// Bumped on every change, so caches keyed by address can be invalidated.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Differs between spaces (together with [`AddressSpace::generation`] it names one state
    /// of one space's module map).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no modules.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

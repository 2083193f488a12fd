//! Ladle patch (see PATCHES.md): bounds on the recursion that values drive.
//!
//! Converting a value to text (`Display`, `Debug`), comparing (`eq`, `cmp`), hashing,
//! serializing and deserializing it all recurse once per level of nesting, and dropping
//! it recurses through the destructors of its parts. A template can nest a value as
//! deep as it likes (`{% set ns.l = [ns.l] %}` in a loop) or make a namespace hold
//! itself (infinitely deep), so any of these would overflow the stack and abort the
//! process.
//!
//! The walks count their depth (and their work) here. Past [`MAX_DEPTH`] levels, or
//! once one instruction has visited [`MAX_NODES`] objects or rendered [`MAX_TEXT`]
//! bytes of strings inside objects, the walk stops short (text gets `...`, equality
//! says false, ordering says equal) and the guard *trips*. These functions cannot
//! return an error, so the VM checks the trip after every instruction and fails that
//! instruction with [`limit_error`]: a short-cut answer never reaches the template.
//!
//! Drops past [`MAX_DROP_DEPTH`] levels are queued and run one after the other once
//! the outermost drop returns, so dropping a deep value takes constant stack.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;

use crate::error::{Error, ErrorKind};
use crate::value::DynObject;

/// Levels of nested objects a walk may enter. A level of `Display` costs about 1 KiB of
/// stack in debug builds; 256 levels fit a 2 MiB thread stack with room to spare, and
/// real data (JSON schemas, messages) nests a few dozen levels at most.
pub(crate) const MAX_DEPTH: usize = 256;
/// Objects one instruction may visit: a value that shares its parts (`[v, v]` nested
/// 40 times) is small in memory but exponential to walk.
pub(crate) const MAX_NODES: usize = 10_000_000;
/// Bytes of strings one instruction may render inside objects (the same bound as
/// minijinja's string repetition): `[s, s, ...]` of a 100 MB `s` must not exhaust memory.
pub(crate) const MAX_TEXT: usize = 100_000_000;
/// Drops deeper than this are queued instead of recursing.
const MAX_DROP_DEPTH: usize = 64;

#[derive(Default)]
struct Walk {
    depth: Cell<usize>,
    nodes: Cell<usize>,
    text: Cell<usize>,
    tripped: Cell<bool>,
    /// Nesting of VM evaluation loops on this thread (budgets are per instruction there).
    vm: Cell<usize>,
}

thread_local! {
    static WALK: Walk = Walk::default();
    // A const `Cell` has no destructor, so it stays usable while the thread exits.
    static DROP_DEPTH: Cell<usize> = const { Cell::new(0) };
    // No destructor either (the queue is empty whenever no drop runs, and its buffer is
    // freed after a long drain), so values that other thread-locals drop while the
    // thread exits are still dropped iteratively.
    static DEFERRED_DROPS: ManuallyDrop<RefCell<Vec<ManuallyDrop<DynObject>>>> =
        const { ManuallyDrop::new(RefCell::new(Vec::new())) };
}

impl Walk {
    fn reset(&self) {
        self.nodes.set(0);
        self.text.set(0);
        self.tripped.set(false);
    }

    fn trip(&self) {
        self.tripped.set(true);
    }
}

/// One level of a walk; leaving drops it.
pub(crate) struct Level(());

impl Drop for Level {
    fn drop(&mut self) {
        let _ = WALK.try_with(|w| w.depth.set(w.depth.get().saturating_sub(1)));
    }
}

/// Enters one level of nested object, or returns `None` (and trips) when the walk must
/// stop here.
pub(crate) fn enter() -> Option<Level> {
    WALK.try_with(|w| {
        let depth = w.depth.get();
        if depth == 0 && w.vm.get() == 0 {
            // Outside the VM nobody checks the trip, so each walk gets its own budget.
            w.reset();
        }
        if w.tripped.get() {
            return None;
        }
        if depth >= MAX_DEPTH || w.nodes.get() >= MAX_NODES {
            w.trip();
            return None;
        }
        w.depth.set(depth + 1);
        w.nodes.set(w.nodes.get() + 1);
        Some(Level(()))
    })
    // Thread-local storage is gone only while the thread exits; nothing renders then.
    // (Lazily: an eagerly built Level would be dropped, undoing the count above.)
    .unwrap_or_else(|_| Some(Level(())))
}

/// Whether `len` more bytes of string may be rendered. Counted only inside objects:
/// a plain string is already in memory, an object may repeat the same string endlessly.
pub(crate) fn text_fits(len: usize) -> bool {
    WALK.try_with(|w| {
        if w.depth.get() == 0 {
            return true;
        }
        if w.tripped.get() {
            return false;
        }
        let text = w.text.get().saturating_add(len);
        w.text.set(text);
        if text > MAX_TEXT {
            w.trip();
            return false;
        }
        true
    })
    .unwrap_or(true)
}

/// The error an instruction fails with when a walk it started was cut short.
pub(crate) fn limit_error() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "value nested deeper than {MAX_DEPTH} levels or too large to convert or compare \
             (does a namespace hold itself?)"
        ),
    )
}

/// Marks a VM evaluation loop running on this thread for as long as it lives.
pub(crate) struct VmScope(());

impl Drop for VmScope {
    fn drop(&mut self) {
        let _ = WALK.try_with(|w| w.vm.set(w.vm.get().saturating_sub(1)));
    }
}

/// Enters a VM evaluation loop; the outermost one starts with a clean budget.
pub(crate) fn vm_scope() -> VmScope {
    let _ = WALK.try_with(|w| {
        if w.vm.get() == 0 {
            w.reset();
        }
        w.vm.set(w.vm.get() + 1);
    });
    VmScope(())
}

/// Ends an instruction: returns whether a walk it started was cut short, and gives the
/// next instruction a fresh budget.
pub(crate) fn end_instruction() -> bool {
    WALK.try_with(|w| {
        let tripped = w.tripped.get();
        w.reset();
        tripped
    })
    .unwrap_or(false)
}

/// Drops an object: `release` gives up the reference `obj` holds, which may drop the
/// object and, through it, the values it holds. Past [`MAX_DROP_DEPTH`] nested drops the
/// reference is queued instead (ownership moves into the queue) and released by the
/// outermost drop once its own release returned, so the stack stays shallow.
pub(crate) fn drop_object(obj: ManuallyDrop<DynObject>, release: fn(&DynObject)) {
    let depth = DROP_DEPTH.with(Cell::get);
    if depth >= MAX_DROP_DEPTH {
        DEFERRED_DROPS.with(|q| q.borrow_mut().push(obj));
        return;
    }
    let _level = DropLevel::enter(depth);
    release(&obj);
    if depth == 0 {
        // The outermost drop empties the queue. Queued objects are released at depth 1,
        // so their own drops do not drain (this loop does) and their deep parts queue.
        while let Some(next) = DEFERRED_DROPS.with(|q| q.borrow_mut().pop()) {
            release(&next);
        }
        DEFERRED_DROPS.with(|q| {
            let mut q = q.borrow_mut();
            if q.capacity() > MAX_DROP_DEPTH {
                *q = Vec::new();
            }
        });
    }
}

/// One level of nested drops; restores the depth even if a destructor panics.
struct DropLevel(usize);

impl DropLevel {
    fn enter(depth: usize) -> DropLevel {
        DROP_DEPTH.with(|d| d.set(depth + 1));
        DropLevel(depth)
    }
}

impl Drop for DropLevel {
    fn drop(&mut self) {
        DROP_DEPTH.with(|d| d.set(self.0));
    }
}

//! State that belongs to one process image, and that a `fork()` must not carry over.
//!
//! A forked child is a copy of its parent with one thread. Runtime state in a plain
//! `static Mutex<T>` would reach it (a) filled with the parent's entries (its children, its log
//! collector, its fork server) and (b) possibly locked for ever, by a parent thread that does not
//! exist in the child. A `PerProcess<T>` hands every process its own state: the first use in a
//! forked copy swaps in a fresh `Mutex<T>` through an atomic pointer, without touching the
//! inherited lock. The inherited state is leaked, never dropped: its descriptors were released at
//! the fork (see `bootstrap::release_inherited_channels`), and its threads do not exist here.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::sys;

/// State of which each process has its own copy, fresh (from `init`) in a forked child (see the
/// module docs).
pub struct PerProcess<T> {
    slot: AtomicPtr<(u32, Mutex<T>)>,
    init: fn() -> T,
}

impl<T> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerProcess")
            .field("state", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T> PerProcess<T> {
    /// State made by `init` on first use in each process.
    pub const fn new(init: fn() -> T) -> Self {
        PerProcess {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            init,
        }
    }

    /// This process's state, locked (a poisoned lock is taken over: the state stays usable).
    pub fn lock(&'static self) -> MutexGuard<'static, T> {
        let pid = sys::getpid();
        loop {
            let current = self.slot.load(Ordering::Acquire);
            // SAFETY: a non-null slot points to a leaked Box that is never freed.
            if let Some((owner, state)) = unsafe { current.as_ref() } {
                if *owner == pid {
                    return state.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
            let fresh = Box::into_raw(Box::new((pid, Mutex::new((self.init)()))));
            if self
                .slot
                .compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Another thread of this process installed one first: use that.
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
            }
            // On success the previous state (the parent's copy, or none) is leaked on purpose.
        }
    }
}

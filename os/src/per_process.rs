//! State that belongs to one process image, and that a `fork()` must not carry over.
//!
//! A forked child is a copy of its parent with one thread. Runtime state in a plain
//! `static Mutex<T>` would reach it (a) filled with the parent's entries (its children, its log
//! collector, its fork server) and (b) possibly locked for ever, by a parent thread that does not
//! exist in the child. A `PerProcess<T>` hands every process its own state: the first use in a
//! forked copy swaps in a fresh `Mutex<T>` through an atomic pointer, without touching the
//! inherited lock. The inherited state is leaked, never dropped: its descriptors were released at
//! the fork (see `bootstrap::release_inherited_channels`), and its threads do not exist here.
//!
//! This is the one reset point after a fork: every piece of the runtime's per-process state
//! (its children, exit hooks, connections to actors, the flusher, the closer, the log collector
//! and forwarder, the fork server, the runtime threads) lives in a `PerProcess` cell, and the
//! process identity they compare against changes in one place, `sys::fork_child` (and glibc's
//! `fork`, through an atfork handler). The runtime's threads all start through [`spawn_thread`],
//! which keeps their list ([`runtime_threads`]). What stays in plain statics is either meant to
//! be inherited (the start method, whether `init` ran, the tree's secret and session, the name
//! table's mapping, counters) or per thread (receive buffers, the robust-lock list, the decode
//! context).

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

/// One of the runtime's background threads in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeThread {
    /// Its name (`procactor-close`, `procactor-flush`, `procactor-logs`, `procactor-pool`,
    /// `procactor-daemon-watch`).
    pub name: &'static str,
    /// Its id.
    pub id: std::thread::ThreadId,
}

/// The runtime's threads started in this process (a forked copy starts with none: the threads
/// of its parent do not exist in it).
static THREADS: PerProcess<Vec<RuntimeThread>> = PerProcess::new(Vec::new);

/// Starts a runtime background thread: the one way the runtime starts threads, so that
/// [`runtime_threads`] lists them all.
pub fn spawn_thread<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let handle = std::thread::Builder::new().name(name.into()).spawn(f)?;
    THREADS.lock().push(RuntimeThread {
        name,
        id: handle.thread().id(),
    });
    Ok(handle)
}

/// The runtime threads started in this process so far (some may have ended since).
pub fn runtime_threads() -> Vec<RuntimeThread> {
    THREADS.lock().clone()
}

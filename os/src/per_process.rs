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
//! and forwarder, the fork server, the runtime threads) lives in a `PerProcess` cell declared
//! with [`per_process!`](crate::per_process!), and the process identity they compare against
//! changes in one place, `sys::fork_child` (and glibc's `fork`, through an atfork handler).
//! [`states`] lists every cell of the binary, whichever crate declared it: the one list to
//! audit. The runtime's threads all start through [`spawn_thread`], which keeps their list
//! ([`runtime_threads`]).
//!
//! What stays in plain statics is either meant to be inherited (the start method, whether `init`
//! ran, the tree's secret and session, the name table's mapping, the set of channel descriptors
//! a child lets go of, counters) or per thread (receive buffers, the robust-lock list, the decode
//! context); `tests/layers.rs` holds that list and fails on a plain static lock it does not name.
//!
//! (Why cells per module rather than one struct: a struct holding every layer's state would
//! have to name the types of the layers above this crate, pointing the floor up.)

use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::sys;

/// State of which each process has its own copy, fresh (from `init`) in a forked child (see the
/// module docs).
pub struct PerProcess<T> {
    slot: AtomicPtr<(u32, Mutex<T>)>,
    init: fn() -> T,
    name: &'static str,
    /// Shared between threads exactly when a `Mutex<T>` may be (`T: Send`); `AtomicPtr` alone
    /// would make it `Sync` for any `T`.
    _state: PhantomData<Mutex<T>>,
}

impl<T> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerProcess")
            .field("name", &self.name)
            .field("state", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T> PerProcess<T> {
    /// State made by `init` on first use in each process; `name` says which (declare it with
    /// [`per_process!`](crate::per_process!), which names and lists it).
    pub const fn new(name: &'static str, init: fn() -> T) -> Self {
        PerProcess {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            init,
            name,
            _state: PhantomData,
        }
    }

    /// The pid of the process whose state the cell holds: `None` before its first use. A forked
    /// copy sees its parent's pid until its own first use swaps in fresh state.
    fn owner(&self) -> Option<u32> {
        // SAFETY: a non-null slot points to a leaked Box that is never freed.
        unsafe { self.slot.load(Ordering::Acquire).as_ref() }.map(|(pid, _)| *pid)
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

/// Declares per-process state: a `static` [`PerProcess`] cell, listed by [`states`].
///
/// ```
/// procactor_os::per_process! {
///     /// Jobs started by this process.
///     static JOBS: Vec<u32> = Vec::new;
/// }
/// JOBS.lock().push(7);
/// assert!(procactor_os::per_process::states()
///     .iter()
///     .any(|s| s.name.ends_with("::JOBS") && s.owner == Some(std::process::id())));
/// ```
#[macro_export]
macro_rules! per_process {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $ty:ty = $init:expr;) => {
        $(#[$attr])*
        $vis static $name: $crate::per_process::PerProcess<$ty> =
            $crate::per_process::PerProcess::new(concat!(module_path!(), "::", stringify!($name)), $init);
        const _: () = {
            #[$crate::linkme::distributed_slice($crate::per_process::CELLS)]
            #[linkme(crate = $crate::linkme)]
            static CELL: &(dyn $crate::per_process::Cell + Sync) = &$name;
        };
    };
}

/// Every per-process cell of this binary (see [`per_process!`](crate::per_process!)).
#[doc(hidden)]
#[linkme::distributed_slice]
pub static CELLS: [&'static (dyn Cell + Sync)];

/// What [`states`] reads of a cell, whatever its type.
#[doc(hidden)]
pub trait Cell {
    /// The cell's name.
    fn name(&self) -> &'static str;
    /// See [`PerProcess::owner`].
    fn owner(&self) -> Option<u32>;
    /// Uses the cell once (fresh state in a forked copy).
    fn touch(&'static self);
}

impl<T> Cell for PerProcess<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn owner(&self) -> Option<u32> {
        PerProcess::owner(self)
    }

    fn touch(&'static self) {
        drop(self.lock());
    }
}

/// One per-process cell, as [`states`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Its path: module and static.
    pub name: &'static str,
    /// The pid of the process whose state it holds (`None`: not used yet here or in a parent).
    pub owner: Option<u32>,
}

/// Every per-process cell in this binary, by name.
///
/// ```
/// let all = procactor_os::per_process::states();
/// assert!(all.iter().any(|s| s.name == "procactor_os::closer::CLOSER"));
/// assert!(all.windows(2).all(|w| w[0].name <= w[1].name));
/// ```
pub fn states() -> Vec<State> {
    let mut all: Vec<State> = CELLS
        .iter()
        .map(|c| State {
            name: c.name(),
            owner: c.owner(),
        })
        .collect();
    all.sort_by_key(|s| s.name);
    all
}

/// Uses every per-process cell once: in a forked copy, each then holds fresh state of its own
/// (what a test checks through [`states`]).
///
/// ```
/// procactor_os::per_process::touch_all();
/// let me = std::process::id();
/// assert!(procactor_os::per_process::states().iter().all(|s| s.owner == Some(me)));
/// ```
pub fn touch_all() {
    for c in CELLS.iter() {
        c.touch();
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

crate::per_process! {
    /// The runtime's threads started in this process (a forked copy starts with none: the
    /// threads of its parent do not exist in it).
    static THREADS: Vec<RuntimeThread> = Vec::new;
}

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

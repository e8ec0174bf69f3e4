//! Synchronisation between processes, in shared memory with futexes: Python's `Lock`, `RLock`,
//! `Semaphore`, `BoundedSemaphore`, `Event`, `Condition` and `Barrier`.
//!
//! Every handle is `Clone + Serialize`: pass it to a `Process` or put it in a message, and the
//! other process maps the same object. Locks are robust: a holder killed by a signal does not
//! leave the lock taken for ever (see [`LockGuard::owner_died`]).

mod barrier;
mod condition;
mod event;
mod lock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};

pub(crate) use procactor_os::futex::{
    futex_wait, futex_wake, sleep_counted, wake_counted, RawCondvar,
};
pub(crate) use procactor_os::robust;

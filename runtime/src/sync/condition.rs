//! `Condition`: wait for a change made under a `Lock` by another process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Lock, LockGuard, RawCondvar};
use crate::error::{Error, Result};
use crate::shm::{Layout, Shared};
use crate::wire::Wait;

procactor_os::shared_struct! {
    pub(crate) struct CondCell {
        cv: RawCondvar,
    }
}

impl Layout for CondCell {
    const MAGIC: u32 = 0x434f_4e44;
}

/// A condition variable over a [`Lock`], shared between processes (Python's
/// `multiprocessing.Condition`).
///
/// Hold the lock (`acquire`), check your state, and `wait` (which releases the lock while it
/// sleeps and takes it back before returning). Another process changes the state under the lock
/// and calls `notify`. As in Python and in `std`, a wait may return without a notify: check the
/// state in a loop, or use [`wait_for`](Condition::wait_for). If the lock's holder dies, waiters
/// still get the lock back, told by [`LockGuard::owner_died`].
///
/// ```
/// # procactor::init();
/// use procactor::{Condition, Process, shared::RawValue};
/// use std::time::Duration;
///
/// fn producer((cond, ready): (Condition, RawValue<u32>)) {
///     let _g = cond.acquire().unwrap();
///     ready.set(1);
///     cond.notify_all();
/// }
///
/// let cond = Condition::new()?;
/// let ready = RawValue::new(0u32)?;
/// let p = Process::new(producer, (cond.clone(), ready.clone())).start()?;
/// let mut g = cond.acquire()?;
/// cond.wait_for_timeout(&mut g, || ready.get() == 1, Duration::from_secs(30))?;
/// drop(g);
/// p.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: Lock,
    cell: Shared<CondCell>,
}

impl Condition {
    /// A condition with a lock of its own.
    pub fn new() -> Result<Condition> {
        Condition::with_lock(Lock::new()?)
    }

    /// A condition over an existing lock.
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition {
            lock,
            cell: Shared::new("procactor-condition", 0)?,
        })
    }

    /// The lock the condition waits under.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the condition's lock (as `Lock::acquire`).
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.lock.acquire()
    }

    /// Takes the condition's lock, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock.acquire_timeout(timeout)
    }

    /// Releases the lock held by `guard`, sleeps until notified, and takes the lock back.
    pub fn wait(&self, guard: &mut LockGuard<'_>) -> Result<()> {
        self.sleep(guard, Wait::Forever)
    }

    /// As [`wait`](Condition::wait), for at most `timeout` (`Err(Timeout)` then; the lock is
    /// held again either way).
    pub fn wait_timeout(&self, guard: &mut LockGuard<'_>, timeout: Duration) -> Result<()> {
        self.sleep(guard, Wait::timeout(timeout))
    }

    /// Waits until `ready()` is true (checked under the lock, first before any wait).
    pub fn wait_for(&self, guard: &mut LockGuard<'_>, ready: impl FnMut() -> bool) -> Result<()> {
        self.wait_for_until(guard, ready, Wait::Forever)
    }

    /// As [`wait_for`](Condition::wait_for), giving up after `timeout` with `Err(Timeout)`.
    pub fn wait_for_timeout(
        &self,
        guard: &mut LockGuard<'_>,
        ready: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_for_until(guard, ready, Wait::timeout(timeout))
    }

    /// Wakes at most `n` waiters (call it holding the lock, as Python requires, so that a
    /// waiter cannot miss it between checking its state and sleeping).
    pub fn notify(&self, n: u32) {
        self.cell.cv.notify(n);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    fn wait_for_until(
        &self,
        guard: &mut LockGuard<'_>,
        mut ready: impl FnMut() -> bool,
        wait: Wait,
    ) -> Result<()> {
        while !ready() {
            if let Err(e) = self.sleep(guard, wait) {
                return if ready() { Ok(()) } else { Err(e) };
            }
        }
        Ok(())
    }

    fn sleep(&self, guard: &mut LockGuard<'_>, wait: Wait) -> Result<()> {
        if !guard.lock().same_as(&self.lock) {
            return Err(Error::InvalidState(
                "Condition::wait with a guard of another lock",
            ));
        }
        // Under the lock: a notify after this point is not missed.
        let seq = self.cell.cv.prepare();
        guard.unlocked(|| self.cell.cv.sleep(seq, wait))
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish()
    }
}

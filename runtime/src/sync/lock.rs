//! `Lock` and `RLock`: robust mutexes shared between processes.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::robust::RawMutex;
use crate::error::{Error, Result};
use crate::shm::{Layout, Shared};
use crate::wire::Wait;

procactor_os::shared_struct! {
    pub(crate) struct LockCell {
        pub(crate) mutex: RawMutex,
        /// RLock: how many times the owner holds it (only the owner touches it).
        depth: AtomicU32,
    }
}

impl Layout for LockCell {
    const MAGIC: u32 = 0x4c4f_434b;
    fn in_use_here(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// A mutual-exclusion lock shared between processes (Python's `multiprocessing.Lock`).
///
/// `acquire` returns a guard; the lock is released when the guard is dropped. If a process dies
/// holding the lock (even by `kill -9`), the next `acquire` gets it, and its guard says so with
/// [`LockGuard::owner_died`]: the data the lock protects may be half-updated. CPython's lock
/// stays taken for ever in that case.
///
/// ```
/// # procactor::init();
/// use procactor::{Lock, Process};
///
/// fn critical(lock: Lock) -> bool {
///     let guard = lock.acquire().unwrap();
///     guard.owner_died()
/// }
///
/// let lock = Lock::new()?;
/// let p = Process::new(critical, lock.clone()).start()?;
/// assert_eq!(p.join()?, false);
/// assert!(!lock.is_locked());
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lock {
    cell: Shared<LockCell>,
}

/// Holds a [`Lock`]; dropping it releases the lock. Stays on its thread (`!Send`): the kernel
/// tracks robust locks per thread.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    owner_died: bool,
    _thread: PhantomData<*const ()>,
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            cell: Shared::new("procactor-lock", 0)?,
        })
    }

    /// Waits for the lock. `Err(Deadlock)` if this thread already holds it.
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.lock(Wait::Forever)
    }

    /// Waits at most `timeout` for the lock (`Err(Timeout)` then).
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// let lock = procactor::Lock::new()?;
    /// let _held = lock.acquire()?;
    /// let other = lock.clone();
    /// let waited = std::thread::spawn(move || other.acquire_timeout(Duration::from_millis(20)).is_err());
    /// assert!(waited.join().unwrap());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock(Wait::timeout(timeout))
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        self.lock(Wait::No).ok()
    }

    /// Whether some thread of some process holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.cell.mutex.is_locked()
    }

    fn lock(&self, wait: Wait) -> Result<LockGuard<'_>> {
        let owner_died = self.cell.mutex.lock(wait)?;
        Ok(LockGuard {
            lock: self,
            owner_died,
            _thread: PhantomData,
        })
    }

    pub(crate) fn same_as(&self, other: &Lock) -> bool {
        std::ptr::eq::<LockCell>(&*self.cell, &*other.cell)
    }
}

impl<'a> LockGuard<'a> {
    /// True when the previous holder died holding the lock: what it protected may be
    /// inconsistent. procactor also logs a warning when this happens.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Event, Lock, Process};
    /// use std::time::Duration;
    ///
    /// fn hold_and_hang((lock, held): (Lock, Event)) {
    ///     let _g = lock.acquire().unwrap();
    ///     held.set();
    ///     std::thread::sleep(Duration::from_secs(3600));
    /// }
    ///
    /// let (lock, held) = (Lock::new()?, Event::new()?);
    /// let p = Process::new(hold_and_hang, (lock.clone(), held.clone())).start()?;
    /// held.wait_timeout(Duration::from_secs(30))?;
    /// p.kill()?; // SIGKILL inside the critical section
    /// let g = lock.acquire_timeout(Duration::from_secs(30))?;
    /// assert!(g.owner_died());
    /// # let _ = p.join();
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    pub(crate) fn lock(&self) -> &'a Lock {
        self.lock
    }

    /// Releases the lock and takes it again after `wait` (a condition variable's wait).
    pub(crate) fn unlocked<R>(&mut self, wait: impl FnOnce() -> R) -> R {
        self.lock.cell.mutex.unlock();
        let r = wait();
        // Cannot deadlock (we just released it) and waits for ever, so only `Ok` comes back.
        if let Ok(died) = self.lock.cell.mutex.lock(Wait::Forever) {
            self.owner_died |= died;
        }
        r
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.cell.mutex.unlock();
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

/// A lock the holding thread may take again (Python's `multiprocessing.RLock`): released when
/// every guard of the owner is dropped. Robust like [`Lock`].
///
/// ```
/// # procactor::init();
/// let lock = procactor::RLock::new()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?; // same thread: no deadlock
/// assert_eq!(lock.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.is_locked());
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLock {
    cell: Shared<LockCell>,
}

/// One hold of an [`RLock`]; the lock is released when the owner's last guard is dropped.
#[must_use = "the hold ends as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner_died: bool,
    _thread: PhantomData<*const ()>,
}

impl RLock {
    /// A new, unlocked recursive lock.
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            cell: Shared::new("procactor-rlock", 0)?,
        })
    }

    /// Takes the lock, or one more hold of it if this thread owns it.
    pub fn acquire(&self) -> Result<RLockGuard<'_>> {
        self.lock(Wait::Forever)
    }

    /// As [`acquire`](RLock::acquire), waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.lock(Wait::timeout(timeout))
    }

    /// Takes the lock (or one more hold) only if that needs no waiting.
    pub fn try_acquire(&self) -> Option<RLockGuard<'_>> {
        self.lock(Wait::No).ok()
    }

    /// Whether some thread holds it.
    pub fn is_locked(&self) -> bool {
        self.cell.mutex.is_locked()
    }

    /// How many holds this thread has (0 when it does not own the lock).
    pub fn depth(&self) -> u32 {
        if self.cell.mutex.held_by_me() {
            self.cell.depth.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    fn lock(&self, wait: Wait) -> Result<RLockGuard<'_>> {
        let cell = &self.cell;
        let owner_died = if cell.mutex.held_by_me() {
            let depth = cell.depth.load(Ordering::Relaxed);
            let more = depth
                .checked_add(1)
                .ok_or(Error::InvalidState("an RLock held 4 billion times"))?;
            cell.depth.store(more, Ordering::Relaxed);
            false
        } else {
            let died = cell.mutex.lock(wait)?;
            cell.depth.store(1, Ordering::Relaxed);
            died
        };
        Ok(RLockGuard {
            lock: self,
            owner_died,
            _thread: PhantomData,
        })
    }
}

impl RLockGuard<'_> {
    /// True when the previous owner died holding the lock (see [`LockGuard::owner_died`]).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let cell = &self.lock.cell;
        let depth = cell.depth.load(Ordering::Relaxed);
        if depth <= 1 {
            cell.depth.store(0, Ordering::Relaxed);
            cell.mutex.unlock();
        } else {
            cell.depth.store(depth - 1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

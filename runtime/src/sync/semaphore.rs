//! `Semaphore` and `BoundedSemaphore`: a counter of permits shared between processes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{sleep_counted, wake_counted};
use crate::error::{Error, Result};
use crate::shm::{Layout, Shared};
use crate::wire::Wait;

procactor_os::shared_struct! {
    pub(crate) struct SemCell {
        permits: AtomicU32,
        waiters: AtomicU32,
        /// Permits never exceed it (`u32::MAX` for a plain semaphore).
        bound: AtomicU32,
    }
}

impl Layout for SemCell {
    const MAGIC: u32 = 0x5345_4d41;
}

/// A semaphore shared between processes (Python's `multiprocessing.Semaphore`).
///
/// `acquire` takes a permit and returns a guard that gives it back when dropped (Python's
/// `with sem:`); [`SemaphoreGuard::forget`] keeps it taken, and [`release`](Semaphore::release)
/// adds one, from any process. Permits have no owner: a process killed holding one does not
/// give it back.
///
/// ```
/// # procactor::init();
/// let sem = procactor::Semaphore::new(2)?;
/// let a = sem.acquire()?;
/// let _b = sem.acquire()?;
/// assert!(sem.try_acquire().is_none());
/// drop(a);
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Semaphore {
    cell: Shared<SemCell>,
}

/// A [`Semaphore`] that refuses to be released above its initial value (Python's
/// `BoundedSemaphore`: releasing more than was acquired is a bug, reported as
/// `Error::InvalidState`).
///
/// ```
/// # procactor::init();
/// let sem = procactor::sync::BoundedSemaphore::new(1)?;
/// assert!(sem.release().is_err());
/// sem.acquire()?.forget();
/// sem.release()?;
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

/// A permit of a semaphore, given back when dropped.
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    cell: &'a SemCell,
}

impl Semaphore {
    /// A semaphore with `value` permits.
    pub fn new(value: u32) -> Result<Semaphore> {
        Semaphore::with_bound(value, u32::MAX)
    }

    fn with_bound(value: u32, bound: u32) -> Result<Semaphore> {
        let cell = Shared::<SemCell>::new("procactor-semaphore", 0)?;
        cell.permits.store(value, Ordering::Relaxed);
        cell.bound.store(bound, Ordering::Release);
        Ok(Semaphore { cell })
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.take(Wait::Forever)
    }

    /// Waits at most `timeout` for a permit (`Err(Timeout)` then).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>> {
        self.take(Wait::timeout(timeout))
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.take(Wait::No).ok()
    }

    /// Adds a permit, waking one waiter.
    pub fn release(&self) -> Result<()> {
        let cell = &*self.cell;
        let bound = cell.bound.load(Ordering::Relaxed);
        cell.permits
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |p| {
                (p < bound).then_some(p + 1)
            })
            .map_err(|_| {
                Error::InvalidState(if bound != u32::MAX {
                    "a BoundedSemaphore released more times than it was acquired"
                } else {
                    "a Semaphore released past 4 billion permits"
                })
            })?;
        wake_counted(&cell.permits, &cell.waiters, 1);
        Ok(())
    }

    /// The permits free now.
    pub fn value(&self) -> u32 {
        self.cell.permits.load(Ordering::Relaxed)
    }

    fn take(&self, wait: Wait) -> Result<SemaphoreGuard<'_>> {
        let cell = &*self.cell;
        loop {
            let p = cell.permits.load(Ordering::Relaxed);
            if p > 0 {
                if cell
                    .permits
                    .compare_exchange_weak(p, p - 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(SemaphoreGuard { cell });
                }
                continue;
            }
            if matches!(wait, Wait::No) {
                return Err(wait.expired());
            }
            sleep_counted(&cell.permits, 0, &cell.waiters, wait)?;
        }
    }
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit taken (to be given back later with `release`, perhaps by another
    /// process).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot pass the bound: this permit was taken from it.
        self.cell.permits.fetch_add(1, Ordering::SeqCst);
        wake_counted(&self.cell.permits, &self.cell.waiters, 1);
    }
}

impl BoundedSemaphore {
    /// A semaphore with `value` permits, never more.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore::with_bound(value, value)?,
        })
    }

    /// Waits for a permit.
    pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.inner.acquire()
    }

    /// Waits at most `timeout` for a permit.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>> {
        self.inner.acquire_timeout(timeout)
    }

    /// Takes a permit if one is free now.
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.inner.try_acquire()
    }

    /// Gives a permit back; `Err(InvalidState)` if that would exceed the initial value.
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// The permits free now.
    pub fn value(&self) -> u32 {
        self.inner.value()
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl std::fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl std::fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

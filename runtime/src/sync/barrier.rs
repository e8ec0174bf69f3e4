//! `Barrier`: a fixed number of processes wait for each other.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use procactor_os::code::{CodeRef, SignedCode};
use serde::{Deserialize, Serialize};

use super::robust::RawMutex;
use super::{futex_wait, futex_wake};
use crate::error::{Error, Result};
use crate::shm::{Layout, Shared};
use crate::wire::Wait;

procactor_os::shared_struct! {
    pub(crate) struct BarrierCell {
        mutex: RawMutex,
        parties: AtomicU32,
        /// Arrived in the current generation.
        count: AtomicU32,
        /// Bumped when a generation ends (all arrived, or broken): waiters sleep on it.
        generation: AtomicU32,
        /// Set from a break until `reset`.
        broken: AtomicU32,
        /// Bit `g % 64`: generation `g` ended broken rather than released.
        ended_broken: AtomicU64,
        /// Default timeout of `wait`, in milliseconds (0: none).
        timeout_ms: AtomicU64,
    }
}

impl Layout for BarrierCell {
    const MAGIC: u32 = 0x4241_5252;
    fn in_use_here(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// A barrier for `parties` processes (Python's `multiprocessing.Barrier`): each `wait` blocks
/// until all of them have called it, then all go on. `wait` returns the arrival index
/// (`0..parties`), different for each.
///
/// A party that never arrives (it died) would block the others for ever: give the barrier a
/// timeout ([`with_timeout`](Barrier::with_timeout) or [`wait_timeout`](Barrier::wait_timeout)).
/// A wait that times out breaks the barrier: the others get `Error::BrokenBarrier`, as do later
/// waits until [`reset`](Barrier::reset).
///
/// ```
/// # procactor::init();
/// use procactor::{Barrier, Process};
///
/// fn party(b: Barrier) -> u32 {
///     b.wait().unwrap()
/// }
///
/// let b = Barrier::new(3)?;
/// let ps = (0..2)
///     .map(|_| Process::new(party, b.clone()).start())
///     .collect::<Result<Vec<_>, _>>()?;
/// let mut seen = vec![b.wait()?];
/// for p in ps {
///     seen.push(p.join()?);
/// }
/// seen.sort();
/// assert_eq!(seen, [0, 1, 2]);
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Barrier {
    cell: Shared<BarrierCell>,
    /// Run by the last party to arrive, before any is released (a function of this program,
    /// checked where it runs).
    action: Option<SignedCode>,
}

impl Barrier {
    /// A barrier for `parties` processes (at least 1), with no default timeout.
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::InvalidState("a Barrier needs at least one party"));
        }
        let cell = Shared::<BarrierCell>::new("procactor-barrier", 0)?;
        cell.parties.store(parties, Ordering::Release);
        Ok(Barrier { cell, action: None })
    }

    /// A barrier for `parties` processes whose `action` runs once per generation, in the
    /// process of the last party to arrive, before any party is released (Python's
    /// `Barrier(parties, action)`). `action` is a function of this program (a closure that
    /// captures nothing). If it panics, the barrier breaks: that party gets
    /// [`Error::BarrierActionPanicked`], the others [`Error::BrokenBarrier`]. A party killed
    /// during the action is a party that never arrives: give the others a timeout. The action
    /// runs under the barrier's lock, as in CPython: a party whose timeout passes meanwhile
    /// waits for the action to return, so an action that hangs holds up every party.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Barrier, Process};
    ///
    /// fn party(b: Barrier) -> u32 {
    ///     b.wait().unwrap()
    /// }
    ///
    /// let b = Barrier::with_action(2, || println!("all arrived"))?;
    /// let p = Process::new(party, b.clone()).start()?;
    /// let mine = b.wait()?; // "all arrived" is printed once, before either goes on
    /// assert_eq!(mine + p.join()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn with_action(parties: u32, action: fn()) -> Result<Barrier> {
        let mut b = Barrier::new(parties)?;
        b.action = Some(CodeRef::new(action)?.sign());
        Ok(b)
    }

    /// A barrier whose `wait` gives up (and breaks it) after `timeout`.
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Barrier> {
        let b = Barrier::new(parties)?;
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        b.cell.timeout_ms.store(ms, Ordering::Release);
        Ok(b)
    }

    /// Waits for all parties (up to the default timeout, if any). Returns the arrival index.
    pub fn wait(&self) -> Result<u32> {
        match self.cell.timeout_ms.load(Ordering::Acquire) {
            0 => self.arrive(Wait::Forever),
            ms => self.arrive(Wait::timeout(Duration::from_millis(ms))),
        }
    }

    /// Waits at most `timeout`; on timeout the barrier breaks and this call returns
    /// `Err(Timeout)`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.arrive(Wait::timeout(timeout))
    }

    /// Breaks the barrier: current and later waits fail with `BrokenBarrier` until `reset`.
    ///
    /// ```
    /// # procactor::init();
    /// let b = procactor::Barrier::new(2)?;
    /// b.abort();
    /// assert!(matches!(b.wait(), Err(procactor::Error::BrokenBarrier)));
    /// b.reset();
    /// assert!(!b.is_broken());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn abort(&self) {
        let _g = self.locked();
        self.end_generation(true);
        self.cell.broken.store(1, Ordering::Release);
    }

    /// Back to the initial state; parties waiting now get `BrokenBarrier`.
    pub fn reset(&self) {
        let _g = self.locked();
        if self.cell.count.load(Ordering::Relaxed) > 0 {
            self.end_generation(true);
        }
        self.cell.broken.store(0, Ordering::Release);
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.cell.broken.load(Ordering::Acquire) != 0
    }

    /// How many parties it waits for.
    pub fn parties(&self) -> u32 {
        self.cell.parties.load(Ordering::Relaxed)
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.cell.count.load(Ordering::Relaxed)
    }

    fn arrive(&self, wait: Wait) -> Result<u32> {
        let cell = &*self.cell;
        let (generation, index) = {
            let _g = self.locked();
            if self.is_broken() {
                return Err(Error::BrokenBarrier);
            }
            let index = cell.count.load(Ordering::Relaxed);
            if index + 1 >= cell.parties.load(Ordering::Relaxed) {
                // The action runs under the lock: a party that times out meanwhile waits for
                // it (and, if this process dies in it, finds the lock's owner dead: broken).
                if let Err(e) = self.run_action() {
                    self.end_generation(true);
                    cell.broken.store(1, Ordering::Release);
                    return Err(e);
                }
                self.end_generation(false);
                return Ok(index);
            }
            cell.count.store(index + 1, Ordering::Relaxed);
            (cell.generation.load(Ordering::Relaxed), index)
        };
        loop {
            if cell.generation.load(Ordering::Acquire) != generation {
                let broken = cell.ended_broken.load(Ordering::Acquire) & (1 << (generation % 64));
                return if broken != 0 {
                    Err(Error::BrokenBarrier)
                } else {
                    Ok(index)
                };
            }
            if let Err(timeout) = futex_wait(&cell.generation, generation, wait) {
                let _g = self.locked();
                if cell.generation.load(Ordering::Acquire) != generation {
                    continue; // it ended just now: report how
                }
                self.end_generation(true);
                cell.broken.store(1, Ordering::Release);
                return Err(timeout);
            }
        }
    }

    /// Runs the action, if any, catching a panic.
    fn run_action(&self) -> Result<()> {
        let Some(signed) = self.action else {
            return Ok(());
        };
        let action = CodeRef::<fn()>::verify(signed)?.get();
        std::panic::catch_unwind(action).map_err(|p| {
            // (`sync` sits below `bootstrap`, whose panic hook knows where: the message only.)
            let message = match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
                (Some(s), _) => (*s).to_string(),
                (_, Some(s)) => s.clone(),
                _ => "<non-string panic payload>".to_string(),
            };
            Error::BarrierActionPanicked(Box::new(crate::error::Panic {
                message,
                location: None,
            }))
        })
    }

    /// Ends the current generation (under the lock) and wakes its waiters.
    fn end_generation(&self, broken: bool) {
        let cell = &*self.cell;
        let generation = cell.generation.load(Ordering::Relaxed);
        let bit = 1u64 << (generation % 64);
        if broken {
            cell.ended_broken.fetch_or(bit, Ordering::Relaxed);
        } else {
            cell.ended_broken.fetch_and(!bit, Ordering::Relaxed);
        }
        cell.count.store(0, Ordering::Relaxed);
        cell.generation
            .store(generation.wrapping_add(1), Ordering::Release);
        futex_wake(&cell.generation, u32::MAX);
    }

    fn locked(&self) -> BarrierLock<'_> {
        // A party that died holding this short-lived lock may have left `count` off: the
        // barrier cannot be trusted any more, so it breaks.
        if let Ok(true) = self.cell.mutex.lock(Wait::Forever) {
            self.end_generation(true);
            self.cell.broken.store(1, Ordering::Release);
        }
        BarrierLock(&self.cell.mutex)
    }
}

struct BarrierLock<'a>(&'a RawMutex);

impl Drop for BarrierLock<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

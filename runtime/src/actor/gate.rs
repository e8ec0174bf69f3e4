//! The gate of a bounded mailbox: a counter in shared memory that every caller process checks
//! before it sends, and a futex to sleep on while the mailbox is full.
//!
//! A sender takes a slot (compare-and-swap on `queued`, never above `capacity`) and records it in
//! its connection's own counter; the actor gives the slot back once it has handled the message.
//! When a connection ends, the actor gives back whatever that connection still held: slots of
//! messages a killed sender took but never delivered (still in its buffer) are not lost.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::Result;
use crate::shm::{Layout, Shared};
use crate::sync::{sleep_counted, wake_counted};
use crate::wire::Wait;

/// Connections one bounded actor can serve at once (each has a counter in the table).
pub(crate) const SLOTS: usize = 1020;

procactor_os::shared_struct! {
    pub(crate) struct GateCell {
        /// Messages taken and not yet handled, over all connections.
        queued: AtomicU32,
        /// Senders sleeping on `queued`.
        waiters: AtomicU32,
        capacity: AtomicU32,
        /// Per connection: slots it took that the actor has not handled yet.
        slots: [AtomicU32; SLOTS],
    }
}

impl Layout for GateCell {
    const MAGIC: u32 = 0x4741_5445;
}

/// One process's mapping of a gate.
pub(crate) struct Gate {
    cell: Shared<GateCell>,
}

/// Why a slot could not be taken.
pub(crate) enum Full {
    /// `Wait::No` and the mailbox is full.
    Now,
    /// The wait ran out.
    Timeout(crate::error::Error),
}

impl Gate {
    /// A new gate (in the actor's process).
    pub(crate) fn create(capacity: u32) -> Result<Gate> {
        let cell = Shared::<GateCell>::new("procactor-mailbox", 0)?;
        cell.capacity.store(capacity, Ordering::Release);
        Ok(Gate { cell })
    }

    /// Maps a gate received from an actor.
    pub(crate) fn map(fd: OwnedFd) -> Result<Gate> {
        Ok(Gate {
            cell: Shared::open(fd, "a mailbox gate")?,
        })
    }

    fn shared(&self) -> &GateCell {
        &self.cell
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.shared().capacity.load(Ordering::Acquire)
    }

    /// Takes a slot for connection `slot`, waiting as `wait` says while the mailbox is full.
    pub(crate) fn acquire(&self, slot: u32, wait: Wait) -> std::result::Result<(), Full> {
        let s = self.shared();
        let cap = self.capacity();
        let mine = &s.slots[slot as usize % SLOTS];
        loop {
            let q = s.queued.load(Ordering::Acquire);
            if q < cap {
                if s.queued
                    .compare_exchange_weak(q, q + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // A kill between these two lines leaks one slot; anywhere later, the actor
                    // takes the slot back when our connection ends.
                    mine.fetch_add(1, Ordering::AcqRel);
                    return Ok(());
                }
                continue;
            }
            if matches!(wait, Wait::No) {
                return Err(Full::Now);
            }
            // Sleeps only while `queued` is still `q`: a release in between is not missed.
            if let Err(timeout) = sleep_counted(&s.queued, q, &s.waiters, wait) {
                if s.queued.load(Ordering::Acquire) >= cap {
                    return Err(Full::Timeout(timeout));
                }
            }
        }
    }

    /// Gives back `n` slots of connection `slot` (messages handled, or never delivered).
    pub(crate) fn release(&self, slot: u32, n: u32) {
        if n == 0 {
            return;
        }
        let s = self.shared();
        s.slots[slot as usize % SLOTS].fetch_sub(n, Ordering::AcqRel);
        s.queued.fetch_sub(n, Ordering::SeqCst);
        wake_counted(&s.queued, &s.waiters, u32::MAX);
    }

    /// What connection `slot` still holds: given back when it ends.
    pub(crate) fn held_by(&self, slot: u32) -> u32 {
        self.shared().slots[slot as usize % SLOTS].load(Ordering::Acquire)
    }
}

impl AsFd for Gate {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.cell.fd()
    }
}

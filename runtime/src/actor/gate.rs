//! The gate of a bounded mailbox: a counter in shared memory that every caller process checks
//! before it sends, and a futex to sleep on while the mailbox is full.
//!
//! A sender takes a slot (compare-and-swap on `queued`, never above `capacity`) and records it in
//! its connection's own counter; the actor gives the slot back once it has handled the message.
//! When a connection ends, the actor gives back whatever that connection still held: slots of
//! messages a killed sender took but never delivered (still in its buffer) are not lost.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use rustix::event::Timespec;
use rustix::thread::futex;

use crate::error::{Error, Result};
use crate::wire::Wait;

/// Connections one bounded actor can serve at once (each has a counter in the table).
pub(crate) const SLOTS: usize = 1020;

#[repr(C)]
struct Shared {
    /// Messages taken and not yet handled, over all connections.
    queued: AtomicU32,
    /// Senders sleeping on `queued`.
    waiters: AtomicU32,
    capacity: AtomicU32,
    _pad: AtomicU32,
    /// Per connection: slots it took that the actor has not handled yet.
    slots: [AtomicU32; SLOTS],
}

const SIZE: usize = std::mem::size_of::<Shared>();

/// One process's mapping of a gate.
pub(crate) struct Gate {
    ptr: NonNull<Shared>,
    fd: OwnedFd,
}

// SAFETY: `Shared` holds only atomics; the mapping lives as long as the `Gate`.
unsafe impl Send for Gate {}
unsafe impl Sync for Gate {}

/// Why a slot could not be taken.
pub(crate) enum Full {
    /// `Wait::No` and the mailbox is full.
    Now,
    /// The wait ran out.
    Timeout(Error),
}

impl Gate {
    /// A new gate (in the actor's process).
    pub(crate) fn create(capacity: u32) -> Result<Gate> {
        let fd = rustix::fs::memfd_create("procactor-mailbox", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| Error::io("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, SIZE as u64).map_err(|e| Error::io("ftruncate", e))?;
        let gate = Gate::map(fd)?;
        gate.shared().capacity.store(capacity, Ordering::Release);
        Ok(gate)
    }

    /// Maps a gate received from an actor.
    pub(crate) fn map(fd: OwnedFd) -> Result<Gate> {
        let len = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("fstat", e))?
            .st_size;
        if len != SIZE as i64 {
            return Err(Error::Decode {
                expected: "a mailbox gate",
                reason: format!("{len}-byte memory object"),
            });
        }
        // SAFETY: a fresh shared mapping of the whole object (size checked above); it is only
        // accessed as `Shared`, whose fields are atomics valid for any bit pattern, and unmapped
        // in `Drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                SIZE,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::io("mmap", e))?;
        let ptr = NonNull::new(ptr.cast::<Shared>()).ok_or(Error::Unsupported("mmap gave null"))?;
        Ok(Gate { ptr, fd })
    }

    fn shared(&self) -> &Shared {
        // SAFETY: mapped for our lifetime (see `map`).
        unsafe { self.ptr.as_ref() }
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
            let timeout = match wait {
                Wait::No => return Err(Full::Now),
                Wait::Forever => None,
                Wait::Until { deadline, .. } => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Full::Timeout(wait.expired()));
                    }
                    Some(Timespec::try_from(left).unwrap_or(Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    }))
                }
            };
            s.waiters.fetch_add(1, Ordering::AcqRel);
            // Sleeps only while `queued` is still `q`: a release in between is not missed.
            let _ = futex::wait(&s.queued, futex::Flags::empty(), q, timeout.as_ref());
            s.waiters.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Gives back `n` slots of connection `slot` (messages handled, or never delivered).
    pub(crate) fn release(&self, slot: u32, n: u32) {
        if n == 0 {
            return;
        }
        let s = self.shared();
        s.slots[slot as usize % SLOTS].fetch_sub(n, Ordering::AcqRel);
        s.queued.fetch_sub(n, Ordering::AcqRel);
        if s.waiters.load(Ordering::Acquire) > 0 {
            let _ = futex::wake(&s.queued, futex::Flags::empty(), i32::MAX as u32);
        }
    }

    /// What connection `slot` still holds: given back when it ends.
    pub(crate) fn held_by(&self, slot: u32) -> u32 {
        self.shared().slots[slot as usize % SLOTS].load(Ordering::Acquire)
    }
}

impl AsFd for Gate {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), SIZE);
        }
    }
}

//! Futexes: sleeping on a word of shared memory until another process changes it, with the
//! deadlines of [`Wait`]. The sync primitives of the runtime are built on these.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use rustix::event::Timespec;
use rustix::io::Errno;
use rustix::thread::futex;

use crate::error::Result;
use crate::wire::Wait;

/// Sleeps while `word` holds `expected`, at most until the wait's deadline. Returns early on a
/// wake-up, a signal or a changed word (the caller re-checks); `Err(Timeout)` once the deadline
/// has passed.
pub fn futex_wait(word: &AtomicU32, expected: u32, wait: Wait) -> Result<()> {
    let timeout = match wait {
        Wait::No => return Err(wait.expired()),
        Wait::Forever => None,
        Wait::Until { deadline, .. } => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(wait.expired());
            }
            Some(Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            }))
        }
    };
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Err(Errno::TIMEDOUT) => Err(wait.expired()),
        // Woken, interrupted, or the word changed before we slept.
        _ => Ok(()),
    }
}

/// Wakes up to `n` processes sleeping on `word`.
#[inline]
pub fn futex_wake(word: &AtomicU32, n: u32) {
    // The kernel reads the count as an `int`: u32::MAX would be -1, which wakes only one.
    let _ = futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32));
}

/// Sleeps on `word` (while it holds `expected`, as [`futex_wait`]) counted in `sleepers`, so
/// that [`wake_counted`] makes no syscall when nobody sleeps. A sleeper killed in its sleep
/// leaves the count high: wakes then make a useless syscall, nothing worse.
pub fn sleep_counted(
    word: &AtomicU32,
    expected: u32,
    sleepers: &AtomicU32,
    wait: Wait,
) -> Result<()> {
    // SeqCst with the waker's: either it sees our count, or we see its change of `word`.
    sleepers.fetch_add(1, Ordering::SeqCst);
    let slept = futex_wait(word, expected, wait);
    sleepers.fetch_sub(1, Ordering::AcqRel);
    slept
}

/// Wakes up to `n` of the processes in [`sleep_counted`] on `word`, if there are any. The
/// caller changed `word` just before, with a SeqCst store or read-modify-write.
#[inline]
pub fn wake_counted(word: &AtomicU32, sleepers: &AtomicU32, n: u32) {
    if n > 0 && sleepers.load(Ordering::SeqCst) > 0 {
        futex_wake(word, n);
    }
}

/// A condition variable word in shared memory, used with a [`robust::RawMutex`]: a sequence
/// number bumped by every notify, and its sleepers counted as in [`sleep_counted`].
#[repr(C)]
#[derive(Debug)]
pub struct RawCondvar {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

// SAFETY: two atomic words.
unsafe impl crate::shm::AnyBits for RawCondvar {}

impl RawCondvar {
    /// Under the mutex, before releasing it: counts us as a sleeper (so that a notifier that
    /// checks `has_sleepers` under the mutex does notify) and says what to sleep on.
    #[inline]
    pub fn prepare(&self) -> u32 {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        self.seq.load(Ordering::Acquire)
    }

    /// After releasing the mutex: sleeps unless a notify came since `prepare`.
    #[inline]
    pub fn sleep(&self, seq: u32, wait: Wait) -> Result<()> {
        let slept = futex_wait(&self.seq, seq, wait);
        self.sleepers.fetch_sub(1, Ordering::AcqRel);
        slept
    }

    /// Wakes at most `n` sleepers.
    #[inline]
    pub fn notify(&self, n: u32) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        wake_counted(&self.seq, &self.sleepers, n);
    }

    /// Whether anyone sleeps on it.
    #[inline]
    pub fn has_sleepers(&self) -> bool {
        self.sleepers.load(Ordering::SeqCst) > 0
    }
}

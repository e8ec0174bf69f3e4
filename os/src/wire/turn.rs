//! A turn: exclusive use of a value by one thread at a time, waited for under a deadline (a
//! `Mutex` whose waiters give up at their deadline instead of waiting behind a holder that
//! blocks). Used where the holder may wait on a peer: a stream's sender and receiver, a
//! listener's handshakes.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::Result;
use crate::wire::Wait;

/// Exclusive use of a `T`, taken by one thread at a time, waited for under a deadline.
///
/// ```
/// use std::time::Duration;
/// use procactor_os::wire::{Turn, Wait};
/// let t = Turn::new(Vec::<u8>::new());
/// let mut held = t.take(Wait::Forever)?;
/// held.push(1);
/// assert!(t.take(Wait::timeout(Duration::from_millis(10))).unwrap_err().is_timeout());
/// drop(held);
/// assert_eq!(*t.take(Wait::No)?, [1]);
/// # Ok::<(), procactor_os::error::Error>(())
/// ```
pub struct Turn<T> {
    slot: Mutex<Option<T>>,
    free: Condvar,
}

/// The turn, held: derefs to the value, given back when dropped.
pub struct Held<'a, T> {
    turn: &'a Turn<T>,
    value: Option<T>,
}

impl<T> Turn<T> {
    /// A turn over `value`.
    pub fn new(value: T) -> Turn<T> {
        Turn {
            slot: Mutex::new(Some(value)),
            free: Condvar::new(),
        }
    }

    /// The value when nobody holds the turn (`None` while someone does).
    pub fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the turn, waiting for it as `wait` allows ([`Error::Timeout`] past that).
    pub fn take(&self, wait: Wait) -> Result<Held<'_, T>> {
        let mut slot = self.lock();
        loop {
            if let Some(value) = slot.take() {
                return Ok(Held {
                    turn: self,
                    value: Some(value),
                });
            }
            slot = match wait.deadline() {
                None => self.free.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(wait.expired());
                    }
                    self.free
                        .wait_timeout(slot, left)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0)
                }
            };
        }
    }
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held until dropped")
    }
}

impl<T> std::ops::DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("held until dropped")
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        *self.turn.lock() = self.value.take();
        self.turn.free.notify_one();
    }
}

impl<T> std::fmt::Debug for Turn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("taken", &self.lock().is_none())
            .finish()
    }
}

impl<T> std::fmt::Debug for Held<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_waiter_gives_up_at_its_deadline_while_the_holder_keeps_the_turn() {
        let t = std::sync::Arc::new(Turn::new(5u32));
        let held = t.take(Wait::Forever).unwrap();
        assert_eq!(*held, 5);
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let e = t2
                .take(Wait::timeout(Duration::from_millis(50)))
                .unwrap_err();
            (e.is_timeout(), started.elapsed())
        });
        let (timed_out, took) = waiter.join().unwrap();
        assert!(timed_out && took >= Duration::from_millis(50) && took < Duration::from_secs(10));
        assert!(t.take(Wait::No).is_err());
        drop(held);
        assert_eq!(*t.take(Wait::No).unwrap(), 5);
    }
}

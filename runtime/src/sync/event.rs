//! `Event`: a flag processes can wait for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{sleep_counted, wake_counted};
use crate::error::Result;
use crate::shm::{Layout, Shared};
use crate::wire::Wait;

procactor_os::shared_struct! {
    pub(crate) struct EventCell {
        flag: AtomicU32,
        waiters: AtomicU32,
    }
}

impl Layout for EventCell {
    const MAGIC: u32 = 0x4556_4e54;
}

/// A flag shared between processes (Python's `multiprocessing.Event`): `set` wakes every
/// process waiting for it.
///
/// ```
/// # procactor::init();
/// use procactor::{Event, Process};
/// use std::time::Duration;
///
/// fn starter(ev: Event) {
///     ev.set();
/// }
///
/// let ev = Event::new()?;
/// let p = Process::new(starter, ev.clone()).start()?;
/// ev.wait_timeout(Duration::from_secs(30))?;
/// assert!(ev.is_set());
/// p.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    cell: Shared<EventCell>,
}

impl Event {
    /// A new event, not set.
    pub fn new() -> Result<Event> {
        Ok(Event {
            cell: Shared::new("procactor-event", 0)?,
        })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.cell.flag.store(1, Ordering::SeqCst);
        wake_counted(&self.cell.flag, &self.cell.waiters, u32::MAX);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.cell.flag.store(0, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.cell.flag.load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.wait_until(Wait::Forever)
    }

    /// Waits at most `timeout` for the flag (`Err(Timeout)` if it is still clear).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(Wait::timeout(timeout))
    }

    fn wait_until(&self, wait: Wait) -> Result<()> {
        let cell = &*self.cell;
        while !self.is_set() {
            let slept = sleep_counted(&cell.flag, 0, &cell.waiters, wait);
            if slept.is_err() && !self.is_set() {
                return slept;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

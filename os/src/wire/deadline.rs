//! Deadlines: how long a blocking operation may wait, and how long it spins first.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::sys;

#[derive(Clone, Copy, Debug)]
/// How long a blocking operation may wait.
pub enum Wait {
    /// Block until it completes.
    Forever,
    /// Until `deadline`; `asked` is the timeout the caller gave, for the error it gets.
    Until {
        /// When the wait ends.
        deadline: Instant,
        /// The timeout the caller gave.
        asked: Duration,
    },
    /// Do not block at all.
    No,
}

impl Wait {
    /// Waits at most `asked` from now (for ever if that instant overflows).
    #[inline]
    pub fn timeout(asked: Duration) -> Wait {
        match Instant::now().checked_add(asked) {
            Some(deadline) => Wait::Until { deadline, asked },
            None => Wait::Forever,
        }
    }

    /// The instant the wait ends: `None` for ever, now for no wait.
    #[inline]
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            Wait::Until { deadline, .. } => Some(deadline),
            Wait::No => Some(Instant::now()),
        }
    }

    /// The error for a wait that ran out: it names the timeout the caller asked for.
    pub fn expired(self) -> Error {
        match self {
            Wait::Until { asked, .. } => Error::Timeout(asked),
            _ => Error::Timeout(Duration::ZERO),
        }
    }
}

/// How long a receiver polls before it sleeps in the kernel, when it has a core of its own.
/// A wake-up across cores costs 20-110 us on small VMs; a reply often comes sooner than that.
static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

thread_local! {
    static NO_SPIN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread's receives sleep at once instead of spinning first: for a thread that
/// relays between two peers, whose spinning would take the core the next hop needs.
pub fn never_spin_on_this_thread() {
    NO_SPIN.with(|n| n.set(true));
}

/// How long a receiver polls before it sleeps: `PROCACTOR_SPIN_US` microseconds if set, else 50 us,
/// or none with fewer than 2 usable CPUs.
#[inline]
pub fn spin_time() -> Duration {
    if NO_SPIN.with(std::cell::Cell::get) {
        return Duration::ZERO;
    }
    *SPIN.get_or_init(|| {
        let us = std::env::var("PROCACTOR_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok());
        match us {
            Some(us) => Duration::from_micros(us),
            // On one core, spinning only steals the time the peer needs to answer.
            None if sys::usable_cpus() < 2 => Duration::ZERO,
            None => Duration::from_micros(50),
        }
    })
}

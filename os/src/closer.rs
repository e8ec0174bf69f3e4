//! Closing descriptors that came from peers, on a thread of its own.
//!
//! The last close of some descriptors blocks: a TCP socket with `SO_LINGER` set and a send
//! queue that cannot drain waits up to its linger time; a file on a hung network filesystem may
//! wait for ever. A peer chooses what it attaches to a message, so a receive (or an event loop)
//! that closed what it did not take would wait on the peer's choice. Such descriptors, and the
//! sockets of peers an event loop lets go of (whose unread messages may still carry some), are
//! handed to this process's closer thread instead. If one close blocks there, the others wait
//! behind it; nothing else does.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

struct Closer {
    queue: Vec<OwnedFd>,
    running: bool,
    wake: Arc<Condvar>,
    /// Hand-overs so far, and how many of them are closed (for [`settle`]).
    handed: u64,
    closed: u64,
    done: Arc<Condvar>,
}

crate::per_process! {
    static CLOSER: Closer = || Closer {
        queue: Vec::new(),
        running: false,
        wake: Arc::new(Condvar::new()),
        handed: 0,
        closed: 0,
        done: Arc::new(Condvar::new()),
    };
}

/// Closes `fds` soon, on the closer thread (started on first use). Without a thread to spare,
/// they are closed here.
pub fn close_later(fds: impl IntoIterator<Item = OwnedFd>) {
    let mut fds = fds.into_iter().peekable();
    if fds.peek().is_some() {
        hand_over(&mut fds);
    }
}

/// The part of [`close_later`] that does not depend on the iterator's type.
fn hand_over(fds: &mut dyn Iterator<Item = OwnedFd>) {
    let mut c = CLOSER.lock();
    c.queue.extend(fds);
    c.handed += 1;
    if !c.running {
        c.running = crate::per_process::spawn_thread("procactor-close", run).is_ok();
        if !c.running {
            let queue = std::mem::take(&mut c.queue);
            c.closed = c.handed;
            drop(c);
            drop(queue);
            return;
        }
    }
    c.wake.notify_one();
}

/// Waits until every descriptor handed over before this call is closed, at most `timeout`;
/// false if one is still open then (its close is blocked, or the closer is slow).
///
/// Owners that promise to leave nothing open once they are dropped (a pool, after its workers
/// are gone) call this, so that what their peers sent them is closed by then too.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = std::os::unix::net::UnixStream::pair()?;
/// procactor_os::closer::close_later([a.into(), b.into()]);
/// assert!(procactor_os::closer::settle(Duration::from_secs(30)));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn settle(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut c = CLOSER.lock();
    let target = c.handed;
    while c.closed < target {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let done = c.done.clone();
        c = done
            .wait_timeout(c, left)
            .map(|(c, _)| c)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    true
}

/// Whether this process runs a closer thread (for the fork-safety warning's count).
pub fn running() -> bool {
    CLOSER.lock().running
}

fn run() {
    let mut c = CLOSER.lock();
    loop {
        if c.queue.is_empty() {
            let wake = c.wake.clone();
            c = wake.wait(c).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let batch = std::mem::take(&mut c.queue);
        let upto = c.handed;
        drop(c);
        drop(batch);
        c = CLOSER.lock();
        c.closed = upto;
        c.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn settle_returns_once_what_was_handed_over_is_closed() {
        for _ in 0..100 {
            let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            super::close_later([a.into()]);
            assert!(super::settle(Duration::from_secs(30)));
            // Closed, not merely queued: the peer reads the end at once.
            b.set_nonblocking(true).unwrap();
            assert_eq!(b.read(&mut [0; 1]).unwrap(), 0);
        }
    }
}

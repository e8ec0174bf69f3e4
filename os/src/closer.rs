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

struct Closer {
    queue: Vec<OwnedFd>,
    running: bool,
    wake: Arc<Condvar>,
}

crate::per_process! {
    static CLOSER: Closer = || Closer {
        queue: Vec::new(),
        running: false,
        wake: Arc::new(Condvar::new()),
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
    if !c.running {
        c.running = crate::per_process::spawn_thread("procactor-close", run).is_ok();
        if !c.running {
            let queue = std::mem::take(&mut c.queue);
            drop(c);
            drop(queue);
            return;
        }
    }
    c.wake.notify_one();
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
        drop(c);
        drop(batch);
        c = CLOSER.lock();
    }
}

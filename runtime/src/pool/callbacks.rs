//! Where result callbacks run: one thread of this process, in the order the results came
//! (Python's result handler thread). A slow callback delays the callbacks after it, never the
//! pool's own thread (which hands out work and takes results).

use std::sync::mpsc::{self, Sender};

type Callback = Box<dyn FnOnce() + Send>;

procactor_os::per_process! {
    static QUEUE: Option<Sender<Callback>> = || None;
}

/// Runs `f` on the callback thread (started on first use; if it cannot start, `f` runs here).
pub(crate) fn run(f: Callback) {
    let mut queue = QUEUE.lock();
    if queue.is_none() {
        let (tx, rx) = mpsc::channel::<Callback>();
        let started = procactor_os::per_process::spawn_thread("procactor-callbacks", move || {
            for f in rx {
                // A callback that panics costs only itself.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            }
        });
        if started.is_err() {
            drop(queue);
            f();
            return;
        }
        *queue = Some(tx);
    }
    if let Some(tx) = queue.as_ref() {
        if let Err(mpsc::SendError(f)) = tx.send(f) {
            *queue = None;
            drop(queue);
            f();
        }
    }
}

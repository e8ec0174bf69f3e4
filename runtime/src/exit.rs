//! A process's exit work: tells flushed, children ended, the session removed, whether the
//! process ends by returning from a child's job or through libc's `exit`.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::per_process::PerProcess;
use crate::sys;

procactor_os::per_process! {
    /// Work to finish before this process reports its outcome and exits (`_exit` runs no
    /// destructors and no atexit handlers). The main program runs them at `exit` too. Per process:
    /// a forked copy starts with none (and never with a lock another thread held at the fork); it
    /// registers its own as it makes what needs them.
    static EXIT_HOOKS: Vec<fn()> = Vec::new;
}

/// Runs `hook` before this process ends its job, and at `exit()`.
pub(crate) fn at_exit(hook: fn()) {
    add(&EXIT_HOOKS, hook);
}

procactor_os::per_process! {
    /// Work after every [`at_exit`] hook: the end of this process's children (which the hooks'
    /// flushed tells may have been for).
    static LAST_HOOKS: Vec<fn()> = Vec::new;
}

/// Runs `hook` after the [`at_exit`] hooks: how `process` ends its children.
pub(crate) fn at_exit_last(hook: fn()) {
    add(&LAST_HOOKS, hook);
}

fn add(hooks: &'static PerProcess<Vec<fn()>>, hook: fn()) {
    watch_exit();
    let mut hooks = hooks.lock();
    if !hooks.contains(&hook) {
        hooks.push(hook);
    }
}

/// Makes libc's `exit` (`main` returning, `std::process::exit`) run this process's exit work:
/// the hooks, then the end of its children (see [`run_exit_hooks`]). Once per process image (a
/// forked copy inherits the registration with the rest of the memory).
pub(crate) fn watch_exit() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.load(Ordering::Relaxed) || REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    extern "C" fn run() {
        LIBC_EXIT.store(true, Ordering::Relaxed);
        run_exit_hooks();
    }
    sys::at_exit(run);
}

/// The hooks run from libc's `exit`, where this thread's thread-locals may be gone already.
static LIBC_EXIT: AtomicBool = AtomicBool::new(false);

/// Are the exit hooks running from libc's `exit` (not from a child that returned)?
pub(crate) fn in_libc_exit() -> bool {
    LIBC_EXIT.load(Ordering::Relaxed)
}

/// This process's exit work: the hooks (tells flushed to actors, which may be our own daemon
/// children), then Python's end of the children: daemons terminated, the others joined (see
/// `process::end_children_at_exit`).
pub(crate) fn run_exit_hooks() {
    let hooks = EXIT_HOOKS.lock().clone();
    for h in hooks {
        h();
    }
    let last = LAST_HOOKS.lock().clone();
    for h in last {
        h();
    }
    crate::identity::remove_session();
}

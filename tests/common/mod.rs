//! Helpers shared by the integration tests: bounded waits, and guards that never leave a child
//! behind, even when an assertion fails.
#![allow(dead_code)]

pub mod raw;

use std::time::{Duration, Instant};

use procactor::ProcessHandle;

/// The bound on any wait in these tests: a hung test is a failed test.
pub const BOUND: Duration = Duration::from_secs(30);

/// Kills and reaps its child when dropped (on the failure path too).
pub struct Reaped<R>(pub ProcessHandle<R>);

impl<R> std::ops::Deref for Reaped<R> {
    type Target = ProcessHandle<R>;
    fn deref(&self) -> &ProcessHandle<R> {
        &self.0
    }
}

impl<R> Drop for Reaped<R> {
    fn drop(&mut self) {
        if self.0.is_alive() {
            let _ = self.0.kill();
        }
        let deadline = Instant::now() + BOUND;
        while self.0.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub fn reaped<R>(p: ProcessHandle<R>) -> Reaped<R> {
    Reaped(p)
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What each open descriptor of this process is (`socket:[…]`, `pipe:[…]`, a path), for
/// messages that say which descriptor was left open.
pub fn fd_targets() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match std::fs::read_link(e.path()) {
            Ok(t) => format!("{}->{}", e.file_name().to_string_lossy(), t.display()),
            Err(_) => e.file_name().to_string_lossy().into_owned(),
        })
        .collect();
    out.sort();
    out
}

/// Pids of this process's children (zombies included), from /proc.
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if rest.split(' ').nth(1) == Some(me.as_str()) {
            out.push(pid);
        }
    }
    out
}

/// Is `pid` a live process (not gone, not a zombie)?
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').map(|i| &stat[i + 2..i + 3]) != Some("Z"),
        Err(_) => false,
    }
}

/// Waits until `cond` holds, at most `bound`; false if it never did.
pub fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than `BOUND`: a call that hangs
/// (a pool `map`, an executor `result`) is a failed test, not a hung one.
pub fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("a bounded call hung"),
        Err(_) => panic!("the bounded part of the test failed (see its panic above)"),
    }
}

//! Every system call procactor makes, behind one module tree (as mio's `sys` is). Linux only:
//! SEQPACKET sockets, SCM_RIGHTS, pidfd, memfd seals, futexes, `posix_spawn`, `fork`,
//! `clone(CLONE_PARENT)`.
//!
//! # Contract
//! - Nothing above this crate calls the kernel or libc directly: the runtime is
//!   `#![deny(unsafe_code)]` and this tree (with `robust`, `futex`, `shm`, `pod` and `code`) is
//!   where every `unsafe` block of procactor lives, each with a `SAFETY` comment.
//! - Functions are thin: one system call or a short fixed sequence, no policy. Errors come back
//!   as `io::Error` (or rustix's `Errno`) with the kernel's code; the caller adds what it was
//!   doing and to whom.
//! - Every wait takes a deadline (`Option<Instant>` or a `Duration`); none blocks for ever
//!   unless the caller passes `None` explicitly.
//! - Every length read from a peer is bounded by the caller's buffer or an explicit limit
//!   before memory is allocated; descriptors that arrive are owned (`OwnedFd`) at once, so none
//!   leaks on an error path.
//! - Descriptors are created close-on-exec; the only one a child inherits is passed explicitly
//!   (`spawn_self`).
//! - Peer identity comes from the kernel (`SO_PEERCRED`, `peer_cred`), never from message
//!   contents.

mod file;
mod net;
mod poll;
mod process;
mod socket;

pub use file::*;
pub use net::*;
pub use poll::*;
pub use process::*;
pub use socket::*;

/// The seals a memory file can carry.
pub use rustix::fs::SealFlags;

/// Signal numbers and error codes the runtime names (the kernel's values).
pub use libc::{
    EADDRINUSE, ECONNREFUSED, ECONNRESET, EMFILE, ENFILE, ENOBUFS, ENOENT, ENOMEM, EPIPE, ESRCH,
    SIGINT, SIGKILL, SIGTERM,
};

/// Our pid, cached: it is asked on every actor call, and a system call per ask shows. Forgotten in
/// a forked child, by a `pthread_atfork` handler (glibc's `fork`) and by `fork_child` (raw clone).
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    /// What one wait that does not block reports.
    fn ready_now(p: &mut Poller) -> Vec<u64> {
        let mut ready = Vec::new();
        p.wait(Some(Instant::now()), &mut ready).unwrap();
        ready
    }

    #[test]
    fn a_poller_reports_what_each_descriptor_is_watched_for() {
        let mut p = Poller::new().unwrap();
        let (a, b) = seqpacket_pair().unwrap();
        p.add(a.as_fd(), 7).unwrap();
        assert!(ready_now(&mut p).is_empty(), "nothing to read yet");
        let both = Interest {
            read: true,
            write: true,
        };
        p.modify(a.as_fd(), 7, both).unwrap();
        assert_eq!(ready_now(&mut p), [7], "room to write");
        let none = Interest {
            read: false,
            write: false,
        };
        p.modify(a.as_fd(), 7, none).unwrap();
        assert!(try_send_record(b.as_fd(), &[IoSlice::new(b"x")], None).unwrap());
        assert!(ready_now(&mut p).is_empty(), "input not watched");
        // A peer that only stops writing does not wake a descriptor not watched for input
        // (level-triggered, it would on every wait).
        rustix::net::shutdown(&b, rustix::net::Shutdown::Write).unwrap();
        assert!(
            ready_now(&mut p).is_empty(),
            "half-close reported without input interest"
        );
        p.modify(a.as_fd(), 7, Interest::READ).unwrap();
        assert_eq!(ready_now(&mut p), [7]);
        // A hang-up is reported whatever the interest.
        p.modify(a.as_fd(), 7, none).unwrap();
        drop(b);
        assert_eq!(ready_now(&mut p), [7]);
    }

    #[test]
    fn wait_writable_waits_for_room_at_most_until_its_deadline() {
        let (a, b) = seqpacket_pair().unwrap();
        let chunk = vec![0u8; 60_000];
        while try_send_record(a.as_fd(), &[IoSlice::new(&chunk)], None).unwrap() {}
        let t = Instant::now();
        let deadline = t + Duration::from_millis(50);
        assert!(!wait_writable(a.as_fd(), Some(deadline)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(50));
        let mut buf = vec![0u8; 70_000];
        while matches!(
            recv_record(b.as_fd(), &mut buf, true).unwrap(),
            Recv::Record(..)
        ) {}
        assert!(wait_writable(a.as_fd(), Some(Instant::now() + Duration::from_secs(10))).unwrap());
    }
}

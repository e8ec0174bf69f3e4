//! Waiting: `poll(2)` on a few descriptors with a deadline, an epoll-based `Poller`, eventfds.

use std::io::{self};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// Waits until one of `fds` is readable (or hung up); `None` when `deadline` passes first.
pub fn wait_readable(fds: &[BorrowedFd], deadline: Option<Instant>) -> io::Result<Option<usize>> {
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                Some(Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                }))
            }
        };
        match poll(&mut pfds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
            Ok(_) => {
                let ready = pfds.iter().position(|p| !p.revents().is_empty());
                if let Some(i) = ready {
                    return Ok(Some(i));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`wait_ready`] waits for on one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Something to read (or EOF).
    Read,
    /// Room to write (a socket whose peer reads again).
    Write,
}

/// Waits until one of `fds` is ready for what it is watched for, hung up or in error (then the
/// next read or write says why: a waiter must not sleep through it), at most until `deadline`.
/// For each descriptor, whether it is; all false when the deadline passed first.
pub fn wait_ready(fds: &[(BorrowedFd, Want)], deadline: Option<Instant>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|(fd, want)| {
            let flags = match want {
                Want::Read => PollFlags::IN,
                Want::Write => PollFlags::OUT,
            };
            PollFd::new(fd, flags)
        })
        .collect();
    loop {
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        match poll(&mut pfds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(vec![false; pfds.len()]);
                }
            }
            Ok(_) => return Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until a socket has room for a record (or is hung up or in error), at most until
/// `deadline`; false if the deadline passed first.
pub fn wait_writable(fd: BorrowedFd, deadline: Option<Instant>) -> io::Result<bool> {
    Ok(wait_ready(&[(fd, Want::Write)], deadline)?[0])
}

/// What a descriptor in a [`Poller`] is reported for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Input, or the peer shutting down its writing side.
    pub read: bool,
    /// Room in the send buffer.
    pub write: bool,
}

impl Interest {
    /// Input (or the peer's hang-up) only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };

    fn flags(self) -> rustix::event::epoll::EventFlags {
        use rustix::event::epoll::EventFlags;
        let mut f = EventFlags::empty();
        if self.read {
            // RDHUP only with input: a peer that shut down its writing side would otherwise
            // keep a descriptor we do not read ready for ever (level-triggered).
            f |= EventFlags::IN | EventFlags::RDHUP;
        }
        if self.write {
            f |= EventFlags::OUT;
        }
        f
    }
}

/// Level-triggered readiness for many descriptors at once (epoll): an actor's event loop.
pub struct Poller {
    ep: OwnedFd,
    events: Vec<rustix::event::epoll::Event>,
}

impl Poller {
    /// An epoll instance watching nothing yet.
    pub fn new() -> io::Result<Poller> {
        use rustix::event::epoll;
        let empty = epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        };
        Ok(Poller {
            ep: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            events: vec![empty; 256],
        })
    }

    /// Watches `fd` for input or hang-up, reported as `token`.
    pub fn add(&self, fd: BorrowedFd, token: u64) -> io::Result<()> {
        use rustix::event::epoll;
        Ok(epoll::add(
            &self.ep,
            fd,
            epoll::EventData::new_u64(token),
            Interest::READ.flags(),
        )?)
    }

    /// Changes what an added `fd` is reported for (as `token`). The poller is level-triggered:
    /// a descriptor watched for writing is reported on every wait while its buffer has room, so
    /// watch for writing only while there is something to write. Hang-up and error are always
    /// reported (the kernel's rule), even with no interest at all: a caller must act on them
    /// (close, or stop watching), not wait for them to go away.
    pub fn modify(&self, fd: BorrowedFd, token: u64, interest: Interest) -> io::Result<()> {
        Ok(rustix::event::epoll::modify(
            &self.ep,
            fd,
            rustix::event::epoll::EventData::new_u64(token),
            interest.flags(),
        )?)
    }

    /// Stops watching `fd` (no error if it was not watched).
    pub fn remove(&self, fd: BorrowedFd) {
        // Fails only if the fd was never added; closing it removes it anyway.
        let _ = rustix::event::epoll::delete(&self.ep, fd);
    }

    /// Tokens of the ready descriptors, waiting at most until `deadline` (`Some(now)`: not at
    /// all). Empty when the deadline passed.
    pub fn wait(&mut self, deadline: Option<Instant>, ready: &mut Vec<u64>) -> io::Result<()> {
        ready.clear();
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        loop {
            match rustix::event::epoll::wait(&self.ep, &mut self.events, timeout.as_ref()) {
                Ok(n) => {
                    ready.extend(self.events[..n].iter().map(|e| e.data.u64()));
                    return Ok(());
                }
                Err(Errno::INTR) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// An eventfd (non-blocking): a counter another thread bumps to wake a poller.
pub fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::{eventfd, EventfdFlags};
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// Adds one to an eventfd (wakes its poller).
pub fn eventfd_signal(fd: BorrowedFd) {
    // Fails only when the counter would overflow: the poller is awake then anyway.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd to zero.
pub fn eventfd_drain(fd: BorrowedFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("ep", &self.ep)
            .finish_non_exhaustive()
    }
}

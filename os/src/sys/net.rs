//! Stream sockets for `connection`: TCP, Unix paths and abstract names; listening, connecting
//! under a deadline, accepting without blocking, and reads and writes that do not block unless
//! asked (connected sockets are in blocking mode, each call says whether it may wait: a
//! receive that may wait for ever makes one system call, not a poll and a read).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType,
};

use super::{wait_ready, Want};

/// Where a stream socket listens or connects.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// An IPv4 or IPv6 address and port (port 0 when listening: the kernel picks one).
    Tcp(SocketAddr),
    /// A Unix socket at a path in the filesystem.
    Path(&'a std::path::Path),
    /// A Unix socket in Linux's abstract namespace (no file; gone with its last descriptor).
    Abstract(&'a [u8]),
}

fn unix_addr(ep: Endpoint) -> io::Result<Option<SocketAddrUnix>> {
    Ok(match ep {
        Endpoint::Tcp(_) => None,
        Endpoint::Path(p) => Some(SocketAddrUnix::new(p)?),
        Endpoint::Abstract(name) => Some(SocketAddrUnix::new_abstract_name(name)?),
    })
}

fn stream_socket(ep: Endpoint) -> io::Result<OwnedFd> {
    let family = match ep {
        Endpoint::Tcp(SocketAddr::V4(_)) => AddressFamily::INET,
        Endpoint::Tcp(SocketAddr::V6(_)) => AddressFamily::INET6,
        _ => AddressFamily::UNIX,
    };
    Ok(rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// A non-blocking stream socket listening at `ep`. TCP listeners reuse a port in TIME_WAIT (as
/// CPython's `Listener` does), but binding an address another socket listens on fails with
/// `AddrInUse`.
pub fn listen_stream(ep: Endpoint, backlog: i32) -> io::Result<OwnedFd> {
    let fd = stream_socket(ep)?;
    match (ep, unix_addr(ep)?) {
        (Endpoint::Tcp(addr), _) => {
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
            rustix::net::bind(&fd, &addr)?;
        }
        (_, Some(addr)) => rustix::net::bind(&fd, &addr)?,
        (_, None) => unreachable!("a Unix endpoint has a Unix address"),
    }
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// The TCP address a socket is bound to (`None` for a Unix socket).
pub fn local_tcp_addr(fd: BorrowedFd) -> io::Result<Option<SocketAddr>> {
    let addr = rustix::net::getsockname(fd)?;
    Ok(SocketAddr::try_from(addr).ok())
}

/// The address of a connected TCP socket's peer (`None` for a Unix socket).
pub fn peer_tcp_addr(fd: BorrowedFd) -> io::Result<Option<SocketAddr>> {
    let addr: Option<SocketAddrAny> = rustix::net::getpeername(fd)?;
    Ok(addr.and_then(|a| SocketAddr::try_from(a).ok()))
}

/// Connects a non-blocking stream socket to `ep`, waiting at most until `deadline`
/// (`TimedOut` then). TCP sockets get `TCP_NODELAY`: every frame is written in one call, and
/// waiting for more would only delay it.
pub fn connect_stream(ep: Endpoint, deadline: Option<Instant>) -> io::Result<OwnedFd> {
    let fd = stream_socket(ep)?;
    let started = match (ep, unix_addr(ep)?) {
        (Endpoint::Tcp(addr), _) => rustix::net::connect(&fd, &addr),
        (_, Some(addr)) => rustix::net::connect(&fd, &addr),
        (_, None) => unreachable!("a Unix endpoint has a Unix address"),
    };
    match started {
        Ok(()) => {}
        Err(Errno::INPROGRESS) | Err(Errno::INTR) => {
            if !wait_ready(&[(fd.as_fd(), Want::Write)], deadline)?[0] {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if let Err(e) = rustix::net::sockopt::socket_error(&fd)? {
                return Err(e.into());
            }
        }
        // A Unix listener's backlog is full: try again until the deadline.
        Err(Errno::AGAIN) => {
            while deadline.is_none_or(|d| Instant::now() < d) {
                std::thread::sleep(std::time::Duration::from_millis(2));
                let again = match unix_addr(ep)? {
                    Some(addr) => rustix::net::connect(&fd, &addr),
                    None => Err(Errno::AGAIN),
                };
                match again {
                    Ok(()) => {
                        rustix::io::ioctl_fionbio(&fd, false)?;
                        return Ok(fd);
                    }
                    Err(Errno::AGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Err(io::ErrorKind::TimedOut.into());
        }
        Err(e) => return Err(e.into()),
    }
    if matches!(ep, Endpoint::Tcp(_)) {
        rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
    }
    rustix::io::ioctl_fionbio(&fd, false)?;
    Ok(fd)
}

/// Accepts one pending connection without blocking (`None` when there is none). The new
/// socket is close-on-exec, in blocking mode (see the module docs), and TCP ones get
/// `TCP_NODELAY`.
pub fn accept_stream(listener: BorrowedFd) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => {
                if local_tcp_addr(fd.as_fd())?.is_some() {
                    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
                }
                return Ok(Some(fd));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            // The peer left before we took it: there is nobody to serve.
            Err(Errno::CONNABORTED) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `fd` is a Unix socket (whose peer the kernel can name).
pub fn is_unix_socket(fd: BorrowedFd) -> bool {
    matches!(
        rustix::net::getsockname(fd).map(|a| a.address_family()),
        Ok(AddressFamily::UNIX)
    )
}

/// What one non-blocking read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// This many bytes.
    Bytes(usize),
    /// The peer closed its end (or reset it): nothing more will come.
    Eof,
    /// Nothing to read now.
    WouldBlock,
}

/// Appends what is there to `buf`, at most `max` bytes, without zero-filling first; without
/// blocking unless `block` (then it waits for at least one byte, for ever).
pub fn read_append(fd: BorrowedFd, buf: &mut Vec<u8>, max: usize, block: bool) -> io::Result<Read> {
    buf.reserve(max);
    let flags = if block {
        RecvFlags::empty()
    } else {
        RecvFlags::DONTWAIT
    };
    loop {
        let spare = &mut buf.spare_capacity_mut()[..max];
        match rustix::net::recv(fd, spare, flags).map(|((got, _), _)| got.len()) {
            Ok(0) if max > 0 => return Ok(Read::Eof),
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(Read::Bytes(n));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(Read::WouldBlock),
            Err(Errno::CONNRESET) => return Ok(Read::Eof),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes what fits of `data` without blocking: how many bytes (0 when the socket is full).
/// A peer that is gone is `BrokenPipe`, never a SIGPIPE.
pub fn write_some(fd: BorrowedFd, data: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::net::send(fd, data, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(0),
            Err(Errno::CONNRESET) => return Err(io::ErrorKind::BrokenPipe.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes written on `fd`, a connected stream socket, that its peer has not taken yet: for TCP,
/// not yet acknowledged (sent or not; `SIOCOUTQ`), for a Unix socket, not yet read. Bytes the
/// kernel accepted are not bytes the peer got: with the link down, writes still succeed until
/// the buffer is full.
pub fn unsent(fd: BorrowedFd) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one `int` through the pointer, which points at `n`,
    // alive for the call; the descriptor is borrowed, so open for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(10))
    }

    #[test]
    fn tcp_listen_connect_accept_and_bytes_both_ways() {
        let l = listen_stream(Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), 16).unwrap();
        let addr = local_tcp_addr(l.as_fd()).unwrap().unwrap();
        assert_ne!(addr.port(), 0);
        let c = connect_stream(Endpoint::Tcp(addr), soon()).unwrap();
        assert!(wait_ready(&[(l.as_fd(), Want::Read)], soon()).unwrap()[0]);
        let s = accept_stream(l.as_fd()).unwrap().unwrap();
        assert!(accept_stream(l.as_fd()).unwrap().is_none());
        assert_eq!(write_some(c.as_fd(), b"hi").unwrap(), 2);
        assert!(wait_ready(&[(s.as_fd(), Want::Read)], soon()).unwrap()[0]);
        let mut buf = Vec::new();
        assert_eq!(
            read_append(s.as_fd(), &mut buf, 8, false).unwrap(),
            Read::Bytes(2)
        );
        assert_eq!(buf, b"hi");
        assert_eq!(
            read_append(s.as_fd(), &mut buf, 8, false).unwrap(),
            Read::WouldBlock
        );
        drop(c);
        assert_eq!(
            read_append(s.as_fd(), &mut buf, 8, true).unwrap(),
            Read::Eof
        );
        // Writing to a peer that is gone is an error, not a signal that kills us.
        let mut failed = false;
        for _ in 0..100 {
            if write_some(s.as_fd(), &[0; 1024]).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(failed);
    }

    #[test]
    fn a_second_listener_on_a_used_address_is_refused() {
        let l = listen_stream(Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), 16).unwrap();
        let addr = local_tcp_addr(l.as_fd()).unwrap().unwrap();
        let e = listen_stream(Endpoint::Tcp(addr), 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let name = format!("procactor-net-test-{}", std::process::id());
        let _a = listen_stream(Endpoint::Abstract(name.as_bytes()), 16).unwrap();
        let e = listen_stream(Endpoint::Abstract(name.as_bytes()), 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn connecting_to_nobody_fails_at_once_and_a_silent_address_by_the_deadline() {
        let l = listen_stream(Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), 16).unwrap();
        let addr = local_tcp_addr(l.as_fd()).unwrap().unwrap();
        drop(l);
        let e = connect_stream(Endpoint::Tcp(addr), soon()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        // A non-routable address (TEST-NET-1): the SYN goes nowhere, the deadline ends it.
        let t = Instant::now();
        match connect_stream(
            Endpoint::Tcp("192.0.2.1:9".parse().unwrap()),
            Some(t + Duration::from_millis(100)),
        ) {
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::NetworkUnreachable
                ) || e.raw_os_error().is_some(),
                "{e}"
            ),
            Ok(_) => panic!("connected to TEST-NET-1"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

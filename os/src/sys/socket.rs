//! Sockets: SEQPACKET records with descriptors (SCM_RIGHTS), stream pairs, listening and
//! connecting on paths, peer credentials from the kernel.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};

/// Most descriptors one message may carry (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// A connected pair of SEQPACKET sockets: reliable, ordered, and record boundaries kept.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A connected pair of stream sockets, for payloads too large for one record.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Most parts handed to the kernel as separate iovecs; a record of more is copied into one
/// buffer first (the kernel refuses more than UIO_MAXIOV, 1024, with EMSGSIZE).
const MAX_IOV: usize = 64;

/// Sends one record made of `parts`, with `fds` attached. With `block`, waits while the peer's
/// buffer is full; without, returns `Ok(false)` then.
pub fn send_record_with(
    fd: BorrowedFd,
    parts: &[IoSlice],
    fds: &[BorrowedFd],
    block: bool,
) -> io::Result<bool> {
    if parts.len() > MAX_IOV {
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        return send_record_with(fd, &[IoSlice::new(&joined)], fds, block);
    }
    // On the stack, sized for the most a message may carry: no allocation per send.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut flags = SendFlags::NOSIGNAL;
    if !block {
        flags |= SendFlags::DONTWAIT;
    }
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors in one message"));
        }
        match sendmsg(fd, parts, &mut control, flags) {
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if !block => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `recv_record` found.
#[derive(Debug)]
pub enum Recv {
    /// A record of this many bytes (in the buffer) and the descriptors that came with it.
    Record(usize, Vec<OwnedFd>),
    /// The peer closed its end.
    Eof,
    /// Nothing there yet (non-blocking only).
    WouldBlock,
    /// A record we do not take (too long, or with more descriptors than any message may
    /// carry), dropped; the descriptors that came with it are handed back to be closed.
    Bad(&'static str, Vec<OwnedFd>),
}

/// Receives one record into `buf`. A record longer than `buf` is an error (our peers never send
/// one; a stranger's garbage might), and so are descriptors beyond MAX_FDS.
pub fn recv_record(fd: BorrowedFd, buf: &mut [u8], nonblocking: bool) -> io::Result<Recv> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg(fd, &mut iov, &mut control, flags) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = m {
                        fds.extend(rights);
                    }
                }
                if msg.flags.contains(ReturnFlags::TRUNC) {
                    return Ok(Recv::Bad("oversized record", fds));
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    return Ok(Recv::Bad("too many descriptors", fds));
                }
                // Zero bytes: the peer closed, or a stranger sent an empty record (ours always
                // have a header). Only a real close sets RDHUP.
                if msg.bytes == 0 && fds.is_empty() && peer_closed(fd) {
                    return Ok(Recv::Eof);
                }
                return Ok(Recv::Record(msg.bytes, fds));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(Recv::WouldBlock),
            Err(Errno::CONNRESET) => return Ok(Recv::Eof),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until the peer of a connected socket has closed its end, at most until `deadline`;
/// false if it has not by then.
pub fn wait_peer_closed(fd: BorrowedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut pfd = [PollFd::new(&fd, PollFlags::RDHUP)];
        match poll(&mut pfd, Some(&timeout)) {
            Ok(_)
                if pfd[0]
                    .revents()
                    .intersects(PollFlags::RDHUP | PollFlags::HUP) =>
            {
                return true
            }
            Ok(_) | Err(Errno::INTR) if Instant::now() < deadline => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
}

/// Copies the first bytes of the next record into `buf` without taking the record, and
/// without its descriptors (which stay with it for the `recv_record` that takes it). Never
/// blocks: `Ok(None)` when there is no record (or the peer closed).
pub fn peek_record(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::net::recv(fd, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((0, _)) if peer_closed(fd) => return Ok(None),
            Ok((n, _)) => return Ok(Some(n)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) | Err(Errno::CONNRESET) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// True once the peer of a connected socket has closed (or shut down) its end.
pub fn peer_closed(fd: BorrowedFd) -> bool {
    let mut pfd = [PollFd::new(&fd, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut pfd, Some(&zero)) {
        Ok(_) => pfd[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP),
        Err(_) => true,
    }
}

/// Writes all of `data` to a stream socket.
pub fn write_all(fd: BorrowedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::net::send(fd, data, SendFlags::NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What [`read_stream_until`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// `buf` holds `target` bytes.
    Full,
    /// The peer closed first.
    Eof,
    /// The deadline passed first (what arrived so far is in `buf`).
    TimedOut,
}

/// Appends bytes from a stream socket to `buf` until it holds `target` bytes, without
/// zero-filling first, waiting at most until `deadline` (`None`: as long as it takes;
/// `Some(now)`: only what is there).
pub fn read_stream_until(
    fd: BorrowedFd,
    buf: &mut Vec<u8>,
    target: usize,
    deadline: Option<Instant>,
) -> io::Result<Filled> {
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    buf.reserve_exact(target.saturating_sub(buf.len()));
    if deadline.is_none() {
        // An earlier receive that timed out may have left a timeout on the socket.
        set_socket_timeout(fd, Timeout::Recv, None)?;
    }
    let mut timeout_set = false;
    while buf.len() < target {
        let flags = match deadline {
            None => RecvFlags::WAITALL,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    RecvFlags::DONTWAIT
                } else {
                    // The socket is ours alone (it came with one frame): its receive timeout
                    // bounds the blocking read; WAITALL then returns what came by then.
                    set_socket_timeout(fd, Timeout::Recv, Some(left))?;
                    timeout_set = true;
                    RecvFlags::WAITALL
                }
            }
        };
        let want = target - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        match rustix::net::recv(fd, spare, flags).map(|((got, _), _)| got.len()) {
            Ok(0) => return Ok(Filled::Eof),
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Filled::TimedOut);
                }
            }
            Err(Errno::CONNRESET) => return Ok(Filled::Eof),
            Err(e) => return Err(e.into()),
        }
    }
    if timeout_set {
        set_socket_timeout(fd, Timeout::Recv, None)?;
    }
    Ok(Filled::Full)
}

/// A SEQPACKET socket listening at `path` (in the session's private directory: see
/// [`private_dir`]). Only processes that may enter that directory can connect.
pub fn listen_path(path: &str) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    // Non-blocking: the owner accepts until there is nobody left waiting.
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(fd)
}

/// Connects to the SEQPACKET socket at `path`. Waits at most `patience` while the listener's
/// backlog is full (a listener that stopped accepting must not hang us): `TimedOut` then;
/// `Duration::ZERO` does not wait at all (`WouldBlock` then).
pub fn connect_path(path: &str, patience: Duration) -> io::Result<OwnedFd> {
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let mut flags = SocketFlags::CLOEXEC;
    if patience.is_zero() {
        flags |= SocketFlags::NONBLOCK;
    }
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?;
    if !patience.is_zero() {
        // A Unix socket's connect waits for backlog room for at most the send timeout.
        set_socket_timeout(&fd, Timeout::Send, Some(patience))?;
    }
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if patience.is_zero() => return Err(io::ErrorKind::WouldBlock.into()),
            Err(Errno::AGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
    if patience.is_zero() {
        rustix::io::ioctl_fionbio(&fd, false)?;
    } else {
        set_socket_timeout(&fd, Timeout::Send, None)?;
    }
    Ok(fd)
}

/// Accepts one pending connection without blocking: `None` when there is none. The new socket
/// is blocking; the caller polls before it reads.
pub fn accept(listener: BorrowedFd) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Who is at the other end of a Unix socket, from the kernel (SO_PEERCRED): for an accepted
/// socket, the process that connected; for a connected one, the process that last called
/// `listen` on the listening socket. Never from anything the peer wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's process id (0 if it is in a pid namespace we cannot see).
    pub pid: u32,
    /// The peer's user id.
    pub uid: u32,
}

/// Who is at the other end of the Unix socket `fd` (see [`PeerCred`]).
pub fn peer_cred(fd: BorrowedFd) -> io::Result<PeerCred> {
    // Through libc, not rustix: the kernel reports pid 0 for a peer in a pid namespace we cannot
    // see, which rustix's non-zero `Pid` cannot hold.
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into the `ucred` we own and sets `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid.max(0) as u32,
        uid: cred.uid,
    })
}

/// Calls `listen` again on a listening socket this process received: the kernel then reports
/// this process (not the one that bound it) to those who connect (see [`peer_cred`]).
pub fn relisten(fd: BorrowedFd) -> io::Result<()> {
    Ok(rustix::net::listen(fd, 1024)?)
}

/// Sends one record (with at most one descriptor) without blocking: `Ok(false)` if the peer's
/// buffer is full.
pub fn try_send_record(
    fd: BorrowedFd,
    parts: &[IoSlice],
    with: Option<BorrowedFd>,
) -> io::Result<bool> {
    send_record_with(fd, parts, with.as_slice(), false)
}

/// Shuts a connected socket down both ways: the peer sees the hang-up at once, though the socket
/// (and whatever its unread records carry) is only released by its close. Never blocks.
pub fn shutdown_both(fd: BorrowedFd) {
    // Fails only if the peer is already gone, which is what we wanted.
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

/// Shuts the sending direction of a socket: the peer reads what is queued, then EOF.
pub fn shutdown_write(fd: BorrowedFd) {
    // Fails only if the peer is already gone, which is what we wanted.
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
}

//! Whole messages on a byte stream (a TCP or Unix stream socket), for `connection`: CPython's
//! frames in the clear, or messages sealed with the keys of a Noise handshake ([`noise`]).
//!
//! A [`Stream`] is shared by the threads that hold its connection: one sender and one receiver
//! at a time, each taking its turn under the caller's deadline (a receive that times out never
//! waits behind another receiver for longer than it asked). Each system call says whether it may
//! block: a receive spins briefly, then waits in `poll` under the caller's deadline (or, with
//! none, in one blocking read). What a receive read of a message it could not
//! finish stays in the stream, and the next receive goes on with it: a timeout never loses or
//! tears a message. Every length is checked against the stream's limit before anything is
//! allocated for the payload, and reads grow the buffer only as bytes arrive. The handshakes
//! before a stream carries messages are in [`handshake`](super::handshake).
//!
//! [`noise`]: crate::noise

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::cpython;
use crate::error::{Error, Result};
use crate::noise::{self, Opener, Sealer};
use crate::sys::{self, Read, Want};
use crate::wire::{Turn, Wait};

/// The most one read takes from the socket beyond what the message being read still needs: so
/// that a receiver holds at most one message and this much of the next.
const READ_CHUNK: usize = 64 * 1024;

/// How long [`Stream::enqueue`] and [`Stream::flush`] wait for the send side: another thread
/// holds it only while it queues or writes without waiting (an event loop's ticker).
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How messages are delimited (and protected) on the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Framing {
    /// CPython's frames, in the clear: a 4-byte big-endian length (or `-1` and 8 bytes).
    Cpython,
    /// Sealed messages ([`noise`](crate::noise)): an 8-byte length, ciphertext and tag.
    Sealed,
}

struct SendSide {
    sealer: Option<Sealer>,
    out: Vec<u8>,
    /// Messages queued by [`Stream::enqueue`] and not yet written (an event loop's output),
    /// from `queued_at` on.
    queued: Vec<u8>,
    queued_at: usize,
    /// A send stopped half-way (its deadline passed): the peer would read a torn message.
    torn: bool,
    /// The state went to another process (checked once the turn is taken: a sender that
    /// waited for it while the stream moved must not seal under the new owner's nonces).
    moved: bool,
}

struct RecvSide {
    opener: Option<Opener>,
    /// Bytes read and not yet delivered: the start of a message, maybe more.
    inbuf: Vec<u8>,
    /// A message could not be taken (too large, malformed, altered on the way): the stream is
    /// closed, since what follows it cannot be found (or trusted).
    broken: bool,
    moved: bool,
}

/// A stream's state as it moves to another process (see [`Stream::hand_over`]).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Parts {
    /// How messages are framed.
    pub framing: Framing,
    /// The receive limit.
    pub limit: u64,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    /// Bytes read and not yet delivered (still sealed): the new owner goes on from them.
    carry: Vec<u8>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("framing", &self.framing)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Whole messages on a connected stream socket. See the module documentation.
pub struct Stream {
    fd: OwnedFd,
    framing: Framing,
    limit: AtomicU64,
    send: Turn<SendSide>,
    recv: Turn<RecvSide>,
    /// Its state went to another process with [`Stream::hand_over`]: using it here would reuse
    /// nonces (sealed) or race the new owner for bytes.
    moved: AtomicBool,
    /// Bytes written to and read from the socket so far: progress a peer makes on a long
    /// message shows here before the message is whole (a peer that takes or sends bytes is
    /// alive).
    sent: AtomicU64,
    received: AtomicU64,
}

impl Stream {
    /// A stream over a connected, non-blocking socket, after its handshake: `carry` is what the
    /// handshake read past its own messages.
    pub fn new(fd: OwnedFd, keys: Option<(Sealer, Opener)>, carry: Vec<u8>, limit: u64) -> Stream {
        let framing = if keys.is_some() {
            Framing::Sealed
        } else {
            Framing::Cpython
        };
        let (sealer, opener) = keys.map_or((None, None), |(s, o)| (Some(s), Some(o)));
        Stream {
            fd,
            framing,
            limit: AtomicU64::new(limit),
            send: Turn::new(SendSide {
                sealer,
                out: Vec::new(),
                queued: Vec::new(),
                queued_at: 0,
                torn: false,
                moved: false,
            }),
            recv: Turn::new(RecvSide {
                opener,
                inbuf: carry,
                broken: false,
                moved: false,
            }),
            moved: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// The stream again, in the process it moved to (see [`hand_over`](Stream::hand_over)).
    pub fn from_parts(fd: OwnedFd, parts: Parts) -> Stream {
        let keys = parts.sealer.zip(parts.opener);
        let mut s = Stream::new(fd, keys, parts.carry, parts.limit);
        s.framing = parts.framing;
        s
    }

    /// How messages are framed on this stream.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The largest message this end receives.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Another receive limit, from the next message on.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The socket (a sealed stream's keys are lost with the stream).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    fn check_here(&self) -> Result<()> {
        if self.moved.load(Ordering::Acquire) {
            return Err(moved());
        }
        Ok(())
    }

    /// Gives this stream's state (keys and counters) to be sent to another process with its
    /// descriptor, and retires this handle: a sealed stream must have one owner, or two
    /// processes would seal under the same nonces. What was read and not yet delivered goes
    /// with it. Fails if a message is half-sent here (or queued and not yet written), if a
    /// receive failed here, or if another thread is sending or receiving now.
    pub fn hand_over(&self) -> Result<Parts> {
        self.check_here()?;
        let busy = |_| Error::InvalidState("a send or receive is in progress on this connection");
        let mut send = self.send.take(Wait::No).map_err(busy)?;
        let mut recv = self.recv.take(Wait::No).map_err(busy)?;
        if send.moved || recv.moved {
            return Err(moved());
        }
        if send.queued_at < send.queued.len() || send.torn || recv.broken {
            return Err(Error::InvalidState(
                "a message is half-sent on this connection (or it broke): it cannot move",
            ));
        }
        send.moved = true;
        recv.moved = true;
        self.moved.store(true, Ordering::Release);
        Ok(Parts {
            framing: self.framing,
            limit: self.limit(),
            sealer: send.sealer.clone(),
            opener: recv.opener.clone(),
            carry: std::mem::take(&mut recv.inbuf),
        })
    }

    /// Sends one message made of `parts` (written back to back), waiting for room at most as
    /// `wait` allows. A send that times out before its first byte leaves the stream as it was;
    /// one that times out half-way closes the stream (the peer would otherwise read a torn
    /// message), and every later send says so.
    pub fn send(&self, parts: &[&[u8]], wait: Wait) -> Result<()> {
        self.check_here()?;
        let mut side = self.send.take(wait)?;
        if side.moved {
            return Err(moved());
        }
        if side.torn {
            return Err(Error::InvalidState(
                "an earlier send on this connection timed out half-way: the connection is closed",
            ));
        }
        if side.queued_at < side.queued.len() {
            return Err(Error::InvalidState(
                "messages queued on this connection are not written yet (see Stream::flush)",
            ));
        }
        let SendSide {
            sealer, out, torn, ..
        } = &mut *side;
        out.clear();
        frame(sealer, parts, out)?;
        let done = write_until(self.fd.as_fd(), out, wait.deadline())?;
        self.sent.fetch_add(done as u64, Ordering::Relaxed);
        if done < out.len() {
            if done > 0 {
                *torn = true;
                sys::shutdown_both(self.fd.as_fd());
            }
            return Err(wait.expired());
        }
        if out.capacity() > 4 * READ_CHUNK {
            *out = Vec::new(); // don't keep a huge buffer after one large message
        }
        Ok(())
    }

    /// Queues one message made of `parts` for [`flush`](Stream::flush), never waiting for the
    /// socket: for an event loop, which writes what the socket takes and keeps the rest. (A
    /// [`send`](Stream::send) is refused while queued bytes are not all written.) The send side
    /// is waited for at most a second: another thread holds it only to queue or flush.
    pub fn enqueue(&self, parts: &[&[u8]]) -> Result<()> {
        self.check_here()?;
        let mut side = self.send.take(Wait::timeout(TURN_WAIT))?;
        if side.moved {
            return Err(moved());
        }
        let SendSide {
            sealer,
            out,
            queued,
            queued_at,
            ..
        } = &mut *side;
        if *queued_at == queued.len() {
            queued.clear();
            *queued_at = 0;
        }
        out.clear();
        frame(sealer, parts, out)?;
        queued.extend_from_slice(out);
        Ok(())
    }

    /// Writes what the socket takes now of the queued messages: true once none is left. Never
    /// waits for the socket (the send side as [`enqueue`](Stream::enqueue) does).
    pub fn flush(&self) -> Result<bool> {
        self.check_here()?;
        let mut side = self.send.take(Wait::timeout(TURN_WAIT))?;
        let SendSide {
            queued, queued_at, ..
        } = &mut *side;
        while *queued_at < queued.len() {
            match sys::write_some(self.fd.as_fd(), &queued[*queued_at..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    *queued_at += n;
                    self.sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => return Err(Error::io("send", e)),
            }
        }
        queued.clear();
        *queued_at = 0;
        if queued.capacity() > 4 * READ_CHUNK {
            *queued = Vec::new();
        }
        Ok(true)
    }

    /// Bytes written to the socket so far (queued ones once they went).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes the peer has taken so far: written, and acknowledged (TCP) or read (a Unix
    /// socket). The kernel takes bytes while the link is down; the peer does not.
    pub fn delivered(&self) -> u64 {
        let unsent = sys::unsent(self.fd.as_fd()).unwrap_or(0) as u64;
        self.sent().saturating_sub(unsent)
    }

    /// Bytes read from the socket so far (of messages whole or not).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// How many queued bytes are not yet written (waiting for the send side as
    /// [`enqueue`](Stream::enqueue) does; 0 if it stays busy).
    pub fn queued(&self) -> usize {
        self.send
            .take(Wait::timeout(TURN_WAIT))
            .map_or(0, |side| side.queued.len() - side.queued_at)
    }

    /// Receives one whole message, waiting at most as `wait` allows ([`Error::Timeout`] then,
    /// with what arrived kept for the next receive). [`Error::Disconnected`] once the peer
    /// closed and nothing whole is left; a message the peer began and never finished is
    /// dropped with it.
    pub fn recv(&self, wait: Wait) -> Result<Vec<u8>> {
        self.check_here()?;
        let mut side = self.recv.take(wait)?;
        if side.moved {
            return Err(moved());
        }
        if side.broken {
            return Err(Error::InvalidState(
                "this connection was closed after a message it could not take (too large, \
                 malformed, or altered on the way)",
            ));
        }
        let got = self.recv_on(&mut side, wait);
        if let Err(e) = &got {
            if !e.is_timeout() && !matches!(e, Error::Disconnected) {
                // What follows a message we could not take cannot be found, or trusted.
                side.broken = true;
                side.inbuf = Vec::new();
                sys::shutdown_both(self.fd.as_fd());
            }
        }
        got
    }

    /// The bytes the message at the front of `inbuf` needs in all, once its header is in.
    fn needs(opener: &Option<Opener>, inbuf: &[u8], limit: u64) -> Result<Option<usize>> {
        let (len, header) = match opener {
            None => match cpython::parse_frame_header(inbuf, limit)? {
                Some((len, h)) => (len, h),
                None => return Ok(None),
            },
            Some(_) => match noise::sealed_len(inbuf, limit)? {
                Some(len) => (len, noise::SEALED_HEADER),
                None => return Ok(None),
            },
        };
        usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(header))
            .map(Some)
            .ok_or(Error::TooLarge { size: len, limit })
    }

    fn recv_on(&self, side: &mut RecvSide, wait: Wait) -> Result<Vec<u8>> {
        let RecvSide { opener, inbuf, .. } = side;
        let limit = self.limit();
        // Spin first (as a pipe's receive does): a read that finds nothing costs one syscall,
        // a sleep in poll and the wake-up far more. With nothing to spin on (one usable core)
        // and no deadline, the first read is already the one that blocks.
        let mut spin_until = None;
        let block_at_once = matches!(wait, Wait::Forever) && crate::wire::spin_time().is_zero();
        loop {
            let need = Self::needs(opener, inbuf, limit)?;
            if let Some(need) = need.filter(|&n| inbuf.len() >= n) {
                let rest = inbuf.split_off(need);
                let mut msg = std::mem::replace(inbuf, rest);
                match opener {
                    None => {
                        let header = need
                            - cpython::parse_frame_header(&msg, limit)?
                                .map_or(0, |(len, _)| len as usize);
                        msg.drain(..header);
                    }
                    Some(o) => o.open(&mut msg)?,
                }
                return Ok(msg);
            }
            // Read what the message still needs (a chunk while its header is not in).
            let want = need.map_or(READ_CHUNK, |n| n - inbuf.len());
            // Done spinning, with no deadline: one blocking read (a poll and a read cost two
            // system calls).
            let block = block_at_once
                || (matches!(wait, Wait::Forever)
                    && spin_until.is_some_and(|s: Instant| Instant::now() >= s));
            match sys::read_append(self.fd.as_fd(), inbuf, want.clamp(1, READ_CHUNK), block)
                .map_err(|e| Error::io("recv", e))?
            {
                Read::Bytes(n) => {
                    self.received.fetch_add(n as u64, Ordering::Relaxed);
                }
                Read::Eof => {
                    inbuf.clear();
                    return Err(Error::Disconnected);
                }
                Read::WouldBlock => {
                    if matches!(wait, Wait::No) {
                        return Err(wait.expired());
                    }
                    let spin = *spin_until.get_or_insert_with(|| match wait {
                        Wait::No => Instant::now(),
                        _ => {
                            let until = Instant::now() + crate::wire::spin_time();
                            wait.deadline().map_or(until, |d| d.min(until))
                        }
                    });
                    if Instant::now() < spin {
                        std::hint::spin_loop();
                        continue;
                    }
                    if matches!(wait, Wait::Forever) {
                        continue; // the next read blocks
                    }
                    if !sys::wait_ready(&[(self.fd.as_fd(), Want::Read)], wait.deadline())
                        .map_err(|e| Error::io("poll", e))?[0]
                    {
                        return Err(wait.expired());
                    }
                }
            }
        }
    }

    /// Whether a receive would find something now, or within `wait`: bytes of a message
    /// already read here (a message begun counts), or the socket readable (or closed).
    pub fn poll(&self, wait: Wait) -> Result<bool> {
        self.check_here()?;
        if self.has_buffered() {
            return Ok(true);
        }
        sys::wait_ready(&[(self.fd.as_fd(), Want::Read)], wait.deadline())
            .map(|r| r[0])
            .map_err(|e| Error::io("poll", e))
    }

    /// Whether a whole message is already read here, ready to be taken without reading the
    /// socket (a receiver busy now counts as none; a message begun and not finished does not).
    pub fn has_whole(&self) -> bool {
        self.recv.lock().as_ref().is_some_and(|side| {
            !side.broken
                && Self::needs(&side.opener, &side.inbuf, self.limit())
                    .is_ok_and(|n| n.is_some_and(|n| side.inbuf.len() >= n))
        })
    }

    /// Whether bytes of a message are already read here (a receiver busy now counts as none).
    pub fn has_buffered(&self) -> bool {
        self.recv
            .lock()
            .as_ref()
            .is_some_and(|side| !side.inbuf.is_empty() && !side.broken)
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("fd", &self.fd)
            .field("framing", &self.framing)
            .field("limit", &self.limit())
            .field("moved", &self.moved.load(Ordering::Relaxed))
            .finish()
    }
}

/// Frames (or seals) one message made of `parts` into `out`.
fn frame(sealer: &mut Option<Sealer>, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    match sealer {
        None => {
            let (h, n) = cpython::frame_header(len);
            out.reserve(n + len);
            out.extend_from_slice(&h[..n]);
            for p in parts {
                out.extend_from_slice(p);
            }
        }
        Some(sealer) => {
            if let [one] = parts {
                sealer.seal(one, out)?;
            } else {
                let whole = parts.concat();
                sealer.seal(&whole, out)?;
            }
        }
    }
    Ok(())
}

/// Writes `data`, waiting for room at most until `deadline`: how many bytes went out (all of
/// them unless the deadline passed).
pub(crate) fn write_until(fd: BorrowedFd, data: &[u8], deadline: Option<Instant>) -> Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match sys::write_some(fd, &data[done..]) {
            Ok(0) => {
                if !sys::wait_ready(&[(fd, Want::Write)], deadline)
                    .map_err(|e| Error::io("poll", e))?[0]
                {
                    break;
                }
            }
            Ok(n) => done += n,
            Err(e) => return Err(Error::io("send", e)),
        }
    }
    Ok(done)
}

fn moved() -> Error {
    Error::InvalidState("this network connection was sent to another process, which owns it now")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::Handshake;

    /// Two ends of a socket pair, sealed under one handshake's keys.
    fn sealed_pair() -> (Stream, Stream) {
        let (a, b) = sys::stream_pair().unwrap();
        let mut i = Handshake::initiator(b"k").unwrap();
        let mut r = Handshake::responder(b"k").unwrap();
        r.read(&i.write(&[]).unwrap()).unwrap();
        i.read(&r.write(&[]).unwrap()).unwrap();
        let (is, io, _) = i.finish().unwrap();
        let (rs, ro, _) = r.finish().unwrap();
        (
            Stream::new(a, Some((is, io)), Vec::new(), 1 << 30),
            Stream::new(b, Some((rs, ro)), Vec::new(), 1 << 30),
        )
    }

    #[test]
    fn queued_messages_go_in_order_as_the_socket_takes_them_and_block_a_send_meanwhile() {
        let (a, b) = sealed_pair();
        let big = vec![7u8; 256 * 1024];
        for i in 0..32u8 {
            a.enqueue(&[&[i], &big]).unwrap();
        }
        // 8 MiB do not fit in the socket's buffer: some wait, and a send is refused meanwhile.
        assert!(!a.flush().unwrap());
        assert!(a.queued() > 0);
        // Written, not taken: the peer has read nothing yet.
        assert!(a.sent() > 0);
        assert_eq!(a.delivered(), 0);
        assert!(a.send(&[b"x"], Wait::No).is_err());
        let reader = std::thread::spawn(move || {
            let wait = || Wait::timeout(std::time::Duration::from_secs(30));
            let good = (0..32u8)
                .map(|i| {
                    let m = b.recv(wait()).unwrap();
                    (m[0] == i && m.len() == 1 + 256 * 1024) as u32
                })
                .sum::<u32>();
            (good, b.recv(wait()).unwrap())
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while !a.flush().unwrap() {
            assert!(Instant::now() < deadline, "the queue never drained");
            std::thread::yield_now();
        }
        assert_eq!(a.queued(), 0);
        a.send(&[b"after"], Wait::No).unwrap();
        assert_eq!(reader.join().unwrap(), (32, b"after".to_vec()));
        assert_eq!(a.delivered(), a.sent());
    }

    /// Writes all of `bytes` on a raw socket.
    fn put(fd: BorrowedFd, bytes: &[u8]) {
        assert_eq!(write_until(fd, bytes, None).unwrap(), bytes.len());
    }

    #[test]
    fn a_message_begun_is_buffered_not_whole_and_moves_with_the_stream() {
        let (raw, end) = sys::stream_pair().unwrap();
        let s = Stream::new(end, None, Vec::new(), 1 << 20);
        // CPython's frame: a 4-byte big-endian length, then the bytes. Three of ten arrive.
        put(raw.as_fd(), &[0, 0, 0, 10, b'a', b'b', b'c']);
        assert!(s.recv(Wait::No).unwrap_err().is_timeout());
        assert!(s.has_buffered());
        assert!(!s.has_whole());
        // It moves with what was read (the new owner goes on from there).
        let parts = s.hand_over().unwrap();
        assert!(s.recv(Wait::No).is_err(), "the old handle is retired");
        let s = Stream::from_parts(s.into_fd(), parts);
        put(raw.as_fd(), b"defghij");
        let wait = || Wait::timeout(std::time::Duration::from_secs(10));
        assert_eq!(s.recv(wait()).unwrap(), b"abcdefghij");
        // Two whole messages in one read: the second is whole in the stream, unread.
        put(raw.as_fd(), &[0, 0, 0, 1, b'x', 0, 0, 0, 1, b'y']);
        assert_eq!(s.recv(wait()).unwrap(), b"x");
        assert!(s.has_whole());
        assert_eq!(s.recv(Wait::No).unwrap(), b"y");
        assert!(!s.has_whole() && !s.has_buffered());
    }
}

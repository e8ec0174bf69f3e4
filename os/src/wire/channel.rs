//! Framed records on a SEQPACKET socket: a header with the message kind and type fingerprint,
//! inline payloads up to [`INLINE_MAX`], larger ones on a side stream or in a memory file, and
//! the descriptors that travel with them.

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::sys;

use super::codec::*;
use super::deadline::*;

/// Largest payload sent inside the record itself; larger ones use a side stream.
pub const INLINE_MAX: usize = 64 * 1024;
const HEADER: usize = 9;
const LARGE_HEADER: usize = HEADER + 8;
/// A payload in more parts than this is sent as one copy (see `Channel::send_frame`).
const MAX_PARTS: usize = 16;

/// Frame kinds (low bits) and the flag for a payload on a side stream.
pub const KIND_VALUE: u8 = 1;
/// Frame kind of raw bytes (a pipe's `send_bytes`), sent with fingerprint 0.
pub const KIND_BYTES: u8 = 2;
const FLAG_LARGE: u8 = 0x80;

thread_local! {
    /// Receive buffer for inline records, reused across messages.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; LARGE_HEADER + INLINE_MAX]);
}

/// Whether this thread is inside a receive (decoding what came: a handle adopted as it is
/// decoded may send), where it must not receive again.
pub fn receiving() -> bool {
    RECV_BUF.with(|b| b.try_borrow_mut().is_err())
}

/// A received frame: its kind, fingerprint, payload and descriptors.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Its kind ([`KIND_VALUE`] or [`KIND_BYTES`]), without the large flag.
    pub kind: u8,
    /// Fingerprint of the payload's type (0 for raw bytes).
    pub fingerprint: u64,
    /// The payload's bytes.
    pub payload: &'a [u8],
    /// Descriptors that came with it (of handles inside the payload).
    pub fds: PeerFds,
    /// The payload came on a side stream or in a memory file, and lies in the caller's `large`
    /// buffer (an inline one lies there too after [`Channel::recv_into`]).
    pub large: bool,
}

/// The largest message a receiving end accepts unless told otherwise (1 GiB): see
/// [`Channel::set_limit`]. A larger one is refused before any of it is read.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

/// A large payload is read into the caller's buffer in steps of this much, so that memory grows
/// with the bytes that really came, never with the length a header announced.
const STEP: usize = 64 << 20;

/// What a frame's header says, before its payload is read: enough to refuse it unread.
#[derive(Clone, Copy, Debug)]
pub struct Head {
    /// The frame's kind, without the large flag.
    pub kind: u8,
    /// Fingerprint of the payload's type.
    pub fingerprint: u64,
    /// Length of the payload, in bytes.
    pub len: u64,
}

/// A large frame whose payload had not all come when its receive's deadline passed: the next
/// receive on the channel goes on with it, so a timeout never loses or tears a message.
#[derive(Debug)]
struct Partial {
    head: Head,
    /// The payload's side stream or memory file (one descriptor).
    side: PeerFds,
    fds: PeerFds,
    got: Vec<u8>,
}

/// What one record received on a channel is.
enum Next {
    /// An inline frame, whose payload is `buf[HEADER..n]` of the buffer it was received into.
    Inline {
        kind: u8,
        fingerprint: u64,
        n: usize,
        fds: PeerFds,
    },
    /// A large frame's header: its payload is still to be read from its side stream.
    Large(Partial),
}

/// One end of a SEQPACKET socket carrying frames. Shared by `&self`: each receive takes one whole
/// frame, so several threads may use one end.
#[derive(Debug)]
pub struct Channel {
    // Always Some; an Option only so that `into_fd` can take it out despite `Drop`.
    fd: Option<OwnedFd>,
    /// The largest payload this end accepts.
    limit: u64,
    /// Large payloads must come in memory files, which are whole before their header is sent
    /// and never block a reader: for event loops, which must not wait on any one peer.
    files_only: bool,
    /// Shared by the clones of this end in this process: whichever receives next goes on with a
    /// message one of them began.
    begun: Arc<Begun>,
}

/// A large message a receive began and did not finish (see [`Partial`]).
#[derive(Debug, Default)]
struct Begun {
    partial: std::sync::Mutex<Option<Partial>>,
    /// `partial` is `Some`: read without the lock on every receive.
    some: std::sync::atomic::AtomicBool,
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            live_channels().remove(&fd.as_raw_fd());
        }
    }
}

/// Descriptors of every live `Channel` in this process. A forked child closes those it was not
/// given, or it would keep other pipes' ends open and their peers would never see a disconnect.
static LIVE: std::sync::Mutex<std::collections::BTreeSet<RawFd>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The descriptors of every live `Channel` in this process, locked (a poisoned lock is taken over).
pub fn live_channels() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<RawFd>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A frame that found its peer's buffer full, kept whole to be sent later (see
/// [`Channel::try_send_or_keep`]): its record and the descriptors that go with it, a large
/// payload's memory file first.
pub struct Outgoing {
    record: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Bytes it holds: the record, and a large payload's memory file.
    size: usize,
}

impl Outgoing {
    /// A frame made whole to be sent later, without trying to send it now (for a connection
    /// with frames already waiting, which must go first).
    pub fn new(kind: u8, fingerprint: u64, payload: &[u8], fds: &[RawFd]) -> Result<Outgoing> {
        let mut header = [0u8; LARGE_HEADER];
        header[1..HEADER].copy_from_slice(&fingerprint.to_le_bytes());
        let mut owned = Vec::with_capacity(fds.len() + 1);
        if payload.len() <= INLINE_MAX {
            header[0] = kind;
            let mut record = Vec::with_capacity(HEADER + payload.len());
            record.extend_from_slice(&header[..HEADER]);
            record.extend_from_slice(payload);
            owned.extend(dup_all(fds)?);
            let size = record.len();
            return Ok(Outgoing {
                record,
                fds: owned,
                size,
            });
        }
        header[0] = kind | FLAG_LARGE;
        header[HEADER..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        owned.push(memory_file(&[payload])?);
        owned.extend(dup_all(fds)?);
        Ok(Outgoing {
            record: header.to_vec(),
            fds: owned,
            size: LARGE_HEADER + payload.len(),
        })
    }

    /// Its descriptors (a large payload's memory file first), for a frame that will not be sent.
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// The memory it holds until sent, in bytes (a large payload's memory file included).
    pub fn size(&self) -> usize {
        self.size
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("kind", &self.record.first())
            .field("size", &self.size)
            .field("fds", &self.fds.len())
            .finish()
    }
}

/// Duplicates of the descriptors an encode collected: a frame kept for later owns them, since
/// the value that lent them will be gone by then.
fn dup_all(fds: &[RawFd]) -> Result<Vec<OwnedFd>> {
    fds.iter()
        .map(|&fd| sys::dup(borrow_collected(fd)).map_err(|e| Error::io("dup", e)))
        .collect()
}

/// A memory file holding the concatenation of `parts`, written whole.
fn memory_file(parts: &[&[u8]]) -> Result<OwnedFd> {
    let file = rustix::fs::memfd_create("procactor-large", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::io("memfd_create", e))?;
    for part in parts {
        sys::write_file(file.as_fd(), part).map_err(|e| Error::io("write", e))?;
    }
    Ok(file)
}

/// What a send did.
enum Sent {
    Done,
    /// The peer's buffer had no room before the wait ran out: nothing went, and the frame is
    /// here if the sender asked to keep it.
    Full(Option<Outgoing>),
}

/// How a frame's payload travels when it is above `INLINE_MAX`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Large {
    /// On a stream socket written while the receiver reads it.
    Stream,
    /// In a memory file, written whole before the header is sent.
    File,
}

impl Channel {
    /// Two connected ends of a new SEQPACKET socket pair.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    /// An end over a connected SEQPACKET socket, with the default limit.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        live_channels().insert(fd.as_raw_fd());
        Channel {
            fd: Some(fd),
            limit: DEFAULT_LIMIT,
            files_only: false,
            begun: Arc::default(),
        }
    }

    /// The largest payload this end accepts (in bytes); a larger one is refused unread.
    pub fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// The largest payload this end accepts, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Accepts large payloads only in memory files (see [`send_detached`](Channel::send_detached)):
    /// a receive then never waits on a sender that is slow, stopped or malicious.
    pub fn files_only(mut self) -> Channel {
        self.files_only = true;
        self
    }

    /// The socket, no longer a live channel (a fork will not close it).
    pub fn into_fd(mut self) -> OwnedFd {
        let fd = self
            .fd
            .take()
            .expect("a Channel always holds its descriptor until dropped");
        live_channels().remove(&fd.as_raw_fd());
        fd
    }

    /// Another handle on the same end (a duplicated descriptor), with the same settings and shared
    /// partial receive.
    pub fn try_clone(&self) -> Result<Channel> {
        let mut c = Channel::from_fd(sys::dup(self.as_fd()).map_err(|e| Error::io("dup", e))?);
        c.limit = self.limit;
        c.files_only = self.files_only;
        c.begun = self.begun.clone();
        Ok(c)
    }

    /// Sends one frame. `fds` are the descriptors of handles inside the payload. A payload above
    /// `INLINE_MAX` goes on a side stream, written while the receiver reads it.
    pub fn send(&self, kind: u8, fingerprint: u64, payload: &[u8], fds: &[RawFd]) -> Result<()> {
        self.send_frame(
            kind,
            fingerprint,
            &[payload],
            fds,
            Large::Stream,
            Wait::Forever,
        )
        .map(drop)
    }

    /// [`send`](Channel::send) that never waits for the receiver to read a large payload: it
    /// goes into a memory file whose descriptor travels with the header (the receiver reads it
    /// like a side stream). For replies to callers that may have given up, and for event loops.
    pub fn send_detached(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<()> {
        self.send_frame(
            kind,
            fingerprint,
            &[payload],
            fds,
            Large::File,
            Wait::Forever,
        )
        .map(drop)
    }

    /// [`send_detached`](Channel::send_detached) of a payload given in parts (sent as their
    /// concatenation, without copying them together first).
    pub fn send_parts_detached(
        &self,
        kind: u8,
        fingerprint: u64,
        parts: &[&[u8]],
        fds: &[RawFd],
    ) -> Result<()> {
        self.send_frame(kind, fingerprint, parts, fds, Large::File, Wait::Forever)
            .map(drop)
    }

    /// [`send_detached`](Channel::send_detached), waiting for room at most as `wait` allows:
    /// `Ok(false)` if the wait ran out and nothing was sent.
    pub fn send_wait(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
        wait: Wait,
    ) -> Result<bool> {
        self.send_frame(kind, fingerprint, &[payload], fds, Large::File, wait)
    }

    /// [`send_detached`](Channel::send_detached) that never blocks: `Ok(false)` if the peer's
    /// buffer is full (it is not reading), and nothing was sent.
    pub fn try_send(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<bool> {
        self.send_frame(kind, fingerprint, &[payload], fds, Large::File, Wait::No)
    }

    /// [`try_send`](Channel::try_send) that keeps what it could not send: `Ok(None)` when the
    /// frame went, `Ok(Some(frame))` when the peer's buffer is full, the frame made whole (its
    /// bytes copied, its descriptors duplicated, a large payload in its memory file) for
    /// [`try_send_kept`](Channel::try_send_kept) to send later. For event loops, which must
    /// neither block on a peer nor lose what it is owed.
    pub fn try_send_or_keep(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<Option<Outgoing>> {
        match self.send_frame_keep(
            kind,
            fingerprint,
            &[payload],
            fds,
            Large::File,
            Wait::No,
            true,
        )? {
            Sent::Done => Ok(None),
            Sent::Full(kept) => Ok(kept),
        }
    }

    /// Sends a frame [`try_send_or_keep`](Channel::try_send_or_keep) kept, without blocking:
    /// `Ok(false)` if the peer's buffer is still full (the frame is still to send).
    pub fn try_send_kept(&self, frame: &Outgoing) -> Result<bool> {
        let fds: Vec<BorrowedFd> = frame.fds.iter().map(|f| f.as_fd()).collect();
        sys::send_record_with(self.as_fd(), &[IoSlice::new(&frame.record)], &fds, false)
            .map_err(|e| Error::io("send", e))
    }

    /// Sends one frame, waiting for room in the peer's buffer as `wait` says; `Ok(false)` if
    /// the wait ran out and nothing was sent. `Large::Stream` only with `Wait::Forever`: its
    /// payload is written while the receiver reads it.
    fn send_frame(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[&[u8]],
        fds: &[RawFd],
        large: Large,
        wait: Wait,
    ) -> Result<bool> {
        self.send_frame_keep(kind, fingerprint, payload, fds, large, wait, false)
            .map(|sent| matches!(sent, Sent::Done))
    }

    /// [`send_frame`](Channel::send_frame); with `keep`, a frame that found no room before the
    /// wait ran out comes back whole, to send later.
    #[allow(clippy::too_many_arguments)]
    fn send_frame_keep(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[&[u8]],
        fds: &[RawFd],
        large: Large,
        wait: Wait,
        keep: bool,
    ) -> Result<Sent> {
        debug_assert!(large == Large::File || matches!(wait, Wait::Forever));
        if payload.len() > MAX_PARTS {
            // One copy costs less than gathering many small parts (a pool batch of 1,024 tasks).
            return self.send_frame_keep(
                kind,
                fingerprint,
                &[&payload.concat()],
                fds,
                large,
                wait,
                keep,
            );
        }
        let borrowed: Vec<BorrowedFd> = fds.iter().map(|&fd| borrow_collected(fd)).collect();
        let mut header = [0u8; LARGE_HEADER];
        header[1..HEADER].copy_from_slice(&fingerprint.to_le_bytes());
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let io = |e| Error::io("send", e);
        if len <= INLINE_MAX {
            header[0] = kind;
            let mut parts = Vec::with_capacity(payload.len() + 1);
            parts.push(IoSlice::new(&header[..HEADER]));
            parts.extend(payload.iter().map(|p| IoSlice::new(p)));
            if self.send_record(&parts, &borrowed, wait).map_err(io)? {
                return Ok(Sent::Done);
            }
            if !keep {
                return Ok(Sent::Full(None));
            }
            let mut record = Vec::with_capacity(HEADER + len);
            record.extend_from_slice(&header[..HEADER]);
            for part in payload {
                record.extend_from_slice(part);
            }
            let size = record.len();
            return Ok(Sent::Full(Some(Outgoing {
                record,
                fds: dup_all(fds)?,
                size,
            })));
        }
        header[0] = kind | FLAG_LARGE;
        header[HEADER..].copy_from_slice(&(len as u64).to_le_bytes());
        let (side, mine) = match large {
            Large::File => (memory_file(payload)?, None),
            Large::Stream => {
                let (mine, theirs) = sys::stream_pair().map_err(|e| Error::io("socketpair", e))?;
                (theirs, Some(mine))
            }
        };
        let mut all = Vec::with_capacity(borrowed.len() + 1);
        all.push(side.as_fd());
        all.extend_from_slice(&borrowed);
        if !self
            .send_record(&[IoSlice::new(&header)], &all, wait)
            .map_err(io)?
        {
            if !keep || mine.is_some() {
                return Ok(Sent::Full(None));
            }
            // The memory file is whole already: the kept frame is its header and descriptors.
            let mut kept = Vec::with_capacity(fds.len() + 1);
            kept.push(side);
            kept.extend(dup_all(fds)?);
            return Ok(Sent::Full(Some(Outgoing {
                record: header.to_vec(),
                fds: kept,
                size: LARGE_HEADER + len,
            })));
        }
        drop(side);
        if let Some(stream) = mine {
            for part in payload {
                sys::write_all(stream.as_fd(), part).map_err(|e| match e.raw_os_error() {
                    // The receiver let go of the message (too large for it, of a type it does
                    // not take, or its process ended) before reading all of it.
                    Some(libc::EPIPE | libc::ECONNRESET) => Error::io(
                        "send (the receiver dropped the message before reading all of it)",
                        e,
                    ),
                    _ => Error::io("send", e),
                })?;
            }
        }
        Ok(Sent::Done)
    }

    /// Sends one record: blocking (`Wait::Forever`), not at all if the peer's buffer is full
    /// (`Wait::No`), or waiting for room until a deadline. `Ok(false)`: nothing was sent.
    fn send_record(
        &self,
        parts: &[IoSlice],
        fds: &[BorrowedFd],
        wait: Wait,
    ) -> std::io::Result<bool> {
        let fd = self.as_fd();
        match wait {
            Wait::Forever => sys::send_record_with(fd, parts, fds, true),
            Wait::No => sys::send_record_with(fd, parts, fds, false),
            Wait::Until { deadline, .. } => loop {
                if sys::send_record_with(fd, parts, fds, false)? {
                    return Ok(true);
                }
                // Writable means below the send buffer's limit, where a send does not fail
                // for room: no spinning. A peer gone or in error is "ready" too, and the next
                // send says why.
                if !sys::wait_writable(fd, Some(deadline))? {
                    return Ok(false);
                }
            },
        }
    }

    /// Sends one small frame (at most `INLINE_MAX` bytes, no descriptors) without blocking:
    /// `Ok(false)` if the peer's buffer is full.
    pub fn try_send_small(&self, kind: u8, fingerprint: u64, payload: &[u8]) -> Result<bool> {
        debug_assert!(payload.len() <= INLINE_MAX);
        self.try_send(kind, fingerprint, payload, &[])
    }

    /// Waits for data (or EOF) for at most `wait`; true if a receive would not block (or, for a
    /// large message begun earlier, has more of it to read).
    pub fn poll(&self, wait: Wait) -> Result<bool> {
        // A copy of a begun message's stream, so that no lock is held while waiting.
        let side = match &*self.begun.partial.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(p) => match p.side.fd(0) {
                Some(fd) => Some(sys::dup(fd).map_err(|e| Error::io("dup", e))?),
                None => None,
            },
            None => None,
        };
        let fd = side.as_ref().map_or(self.as_fd(), |s| s.as_fd());
        let ready = sys::wait_readable(&[fd], wait.deadline()).map_err(|e| Error::io("poll", e))?;
        Ok(ready.is_some())
    }

    /// Receives one frame and hands it to `f`. `Error::Timeout` when `wait` ran out,
    /// `Error::Disconnected` at EOF.
    pub fn recv<R>(&self, wait: Wait, f: impl FnOnce(Frame) -> Result<R>) -> Result<R> {
        self.recv_checked(wait, &mut Vec::new(), |_| Ok(()), f)
    }

    /// [`recv`](Channel::recv), reading a large payload into `large` (whose allocation is
    /// reused: no fresh pages to fault in for every message).
    pub fn recv_large_into<R>(
        &self,
        wait: Wait,
        large: &mut Vec<u8>,
        f: impl FnOnce(Frame) -> Result<R>,
    ) -> Result<R> {
        self.recv_checked(wait, large, |_| Ok(()), f)
    }

    /// [`recv_large_into`](Channel::recv_large_into) that first shows a large frame's header to
    /// `accept`, which may refuse it (a frame of another type) before any of its payload is
    /// read. Every large payload is bounded by this end's limit and read under `wait`'s
    /// deadline; one whose bytes had not all come by then is kept for the next receive.
    pub fn recv_checked<R>(
        &self,
        wait: Wait,
        large: &mut Vec<u8>,
        accept: impl Fn(&Head) -> Result<()>,
        f: impl FnOnce(Frame) -> Result<R>,
    ) -> Result<R> {
        self.recv_inner(wait, large, false, accept, f)
    }

    /// [`recv_checked`](Channel::recv_checked) that puts every payload in `buf`, an inline one
    /// copied there too: the caller keeps the payload after `f` (which sees it in `buf`)
    /// without a second copy of a large one. `buf` holds the last payload afterwards, and
    /// keeps its allocation.
    pub fn recv_into<R>(
        &self,
        wait: Wait,
        buf: &mut Vec<u8>,
        accept: impl Fn(&Head) -> Result<()>,
        f: impl FnOnce(Frame) -> Result<R>,
    ) -> Result<R> {
        self.recv_inner(wait, buf, true, accept, f)
    }

    fn recv_inner<R>(
        &self,
        wait: Wait,
        large: &mut Vec<u8>,
        inline_too: bool,
        accept: impl Fn(&Head) -> Result<()>,
        f: impl FnOnce(Frame) -> Result<R>,
    ) -> Result<R> {
        RECV_BUF.with(|cell| {
            // `f` is called in one place: its code (which depends on the message type) is in
            // the binary once per type. The shared buffer is let go before `f` unless the
            // payload is in it.
            let mut buf = None;
            let next = match self.take_begun() {
                Some(partial) => Next::Large(partial),
                None => self.next_record(buf.insert(cell.borrow_mut()), wait)?,
            };
            let (kind, fingerprint, fds, payload, is_large): (_, _, _, &[u8], _) = match next {
                Next::Inline {
                    kind,
                    fingerprint,
                    n,
                    fds,
                } if !inline_too => {
                    let buf = buf.as_ref().expect("an inline frame is in the buffer");
                    (kind, fingerprint, fds, &buf[HEADER..n], false)
                }
                Next::Inline {
                    kind,
                    fingerprint,
                    n,
                    fds,
                } => {
                    large.clear();
                    large.extend_from_slice(
                        &buf.take().expect("an inline frame is in the buffer")[HEADER..n],
                    );
                    (kind, fingerprint, fds, &large[..], false)
                }
                Next::Large(partial) => {
                    drop(buf.take());
                    let (head, fds) = self.fill_large(partial, wait, large, &accept)?;
                    (head.kind, head.fingerprint, fds, &large[..], true)
                }
            };
            f(Frame {
                kind,
                fingerprint,
                payload,
                large: is_large,
                fds,
            })
        })
    }

    /// The large message an earlier receive began and left unfinished, if any.
    /// Whether a large message is begun on this end (a receive timed out half-way through it).
    pub fn has_begun(&self) -> bool {
        self.begun.some.load(std::sync::atomic::Ordering::Acquire)
    }

    fn take_begun(&self) -> Option<Partial> {
        if !self.begun.some.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let p = self
            .begun
            .partial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if p.is_some() {
            self.begun
                .some
                .store(false, std::sync::atomic::Ordering::Release);
        }
        p
    }

    /// Receives one record into `buf` and says what it is: the part of a receive that does not
    /// depend on what the caller makes of the frame (one copy of it in the binary).
    fn next_record(&self, buf: &mut [u8], wait: Wait) -> Result<Next> {
        let (n, fds) = self.recv_record(buf, wait)?;
        let fds = PeerFds(fds);
        if n < HEADER {
            return Err(Error::Decode {
                expected: "a procactor frame",
                reason: format!("{n}-byte record"),
            });
        }
        let kind = buf[0];
        let fingerprint = u64::from_le_bytes(buf[1..HEADER].try_into().expect("8 bytes"));
        if kind & FLAG_LARGE == 0 {
            return Ok(Next::Inline {
                kind,
                fingerprint,
                n,
                fds,
            });
        }
        let malformed = || Error::Decode {
            expected: "a procactor frame",
            reason: "malformed large-frame header".into(),
        };
        if n != LARGE_HEADER {
            return Err(malformed());
        }
        let len = u64::from_le_bytes(buf[HEADER..LARGE_HEADER].try_into().expect("8 bytes"));
        let (side, fds) = fds.split_first().ok_or_else(malformed)?;
        Ok(Next::Large(Partial {
            head: Head {
                kind: kind & !FLAG_LARGE,
                fingerprint,
                len,
            },
            side,
            fds,
            got: Vec::new(),
        }))
    }

    /// Reads a large frame's payload (or what is left of it) into `large`; returns its header
    /// and descriptors. A refused frame is dropped unread: its sender sees the side stream
    /// closed. Does not depend on the message type: one copy of it in the binary.
    fn fill_large(
        &self,
        p: Partial,
        wait: Wait,
        large: &mut Vec<u8>,
        accept: &dyn Fn(&Head) -> Result<()>,
    ) -> Result<(Head, PeerFds)> {
        let Partial {
            head,
            side,
            fds,
            mut got,
        } = p;
        if head.len > self.limit {
            return Err(Error::TooLarge {
                size: head.len,
                limit: self.limit,
            });
        }
        accept(&head)?;
        let len = usize::try_from(head.len).map_err(|_| Error::TooLarge {
            size: head.len,
            limit: self.limit,
        })?;
        let io = |e| Error::io("recv", e);
        let side_fd = side.fd(0).ok_or(Error::Disconnected)?;
        if got.is_empty() {
            large.clear(); // a fresh message: the caller's buffer, its allocation reused
        } else {
            *large = std::mem::take(&mut got); // the part an earlier receive read
        }
        if sys::is_memfd(side_fd) {
            // Whole before its header was sent: read at once, never waiting on the sender.
            large.clear();
            let size = sys::file_size(side_fd).map_err(io)?;
            if size != head.len {
                return Err(Error::Decode {
                    expected: "a procactor frame",
                    reason: format!("a {size}-byte memory file for a {len}-byte payload"),
                });
            }
            if !sys::read_file_prefix(side_fd, large, len).map_err(io)? {
                large.clear();
                return Err(Error::Disconnected);
            }
            // The close of a memory file never blocks: closed here, not on the closer thread,
            // so that the receiver holds no descriptor of it once the receive returns.
            drop(Vec::<OwnedFd>::from(side));
        } else if self.files_only {
            return Err(Error::Decode {
                expected: "a procactor frame",
                reason: "a large payload on a stream where only memory files are taken".into(),
            });
        } else {
            while large.len() < len {
                let target = len.min(large.len() + STEP);
                match sys::read_stream_until(side_fd, large, target, wait.deadline()).map_err(io)? {
                    sys::Filled::Full => {}
                    sys::Filled::Eof => {
                        // The sender died (or dropped the message) half-way: nothing partial
                        // is delivered.
                        large.clear();
                        return Err(Error::Disconnected);
                    }
                    sys::Filled::TimedOut => {
                        *self.begun.partial.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Partial {
                                head,
                                side,
                                fds,
                                got: std::mem::take(large),
                            });
                        self.begun
                            .some
                            .store(true, std::sync::atomic::Ordering::Release);
                        return Err(wait.expired());
                    }
                }
            }
        }
        Ok((head, fds))
    }

    fn recv_record(&self, buf: &mut [u8], wait: Wait) -> Result<(usize, Vec<OwnedFd>)> {
        let fd = self.as_fd();
        let io = |e| Error::io("recv", e);
        // Spin first: a non-blocking receive costs one syscall, a sleep and wake-up far more.
        let spin = spin_time();
        if !matches!(wait, Wait::No) && !spin.is_zero() {
            let until = Instant::now() + spin;
            loop {
                match sys::recv_record(fd, buf, true).map_err(io)? {
                    sys::Recv::Record(n, fds) => return Ok((n, fds)),
                    sys::Recv::Eof => return Err(Error::Disconnected),
                    sys::Recv::WouldBlock => {}
                    sys::Recv::Bad(why, fds) => return Err(refused_record(why, fds)),
                }
                if Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        loop {
            let nonblocking = match wait {
                Wait::Forever => false,
                Wait::No => true,
                Wait::Until { deadline, .. } => {
                    if sys::wait_readable(&[fd], Some(deadline))
                        .map_err(io)?
                        .is_none()
                    {
                        return Err(wait.expired());
                    }
                    true
                }
            };
            match sys::recv_record(fd, buf, nonblocking).map_err(io)? {
                sys::Recv::Record(n, fds) => return Ok((n, fds)),
                sys::Recv::Eof => return Err(Error::Disconnected),
                sys::Recv::WouldBlock if matches!(wait, Wait::No) => return Err(wait.expired()),
                // Another thread took the record we were woken for: wait again.
                sys::Recv::WouldBlock => {}
                sys::Recv::Bad(why, fds) => return Err(refused_record(why, fds)),
            }
        }
    }
}

/// A record we do not take: its descriptors go to the closer, and the receive fails.
fn refused_record(why: &'static str, fds: Vec<OwnedFd>) -> Error {
    crate::closer::close_later(fds);
    Error::Decode {
        expected: "a procactor frame",
        reason: why.into(),
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("a Channel always holds its descriptor until dropped")
            .as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Receives one frame: its kind, fingerprint, payload and number of descriptors.
    fn take(c: &Channel) -> (u8, u64, Vec<u8>, usize) {
        c.recv(Wait::timeout(Duration::from_secs(10)), |f| {
            Ok((
                f.kind,
                f.fingerprint,
                f.payload.to_vec(),
                Vec::from(f.fds).len(),
            ))
        })
        .unwrap()
    }

    #[test]
    fn frames_kept_for_a_full_buffer_go_later_whole_and_in_order() {
        let (a, b) = Channel::pair().unwrap();
        let b = b.files_only();
        let inline = vec![3u8; 60_000];
        // Fill the peer's buffer: the first frame that does not fit comes back, whole.
        let mut sent = 0u64;
        let first_kept = loop {
            match a.try_send_or_keep(KIND_BYTES, sent, &inline, &[]).unwrap() {
                None => sent += 1,
                Some(kept) => break kept,
            }
            assert!(sent < 1000, "the buffer never filled");
        };
        assert_eq!(first_kept.size(), HEADER + inline.len());
        // Behind it, without trying: a large one (a memory file) carrying a descriptor.
        let large = vec![5u8; INLINE_MAX + 1];
        let (x, _y) = sys::seqpacket_pair().unwrap();
        let second_kept = Outgoing::new(KIND_BYTES, 999, &large, &[x.as_raw_fd()]).unwrap();
        drop(x); // the kept frame holds its own copy
        assert_eq!(second_kept.size(), LARGE_HEADER + large.len());
        assert!(!a.try_send_kept(&first_kept).unwrap(), "still full");
        for id in 0..sent {
            let (kind, fp, payload, _) = take(&b);
            assert_eq!((kind, fp, payload.len()), (KIND_BYTES, id, inline.len()));
        }
        assert!(a.try_send_kept(&first_kept).unwrap());
        assert!(a.try_send_kept(&second_kept).unwrap());
        assert_eq!(take(&b), (KIND_BYTES, sent, inline, 0));
        assert_eq!(take(&b), (KIND_BYTES, 999, large, 1));
    }

    #[test]
    fn recv_into_leaves_every_payload_in_the_buffer() {
        let (a, b) = Channel::pair().unwrap();
        let mut buf = Vec::new();
        let small = vec![1u8; 100];
        let large = vec![2u8; INLINE_MAX + 10];
        a.send(KIND_BYTES, 1, &small, &[]).unwrap();
        a.send_detached(KIND_BYTES, 2, &large, &[]).unwrap();
        let wait = Wait::timeout(Duration::from_secs(10));
        let got = b.recv_into(wait, &mut buf, |_| Ok(()), |f| Ok((f.fingerprint, f.large)));
        assert_eq!(got.unwrap(), (1, false));
        assert_eq!(buf, small);
        let got = b.recv_into(wait, &mut buf, |_| Ok(()), |f| Ok((f.fingerprint, f.large)));
        assert_eq!(got.unwrap(), (2, true));
        assert_eq!(buf, large);
    }
}

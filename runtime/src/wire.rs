//! Frames on the wire, and how values with descriptors inside are encoded.
//!
//! Every message is one SEQPACKET record (atomic, never merged or split, even with several
//! writers) that starts with a 9-byte header: a kind byte and the 64-bit fingerprint of the
//! message type, so that a `Connection<String>` fed a `u64` reports a decode error instead of a
//! garbled value. Payloads above [`INLINE_MAX`] travel on a stream socket made for that one message
//! and passed along with the header record: the record stays atomic, the bulk moves at stream
//! speed, and a sender that dies half-way leaves the receiver an EOF, never a torn message.
//!
//! Handles that own descriptors (a `Connection` inside a message or in `Process` arguments)
//! serialize as an index into the record's SCM_RIGHTS list, through a thread-local context that
//! exists only while procactor encodes or decodes a frame.

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::sys;

/// Largest payload sent inside the record itself; larger ones use a side stream.
pub(crate) const INLINE_MAX: usize = 64 * 1024;
const HEADER: usize = 9;
const LARGE_HEADER: usize = HEADER + 8;
/// A payload in more parts than this is sent as one copy (see `Channel::send_frame`).
const MAX_PARTS: usize = 16;

/// Frame kinds (low bits) and the flag for a payload on a side stream.
pub(crate) const KIND_VALUE: u8 = 1;
pub(crate) const KIND_BYTES: u8 = 2;
const FLAG_LARGE: u8 = 0x80;

/// FNV-1a of the type's name: the same type in the same binary always gives the same number.
pub(crate) fn fingerprint<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

thread_local! {
    /// Descriptors collected while a frame is being encoded (borrowed from the value being sent).
    static OUTGOING: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// Descriptors that arrived with the frame being decoded, taken by index.
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// Receive buffer for inline records, reused across messages.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; LARGE_HEADER + INLINE_MAX]);
}

/// Serializes a descriptor owned by a handle. Only works inside procactor's own encoding.
pub(crate) fn serialize_fd<S: Serializer>(fd: BorrowedFd, s: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.as_mut()?;
        list.push(fd.as_raw_fd());
        Some(list.len() as u32 - 1)
    });
    match index {
        Some(i) => i.serialize(s),
        None => Err(serde::ser::Error::custom(
            "procactor handles (Connection, ...) can only be sent through procactor: \
             as Process arguments or inside messages",
        )),
    }
}

/// Takes the descriptor a handle serialized with [`serialize_fd`].
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    INCOMING
        .with(|i| i.borrow_mut().as_mut()?.get_mut(index)?.take())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "descriptor #{index} missing: a procactor handle can only be received through procactor"
            ))
        })
}

/// A descriptor inside a message being sent (serializes through [`serialize_fd`]).
pub(crate) struct SendFd<'a>(pub BorrowedFd<'a>);

impl Serialize for SendFd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

/// An owned descriptor that travels inside messages (the kernel duplicates it on the way).
#[derive(Debug)]
pub(crate) struct Fd(pub OwnedFd);

impl Serialize for Fd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for Fd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(Fd)
    }
}

/// Borrows a descriptor that [`encode`] collected. Only for the duration of sending the encoded
/// value (or, in a forked child, of duplicating it), while the value that owns it is alive.
pub(crate) fn borrow_collected<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: `encode` took this number from a live handle inside the value being sent, and the
    // callers use the borrow only while that value is borrowed by them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// A postcard output that appends to a borrowed `Vec` (postcard's own `to_io` writes byte by
/// byte through `io::Write`; this is several times faster for small values).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints arrive here as slices of 1-10 bytes: a call to memcpy per integer costs more
        // than the copy, so short slices are pushed byte by byte.
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `buf` (no descriptor collection: see
/// [`encode`]). On error, `buf` may hold a partial encoding past its old length.
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, Append(buf))
}

/// Encodes `value` (postcard), collecting the descriptors of the handles inside it.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<Vec<RawFd>> {
    let prev = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let res = append(value, buf);
    let fds = OUTGOING.with(|o| o.replace(prev)).unwrap_or_default();
    match res {
        Ok(_) if fds.len() > sys::MAX_FDS => Err(Error::Encode {
            type_name: std::any::type_name::<T>(),
            reason: format!(
                "{} handles in one message; at most {}",
                fds.len(),
                sys::MAX_FDS
            ),
        }),
        Ok(_) => Ok(fds),
        Err(e) => Err(Error::Encode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        }),
    }
}

/// Decodes a `T` from `bytes`, giving its handles the descriptors `fds`. Trailing bytes are an
/// error: they mean the message was of another type.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    let (value, rest) = decode_prefix::<T>(bytes, fds)?;
    if !rest.is_empty() {
        return Err(Error::Decode {
            expected: std::any::type_name::<T>(),
            reason: format!("{} bytes left over after the value", rest.len()),
        });
    }
    Ok(value)
}

/// Decodes a `T` from the front of `bytes`; returns it and the bytes after it.
pub(crate) fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(T, &[u8])> {
    let prev = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let res = postcard::take_from_bytes::<T>(bytes);
    // Descriptors no handle claimed are closed here.
    INCOMING.with(|i| i.replace(prev));
    res.map_err(|e| Error::Decode {
        expected: std::any::type_name::<T>(),
        reason: match e {
            postcard::Error::DeserializeUnexpectedEnd => "message too short for this type".into(),
            other => other.to_string(),
        },
    })
}

/// Runs `f` with `fds` as the descriptors that handles decoded inside it take (by index).
/// Descriptors no handle claimed are closed afterwards.
pub(crate) fn with_incoming<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let prev = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let out = f();
    INCOMING.with(|i| i.replace(prev));
    out
}

/// A received frame: its kind, fingerprint, payload and descriptors.
pub(crate) struct Frame<'a> {
    pub kind: u8,
    pub fingerprint: u64,
    pub payload: &'a [u8],
    pub fds: Vec<OwnedFd>,
    /// The payload came on a side stream and lies in the caller's `large` buffer.
    pub large: bool,
}

/// How long a receive may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    Forever,
    /// Until `deadline`; `asked` is the timeout the caller gave, for the error it gets.
    Until {
        deadline: Instant,
        asked: Duration,
    },
    /// Do not block at all.
    No,
}

impl Wait {
    pub(crate) fn timeout(asked: Duration) -> Wait {
        match Instant::now().checked_add(asked) {
            Some(deadline) => Wait::Until { deadline, asked },
            None => Wait::Forever,
        }
    }

    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            Wait::Until { deadline, .. } => Some(deadline),
            Wait::No => Some(Instant::now()),
        }
    }

    /// The error for a wait that ran out: it names the timeout the caller asked for.
    pub(crate) fn expired(self) -> Error {
        match self {
            Wait::Until { asked, .. } => Error::Timeout(asked),
            _ => Error::Timeout(Duration::ZERO),
        }
    }
}

/// How long a receiver polls before it sleeps in the kernel, when it has a core of its own.
/// A wake-up across cores costs 20-110 us on small VMs; a reply often comes sooner than that.
static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

pub(crate) fn spin_time() -> Duration {
    *SPIN.get_or_init(|| {
        let us = std::env::var("PROCACTOR_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok());
        match us {
            Some(us) => Duration::from_micros(us),
            // On one core, spinning only steals the time the peer needs to answer.
            None if sys::usable_cpus() < 2 => Duration::ZERO,
            None => Duration::from_micros(50),
        }
    })
}

/// One end of a SEQPACKET socket carrying frames. Shared by `&self`: each receive takes one whole
/// frame, so several threads may use one end.
#[derive(Debug)]
pub(crate) struct Channel {
    // Always Some; an Option only so that `into_fd` can take it out despite `Drop`.
    fd: Option<OwnedFd>,
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

pub(crate) fn live_channels() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<RawFd>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

impl Channel {
    pub(crate) fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Channel {
        live_channels().insert(fd.as_raw_fd());
        Channel { fd: Some(fd) }
    }

    pub(crate) fn into_fd(mut self) -> OwnedFd {
        let fd = self
            .fd
            .take()
            .expect("a Channel always holds its descriptor until dropped");
        live_channels().remove(&fd.as_raw_fd());
        fd
    }

    pub(crate) fn try_clone(&self) -> Result<Channel> {
        Ok(Channel::from_fd(
            sys::dup(self.as_fd()).map_err(|e| Error::io("dup", e))?,
        ))
    }

    /// Sends one frame. `fds` are the descriptors of handles inside the payload. A payload above
    /// `INLINE_MAX` goes on a side stream, written while the receiver reads it.
    pub(crate) fn send(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<()> {
        self.send_frame(kind, fingerprint, &[payload], fds, false)
    }

    /// [`send`](Channel::send) that never waits for the receiver to read a large payload: it
    /// goes into a memory file whose descriptor travels with the header (the receiver reads it
    /// like a side stream). For replies to callers that may have given up.
    pub(crate) fn send_detached(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<()> {
        self.send_frame(kind, fingerprint, &[payload], fds, true)
    }

    /// [`send_detached`](Channel::send_detached) of a payload given in parts (sent as their
    /// concatenation, without copying them together first).
    pub(crate) fn send_parts_detached(
        &self,
        kind: u8,
        fingerprint: u64,
        parts: &[&[u8]],
        fds: &[RawFd],
    ) -> Result<()> {
        self.send_frame(kind, fingerprint, parts, fds, true)
    }

    fn send_frame(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[&[u8]],
        fds: &[RawFd],
        detached: bool,
    ) -> Result<()> {
        if payload.len() > MAX_PARTS {
            // One copy costs less than gathering many small parts, and the kernel takes at most
            // 1,024 parts per record (a pool batch of 1,024 tasks has more).
            return self.send_frame(kind, fingerprint, &[&payload.concat()], fds, detached);
        }
        let borrowed: Vec<BorrowedFd> = fds.iter().map(|&fd| borrow_collected(fd)).collect();
        let mut header = [0u8; LARGE_HEADER];
        header[1..HEADER].copy_from_slice(&fingerprint.to_le_bytes());
        let len: usize = payload.iter().map(|p| p.len()).sum();
        if len <= INLINE_MAX {
            header[0] = kind;
            let mut parts = Vec::with_capacity(payload.len() + 1);
            parts.push(IoSlice::new(&header[..HEADER]));
            parts.extend(payload.iter().map(|p| IoSlice::new(p)));
            return sys::send_record(self.as_fd(), &parts, &borrowed)
                .map_err(|e| Error::io("send", e));
        }
        header[0] = kind | FLAG_LARGE;
        header[HEADER..].copy_from_slice(&(len as u64).to_le_bytes());
        let (side, mine) = if detached {
            let file = rustix::fs::memfd_create("procactor-large", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| Error::io("memfd_create", e))?;
            for part in payload {
                sys::write_file(file.as_fd(), part).map_err(|e| Error::io("write", e))?;
            }
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))
                .map_err(|e| Error::io("lseek", e))?;
            (file, None)
        } else {
            let (mine, theirs) = sys::stream_pair().map_err(|e| Error::io("socketpair", e))?;
            (theirs, Some(mine))
        };
        let mut all = Vec::with_capacity(borrowed.len() + 1);
        all.push(side.as_fd());
        all.extend_from_slice(&borrowed);
        sys::send_record(self.as_fd(), &[IoSlice::new(&header)], &all)
            .map_err(|e| Error::io("send", e))?;
        drop(side);
        match mine {
            Some(stream) => payload.iter().try_for_each(|part| {
                sys::write_all(stream.as_fd(), part).map_err(|e| Error::io("send", e))
            }),
            None => Ok(()),
        }
    }

    /// Sends one small frame (at most `INLINE_MAX` bytes, no descriptors) without blocking:
    /// `Ok(false)` if the peer's buffer is full.
    pub(crate) fn try_send_small(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
    ) -> Result<bool> {
        debug_assert!(payload.len() <= INLINE_MAX);
        let mut header = [0u8; HEADER];
        header[0] = kind;
        header[1..HEADER].copy_from_slice(&fingerprint.to_le_bytes());
        let parts = [IoSlice::new(&header), IoSlice::new(payload)];
        sys::try_send_record(self.as_fd(), &parts, None).map_err(|e| Error::io("send", e))
    }

    /// Waits for data (or EOF) for at most `wait`; true if a receive would not block.
    pub(crate) fn poll(&self, wait: Wait) -> Result<bool> {
        let ready = sys::wait_readable(&[self.as_fd()], wait.deadline())
            .map_err(|e| Error::io("poll", e))?;
        Ok(ready.is_some())
    }

    /// Receives one frame and hands it to `f`. `Error::Timeout` when `wait` ran out,
    /// `Error::Disconnected` at EOF.
    pub(crate) fn recv<R>(&self, wait: Wait, f: impl FnOnce(Frame) -> Result<R>) -> Result<R> {
        self.recv_large_into(wait, &mut Vec::new(), f)
    }

    /// [`recv`](Channel::recv), reading a large payload into `large` (whose allocation is
    /// reused: no fresh pages to fault in for every message).
    pub(crate) fn recv_large_into<R>(
        &self,
        wait: Wait,
        large: &mut Vec<u8>,
        f: impl FnOnce(Frame) -> Result<R>,
    ) -> Result<R> {
        RECV_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (n, mut fds) = self.recv_record(&mut buf, wait)?;
            if n < HEADER {
                return Err(Error::Decode {
                    expected: "a procactor frame",
                    reason: format!("{n}-byte record"),
                });
            }
            let kind = buf[0];
            let fingerprint = u64::from_le_bytes(buf[1..HEADER].try_into().expect("8 bytes"));
            if kind & FLAG_LARGE == 0 {
                return f(Frame {
                    kind,
                    fingerprint,
                    payload: &buf[HEADER..n],
                    large: false,
                    fds,
                });
            }
            if n != LARGE_HEADER || fds.is_empty() {
                return Err(Error::Decode {
                    expected: "a procactor frame",
                    reason: "malformed large-frame header".into(),
                });
            }
            let len = u64::from_le_bytes(buf[HEADER..LARGE_HEADER].try_into().expect("8 bytes"));
            let side = fds.remove(0);
            read_side_stream(side.as_fd(), len, large)?;
            f(Frame {
                kind: kind & !FLAG_LARGE,
                fingerprint,
                payload: large,
                large: true,
                fds,
            })
        })
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
            }
        }
    }
}

/// Reads a large payload from its side stream, growing the buffer as bytes arrive so that a
/// lying length cannot make us allocate memory the sender never sent.
fn read_side_stream(fd: BorrowedFd, len: u64, out: &mut Vec<u8>) -> Result<()> {
    const STEP: usize = 64 << 20;
    let len = usize::try_from(len).map_err(|_| Error::Decode {
        expected: "a procactor frame",
        reason: "length overflow".into(),
    })?;
    out.clear();
    while out.len() < len {
        let target = len.min(out.len() + STEP);
        if !sys::read_until_len(fd, out, target).map_err(|e| Error::io("recv", e))? {
            // The sender died (or dropped the message) half-way: nothing partial is delivered.
            out.clear();
            return Err(Error::Disconnected);
        }
    }
    Ok(())
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("a Channel always holds its descriptor until dropped")
            .as_fd()
    }
}

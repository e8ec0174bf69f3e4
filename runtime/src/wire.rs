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
use std::sync::Arc;
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

/// A number for the type `T` that no other type of this binary has (its `TypeId`, hashed): for
/// checks within one binary, where two types may share a name (two versions of one crate).
pub(crate) fn type_tag<T: ?Sized + 'static>() -> u64 {
    use std::hash::{Hash, Hasher};
    // Unkeyed: the same binary gives the same number in every process.
    let mut h = std::hash::DefaultHasher::new();
    std::any::TypeId::of::<T>().hash(&mut h);
    h.finish()
}

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
    /// Why procactor's own `Deserialize` code refused a value (postcard keeps no message for a
    /// serde custom error): the reason the decode error gives.
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Receive buffer for inline records, reused across messages.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; LARGE_HEADER + INLINE_MAX]);
}

/// Whether this thread is inside a receive (decoding what came: a handle adopted as it is
/// decoded may send), where it must not receive again.
pub(crate) fn receiving() -> bool {
    RECV_BUF.with(|b| b.try_borrow_mut().is_err())
}

/// The error a procactor `Deserialize` impl returns to refuse a value, with its reason kept
/// for the decode error (see [`decode_prefix`]).
pub(crate) fn refuse<E: serde::de::Error>(why: impl std::fmt::Display) -> E {
    let why = why.to_string();
    REFUSAL.with(|r| *r.borrow_mut() = Some(why.clone()));
    E::custom(why)
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
            refuse(format!(
                "descriptor #{index} missing: a procactor handle can only be received through procactor"
            ))
        })
}

/// Whether an encode that collects descriptors is in progress on this thread (handles can be
/// sent): false inside a `Queue` item or a plain postcard encode.
pub(crate) fn collecting_fds() -> bool {
    OUTGOING.with(|o| o.borrow().is_some())
}

/// The index of `fd` among the descriptors the encode in progress has collected, if it is
/// there (a handle that shares one descriptor with others in the same message).
pub(crate) fn collected_index(fd: RawFd) -> Option<u32> {
    OUTGOING.with(|o| {
        let o = o.borrow();
        let i = o.as_ref()?.iter().position(|&f| f == fd)?;
        u32::try_from(i).ok()
    })
}

/// A duplicate of descriptor `index` of the frame being decoded, left in place for the other
/// handles that share it (closed with the rest once the decode ends).
pub(crate) fn incoming_dup(index: u32) -> Option<OwnedFd> {
    INCOMING.with(|i| {
        let i = i.borrow();
        let fd = i.as_ref()?.get(index as usize)?.as_ref()?;
        fd.try_clone().ok()
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

/// Descriptors that came from a peer with a frame. Whatever nothing takes out of it is closed on
/// the closer thread (see `closer`): its last close may block, and the peer chose it.
#[derive(Debug, Default)]
pub(crate) struct PeerFds(Vec<OwnedFd>);

impl PeerFds {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The descriptor at `i`, borrowed.
    fn fd(&self, i: usize) -> Option<BorrowedFd<'_>> {
        self.0.get(i).map(|f| f.as_fd())
    }

    /// The first descriptor (alone) and the others; `None` if there is none.
    fn split_first(mut self) -> Option<(PeerFds, PeerFds)> {
        if self.0.is_empty() {
            return None;
        }
        let rest = self.0.split_off(1);
        Some((PeerFds(std::mem::take(&mut self.0)), PeerFds(rest)))
    }

    /// Takes the first descriptor; the others are closed on the closer thread.
    pub(crate) fn first(self) -> Option<OwnedFd> {
        let mut all = Vec::from(self);
        if all.is_empty() {
            return None;
        }
        let first = all.remove(0);
        crate::closer::close_later(all);
        Some(first)
    }
}

impl Drop for PeerFds {
    fn drop(&mut self) {
        crate::closer::close_later(self.0.drain(..));
    }
}

impl From<PeerFds> for Vec<OwnedFd> {
    fn from(mut p: PeerFds) -> Vec<OwnedFd> {
        std::mem::take(&mut p.0)
    }
}

/// Decodes a `T` from `bytes`, giving its handles the descriptors `fds`. Trailing bytes are an
/// error: they mean the message was of another type.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: impl Into<Vec<OwnedFd>>) -> Result<T> {
    let (value, rest) = decode_prefix::<T>(bytes, fds)?;
    if !rest.is_empty() {
        return Err(left_over(std::any::type_name::<T>(), rest.len()));
    }
    Ok(value)
}

/// Decodes a `T` from the front of `bytes`; returns it and the bytes after it.
pub(crate) fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    fds: impl Into<Vec<OwnedFd>>,
) -> Result<(T, &[u8])> {
    // Only the postcard call depends on `T`: the rest is out of line, one copy in the binary
    // rather than one per message type.
    let prev = begin_decode(fds.into());
    let res = postcard::take_from_bytes::<T>(bytes);
    end_decode(prev);
    res.map_err(|e| decode_error(std::any::type_name::<T>(), e))
}

/// Makes `fds` the descriptors that handles decoded on this thread take; returns the ones an
/// enclosing decode had.
#[inline(never)]
fn begin_decode(fds: Vec<OwnedFd>) -> Option<Vec<Option<OwnedFd>>> {
    let prev = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    REFUSAL.with(|r| r.borrow_mut().take());
    prev
}

/// Puts back an enclosing decode's descriptors; those no handle claimed are closed off this
/// thread (a peer chose them).
#[inline(never)]
fn end_decode(prev: Option<Vec<Option<OwnedFd>>>) {
    close_unclaimed(INCOMING.with(|i| i.replace(prev)));
}

#[cold]
#[inline(never)]
fn decode_error(expected: &'static str, e: postcard::Error) -> Error {
    Error::Decode {
        expected,
        reason: match e {
            postcard::Error::DeserializeUnexpectedEnd => "message too short for this type".into(),
            postcard::Error::SerdeDeCustom => REFUSAL
                .with(|r| r.borrow_mut().take())
                .unwrap_or_else(|| e.to_string()),
            other => other.to_string(),
        },
    }
}

#[cold]
#[inline(never)]
fn left_over(expected: &'static str, n: usize) -> Error {
    Error::Decode {
        expected,
        reason: format!("{n} bytes left over after the value"),
    }
}

/// Runs `f` with `fds` as the descriptors that handles decoded inside it take (by index).
/// Descriptors no handle claimed are closed afterwards.
pub(crate) fn with_incoming<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let prev = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let out = f();
    close_unclaimed(INCOMING.with(|i| i.replace(prev)));
    out
}

fn close_unclaimed(left: Option<Vec<Option<OwnedFd>>>) {
    crate::closer::close_later(left.into_iter().flatten().flatten());
}

/// A received frame: its kind, fingerprint, payload and descriptors.
pub(crate) struct Frame<'a> {
    pub kind: u8,
    pub fingerprint: u64,
    pub payload: &'a [u8],
    pub fds: PeerFds,
    /// The payload came on a side stream or in a memory file, and lies in the caller's `large`
    /// buffer (an inline one lies there too after [`Channel::recv_into`]).
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

/// The largest message a receiving end accepts unless told otherwise (1 GiB): see
/// [`Channel::set_limit`]. A larger one is refused before any of it is read.
pub(crate) const DEFAULT_LIMIT: u64 = 1 << 30;

/// A large payload is read into the caller's buffer in steps of this much, so that memory grows
/// with the bytes that really came, never with the length a header announced.
const STEP: usize = 64 << 20;

/// What a frame's header says, before its payload is read: enough to refuse it unread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    pub kind: u8,
    pub fingerprint: u64,
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
pub(crate) struct Channel {
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

pub(crate) fn live_channels() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<RawFd>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A frame that found its peer's buffer full, kept whole to be sent later (see
/// [`Channel::try_send_or_keep`]): its record and the descriptors that go with it, a large
/// payload's memory file first.
pub(crate) struct Outgoing {
    record: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// Bytes it holds: the record, and a large payload's memory file.
    size: usize,
}

impl Outgoing {
    /// A frame made whole to be sent later, without trying to send it now (for a connection
    /// with frames already waiting, which must go first).
    pub(crate) fn new(
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<Outgoing> {
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
    pub(crate) fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }

    /// The memory it holds until sent, in bytes (a large payload's memory file included).
    pub(crate) fn size(&self) -> usize {
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
    pub(crate) fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        Ok((Channel::from_fd(a), Channel::from_fd(b)))
    }

    pub(crate) fn from_fd(fd: OwnedFd) -> Channel {
        live_channels().insert(fd.as_raw_fd());
        Channel {
            fd: Some(fd),
            limit: DEFAULT_LIMIT,
            files_only: false,
            begun: Arc::default(),
        }
    }

    /// The largest payload this end accepts (in bytes); a larger one is refused unread.
    pub(crate) fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Accepts large payloads only in memory files (see [`send_detached`](Channel::send_detached)):
    /// a receive then never waits on a sender that is slow, stopped or malicious.
    pub(crate) fn files_only(mut self) -> Channel {
        self.files_only = true;
        self
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
        let mut c = Channel::from_fd(sys::dup(self.as_fd()).map_err(|e| Error::io("dup", e))?);
        c.limit = self.limit;
        c.files_only = self.files_only;
        c.begun = self.begun.clone();
        Ok(c)
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
    pub(crate) fn send_detached(
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
    pub(crate) fn send_parts_detached(
        &self,
        kind: u8,
        fingerprint: u64,
        parts: &[&[u8]],
        fds: &[RawFd],
    ) -> Result<()> {
        self.send_frame(kind, fingerprint, parts, fds, Large::File, Wait::Forever)
            .map(drop)
    }

    /// [`send_detached`](Channel::send_detached) that never blocks: `Ok(false)` if the peer's
    /// buffer is full (it is not reading), and nothing was sent.
    pub(crate) fn try_send(
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
    pub(crate) fn try_send_or_keep(
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
    pub(crate) fn try_send_kept(&self, frame: &Outgoing) -> Result<bool> {
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
    pub(crate) fn try_send_small(
        &self,
        kind: u8,
        fingerprint: u64,
        payload: &[u8],
    ) -> Result<bool> {
        debug_assert!(payload.len() <= INLINE_MAX);
        self.try_send(kind, fingerprint, payload, &[])
    }

    /// Waits for data (or EOF) for at most `wait`; true if a receive would not block (or, for a
    /// large message begun earlier, has more of it to read).
    pub(crate) fn poll(&self, wait: Wait) -> Result<bool> {
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
    pub(crate) fn recv<R>(&self, wait: Wait, f: impl FnOnce(Frame) -> Result<R>) -> Result<R> {
        self.recv_checked(wait, &mut Vec::new(), |_| Ok(()), f)
    }

    /// [`recv`](Channel::recv), reading a large payload into `large` (whose allocation is
    /// reused: no fresh pages to fault in for every message).
    pub(crate) fn recv_large_into<R>(
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
    pub(crate) fn recv_checked<R>(
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
    pub(crate) fn recv_into<R>(
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

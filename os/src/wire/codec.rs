//! Values to bytes (postcard) and back, and the descriptors inside values: handles that own
//! descriptors serialize as an index into the frame's SCM_RIGHTS list, through a thread-local
//! context that exists only while procactor encodes or decodes a frame.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::sys;

/// A number for the type `T` that no other type of this binary has (its `TypeId`, hashed): for
/// checks within one binary, where two types may share a name (two versions of one crate).
pub fn type_tag<T: ?Sized + 'static>() -> u64 {
    use std::hash::{Hash, Hasher};
    // Unkeyed: the same binary gives the same number in every process.
    let mut h = std::hash::DefaultHasher::new();
    std::any::TypeId::of::<T>().hash(&mut h);
    h.finish()
}

/// FNV-1a of the type's name: the same type in the same binary always gives the same number.
pub fn fingerprint<T: ?Sized>() -> u64 {
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
}

/// The error a procactor `Deserialize` impl returns to refuse a value, with its reason kept
/// for the decode error (see [`decode_prefix`]).
pub fn refuse<E: serde::de::Error>(why: impl std::fmt::Display) -> E {
    let why = why.to_string();
    REFUSAL.with(|r| *r.borrow_mut() = Some(why.clone()));
    E::custom(why)
}

thread_local! {
    /// Why the encode in progress was refused (postcard keeps no error message of its own).
    static ENCODE_REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The error a `Serialize` impl returns to refuse a value, with `why` kept for the caller's
/// [`Error::Encode`] (postcard would drop it).
pub fn refuse_encode<E: serde::ser::Error>(why: impl std::fmt::Display) -> E {
    let why = why.to_string();
    ENCODE_REFUSAL.with(|r| *r.borrow_mut() = Some(why.clone()));
    E::custom(why)
}

/// What [`serialize_fd`] says outside procactor's own encoding.
pub const HANDLE_OUTSIDE: &str = "procactor handles (Connection, ...) can only be sent through \
     procactor: as Process arguments or inside messages";

/// Serializes a descriptor owned by a handle. Only works inside procactor's own encoding.
pub fn serialize_fd<S: Serializer>(fd: BorrowedFd, s: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.as_mut()?;
        list.push(fd.as_raw_fd());
        Some(list.len() as u32 - 1)
    });
    match index {
        Some(i) => i.serialize(s),
        None => Err(refuse_encode(HANDLE_OUTSIDE)),
    }
}

/// Takes the descriptor a handle serialized with [`serialize_fd`].
pub fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
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
pub fn collecting_fds() -> bool {
    OUTGOING.with(|o| o.borrow().is_some())
}

/// The index of `fd` among the descriptors the encode in progress has collected, if it is
/// there (a handle that shares one descriptor with others in the same message).
pub fn collected_index(fd: RawFd) -> Option<u32> {
    OUTGOING.with(|o| {
        let o = o.borrow();
        let i = o.as_ref()?.iter().position(|&f| f == fd)?;
        u32::try_from(i).ok()
    })
}

/// A duplicate of descriptor `index` of the frame being decoded, left in place for the other
/// handles that share it (closed with the rest once the decode ends).
pub fn incoming_dup(index: u32) -> Option<OwnedFd> {
    INCOMING.with(|i| {
        let i = i.borrow();
        let fd = i.as_ref()?.get(index as usize)?.as_ref()?;
        fd.try_clone().ok()
    })
}

/// A descriptor inside a message being sent (serializes through [`serialize_fd`]).
#[derive(Debug)]
pub struct SendFd<'a>(pub BorrowedFd<'a>);

impl Serialize for SendFd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

/// An owned descriptor that travels inside messages (the kernel duplicates it on the way).
#[derive(Debug)]
pub struct Fd(pub OwnedFd);

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
pub fn borrow_collected<'a>(fd: RawFd) -> BorrowedFd<'a> {
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
pub fn append<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, Append(buf))
}

/// Encodes `value` (postcard) where no descriptor can go (a network connection): a handle
/// inside is an error whose reason is [`HANDLE_OUTSIDE`].
pub fn encode_plain<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    ENCODE_REFUSAL.with(|r| r.borrow_mut().take());
    let prev = OUTGOING.with(|o| o.replace(None));
    let res = append(value, buf);
    OUTGOING.with(|o| o.replace(prev));
    res.map(drop).map_err(|e| encode_error::<T>(e))
}

fn encode_error<T: ?Sized>(e: postcard::Error) -> Error {
    Error::Encode {
        type_name: std::any::type_name::<T>(),
        reason: ENCODE_REFUSAL
            .with(|r| r.borrow_mut().take())
            .unwrap_or_else(|| e.to_string()),
    }
}

/// Encodes `value` (postcard), collecting the descriptors of the handles inside it.
pub fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<Vec<RawFd>> {
    ENCODE_REFUSAL.with(|r| r.borrow_mut().take());
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
        Err(e) => Err(encode_error::<T>(e)),
    }
}

/// Descriptors that came from a peer with a frame. Whatever nothing takes out of it is closed on
/// the closer thread (see `closer`): its last close may block, and the peer chose it.
#[derive(Debug, Default)]
pub struct PeerFds(pub(crate) Vec<OwnedFd>);

impl PeerFds {
    /// Whether no descriptor came.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The descriptor at `i`, borrowed.
    pub(crate) fn fd(&self, i: usize) -> Option<BorrowedFd<'_>> {
        self.0.get(i).map(|f| f.as_fd())
    }

    /// The first descriptor (alone) and the others; `None` if there is none.
    pub(crate) fn split_first(mut self) -> Option<(PeerFds, PeerFds)> {
        if self.0.is_empty() {
            return None;
        }
        let rest = self.0.split_off(1);
        Some((PeerFds(std::mem::take(&mut self.0)), PeerFds(rest)))
    }

    /// Takes the first descriptor; the others are closed on the closer thread.
    pub fn first(self) -> Option<OwnedFd> {
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
pub fn decode<T: DeserializeOwned>(bytes: &[u8], fds: impl Into<Vec<OwnedFd>>) -> Result<T> {
    let (value, rest) = decode_prefix::<T>(bytes, fds)?;
    if !rest.is_empty() {
        return Err(left_over(std::any::type_name::<T>(), rest.len()));
    }
    Ok(value)
}

/// Decodes a `T` from the front of `bytes`; returns it and the bytes after it.
pub fn decode_prefix<T: DeserializeOwned>(
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
pub fn with_incoming<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let prev = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let out = f();
    close_unclaimed(INCOMING.with(|i| i.replace(prev)));
    out
}

fn close_unclaimed(left: Option<Vec<Option<OwnedFd>>>) {
    crate::closer::close_later(left.into_iter().flatten().flatten());
}

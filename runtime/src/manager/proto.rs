//! What travels between proxies and the manager: requests, responses, faults, and operations
//! packed as bytes (with their descriptors) so one untyped manager serves every `T`.

use std::os::fd::{AsFd, OwnedFd, RawFd};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use procactor_os::code::{self, CodeRef, SignedCode};

use crate::error::Error;
use crate::message::{Message, Schema};
use crate::wire::{self, Fd, SendFd};

/// A request to the manager. `P` is [`Packed`] in the manager and [`PackedRef`] in a proxy:
/// both have the same encoding.
#[derive(Serialize, Deserialize)]
pub(crate) enum Request<P> {
    /// Host a new object built by `make` from `init`; the sender holds one reference.
    Create { make: FnRef, init: P },
    /// Apply `op` to object `obj`, whose kind (type fingerprint) must be `kind`.
    Call { obj: u64, kind: u64, op: P },
    /// A lifeline this connection made (see `proxy`): `end` carries the end the manager watches.
    /// Sent before the first `Lend` that names it.
    Line { line: u64, end: P },
    /// A proxy to `obj` was serialized: `lend` keeps it alive until a receiver adopts it
    /// (`lend` 0: for good, see `Namespace`). `line`: the lifeline its bytes carry (0: none).
    Lend { obj: u64, lend: u64, line: u64 },
    /// No more lends will name this connection's lifeline `line`.
    LineDone { line: u64 },
    /// This connection holds one more reference, the one lent as `lend` (0: none lent).
    /// `proof` carries a copy of the lend's lifeline end, if it had one: the line cannot hang up
    /// before this adoption is handled.
    Adopt { obj: u64, lend: u64, proof: P },
    /// This connection holds one reference less.
    Release { obj: u64 },
    /// How many objects the manager hosts.
    Count,
    /// `Call` for a remote session: no proxy is decoded from `op` nor encoded into the answer
    /// (a proxy names this host's sockets, and a forged one would make the manager adopt, or
    /// connect to, what the remote peer chose). Only on an object the session holds.
    RemoteCall { obj: u64, kind: u64, op: P },
    /// A new object for a remote session, of a kind its gateway allows (built by this
    /// process's own constructor for it: the peer names the kind, never a function).
    RemoteCreate {
        kind: u64,
        kind_name: String,
        init: P,
    },
    /// A reference for a remote session to the object its gateway published as `name`.
    Get { name: String, kind: u64 },
    /// A new gateway, owned by this connection (it closes with it): its id, as `Created`.
    OpenGateway,
    /// Remote sessions of `gateway` may create objects of proxy kind `kind` with `make`.
    Allow {
        gateway: u64,
        kind: u64,
        kind_name: String,
        make: FnRef,
    },
    /// Publishes `obj` (which this connection holds) as `name` to the sessions of `gateway`;
    /// the gateway holds a reference to it while it is published.
    Publish {
        gateway: u64,
        name: String,
        obj: u64,
        kind: u64,
    },
    /// Serve `conn`, a network connection whose handshake is over, as a remote session of
    /// `gateway`.
    Session { gateway: u64, conn: P },
    /// How many sessions `gateway` has, as `Count`.
    Sessions { gateway: u64 },
    /// Ends `gateway`: its sessions, and what it published.
    CloseGateway { gateway: u64 },
}

impl Message for Request<Packed> {
    fn schema() -> Schema {
        Schema::of::<Self>("procactor-manager-4")
    }
}

/// The manager's answer to an ask.
#[derive(Serialize, Deserialize)]
pub(crate) enum Response {
    Created(u64),
    Value(Packed),
    Failed(Fault),
    Count(u64),
    Done,
}

impl Message for Response {
    fn schema() -> Schema {
        Schema::of::<Self>("procactor-manager-4")
    }
}

/// Why an operation failed in the manager (turned into an [`Error`] in the caller).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    Index {
        index: u64,
        len: u64,
    },
    NotFound(String),
    Gone(u64),
    Panicked {
        message: String,
        location: Option<String>,
    },
    Bad(String),
    /// A pipelined operation on this object failed earlier; this one was not applied.
    Earlier(Box<Fault>),
    /// The object changed size since an iteration over it began.
    Changed(String),
}

impl Fault {
    pub(crate) fn bad(e: impl std::fmt::Display) -> Fault {
        Fault::Bad(e.to_string())
    }

    pub(crate) fn into_error(self, pid: u32) -> Error {
        match self {
            Fault::Index { index, len } => Error::IndexOutOfRange {
                index: index as usize,
                len: len as usize,
            },
            Fault::NotFound(what) => Error::NotFound(what),
            Fault::Gone(id) => Error::ObjectGone { id },
            Fault::Panicked { message, location } => Error::Rejected {
                name: "manager".into(),
                pid,
                reason: format!(
                    "the function panicked at {}: {message}",
                    location.as_deref().unwrap_or("<unknown>")
                )
                .into(),
            },
            Fault::Bad(reason) => Error::Rejected {
                name: "manager".into(),
                pid,
                reason: reason.into(),
            },
            Fault::Changed(what) => Error::Changed(what),
            Fault::Earlier(f) => match f.into_error(pid) {
                Error::Rejected { name, pid, reason } => Error::Rejected {
                    name,
                    pid,
                    reason: format!("an earlier pipelined operation failed: {reason}").into(),
                },
                e => e,
            },
        }
    }
}

/// A function as it travels to the manager: by name if it is registered
/// (`#[procactor::entry]`), which works from any binary of the program, or signed with the
/// process tree's secret (see `procactor_os::code`). The manager calls it only if the name
/// resolves to a function of the expected type, or the signature checks: a reference from
/// another program, a corrupted one or one sent as another type is refused, never called.
#[derive(Deserialize, Clone, Debug)]
pub(crate) enum FnRef {
    Signed(SignedCode),
    Named(String),
}

/// [`FnRef`] as it is written (the same encoding). An address means nothing to another program
/// (and its tag nothing to another process tree): for a remote manager, functions go by name
/// only, and a signed one fails to encode, at the caller.
impl Serialize for FnRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        enum Wire<'a> {
            Signed(&'a SignedCode),
            Named(&'a str),
        }
        match self {
            FnRef::Signed(_) if super::remote::encoding_remote() => {
                super::remote::refused_unnamed();
                Err(serde::ser::Error::custom(NAMED_ONLY))
            }
            FnRef::Signed(c) => Wire::Signed(c).serialize(s),
            FnRef::Named(n) => Wire::Named(n).serialize(s),
        }
    }
}

/// Why a function without a name is refused by a remote manager.
pub(crate) const NAMED_ONLY: &str = "a function sent to a remote manager must have a name: mark \
    it #[procactor::entry] (an address means nothing to another program)";

/// The reference to `f` sent to the manager.
pub(crate) fn sign<F: code::FnPtr>(f: F) -> Result<FnRef, Error> {
    match code::name_of(f) {
        Some(name) => Ok(FnRef::Named(name.to_string())),
        None => Ok(FnRef::Signed(CodeRef::new(f)?.sign())),
    }
}

fn checked<F: code::FnPtr>(p: FnRef) -> Result<F, Fault> {
    match p {
        FnRef::Signed(c) => CodeRef::<F>::verify(c).map(CodeRef::get),
        FnRef::Named(name) => code::lookup::<F>(&name),
    }
    .map_err(|e| Fault::Bad(e.to_string()))
}

/// `fn(&mut T)`, as sent by a typed proxy of `T`.
pub(crate) fn mut_fn<T: 'static>(p: FnRef) -> Result<fn(&mut T), Fault> {
    checked(p)
}

/// `fn(&T, &T) -> Ordering` (a sort's comparison), as sent by a typed proxy of `T`.
pub(crate) fn cmp_fn<T: 'static>(p: FnRef) -> Result<fn(&T, &T) -> std::cmp::Ordering, Fault> {
    checked(p)
}

/// `fn(&T, &T) -> bool` (equality), as sent by a typed proxy of `T`.
pub(crate) fn eq_fn<T: 'static>(p: FnRef) -> Result<fn(&T, &T) -> bool, Fault> {
    checked(p)
}

/// The equality function of `T`, to send with a search.
pub(crate) fn eq_ptr<T: PartialEq + 'static>() -> Result<FnRef, Error> {
    sign(<T as PartialEq>::eq as fn(&T, &T) -> bool)
}

/// A `MakeFn` as sent by a typed proxy.
pub(crate) fn make_fn(p: FnRef) -> Result<super::server::MakeFn, Fault> {
    checked(p)
}

/// An encoded value with the descriptors of the handles inside it (owned).
#[derive(Default)]
pub(crate) struct Packed {
    pub bytes: Vec<u8>,
    pub fds: Vec<Fd>,
}

impl Packed {
    /// Encodes `value`, duplicating the descriptors of its handles (the value may be dropped
    /// before the packed bytes are sent).
    pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Packed, Error> {
        let mut bytes = Vec::new();
        let raw = wire::encode(value, &mut bytes)?;
        let fds = raw
            .into_iter()
            .map(|fd| {
                wire::borrow_collected(fd)
                    .try_clone_to_owned()
                    .map(Fd)
                    .map_err(|e| Error::io("dup", e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Packed { bytes, fds })
    }

    /// Decodes the value (its handles take the descriptors).
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        wire::decode(
            &self.bytes,
            self.fds.into_iter().map(|f| f.0).collect::<Vec<_>>(),
        )
    }

    /// Duplicates the bytes and descriptors (to answer with a stored value).
    pub(crate) fn try_clone(&self) -> Result<Packed, Error> {
        let fds = self
            .fds
            .iter()
            .map(|f| f.0.as_fd().try_clone_to_owned().map(Fd))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::io("dup", e))?;
        Ok(Packed {
            bytes: self.bytes.clone(),
            fds,
        })
    }

    pub(crate) fn into_parts(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (self.bytes, self.fds.into_iter().map(|f| f.0).collect())
    }
}

/// An encoded value and the descriptors `wire::encode` collected from it (borrowed from a value
/// that outlives the send).
pub(crate) struct PackedRef<'a> {
    pub bytes: &'a [u8],
    pub fds: Vec<SendFd<'a>>,
}

impl<'a> PackedRef<'a> {
    pub(crate) fn new(bytes: &'a [u8], fds: &[RawFd]) -> PackedRef<'a> {
        PackedRef {
            bytes,
            fds: fds
                .iter()
                .map(|&fd| SendFd(wire::borrow_collected(fd)))
                .collect(),
        }
    }
}

struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Serialize for Packed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (BytesRef(&self.bytes), &self.fds).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (ByteBuf(bytes), fds) = <(ByteBuf, Vec<Fd>)>::deserialize(d)?;
        Ok(Packed { bytes, fds })
    }
}

impl Serialize for PackedRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (BytesRef(self.bytes), &self.fds).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_ref_and_packed_encode_alike() {
        let inner = [1u8, 2, 3, 200];
        let mut a = Vec::new();
        let fds = wire::encode(
            &Request::Call {
                obj: 7,
                kind: 9,
                op: PackedRef::new(&inner, &[]),
            },
            &mut a,
        )
        .unwrap();
        assert!(fds.is_empty());
        let back: Request<Packed> = wire::decode(&a, Vec::new()).unwrap();
        match back {
            Request::Call { obj, kind, op } => {
                assert_eq!((obj, kind, op.bytes), (7, 9, inner.to_vec()));
            }
            _ => panic!("wrong variant"),
        }
    }

    fn double(n: &mut u64) {
        *n *= 2;
    }

    #[test]
    fn function_references_are_called_only_if_their_tag_checks() {
        let good = sign(double as fn(&mut u64)).unwrap();
        let f = mut_fn::<u64>(good.clone()).expect("a reference this process made checks");
        let mut n = 21;
        f(&mut n);
        assert_eq!(n, 42);
        // Sent as another type: refused (`procactor_os::code` tests forged and moved ones).
        assert!(mut_fn::<String>(good.clone()).is_err());
        assert!(eq_fn::<u64>(good).is_err());
    }
}

//! The proxy side: [`ProxyCore`], what every typed proxy wraps. It sends operations to the
//! manager over this process's connection to it, and counts this process's reference.
//!
//! # How a reference travels
//!
//! The manager counts references per connection, so a process that dies (even by SIGKILL)
//! releases what it holds when its connection closes. A proxy that travels must therefore never
//! be, even for an instant, a reference that nobody's death can release:
//!
//! - **Lend.** Serializing a proxy *lends* a reference (`Lend`, written to the sender's
//!   connection before the bytes can leave), which keeps the object alive while the bytes
//!   travel: a proxy can be sent and its original dropped at once, and a sender killed right
//!   after sending loses nothing.
//! - **Adopt at decode.** Decoding a proxy adopts the lend over the decoder's own connection,
//!   written to the socket before the decode returns. From then on the decoder's death releases
//!   it; a decoder killed before that write never received the value (see lifelines).
//! - **Lifelines.** Bytes that travel through procactor's sockets (`Process` arguments, `Pipe`,
//!   actor messages, Pool tasks) carry a *lifeline*: one end of a socket pair whose other end the
//!   manager watches. The proxies of one message (to one manager) share one; the proxy clone that
//!   was serialized keeps the sender's copy open while it lives, and a decoder sends its copy
//!   back with its adoption. When every copy is closed (the serialized clone dropped, and the
//!   bytes decoded, or destroyed: a receiver killed before reading, a pipe dropped with messages
//!   in it), the manager sees the hang-up and releases the lends of that line nobody adopted.
//! - **Answers.** A proxy inside the manager's answer (a list of lists) is lent to the connection
//!   that asked: released if that process dies before decoding it, or if the answer is not sent.
//!
//! Ordering: a lend is written before its bytes leave and the original's release after it, on
//! one connection, so the manager sees them in that order. An adoption can still arrive before
//! its lend (another connection): the manager remembers it, and the lend then counts nothing.
//! An adoption carries its line's end, so a line hangs up only after every adoption of its lends
//! was handled; a lend that arrives for a line already hung up belongs to bytes that are gone.
//!
//! Waits: an adoption is a write to the manager, which never waits for its callers (its replies
//! do not block), so decoding in an answer of the same connection (a list of lists: the answer
//! was read whole first), in an actor's handler or in a pool worker cannot wait on itself; in
//! the manager's own loop it is counted locally. The one wait is the first connection to the
//! manager (its welcome comes from its loop): a hosted object that waits for a process which is
//! decoding a first proxy of that same manager waits for ever.
//!
//! Not guarded (kept until adopted, or until the manager ends): a proxy in a `Queue` item that
//! is never taken (a queue keeps bytes in shared memory, where no descriptor can go), bytes made
//! outside procactor (plain postcard), a `Namespace` field (pinned on purpose), proxies the
//! manager itself serializes other than in its answers (a hosted object sending them on), and
//! lines beyond the manager's budget (a quarter of its descriptor limit, at most 4096 at once).

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::proto::{PackedRef, Request, Response};
use super::remote::Session;
use super::server::{self, LocalRef, ManagerCore};
use crate::actor::ActorRef;
use crate::error::{Error, Result};
use crate::sys;
use crate::wire::{self, Channel, Wait};

/// No lend waits to be adopted.
const ADOPTED: u64 = u64::MAX;

/// Lifelines remembered per thread, to find the one a message being encoded carries already.
const RECENT_LINES: usize = 8;

thread_local! {
    /// Proxies serialized now are pinned: their objects live as long as the manager.
    static PINNING: Cell<bool> = const { Cell::new(false) };
    /// Lifelines this thread put into messages lately (the newest last).
    static RECENT: RefCell<Vec<Weak<Lifeline>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with every proxy it serializes pinned (a `Namespace` field: stored as bytes, so the
/// manager cannot count the references inside).
pub(crate) fn pinning<R>(f: impl FnOnce() -> R) -> R {
    let prev = PINNING.with(|p| p.replace(true));
    let out = f();
    PINNING.with(|p| p.set(prev));
    out
}

/// A fresh lend or lifeline id: unique among those in flight (process-unique counter, a
/// per-process random-ish base so a recycled pid does not repeat a dead process's ids).
fn new_id() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let base = *BASE.get_or_init(|| {
        let t = sys::monotonic_ns();
        (u64::from(sys::getpid()) << 40) ^ t.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    let id = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) << 1);
    if id == 0 || id == ADOPTED {
        1
    } else {
        id
    }
}

/// The sender's end of a lifeline (see the module docs): open while a proxy clone serialized
/// with it lives; its copies travel with the bytes.
struct Lifeline {
    id: u64,
    manager: ActorRef<ManagerCore>,
    /// A `Channel`, so that a forked child does not keep it open (it closes inherited ones).
    end: Channel,
    /// The process that made it: a forked copy neither uses nor retires it.
    pid: u32,
}

impl Lifeline {
    /// A new line: its other end goes to the manager (queued before any lend that names it).
    fn open(manager: &ActorRef<ManagerCore>) -> Result<Arc<Lifeline>> {
        let (watched, end) = Channel::pair()?;
        let id = new_id();
        let raw = [watched.as_fd().as_raw_fd()];
        // The connection duplicates the descriptor: ours closes at the end of this scope.
        manager
            .tell_as(&Request::Line {
                line: id,
                end: PackedRef::new(&[], &raw),
            })
            .map_err(gone)?;
        Ok(Arc::new(Lifeline {
            id,
            manager: manager.clone(),
            end,
            pid: sys::getpid(),
        }))
    }

    fn ours(&self) -> bool {
        self.pid == sys::getpid()
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        if self.ours() {
            // No lend will name it any more: the manager may forget it once it hangs up.
            let _ = self
                .manager
                .tell_as(&Request::<PackedRef>::LineDone { line: self.id });
        }
    }
}

/// How a proxy reaches its manager.
pub(crate) enum Via {
    /// Over this process's connection to a manager on this host.
    Local(ActorRef<ManagerCore>),
    /// Over a network session with a remote manager's gateway (see `remote`).
    Remote(Arc<Session>),
}

impl Via {
    /// A local manager's actor (`None` for a remote one: what needs it does not apply).
    fn local(&self) -> Option<&ActorRef<ManagerCore>> {
        match self {
            Via::Local(m) => Some(m),
            Via::Remote(_) => None,
        }
    }

    /// The manager's pid, as errors name it (a remote manager's, as its gateway said).
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Via::Local(m) => m.pid(),
            Via::Remote(s) => s.manager_pid(),
        }
    }

    /// Which manager: its actor id, or the session's (for equality of proxies).
    fn id(&self) -> (bool, u64) {
        match self {
            Via::Local(m) => (false, m.id().0),
            Via::Remote(s) => (true, Arc::as_ptr(s) as u64),
        }
    }
}

/// One process's reference to one object of a manager.
pub(crate) struct ProxyCore {
    pub(crate) manager: Via,
    pub(crate) obj: u64,
    kind: u64,
    /// The process this reference belongs to: a forked copy neither adopts nor releases it.
    pid: u32,
    /// A lend whose adoption at decode failed, retried on first use ([`ADOPTED`]: none).
    pending: AtomicU64,
}

impl ProxyCore {
    /// The reference a `Create` gave this process.
    pub(crate) fn created(manager: Via, obj: u64, kind: u64) -> ProxyCore {
        ProxyCore {
            manager,
            obj,
            kind,
            pid: sys::getpid(),
            pending: AtomicU64::new(ADOPTED),
        }
    }

    fn in_manager(&self) -> bool {
        self.manager
            .local()
            .is_some_and(|m| server::is_hosting(m.id().0))
    }

    /// Adopts `lend` over this process's connection, written out before it returns; `proof`
    /// is this process's copy of the lend's lifeline, sent along (see the module docs).
    fn adopt_now(&self, lend: u64, proof: Option<RawFd>) -> Result<()> {
        let raw: Vec<RawFd> = proof.into_iter().collect();
        let Some(manager) = self.manager.local() else {
            return Ok(()); // a remote proxy is never decoded: it adopts nothing
        };
        manager
            .tell_now_as(&Request::Adopt {
                obj: self.obj,
                lend,
                proof: PackedRef::new(&[], &raw),
            })
            .map_err(gone)
    }

    /// Retries an adoption that failed at decode time (rare: the connection could not be made).
    fn adopt_pending(&self) -> Result<()> {
        if self.pending.load(Ordering::Relaxed) == ADOPTED {
            return Ok(());
        }
        let lend = self.pending.swap(ADOPTED, Ordering::AcqRel);
        if lend == ADOPTED {
            return Ok(());
        }
        self.adopt_now(lend, None)
    }

    fn send_tell(&self, req: &Request<PackedRef>) -> Result<()> {
        match &self.manager {
            Via::Local(m) => m.tell_as(req).map_err(gone),
            Via::Remote(s) => s.tell(req),
        }
    }

    /// Applies `op` in the manager and returns its result.
    pub(crate) fn call<O: Serialize + ?Sized, R: DeserializeOwned>(&self, op: &O) -> Result<R> {
        self.check_outside()?;
        self.adopt_pending()?;
        let mut bytes = Vec::new();
        let fds = self.encode(op, &mut bytes)?;
        let req = Request::Call {
            obj: self.obj,
            kind: self.kind,
            op: PackedRef::new(&bytes, &fds),
        };
        let resp: Response = match &self.manager {
            Via::Local(m) => m.ask_as(&req, Wait::Forever).map_err(gone)?,
            Via::Remote(s) => s.call(&req)?,
        };
        match resp {
            Response::Value(p) => p.decode(),
            Response::Failed(f) => Err(f.into_error(self.manager.pid())),
            _ => Err(unexpected()),
        }
    }

    /// Sends `op` without waiting (pipelined): a failure is reported by the next call on this
    /// object from this process that waits.
    pub(crate) fn tell<O: Serialize + ?Sized>(&self, op: &O) -> Result<()> {
        self.check_outside()?;
        self.adopt_pending()?;
        let mut bytes = Vec::new();
        let fds = self.encode(op, &mut bytes)?;
        self.send_tell(&Request::Call {
            obj: self.obj,
            kind: self.kind,
            op: PackedRef::new(&bytes, &fds),
        })
    }

    /// Encodes an operation; for a remote manager, only what can cross hosts (no descriptors,
    /// functions by name).
    fn encode<O: Serialize + ?Sized>(&self, op: &O, bytes: &mut Vec<u8>) -> Result<Vec<RawFd>> {
        match &self.manager {
            Via::Local(_) => wire::encode(op, bytes),
            Via::Remote(_) => super::remote::encode_op(op, bytes).map(|()| Vec::new()),
        }
    }

    fn check_outside(&self) -> Result<()> {
        if self.in_manager() {
            return Err(Error::Deadlock(
                "a proxy was used inside its own manager (from a hosted object's method): \
                 the manager serves one operation at a time",
            ));
        }
        Ok(())
    }

    /// Lends a reference for a serialized copy of this proxy whose bytes carry lifeline `line`
    /// (0: none; `pinned`: for good); returns the lend id.
    fn lend(&self, pinned: bool, line: u64) -> u64 {
        let lend = if pinned { 0 } else { new_id() };
        if self.in_manager() {
            server::local_lend(self.obj, lend);
        } else if let (Some(manager), Ok(())) = (self.manager.local(), self.adopt_pending()) {
            // Written out now, not queued: the bytes may leave as soon as we return, and if this
            // process died before the flusher wrote the lend, the object could be freed under
            // them (this process's own reference released, no lend counted).
            // Errors: the manager is gone, and the copy will find it gone too.
            let _ = manager.tell_now_as(&Request::<PackedRef>::Lend {
                obj: self.obj,
                lend,
                line,
            });
        }
        lend
    }
}

impl Drop for ProxyCore {
    fn drop(&mut self) {
        if self.pid != sys::getpid() {
            return;
        }
        if self.in_manager() {
            server::local(LocalRef::Release { obj: self.obj });
            return;
        }
        // Never adopted: nothing of ours to release (the lend stays with its owner).
        if self.pending.load(Ordering::Relaxed) != ADOPTED {
            return;
        }
        // Errors: the manager is gone, and with it every count.
        let _ = self.send_tell(&Request::<PackedRef>::Release { obj: self.obj });
    }
}

/// Why a proxy is refused inside a remote session's operation.
const NOT_ACROSS_HOSTS: &str = "proxies do not cross hosts: a remote manager's values and \
     answers cannot hold proxies";

/// A dead manager is `Disconnected` to its proxies.
pub(super) fn gone(e: Error) -> Error {
    match e {
        Error::ActorDied { .. } => Error::Disconnected,
        e => e,
    }
}

fn unexpected() -> Error {
    Error::Decode {
        expected: "a manager's answer",
        reason: "an answer of another kind".into(),
    }
}

/// A proxy as it travels: its manager, object, type, lend, and lifeline (id 0: none), whose
/// descriptor is `line_fd` in the frame's list.
#[derive(Deserialize)]
struct ProxyWire {
    manager: ActorRef<ManagerCore>,
    obj: u64,
    kind: u64,
    lend: u64,
    line: u64,
    line_fd: u32,
}

/// [`ProxyWire`] as it is written (same encoding).
#[derive(Serialize)]
struct ProxyWireOut<'a> {
    manager: &'a ActorRef<ManagerCore>,
    obj: u64,
    kind: u64,
    lend: u64,
    line: u64,
    line_fd: LineFd<'a>,
}

/// Where a lifeline's descriptor is in the frame being encoded.
enum LineFd<'a> {
    None,
    /// Already in it (another proxy of the same message put it there).
    At(u32),
    /// Not yet: added now.
    New(BorrowedFd<'a>),
}

impl Serialize for LineFd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            LineFd::None => 0u32.serialize(s),
            LineFd::At(i) => i.serialize(s),
            LineFd::New(fd) => wire::serialize_fd(*fd, s),
        }
    }
}

/// The shared part of every typed proxy: a counted reference, typed by `P` (the proxy type,
/// whose fingerprint the manager checks on every call).
pub(crate) struct Handle<P> {
    pub(crate) core: Arc<ProxyCore>,
    /// The lifeline this clone was serialized with: kept open while the clone lives, so the
    /// bytes it was sent in stay guarded at least until they are written.
    line: Mutex<Option<Arc<Lifeline>>>,
    _p: PhantomData<fn() -> P>,
}

impl<P> Clone for Handle<P> {
    fn clone(&self) -> Self {
        Handle {
            core: self.core.clone(),
            line: Mutex::new(None),
            _p: PhantomData,
        }
    }
}

impl<P> Handle<P> {
    pub(crate) fn kind() -> u64 {
        wire::fingerprint::<P>()
    }

    pub(crate) fn new(core: ProxyCore) -> Self {
        Self::from_core(Arc::new(core))
    }

    pub(crate) fn from_core(core: Arc<ProxyCore>) -> Self {
        Handle {
            core,
            line: Mutex::new(None),
            _p: PhantomData,
        }
    }

    pub(crate) fn call<O: Serialize + ?Sized, R: DeserializeOwned>(&self, op: &O) -> Result<R> {
        self.core.call(op)
    }

    pub(crate) fn tell<O: Serialize + ?Sized>(&self, op: &O) -> Result<()> {
        self.core.tell(op)
    }

    /// Whether its manager is remote (reached through a gateway).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.core.manager, Via::Remote(_))
    }

    pub(crate) fn fmt(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("object", &self.core.obj)
            .field("manager_pid", &self.core.manager.pid())
            .field("remote", &matches!(self.core.manager, Via::Remote(_)))
            .finish()
    }

    /// The lifeline for this proxy in the message being encoded: the one of its manager the
    /// message carries already, else this clone's (or a new one), added to the message. `None`:
    /// no line could be made (the manager is gone, or no descriptor is left).
    fn line_for_message(&self) -> Option<Arc<Lifeline>> {
        let local = self.core.manager.local()?;
        let manager = local.id();
        let carried = RECENT.with(|r| {
            let mut r = r.borrow_mut();
            r.retain(|w| w.strong_count() > 0);
            r.iter().filter_map(Weak::upgrade).find(|l| {
                l.ours()
                    && l.manager.id() == manager
                    && wire::collected_index(l.end.as_fd().as_raw_fd()).is_some()
            })
        });
        let mut mine = self.line.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = carried {
            mine.get_or_insert_with(|| l.clone());
            return Some(l);
        }
        let l = match &*mine {
            Some(l) if l.ours() => l.clone(),
            _ => {
                let l = Lifeline::open(local)
                    .inspect_err(|e| {
                        log::debug!(target: "procactor::manager", "a proxy travels without a lifeline: {e}");
                    })
                    .ok()?;
                *mine = Some(l.clone());
                l
            }
        };
        RECENT.with(|r| {
            let mut r = r.borrow_mut();
            if r.len() >= RECENT_LINES {
                r.remove(0);
            }
            r.push(Arc::downgrade(&l));
        });
        Some(l)
    }
}

impl<P> PartialEq for Handle<P> {
    fn eq(&self, other: &Self) -> bool {
        self.core.obj == other.core.obj && self.core.manager.id() == other.core.manager.id()
    }
}

impl<P> Serialize for Handle<P> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if server::remote_op() {
            return Err(wire::refuse_encode(NOT_ACROSS_HOSTS));
        }
        let Some(manager) = self.core.manager.local() else {
            return Err(serde::ser::Error::custom(
                "a proxy of a remote manager cannot travel to another process: connect to the \
                 manager from there (RemoteManager::connect), or publish the object by name",
            ));
        };
        let pinned = PINNING.with(Cell::get);
        // A line only where the bytes can carry a descriptor (not in a Queue, not in plain
        // postcard), and not for the manager's own answers (lent to the caller instead).
        let line = if !pinned && !self.core.in_manager() && wire::collecting_fds() {
            self.line_for_message()
        } else {
            None
        };
        let line_id = line.as_ref().map_or(0, |l| l.id);
        let lend = self.core.lend(pinned, line_id);
        let line_fd = match &line {
            None => LineFd::None,
            Some(l) => match wire::collected_index(l.end.as_fd().as_raw_fd()) {
                Some(i) => LineFd::At(i),
                None => LineFd::New(l.end.as_fd()),
            },
        };
        ProxyWireOut {
            manager,
            obj: self.core.obj,
            kind: self.core.kind,
            lend,
            line: line_id,
            line_fd,
        }
        .serialize(s)
    }
}

impl<'de, P> Deserialize<'de> for Handle<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if server::remote_op() {
            return Err(crate::wire::refuse(NOT_ACROSS_HOSTS));
        }
        let w = ProxyWire::deserialize(d)?;
        if w.kind != Self::kind() {
            return Err(crate::wire::refuse(format!(
                "a proxy of another type than {} (object #{})",
                std::any::type_name::<P>(),
                w.obj
            )));
        }
        let core = ProxyCore {
            manager: Via::Local(w.manager),
            obj: w.obj,
            kind: w.kind,
            pid: sys::getpid(),
            pending: AtomicU64::new(ADOPTED),
        };
        if core.in_manager() {
            // The manager itself now holds it (inside a hosted value): counted at once.
            server::local(LocalRef::Adopt {
                obj: core.obj,
                lend: w.lend,
            });
        } else {
            // Ours from now on: written out before the value is handed over (see module docs).
            let proof = match w.line {
                0 => None,
                _ => wire::incoming_dup(w.line_fd),
            };
            if let Err(e) = core.adopt_now(w.lend, proof.as_ref().map(|f| f.as_raw_fd())) {
                log::debug!(target: "procactor::manager", "object #{} not adopted at decode: {e}", core.obj);
                core.pending.store(w.lend, Ordering::Release);
            }
        }
        Ok(Handle::new(core))
    }
}

/// The impls every typed proxy shares (each wraps a `Handle` in a field `handle`): `Clone`,
/// `Debug`, `PartialEq` (the same object), `Serialize` and `Deserialize`.
/// Items of a shared collection taken a page at a time (`ListProxy::iter`, `DictProxy::iter`):
/// the next page is fetched once the last one is used up, and the iteration ends after a short
/// page or an error.
pub(crate) struct Pages<T> {
    /// Items fetched so far.
    next: u64,
    page: std::vec::IntoIter<T>,
    done: bool,
}

impl<T> std::fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("next", &self.next)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> Pages<T> {
    pub(crate) fn new() -> Self {
        Pages {
            next: 0,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The next item, fetching `fetch(start)` (a page of at most `size` items from `start`)
    /// when the page in hand is used up.
    pub(crate) fn next(
        &mut self,
        size: u64,
        fetch: impl FnOnce(u64) -> crate::error::Result<Vec<T>>,
    ) -> Option<crate::error::Result<T>> {
        if let Some(x) = self.page.next() {
            return Some(Ok(x));
        }
        if self.done {
            return None;
        }
        match fetch(self.next) {
            Ok(items) => {
                self.done = (items.len() as u64) < size;
                self.next += items.len() as u64;
                self.page = items.into_iter();
                self.page.next().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

macro_rules! proxy_impls {
    ($name:ident [$($p:ident),*]) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { handle: self.handle.clone() }
            }
        }

        impl<$($p),*> std::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.handle.fmt(stringify!($name), f)
            }
        }

        /// Two proxies are equal when they refer to the same object.
        impl<$($p),*> PartialEq for $name<$($p),*> {
            fn eq(&self, other: &Self) -> bool {
                self.handle == other.handle
            }
        }

        impl<$($p),*> serde::Serialize for $name<$($p),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.handle, s)
            }
        }

        impl<'de, $($p),*> serde::Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name { handle: serde::Deserialize::deserialize(d)? })
            }
        }
    };
}
pub(crate) use proxy_impls;

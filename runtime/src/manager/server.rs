//! The manager's process: an actor whose state is a table of hosted objects, each with a
//! reference count kept per connection, so the references of a process that dies are released
//! when its connection closes.
//!
//! Objects are type-erased ([`Hosted`]): a proxy sends, with its `Create`, a pointer to the
//! monomorphised constructor for its `T` (same binary, checked), so one manager serves every
//! type without a registry. A proxy nested in a hosted value (a list of dicts) is a reference
//! the manager itself holds: its (de)serialization and drop here are counted as [`LOCAL`].
//!
//! Lends (see `proxy` for the rules) are kept with their owner until adopted: nobody (kept
//! until the manager ends), a lifeline (released when it hangs up: the manager watches one end
//! of it through its context), or the connection the manager answered with them (released when
//! that connection closes).

mod serving;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::proto::{Fault, Packed, Request, Response};
use crate::actor::{Actor, ActorId, Context, Down, InitError, RefInner};
use crate::bootstrap;
use crate::wire::Channel;

/// The holder token of references the manager itself holds (the event loop's tokens start at 1).
const LOCAL: u64 = 0;

/// Lifelines watched at once at most (and at most a quarter of the descriptor limit): past
/// that, lends travel unguarded (kept until adopted), and the manager keeps descriptors for
/// its callers.
const MAX_LINES: u64 = 4096;

/// An object in the manager: applies operations it decodes itself.
pub(crate) trait Hosted {
    /// The fingerprint of the proxy type that may call it, and a readable name of it.
    fn kind(&self) -> (u64, &'static str);
    /// Applies one encoded operation, writing the encoded result into `out`.
    fn call(&mut self, op: &[u8], fds: Vec<OwnedFd>, out: &mut Packed) -> Result<(), Fault>;
}

/// A typed hosted object: each proxy kind implements this, and gets [`Hosted`] from it.
pub(crate) trait Object: 'static {
    /// The operations it applies, as the manager decodes them.
    type Op: serde::de::DeserializeOwned;
    /// The tag whose fingerprint its proxies carry, and the proxy type (named in errors).
    type Tag;
    type Proxy;
    /// Applies one operation, writing the encoded result into `out`.
    fn apply(&mut self, op: Self::Op, out: &mut Packed) -> Result<(), Fault>;
}

impl<O: Object> Hosted for O {
    fn kind(&self) -> (u64, &'static str) {
        (
            super::proxy::Handle::<O::Tag>::kind(),
            std::any::type_name::<O::Proxy>(),
        )
    }

    fn call(&mut self, op: &[u8], fds: Vec<OwnedFd>, out: &mut Packed) -> Result<(), Fault> {
        let op: O::Op = crate::wire::decode(op, fds).map_err(Fault::bad)?;
        self.apply(op, out)
    }
}

/// A copy of `x` through its encoding (for a `T` that is not `Clone`: an item to take out of a
/// set or a map by a reference to it).
pub(crate) fn copy_by_encoding<T: Serialize + serde::de::DeserializeOwned>(
    x: &T,
) -> Result<T, Fault> {
    let mut bytes = Vec::new();
    crate::wire::encode_plain(x, &mut bytes).map_err(Fault::bad)?;
    crate::wire::decode(&bytes, Vec::new()).map_err(Fault::bad)
}

/// Builds an object from its encoded initial value (monomorphised per type; sent as a pointer).
pub(crate) type MakeFn = fn(init: &[u8], fds: Vec<OwnedFd>) -> Result<Box<dyn Hosted>, Fault>;

/// Encodes an operation's result into `out` (proxies inside it are lent to the caller).
pub(crate) fn reply<T: Serialize + ?Sized>(value: &T, out: &mut Packed) -> Result<(), Fault> {
    let prev = ANSWERING.with(|a| a.replace(true));
    let packed = Packed::encode(value);
    ANSWERING.with(|a| a.set(prev));
    *out = packed.map_err(Fault::bad)?;
    Ok(())
}

/// A change to the manager's own references, made while a value was being decoded, encoded or
/// dropped inside an operation (the table is busy then): applied once the operation returns.
pub(crate) enum LocalRef {
    Adopt {
        obj: u64,
        lend: u64,
    },
    /// `answer`: serialized into the answer to the caller (lent to its connection).
    Lend {
        obj: u64,
        lend: u64,
        answer: bool,
    },
    Release {
        obj: u64,
    },
}

/// The id of the manager this process is (0: none).
static HOSTING: AtomicU64 = AtomicU64::new(0);

/// The manager's own ref, in its process (hosted actors' contexts refer to it).
static MYSELF: OnceLock<Arc<RefInner>> = OnceLock::new();

/// The manager's own ref, inside the manager's process.
pub(crate) fn myself() -> Option<Arc<RefInner>> {
    MYSELF.get().cloned()
}

thread_local! {
    static PENDING: RefCell<Vec<LocalRef>> = const { RefCell::new(Vec::new()) };
    /// The manager's event loop is in this thread.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
    /// An answer to the caller is being encoded.
    static ANSWERING: Cell<bool> = const { Cell::new(false) };
    /// An operation of a remote session is being applied: proxies neither decode nor encode.
    static REMOTE_OP: Cell<bool> = const { Cell::new(false) };
}

/// Whether an operation of a remote session is being applied on this thread (see
/// `Request::RemoteCall`).
pub(crate) fn remote_op() -> bool {
    REMOTE_OP.with(Cell::get)
}

/// Runs `f` as an operation of a remote session.
fn as_remote<R>(f: impl FnOnce() -> R) -> R {
    let prev = REMOTE_OP.with(|r| r.replace(true));
    let out = f();
    REMOTE_OP.with(|r| r.set(prev));
    out
}

/// The manager's pid (a process forked from the manager's thread is not the manager).
static HOSTING_PID: AtomicU32 = AtomicU32::new(0);

/// Whether this thread is the event loop of the manager with actor id `manager`.
pub(crate) fn is_hosting(manager: u64) -> bool {
    IN_LOOP.with(Cell::get)
        && HOSTING.load(Ordering::Relaxed) == manager
        && HOSTING_PID.load(Ordering::Relaxed) == crate::sys::getpid()
}

/// Records a change to the manager's own references (see [`LocalRef`]).
pub(crate) fn local(change: LocalRef) {
    PENDING.with(|p| p.borrow_mut().push(change));
}

/// Records a lend the manager makes (a proxy it holds was serialized).
pub(crate) fn local_lend(obj: u64, lend: u64) {
    let answer = ANSWERING.with(Cell::get);
    local(LocalRef::Lend { obj, lend, answer });
}

struct Entry {
    obj: Box<dyn Hosted>,
    /// References: held by connections (and `LOCAL`), lent and not yet adopted, pinned.
    refs: u64,
}

/// Who answers for a lend until it is adopted.
#[derive(Clone, Copy)]
enum Owner {
    /// Nobody: kept until adopted or until the manager ends.
    Free,
    /// A lifeline (key in `lines`): released if it hangs up first.
    Line(LineKey),
    /// The connection the manager answered with it: released if it closes first.
    Caller(u64),
}

struct Lent {
    obj: u64,
    owner: Owner,
}

/// A lifeline: (the connection that made it, its id).
type LineKey = (u64, u64);

struct Line {
    /// Its lends not adopted yet.
    lends: HashSet<u64>,
    /// It hung up: lends that name it now belong to bytes that are gone.
    severed: bool,
    /// No more lends will name it (its maker said so, or closed).
    done: bool,
}

/// The manager actor.
pub(crate) struct ManagerCore {
    objects: HashMap<u64, Entry>,
    next_id: u64,
    /// Connection token → object → references it holds.
    holds: HashMap<u64, HashMap<u64, u64>>,
    /// Lend id → object and owner, for proxies serialized and not yet adopted.
    lends: HashMap<u64, Lent>,
    /// Adopts that arrived before their lend (they came on another connection) → object.
    early: HashMap<u64, u64>,
    lines: HashMap<LineKey, Line>,
    /// Watch id → the line it watches.
    watches: HashMap<u64, LineKey>,
    next_watch: u64,
    /// Lifelines watched at most.
    line_budget: u64,
    /// Connection → lends the manager answered it with, not yet adopted.
    answered: HashMap<u64, HashSet<u64>>,
    /// Lends made in the answer being computed.
    answering: Vec<u64>,
    /// The failure of a pipelined operation, reported to the next ask on that object from the
    /// same connection.
    deferred: HashMap<(u64, u64), Fault>,
    /// What remote sessions may do, per gateway.
    gateways: serving::Gateways,
}

impl Actor for ManagerCore {
    /// The initializer to run before serving, if any.
    type Args = Option<crate::init_fn::Call>;
    type Msg = Request<Packed>;
    type Reply = Response;

    fn init(init: Self::Args, ctx: &mut Context<Self>) -> Result<Self, InitError> {
        if let Some((message, location)) = init.and_then(crate::init_fn::Call::run) {
            let at = location.as_deref().unwrap_or("<unknown>");
            return Err(format!("the manager's initializer panicked at {at}: {message}").into());
        }
        HOSTING.store(ctx.id().0, Ordering::Relaxed);
        HOSTING_PID.store(crate::sys::getpid(), Ordering::Relaxed);
        let _ = MYSELF.set(ctx.myself().inner.clone());
        IN_LOOP.with(|c| c.set(true));
        let nofile = crate::sys::nofile_limit();
        Ok(ManagerCore {
            objects: HashMap::new(),
            next_id: 1,
            holds: HashMap::new(),
            lends: HashMap::new(),
            early: HashMap::new(),
            lines: HashMap::new(),
            watches: HashMap::new(),
            next_watch: 1,
            line_budget: (nofile / 4).min(MAX_LINES),
            answered: HashMap::new(),
            answering: Vec::new(),
            deferred: HashMap::new(),
            gateways: serving::Gateways::default(),
        })
    }

    fn handle(&mut self, msg: Request<Packed>, ctx: &mut Context<Self>) -> Response {
        for token in std::mem::take(&mut ctx.ctl.closed_callers) {
            self.forget_connection(token);
            for gateway in self.gateways_of(token) {
                self.close_gateway(gateway, ctx);
            }
        }
        let from = ctx.ctl.caller;
        let out = if let Some(gateway) = ctx.ctl.net_tag {
            self.remote_request(gateway, from, ctx.ctl.asking, msg)
        } else {
            match self.gateway_request(from, msg, ctx) {
                Ok(out) => out,
                Err(msg) => self.local_request(from, msg, ctx),
            }
        };
        self.settle_local(Some(from));
        // An answer that is not sent as a value (a tell's, or a failure): what it lent goes
        // nowhere.
        let unsent = std::mem::take(&mut self.answering);
        let sent = ctx.ctl.asking && matches!(out, Response::Value(_));
        if !sent && !unsent.is_empty() {
            for lend in unsent {
                self.drop_lend(lend);
            }
            self.settle_local(None);
        }
        out
    }

    fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) {
        if let Some(key) = self.watches.remove(&down.id.0) {
            self.sever(key);
        }
    }

    fn stopped(&mut self, _reason: &crate::ExitReason) {
        // Hosted objects run their drops (a hosted actor's `stopped`) before the process ends.
        self.objects.clear();
        PENDING.with(|p| p.borrow_mut().clear());
    }
}

fn panic_fault(p: &(dyn std::any::Any + Send)) -> Fault {
    let (message, location) = bootstrap::caught_panic(p);
    Fault::Panicked { message, location }
}

impl ManagerCore {
    /// A request from a process of this host.
    fn local_request(
        &mut self,
        from: u64,
        msg: Request<Packed>,
        ctx: &mut Context<Self>,
    ) -> Response {
        match msg {
            Request::Create { make, init } => self.create(from, make, init),
            Request::Call { obj, kind, op } => self.call(from, ctx.ctl.asking, obj, kind, op),
            Request::Line { line, end } => {
                self.watch_line(from, line, end, ctx);
                Response::Done
            }
            Request::Lend { obj, lend, line } => {
                let owner = match line {
                    0 => Some(Owner::Free),
                    _ => match self.lines.get(&(from, line)) {
                        // Its bytes are gone (see `proxy`): nothing to keep.
                        Some(l) if l.severed => None,
                        Some(_) => Some(Owner::Line((from, line))),
                        None => Some(Owner::Free),
                    },
                };
                if let Some(owner) = owner {
                    self.lend(obj, lend, owner);
                } else {
                    self.early.remove(&lend);
                }
                Response::Done
            }
            Request::LineDone { line } => {
                if let Some(l) = self.lines.get_mut(&(from, line)) {
                    l.done = true;
                    if l.severed {
                        self.lines.remove(&(from, line));
                    }
                }
                Response::Done
            }
            Request::Adopt { obj, lend, proof } => {
                self.adopt(from, obj, lend);
                // Its lifeline may hang up only now that the adoption is counted.
                drop(proof);
                Response::Done
            }
            Request::Release { obj } => {
                self.release(from, obj);
                Response::Done
            }
            Request::Count => Response::Count(self.objects.len() as u64),
            // Remote sessions' own (they come from the manager's network callers).
            _ => Response::Failed(Fault::bad("a remote session's request from this host")),
        }
    }

    fn create(&mut self, from: u64, make: super::proto::FnRef, init: Packed) -> Response {
        match super::proto::make_fn(make) {
            Ok(make) => self.create_with(from, make, init),
            Err(f) => Response::Failed(f),
        }
    }

    /// Builds an object with `make`; connection `from` holds its first reference.
    fn create_with(&mut self, from: u64, make: MakeFn, init: Packed) -> Response {
        let (bytes, fds) = init.into_parts();
        let obj = match catch_unwind(AssertUnwindSafe(|| make(&bytes, fds))) {
            Ok(Ok(obj)) => obj,
            Ok(Err(f)) => return Response::Failed(f),
            Err(p) => return Response::Failed(panic_fault(&*p)),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.objects.insert(id, Entry { obj, refs: 1 });
        *self.holds.entry(from).or_default().entry(id).or_insert(0) += 1;
        Response::Created(id)
    }

    fn call(&mut self, from: u64, asking: bool, obj: u64, kind: u64, op: Packed) -> Response {
        // (A remote session is a connection of its own: its pipelined failures are its own.)
        if asking {
            if let Some(f) = self.deferred.remove(&(from, obj)) {
                return Response::Failed(Fault::Earlier(Box::new(f)));
            }
        }
        let result = match self.objects.get_mut(&obj) {
            None => Err(Fault::Gone(obj)),
            Some(e) if e.obj.kind().0 != kind => Err(Fault::Bad(format!(
                "object #{obj} is a {}, and this proxy is of another type",
                e.obj.kind().1
            ))),
            Some(e) => {
                let (bytes, fds) = op.into_parts();
                let mut out = Packed::default();
                match catch_unwind(AssertUnwindSafe(|| e.obj.call(&bytes, fds, &mut out))) {
                    Ok(Ok(())) => Ok(out),
                    Ok(Err(f)) => Err(f),
                    Err(p) => Err(panic_fault(&*p)),
                }
            }
        };
        match result {
            Ok(out) => Response::Value(out),
            Err(f) => {
                if !asking {
                    log::debug!(target: "procactor::manager", "pipelined operation on object #{obj} failed: {f:?}");
                    self.deferred.entry((from, obj)).or_insert(f.clone());
                }
                Response::Failed(f)
            }
        }
    }

    /// Starts watching lifeline `line` of connection `from` (within the budget; past it the
    /// line is not known, and its lends are kept until adopted).
    fn watch_line(&mut self, from: u64, line: u64, end: Packed, ctx: &mut Context<Self>) {
        let (_, fds) = end.into_parts();
        let Some(fd) = fds.into_iter().next() else {
            return;
        };
        if self.lines.contains_key(&(from, line)) {
            return;
        }
        if self.watches.len() as u64 >= self.line_budget {
            log::debug!(target: "procactor::manager", "{} lifelines watched: lends under a new one are kept until adopted", self.watches.len());
            return;
        }
        let watch = self.next_watch;
        self.next_watch += 1;
        ctx.watch_hangup(Channel::from_fd(fd), ActorId(watch));
        self.watches.insert(watch, (from, line));
        self.lines.insert(
            (from, line),
            Line {
                lends: HashSet::new(),
                severed: false,
                done: false,
            },
        );
    }

    /// A lifeline hung up: every copy of it is gone, so are the bytes of its unadopted lends.
    fn sever(&mut self, key: LineKey) {
        let Some(l) = self.lines.get_mut(&key) else {
            return;
        };
        l.severed = true;
        let lends = std::mem::take(&mut l.lends);
        if l.done {
            self.lines.remove(&key);
        }
        for lend in lends {
            if let Some(lent) = self.lends.remove(&lend) {
                self.unref(lent.obj, 1);
            }
        }
        self.settle_local(None);
    }

    fn lend(&mut self, obj: u64, lend: u64, owner: Owner) {
        if lend != 0 && self.early.remove(&lend).is_some() {
            return; // adopted already: the adopter's reference stands for it
        }
        let Some(e) = self.objects.get_mut(&obj) else {
            return;
        };
        e.refs += 1;
        if lend == 0 {
            return;
        }
        match owner {
            Owner::Free => {}
            Owner::Line(key) => {
                if let Some(l) = self.lines.get_mut(&key) {
                    l.lends.insert(lend);
                }
            }
            Owner::Caller(token) => {
                self.answered.entry(token).or_default().insert(lend);
                self.answering.push(lend);
            }
        }
        self.lends.insert(lend, Lent { obj, owner });
    }

    /// Removes `lend` from its owner's list.
    fn disown(&mut self, lend: u64, owner: Owner) {
        match owner {
            Owner::Free => {}
            Owner::Line(key) => {
                if let Some(l) = self.lines.get_mut(&key) {
                    l.lends.remove(&lend);
                }
            }
            Owner::Caller(token) => {
                if let Some(set) = self.answered.get_mut(&token) {
                    set.remove(&lend);
                    if set.is_empty() {
                        self.answered.remove(&token);
                    }
                }
            }
        }
    }

    /// Releases a lend nobody will adopt.
    fn drop_lend(&mut self, lend: u64) {
        if let Some(lent) = self.lends.remove(&lend) {
            self.disown(lend, lent.owner);
            self.unref(lent.obj, 1);
        }
    }

    fn adopt(&mut self, from: u64, obj: u64, lend: u64) {
        let Some(e) = self.objects.get_mut(&obj) else {
            return;
        };
        *self.holds.entry(from).or_default().entry(obj).or_insert(0) += 1;
        if lend != 0 {
            if let Some(lent) = self.lends.remove(&lend) {
                if lent.obj == obj {
                    self.disown(lend, lent.owner);
                    return; // the lent reference becomes this connection's
                }
                self.lends.insert(lend, lent);
            }
        }
        e.refs += 1;
        if lend != 0 {
            self.early.insert(lend, obj);
        }
    }

    fn release(&mut self, from: u64, obj: u64) {
        let Some(held) = self.holds.get_mut(&from) else {
            return;
        };
        let Some(n) = held.get_mut(&obj) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            held.remove(&obj);
        }
        self.unref(obj, 1);
    }

    fn unref(&mut self, obj: u64, n: u64) {
        let Some(e) = self.objects.get_mut(&obj) else {
            return;
        };
        e.refs = e.refs.saturating_sub(n);
        if e.refs == 0 {
            // Dropping it may release the proxies inside it: `settle_local` picks those up.
            let gone = self.objects.remove(&obj);
            self.deferred.retain(|k, _| k.1 != obj);
            if !self.early.is_empty() {
                // Adopts whose lends never came (their lender died first): nothing to wait for.
                self.early.retain(|_, o| *o != obj);
            }
            drop(gone);
        }
    }

    /// Releases everything a closed connection held, and what the manager answered it with and
    /// it never decoded.
    fn forget_connection(&mut self, token: u64) {
        self.deferred.retain(|k, _| k.0 != token);
        if let Some(held) = self.holds.remove(&token) {
            for (obj, n) in held {
                self.unref(obj, n);
            }
        }
        if let Some(lends) = self.answered.remove(&token) {
            for lend in lends {
                if let Some(lent) = self.lends.remove(&lend) {
                    self.unref(lent.obj, 1);
                }
            }
        }
        // Its lifelines stay watched (the bytes may still be decoded), but no lend will name
        // them any more.
        self.lines.retain(|k, l| {
            if k.0 == token {
                l.done = true;
                !l.severed
            } else {
                true
            }
        });
        self.settle_local(None);
    }

    /// Applies the manager's own reference changes made during the last operation: gains
    /// first, so an object moved within the manager (`l[0] = l.pop()`) is never freed on the way.
    /// `caller`: the connection the operation's answer goes to.
    fn settle_local(&mut self, caller: Option<u64>) {
        loop {
            let changes = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
            if changes.is_empty() {
                return;
            }
            let mut releases = Vec::new();
            for c in changes {
                match c {
                    LocalRef::Adopt { obj, lend } => self.adopt(LOCAL, obj, lend),
                    LocalRef::Lend { obj, lend, answer } => {
                        let owner = match caller {
                            Some(token) if answer => Owner::Caller(token),
                            _ => Owner::Free,
                        };
                        self.lend(obj, lend, owner)
                    }
                    LocalRef::Release { obj } => releases.push(obj),
                }
            }
            for obj in releases {
                self.release(LOCAL, obj);
            }
        }
    }
}

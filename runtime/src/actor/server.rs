//! The actor's own process: `spawn` on the caller's side, and the event loop that accepts
//! connections, reads batches of envelopes and runs the handlers, one message at a time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::actor_ref::{ActorRef, RefInner};
use super::context::{Context, Watch};
use super::gate::{self, Gate};
use super::proto::{self, Role, Sys, Welcome};
use super::{Actor, ActorBuilder, ActorId, Down, Mailbox};
use crate::bootstrap;
use crate::error::{Error, ExitReason, Result};
use crate::message::Message;
use crate::process::Process;
use crate::sys;
use crate::wire::{self, Channel, Fd, Outgoing, Wait};

/// What the new process gets.
#[derive(Serialize, Deserialize)]
pub(crate) struct Boot<Args> {
    listener: Fd,
    id: u64,
    name: String,
    addr: String,
    capacity: Option<u32>,
    /// The largest message the actor accepts.
    limit: u64,
    args: Args,
}

/// A fresh id: 64 random bits from the kernel. With the session's 128, an actor's address cannot
/// be guessed (or bound first) by anyone.
fn new_id() -> Result<u64> {
    sys::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .map_err(|e| Error::io("getrandom", e))
}

fn type_short_name<A>() -> String {
    let full = std::any::type_name::<A>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

pub(crate) fn spawn<A: Actor>(b: ActorBuilder<A>) -> Result<ActorRef<A>> {
    ready(launch(b)?)
}

pub(crate) fn spawn_many<A: Actor>(
    builders: impl IntoIterator<Item = ActorBuilder<A>>,
) -> Result<Vec<ActorRef<A>>> {
    // All processes first, then all welcomes: the children start up side by side.
    let mut launched = Vec::new();
    for b in builders {
        match launch(b) {
            Ok(l) => launched.push(l),
            Err(e) => {
                for l in &launched {
                    abandon(&l.actor);
                }
                return Err(e);
            }
        }
    }
    let refs: Vec<ActorRef<A>> = launched.iter().map(|l| l.actor.clone()).collect();
    let mut out = Vec::with_capacity(launched.len());
    for l in launched {
        match ready(l) {
            Ok(r) => out.push(r),
            Err(e) => {
                for r in &refs {
                    abandon(r);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// An actor whose process runs, and whose `init` may not have finished.
struct Launched<A> {
    actor: ActorRef<A>,
    start_timeout: Duration,
    register: Option<String>,
}

fn launch<A: Actor>(b: ActorBuilder<A>) -> Result<Launched<A>> {
    let session = crate::identity::session()?;
    let name = b.name.unwrap_or_else(type_short_name::<A>);
    let (id, addr, listener) = loop {
        let id = new_id()?;
        let addr = proto::actor_addr(&session, id);
        match sys::listen_path(&addr) {
            Ok(l) => break (id, addr, l),
            Err(e) if e.raw_os_error() == Some(sys::EADDRINUSE) => continue,
            Err(e) => return Err(Error::io("listen", e)),
        }
    };
    let boot = Boot {
        listener: Fd(listener),
        id,
        name: name.clone(),
        addr: addr.clone(),
        capacity: match b.mailbox {
            Mailbox::Unbounded => None,
            Mailbox::Bounded(n) => Some(n),
        },
        limit: b.max_message,
        args: b.args,
    };
    // No wait for the child's bootstrap: its welcome (below) says it is running.
    let mut p = Process::new(actor_main::<A>, boot)
        .name(name.clone())
        .daemon(true)
        .start_timeout(b.start_timeout)
        .no_hello_wait();
    if let Some(m) = b.method {
        p = p.start_method(m);
    }
    // Our copy of the listener goes with `p`: from here only the child holds it.
    let handle = p.start()?;
    let pid = handle.pid();
    Ok(Launched {
        actor: ActorRef::from_inner(Arc::new(RefInner::new(
            ActorId(id),
            name,
            pid,
            addr,
            Some(handle),
        ))),
        start_timeout: b.start_timeout,
        register: b.register,
    })
}

/// Kills and reaps an actor that will not be handed out.
fn abandon<A>(r: &ActorRef<A>) {
    let _ = r.kill();
    let _ = r.join_timeout(Duration::from_secs(5));
}

/// Waits for the welcome, which comes once `init` has returned: the ref is ready then.
fn ready<A: Actor>(l: Launched<A>) -> Result<ActorRef<A>> {
    let r = l.actor;
    if let Err(e) = r.inner.typed_conn::<A>(Wait::timeout(l.start_timeout)) {
        abandon(&r);
        return Err(match e {
            Error::Timeout(t) => Error::Start {
                name: r.name().to_string(),
                reason: format!(
                    "the actor did not finish starting (bootstrap and init) within {t:?}"
                )
                .into(),
            },
            e => e,
        });
    }
    if let Some(n) = l.register {
        if let Err(e) = super::registry::register(&n, &r) {
            abandon(&r);
            return Err(e);
        }
    }
    Ok(r)
}

/// The job of an actor's process. Its socket's file goes with it, however the actor ends (its
/// spawner removes it too, for an actor that was killed).
fn actor_main<A: Actor>(boot: Boot<A::Args>) -> ExitReason {
    let addr = boot.addr.clone();
    let reason = serve::<A>(boot);
    sys::unlink(&addr);
    reason
}

fn serve<A: Actor>(boot: Boot<A::Args>) -> ExitReason {
    let Boot {
        listener,
        id,
        name,
        addr,
        capacity,
        limit,
        args,
    } = boot;
    // Listening again makes the kernel name this process, not its spawner, to those who connect:
    // a caller takes the actor's pid from there (never from a message).
    if let Err(e) = sys::relisten(listener.0.as_fd()) {
        return ExitReason::InitFailed {
            message: format!("listen: {e}"),
        };
    }
    let me = ActorRef::<A>::from_inner(Arc::new(RefInner::new(
        ActorId(id),
        name.clone(),
        sys::getpid(),
        addr.clone(),
        None,
    )));
    let mut ctx = Context::new(me);
    let welcome = Welcome {
        name,
        pid: sys::getpid(),
        id,
        addr,
        capacity,
        slot: 0,
        limit,
    };
    let mut server = match Server::<A>::new(listener.0, welcome, limit) {
        Ok(s) => s,
        Err(e) => {
            return ExitReason::InitFailed {
                message: e.to_string(),
            }
        }
    };
    let state = match catch_unwind(AssertUnwindSafe(|| A::init(args, &mut ctx))) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return ExitReason::InitFailed {
                message: e.to_string(),
            }
        }
        Err(p) => return panicked(&*p),
    };
    server.run(state, ctx)
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> ExitReason {
    let (message, location) = bootstrap::caught_panic(payload);
    ExitReason::Panicked { message, location }
}

/// What a connection is to us.
enum Peer {
    /// Connected, hello not read yet.
    New(Channel),
    /// Sends messages; `slot` in the gate of a bounded mailbox.
    Caller { chan: Channel, slot: u32 },
    /// Wants our last words (and may send system messages: stop, register).
    Watcher(Channel),
    /// A linked actor: its death is ours unless we trap exits.
    LinkedIn {
        chan: Channel,
        name: String,
        id: ActorId,
    },
    /// A watch this actor made (monitor or link).
    Watching(Watch),
}

impl Peer {
    fn chan(&self) -> Option<&Channel> {
        match self {
            Peer::New(c) | Peer::Caller { chan: c, .. } | Peer::Watcher(c) => Some(c),
            Peer::LinkedIn { chan, .. } => Some(chan),
            Peer::Watching(w) => w.chan.as_ref(),
        }
    }
}

/// Lets go of a connection without closing it here: unread records in its socket may carry
/// descriptors a peer chose, released by the socket's close, and the last close of one may
/// block (see `closer`). The socket is shut down here, so the peer sees the hang-up at once
/// (a child waiting for it as it ends, a lifeline), even while the closer thread is held up by
/// another close; the close itself happens on the closer thread.
fn let_go(peer: Peer) {
    let chan = match peer {
        Peer::New(c) | Peer::Caller { chan: c, .. } | Peer::Watcher(c) => Some(c),
        Peer::LinkedIn { chan, .. } => Some(chan),
        Peer::Watching(w) => w.chan,
    };
    if let Some(chan) = chan {
        close_socket_later(chan.into_fd());
    }
}

/// See [`let_go`].
fn close_socket_later(fd: OwnedFd) {
    sys::shutdown_both(fd.as_fd());
    crate::closer::close_later([fd]);
}

const LISTENER: u64 = 1 << 63;

/// Bytes of frames one connection may have waiting in the actor (its socket buffer full: a
/// caller slow to read its replies) before the actor stops reading that connection until they
/// are all gone. Back-pressure, never a dropped reply; the replies of the one batch being
/// handled may go past it.
const QUEUE_HIGH: usize = 1 << 20;

/// How long an ending actor waits for connections with frames still waiting (its last words
/// last) to take them: it gives up once none took anything for `EXIT_IDLE`, and after
/// `EXIT_FLUSH` in all. The process is ending anyway; a caller that does not read for that long
/// sees the connection close without the actor's last words.
const EXIT_IDLE: Duration = Duration::from_millis(100);
const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// How long a new connection may take to say hello before the actor drops it (procactor's own
/// callers say it as they connect).
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Connections that have not said hello yet, at most: past it the oldest is dropped, so
/// connections that never say anything cannot use up the actor's descriptors.
const MAX_FRESH: usize = 256;

/// Connections accepted per wake-up, at most: a flood of connections cannot starve the callers
/// already there (the level-triggered listener reports the rest on the next turn).
const ACCEPT_BATCH: usize = 64;

/// How long the listener rests, unless a connection closes first, after `accept` failed (out
/// of descriptors): it stays readable, and a level-triggered loop would spin on it.
const ACCEPT_REST: Duration = Duration::from_millis(10);

/// A receive buffer that grew past this (a large batch) is given back once the batch is
/// handled: a sender cannot leave the actor holding the most it ever sent.
const BATCH_KEEP: usize = 1 << 20;

/// Frames a connection could not take yet (its socket buffer was full), to send in order
/// before anything else as soon as it has room.
struct Backlog {
    frames: VecDeque<Outgoing>,
    /// Their sizes added up (memory files included).
    bytes: usize,
    /// Past [`QUEUE_HIGH`]: the connection is not read (its input interest is off) until the
    /// backlog is gone.
    paused: bool,
}

/// Drops frames that will never be sent. Their descriptors are ours (duplicates), but of
/// objects a peer may have handed over, whose last copy this may be: closed off the loop.
fn drop_frames(frames: VecDeque<Outgoing>) {
    crate::closer::close_later(frames.into_iter().flat_map(Outgoing::into_fds));
}

struct Server<A: Actor> {
    poller: sys::Poller,
    /// The socket at our address.
    listener: OwnedFd,
    /// The largest message a connection may send us.
    limit: u64,
    peers: HashMap<u64, Peer>,
    next_token: u64,
    /// Frames waiting for room, per connection (only connections that have some).
    backlog: HashMap<u64, Backlog>,
    /// Connections that have not said hello yet, by token (so oldest first), with when they
    /// were accepted.
    fresh: BTreeMap<u64, Instant>,
    /// The listener is out of the poller until then (accept failed), or until a connection
    /// closes, whichever comes first.
    listener_rest: Option<Instant>,
    /// The current run of accept failures was logged (once, not on every pass).
    accept_failing: bool,
    welcome: Welcome,
    gate: Option<Gate>,
    free_slots: Vec<u32>,
    ready: Vec<u64>,
    /// The record being handled: read here whole (a large one straight from its memory file),
    /// since handlers may receive too.
    batch: Vec<u8>,
    reply: Vec<u8>,
    stop_requested: bool,
    /// Caller connections closed since the last message, handed to the next one's context.
    closed_callers: Vec<u64>,
    _a: std::marker::PhantomData<fn() -> A>,
}

/// What reading a new connection's hello came to.
enum Said {
    /// Nothing there yet.
    Nothing,
    /// It joined as a caller, watcher or link.
    Joined,
    /// It is gone: closed, refused, or dropped for a bad hello.
    Gone,
}

/// What reading a connection turned up.
enum Read {
    Nothing,
    Batch(Vec<OwnedFd>),
    Closed,
}

impl<A: Actor> Drop for Server<A> {
    fn drop(&mut self) {
        wire::live_channels().remove(&std::os::fd::AsRawFd::as_raw_fd(&self.listener));
    }
}

impl<A: Actor> Server<A> {
    fn new(listener: OwnedFd, welcome: Welcome, limit: u64) -> Result<Self> {
        let poller = sys::Poller::new().map_err(|e| Error::io("epoll", e))?;
        poller
            .add(listener.as_fd(), LISTENER)
            .map_err(|e| Error::io("epoll", e))?;
        let gate = welcome.capacity.map(Gate::create).transpose()?;
        let server = Server {
            poller,
            listener,
            limit,
            peers: HashMap::new(),
            next_token: 1,
            backlog: HashMap::new(),
            fresh: BTreeMap::new(),
            listener_rest: None,
            accept_failing: false,
            welcome,
            gate,
            free_slots: (0..gate::SLOTS as u32).rev().collect(),
            ready: Vec::new(),
            batch: Vec::new(),
            reply: Vec::new(),
            stop_requested: false,
            closed_callers: Vec::new(),
            _a: std::marker::PhantomData,
        };
        // A process this actor forks lets go of the listener (as of every pipe end), or the
        // actor's address would answer after the actor ended, with the actor's pid.
        wire::live_channels().insert(std::os::fd::AsRawFd::as_raw_fd(&server.listener));
        Ok(server)
    }

    fn add_peer(&mut self, peer: Peer) {
        let token = self.next_token;
        self.next_token += 1;
        if let Some(chan) = peer.chan() {
            if self.poller.add(chan.as_fd(), token).is_err() {
                let_go(peer);
                return;
            }
        } else {
            // A watch whose target was already gone: report it on the next turn of the loop.
            self.ready.push(token);
        }
        if let Peer::New(_) = &peer {
            self.fresh.insert(token, Instant::now());
        }
        self.peers.insert(token, peer);
    }

    /// Takes a connection out of the loop and lets go of it.
    fn drop_peer(&mut self, token: u64) {
        if let Some(peer) = self.remove_peer(token) {
            let_go(peer);
        }
    }

    /// Takes a connection out of the loop; the caller lets go of it (see [`let_go`]).
    fn remove_peer(&mut self, token: u64) -> Option<Peer> {
        let peer = self.peers.remove(&token)?;
        if let Some(chan) = peer.chan() {
            self.poller.remove(chan.as_fd());
        }
        if let Peer::New(_) = &peer {
            self.fresh.remove(&token);
        }
        // Frames it never took: nobody is left to take them.
        if let Some(b) = self.backlog.remove(&token) {
            drop_frames(b.frames);
        }
        // A descriptor is free again: a listener resting for want of one may go on.
        self.wake_listener();
        if let (Peer::Caller { slot, .. }, Some(gate)) = (&peer, &self.gate) {
            // Whatever this caller took and never delivered is given back.
            gate.release(*slot, gate.held_by(*slot));
            self.free_slots.push(*slot);
        }
        if let Peer::Caller { .. } = &peer {
            self.closed_callers.push(token);
        }
        Some(peer)
    }

    fn run(&mut self, mut state: A, mut ctx: Context<A>) -> ExitReason {
        self.adopt_watches(&mut ctx);
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| state.started(&mut ctx))) {
            return self.finish(&mut state, &mut ctx, panicked(&*p));
        }
        let mut pending: Vec<u64> = Vec::new();
        loop {
            self.adopt_watches(&mut ctx);
            if let Some(reason) = ctx.stop.take() {
                return self.finish(&mut state, &mut ctx, reason);
            }
            if self.stop_requested {
                return self.finish(&mut state, &mut ctx, ExitReason::Normal);
            }
            if pending.is_empty() {
                let due = self.timers();
                if let Err(e) = self.wait(due) {
                    log::error!(target: "procactor::actor", "event loop failed: {e}");
                    return self.finish(&mut state, &mut ctx, ExitReason::Unknown);
                }
                pending.append(&mut self.ready);
            }
            let Some(token) = pending.pop() else {
                continue;
            };
            if let Err(reason) = self.service(token, &mut state, &mut ctx) {
                return self.finish(&mut state, &mut ctx, reason);
            }
        }
    }

    /// Drops connections that did not say hello in time and wakes a resting listener whose
    /// rest is over; returns when the next of these is due (`None`: nothing is).
    fn timers(&mut self) -> Option<Instant> {
        if self.fresh.is_empty() && self.listener_rest.is_none() {
            return None;
        }
        let now = Instant::now();
        while let Some((&token, &since)) = self.fresh.first_key_value() {
            if now < since + HELLO_DEADLINE {
                break;
            }
            self.drop_peer(token);
        }
        if self.listener_rest.is_some_and(|until| now >= until) {
            self.wake_listener();
        }
        let hello_due = self
            .fresh
            .first_key_value()
            .map(|(_, &t)| t + HELLO_DEADLINE);
        match (hello_due, self.listener_rest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits for readiness, at most until `deadline`: spins briefly first when we have a core to
    /// spin on (a wake-up from sleep costs tens of microseconds on small VMs).
    fn wait(&mut self, deadline: Option<Instant>) -> std::io::Result<()> {
        if !self.ready.is_empty() {
            return Ok(());
        }
        let spin = wire::spin_time();
        if !spin.is_zero() {
            let until = Instant::now() + spin;
            loop {
                self.poller.wait(Some(Instant::now()), &mut self.ready)?;
                if !self.ready.is_empty() || Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
            if !self.ready.is_empty() {
                return Ok(());
            }
        }
        self.poller.wait(deadline, &mut self.ready)
    }

    fn adopt_watches(&mut self, ctx: &mut Context<A>) {
        for w in ctx.watches.drain(..).collect::<Vec<_>>() {
            self.add_peer(Peer::Watching(w));
        }
    }

    /// Handles readiness of one token; `Err` with the reason when the actor must end.
    fn service(
        &mut self,
        token: u64,
        state: &mut A,
        ctx: &mut Context<A>,
    ) -> std::result::Result<(), ExitReason> {
        if token == LISTENER {
            self.accept();
            return Ok(());
        }
        if !self.backlog.is_empty() && self.backlog.contains_key(&token) {
            // Woken for room (or a hang-up): what waits goes first. A paused connection is
            // not read until all of it went.
            self.flush(token);
            if self.backlog.get(&token).is_some_and(|b| b.paused) {
                return Ok(());
            }
        }
        match self.peers.get(&token) {
            None => Ok(()),
            Some(Peer::New(_)) => {
                self.hello(token);
                Ok(())
            }
            Some(Peer::Caller { .. }) | Some(Peer::Watcher(_)) => match self.read(token) {
                Read::Nothing => Ok(()),
                Read::Closed => {
                    self.drop_peer(token);
                    Ok(())
                }
                Read::Batch(fds) => self.dispatch(token, fds, state, ctx),
            },
            Some(Peer::LinkedIn { .. }) | Some(Peer::Watching(_)) => {
                self.watched_ended(token, state, ctx)
            }
        }
    }

    /// Accepts what connected, at most [`ACCEPT_BATCH`] connections per wake-up.
    fn accept(&mut self) {
        // Connections accepted from here on had no turn of the loop to say hello yet: they are
        // never the ones given up for room.
        let this_turn = self.next_token;
        for _ in 0..ACCEPT_BATCH {
            match sys::accept(self.listener.as_fd()) {
                Ok(Some(fd)) => {
                    self.accept_failing = false;
                    // Only processes of our own user may talk to us (the kernel says who
                    // connected).
                    match sys::peer_cred(fd.as_fd()) {
                        Ok(c) if c.uid == sys::getuid() => {}
                        Ok(c) => {
                            log::warn!(target: "procactor::actor", "actor {:?} refused a connection from pid {} of another user (uid {})", self.welcome.name, c.pid, c.uid);
                            // Closed off this thread: it may hold a stranger's records.
                            close_socket_later(fd);
                            continue;
                        }
                        Err(_) => {
                            close_socket_later(fd);
                            continue;
                        }
                    }
                    if self.fresh.len() >= MAX_FRESH {
                        // Too many that never said hello: the oldest makes room.
                        self.drop_oldest_silent(u64::MAX);
                    }
                    // Large payloads only in memory files: a sender that stops half-way can
                    // never stall this loop.
                    let mut chan = Channel::from_fd(fd).files_only();
                    chan.set_limit(self.limit);
                    self.add_peer(Peer::New(chan));
                }
                Ok(None) => return,
                Err(e) => {
                    let no_fds = matches!(e.raw_os_error(), Some(sys::EMFILE | sys::ENFILE));
                    // Out of descriptors: a connection that never said hello (in a turn of its
                    // own) is the cheapest to give up, and the one waiting takes its place.
                    if no_fds && self.drop_oldest_silent(this_turn) {
                        continue;
                    }
                    if !self.accept_failing {
                        self.accept_failing = true;
                        log::warn!(target: "procactor::actor", "actor {:?} cannot accept connections for now: {e}", self.welcome.name);
                    }
                    // The listener stays readable: rest it, or the loop would spin on it.
                    self.rest_listener();
                    return;
                }
            }
        }
    }

    /// Drops the oldest connection that has not said hello, if it was accepted before token
    /// `before` (it had a turn of the loop to say it); false if there is none. A connection whose
    /// hello is there but not read yet (its readiness not handled yet this turn) is not silent:
    /// its hello is read first, and the next oldest looked at.
    fn drop_oldest_silent(&mut self, before: u64) -> bool {
        loop {
            let Some((&token, _)) = self.fresh.first_key_value() else {
                return false;
            };
            if token >= before {
                return false;
            }
            match self.hello(token) {
                Said::Joined => continue,
                // Dropped for what it said (or its end): a descriptor is free all the same.
                Said::Gone => return true,
                Said::Nothing => {
                    log::debug!(target: "procactor::actor", "actor {:?} dropped a connection that had not said hello", self.welcome.name);
                    self.drop_peer(token);
                    return true;
                }
            }
        }
    }

    /// Stops watching the listener for [`ACCEPT_REST`] (or until a connection closes).
    fn rest_listener(&mut self) {
        if self.listener_rest.is_none() {
            self.poller.remove(self.listener.as_fd());
        }
        self.listener_rest = Some(Instant::now() + ACCEPT_REST);
    }

    /// Watches a resting listener again.
    fn wake_listener(&mut self) {
        if self.listener_rest.take().is_some() {
            if let Err(e) = self.poller.add(self.listener.as_fd(), LISTENER) {
                log::warn!(target: "procactor::actor", "actor {:?} cannot watch its listener again, for now: {e}", self.welcome.name);
                self.listener_rest = Some(Instant::now() + ACCEPT_REST);
            }
        }
    }

    /// Reads a hello and answers it.
    fn hello(&mut self, token: u64) -> Said {
        let Some(Peer::New(chan)) = self.peers.get(&token) else {
            return Said::Gone;
        };
        let hello_only = |h: &wire::Head| {
            Err(Error::Decode {
                expected: "a hello",
                reason: format!("a {}-byte frame of kind {}", h.len, h.kind),
            })
        };
        let role = chan.recv_checked(Wait::No, &mut Vec::new(), hello_only, |f| {
            if f.kind != proto::HELLO {
                return Err(Error::Decode {
                    expected: "a hello",
                    reason: format!("frame of kind {}", f.kind),
                });
            }
            wire::decode::<Role>(f.payload, Vec::new())
        });
        let role = match role {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Said::Nothing, // woken for nothing
            Err(Error::Disconnected) => {
                // A liveness probe (`is_alive`, `kill` from another process): nothing to say.
                self.drop_peer(token);
                return Said::Gone;
            }
            Err(e) => {
                log::warn!(target: "procactor::actor", "bad hello on actor {:?}: {e}", self.welcome.name);
                self.drop_peer(token);
                return Said::Gone;
            }
        };
        let chan = match self.remove_peer(token) {
            Some(Peer::New(chan)) => chan,
            other => {
                if let Some(p) = other {
                    let_go(p);
                }
                return Said::Gone;
            }
        };
        let refuse = |chan: &Channel, why: String| {
            let mut buf = Vec::new();
            if wire::encode(&why, &mut buf).is_ok() {
                let _ = chan.try_send_small(proto::REFUSED, 0, &buf);
            }
        };
        let mut welcome = self.welcome.clone();
        let peer = match role {
            Role::Caller { msg, reply } => {
                let (m, r) = (A::Msg::schema(), A::Reply::schema());
                if msg.1 != m.fingerprint || reply.1 != r.fingerprint {
                    refuse(&chan, format!("{} (replies: {})", m.name, r.name));
                    let_go(Peer::New(chan));
                    return Said::Gone;
                }
                let slot = match &self.gate {
                    None => 0,
                    Some(_) => match self.free_slots.pop() {
                        Some(s) => s,
                        None => {
                            refuse(&chan, "too many callers of a bounded mailbox".into());
                            let_go(Peer::New(chan));
                            return Said::Gone;
                        }
                    },
                };
                welcome.slot = slot;
                Peer::Caller { chan, slot }
            }
            Role::Monitor => Peer::Watcher(chan),
            Role::Link { name, id, .. } => Peer::LinkedIn {
                chan,
                name,
                id: ActorId(id),
            },
        };
        let mut buf = Vec::new();
        if wire::encode(&welcome, &mut buf).is_err() {
            if let (Peer::Caller { slot, .. }, Some(_)) = (&peer, &self.gate) {
                self.free_slots.push(*slot);
            }
            let_go(peer);
            return Said::Gone;
        }
        let gate_fd: Vec<RawFd> = match (&peer, &self.gate) {
            (Peer::Caller { .. }, Some(gate)) => {
                vec![std::os::fd::AsRawFd::as_raw_fd(&gate.as_fd())]
            }
            _ => Vec::new(),
        };
        // Never blocks: a new connection's buffer is empty, and one that is not is refused.
        let sent = peer
            .chan()
            .map(|c| c.try_send(proto::WELCOME, 0, &buf, &gate_fd));
        if matches!(sent, Some(Ok(true))) {
            self.add_peer(peer);
            return Said::Joined;
        }
        if let (Peer::Caller { slot, .. }, Some(_)) = (&peer, &self.gate) {
            self.free_slots.push(*slot);
        }
        let_go(peer);
        Said::Gone
    }

    /// Reads one record from a caller into `self.batch` (a large one straight from its memory
    /// file: one copy in memory, never two).
    fn read(&mut self, token: u64) -> Read {
        let Some(chan) = self.peers.get(&token).and_then(Peer::chan) else {
            return Read::Closed;
        };
        let batches_only = |h: &wire::Head| {
            if h.kind == proto::BATCH {
                Ok(())
            } else {
                Err(Error::Decode {
                    expected: "a batch of messages",
                    reason: format!("a {}-byte frame of kind {}", h.len, h.kind),
                })
            }
        };
        let got = chan.recv_into(Wait::No, &mut self.batch, batches_only, |f| {
            if f.kind != proto::BATCH {
                return Err(Error::Decode {
                    expected: "a batch of messages",
                    reason: format!("frame of kind {}", f.kind),
                });
            }
            Ok(f.fds)
        });
        match got {
            Ok(fds) => Read::Batch(fds.into()),
            Err(e) if e.is_timeout() => Read::Nothing,
            Err(Error::Disconnected) => Read::Closed,
            Err(e) => {
                log::warn!(target: "procactor::actor", "actor {:?} dropped a record: {e}", self.welcome.name);
                self.give_back_batch();
                Read::Nothing
            }
        }
    }

    /// Frees the receive buffer if a large record made it grow (a memory file may announce up
    /// to the limit, and a sparse one costs its sender nothing): the actor keeps only what its
    /// everyday records need.
    fn give_back_batch(&mut self) {
        if self.batch.capacity() > BATCH_KEEP {
            self.batch = Vec::new();
        }
    }

    /// Handles the envelopes of `self.batch`, in order.
    fn dispatch(
        &mut self,
        token: u64,
        fds: Vec<OwnedFd>,
        state: &mut A,
        ctx: &mut Context<A>,
    ) -> std::result::Result<(), ExitReason> {
        let batch = std::mem::take(&mut self.batch);
        let mut fds = fds.into_iter();
        let mut rest = &batch[..];
        let caller_slot = match self.peers.get(&token) {
            Some(Peer::Caller { slot, .. }) => Some(*slot),
            _ => None,
        };
        let mut outcome = Ok(());
        loop {
            let env = match proto::next_envelope(&mut rest) {
                Ok(Some(env)) => env,
                Ok(None) => break,
                Err(e) => {
                    log::warn!(target: "procactor::actor", "actor {:?} got garbage: {e}", self.welcome.name);
                    break;
                }
            };
            let env_fds: Vec<OwnedFd> = fds.by_ref().take(env.nfds).collect();
            if self.stop_requested || ctx.stop.is_some() {
                // Sent after the stop: refused, as if the actor were already gone.
                crate::closer::close_later(env_fds);
                continue;
            }
            let step = match (env.op, caller_slot) {
                (proto::OP_SYS, _) => {
                    self.system(token, env.payload, env_fds);
                    Ok(())
                }
                (op, Some(slot)) => {
                    let r = self.message(token, op, env.id, env.payload, env_fds, state, ctx);
                    if let Some(gate) = &self.gate {
                        if gate.held_by(slot) > 0 {
                            gate.release(slot, 1);
                        }
                    }
                    r
                }
                (_, None) => {
                    log::warn!(target: "procactor::actor", "actor {:?}: message from a connection that did not say hello as a caller", self.welcome.name);
                    crate::closer::close_later(env_fds);
                    Ok(())
                }
            };
            if let Err(reason) = step {
                outcome = Err(reason);
                break;
            }
            self.adopt_watches(ctx);
        }
        self.batch = batch;
        // Descriptors no envelope claimed: a peer chose them (see `closer`).
        crate::closer::close_later(fds);
        self.give_back_batch();
        outcome
    }

    /// One tell or ask.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        token: u64,
        op: u8,
        id: u64,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        state: &mut A,
        ctx: &mut Context<A>,
    ) -> std::result::Result<(), ExitReason> {
        let msg = match wire::decode::<A::Msg>(payload, fds) {
            Ok(m) => m,
            Err(e) => {
                log::warn!(target: "procactor::actor", "actor {:?} could not decode a message: {e}", self.welcome.name);
                if op == proto::OP_ASK {
                    self.answer(token, proto::FAILED, id, &e.to_string());
                }
                return Ok(());
            }
        };
        ctx.caller = token;
        ctx.asking = op == proto::OP_ASK;
        ctx.closed_callers.append(&mut self.closed_callers);
        let reply = match catch_unwind(AssertUnwindSafe(|| state.handle(msg, ctx))) {
            Ok(r) => r,
            Err(p) => return Err(panicked(&*p)),
        };
        if op == proto::OP_ASK {
            self.answer(token, proto::REPLY, id, &reply);
        }
        Ok(())
    }

    /// Sends a reply (or a failure) to the caller on `token`.
    fn answer<T: Serialize + ?Sized>(&mut self, token: u64, kind: u8, id: u64, value: &T) {
        let mut reply = std::mem::take(&mut self.reply);
        reply.clear();
        let (kind, fds) = match wire::encode(value, &mut reply) {
            Ok(fds) => (kind, fds),
            Err(e) => {
                reply.clear();
                let _ = wire::encode(&e.to_string(), &mut reply);
                (proto::FAILED, Vec::new())
            }
        };
        match self.send_to(token, kind, id, &reply, &fds) {
            Ok(()) | Err(Error::Disconnected) => {}
            Err(e) => {
                // The caller is waiting: tell it why its reply cannot come.
                log::warn!(target: "procactor::actor", "actor {:?} could not send a reply: {e}", self.welcome.name);
                reply.clear();
                if wire::encode(&format!("the reply could not be sent: {e}"), &mut reply).is_ok() {
                    let _ = self.send_to(token, proto::FAILED, id, &reply, &[]);
                }
            }
        }
        self.reply = reply;
    }

    /// Sends a frame on connection `token` without ever blocking, and without losing it: what
    /// the connection's buffer cannot take now waits in its backlog, in order, and goes once
    /// it has room (see [`flush`](Server::flush)). A large payload goes in a memory file,
    /// written whole before its header.
    fn send_to(
        &mut self,
        token: u64,
        kind: u8,
        id: u64,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<()> {
        let Some(chan) = self.peers.get(&token).and_then(Peer::chan) else {
            return Ok(());
        };
        // (Most replies find no backlog at all: no lookup for them.)
        if let Some(b) = (!self.backlog.is_empty())
            .then(|| self.backlog.get_mut(&token))
            .flatten()
        {
            // Frames before this one still wait: it goes after them.
            let frame = Outgoing::new(kind, id, payload, fds)?;
            b.bytes += frame.size();
            b.frames.push_back(frame);
            if b.bytes > QUEUE_HIGH && !b.paused {
                b.paused = true;
                self.watch(token);
            }
            return Ok(());
        }
        let Some(frame) = chan.try_send_or_keep(kind, id, payload, fds)? else {
            return Ok(());
        };
        let bytes = frame.size();
        self.backlog.insert(
            token,
            Backlog {
                frames: VecDeque::from([frame]),
                bytes,
                paused: bytes > QUEUE_HIGH,
            },
        );
        self.watch(token);
        Ok(())
    }

    /// Sends what waits on connection `token`, in order, as far as its buffer takes it. A
    /// connection that failed (its peer is gone) drops its backlog: nothing can reach it, and
    /// reading it goes on (what it sent before it went is still handled). True if anything went.
    fn flush(&mut self, token: u64) -> bool {
        let Some(b) = self.backlog.get_mut(&token) else {
            return false;
        };
        let Some(chan) = self.peers.get(&token).and_then(Peer::chan) else {
            self.backlog.remove(&token);
            return false;
        };
        let mut sent = false;
        while let Some(frame) = b.frames.front() {
            match chan.try_send_kept(frame) {
                Ok(true) => {
                    b.bytes -= frame.size();
                    b.frames.pop_front();
                    sent = true;
                }
                Ok(false) => return sent,
                Err(e) => {
                    if !matches!(e, Error::Disconnected) {
                        log::warn!(target: "procactor::actor", "actor {:?} could not send on a connection: {e}", self.welcome.name);
                    }
                    break;
                }
            }
        }
        if let Some(b) = self.backlog.remove(&token) {
            drop_frames(b.frames);
        }
        self.watch(token);
        sent
    }

    /// Sets what the poller reports connection `token` for: input unless its backlog is past
    /// the high-water mark, room while it has a backlog (never otherwise: level-triggered, a
    /// connection with room would be reported on every turn).
    fn watch(&self, token: u64) {
        let Some(chan) = self.peers.get(&token).and_then(Peer::chan) else {
            return;
        };
        let b = self.backlog.get(&token);
        let interest = sys::Interest {
            read: !b.is_some_and(|b| b.paused),
            write: b.is_some(),
        };
        if let Err(e) = self.poller.modify(chan.as_fd(), token, interest) {
            log::warn!(target: "procactor::actor", "actor {:?} could not change what it watches on a connection: {e}", self.welcome.name);
        }
    }

    /// At the end: sends what waits on every connection (the last words last), waiting for
    /// room at most [`EXIT_IDLE`] without progress and [`EXIT_FLUSH`] in all.
    fn flush_at_exit(&mut self) {
        let start = Instant::now();
        let mut progress = start;
        loop {
            let tokens: Vec<u64> = self.backlog.keys().copied().collect();
            for token in tokens {
                if self.flush(token) {
                    progress = Instant::now();
                }
            }
            if self.backlog.is_empty() {
                return;
            }
            let deadline = (progress + EXIT_IDLE).min(start + EXIT_FLUSH);
            let fds: Vec<(BorrowedFd, sys::Want)> = self
                .backlog
                .keys()
                .filter_map(|t| self.peers.get(t).and_then(Peer::chan))
                .map(|c| (c.as_fd(), sys::Want::Write))
                .collect();
            let room = sys::wait_ready(&fds, Some(deadline));
            if !matches!(room, Ok(ready) if ready.contains(&true)) {
                log::debug!(target: "procactor::actor", "actor {:?} ended with frames for {} connections not taken", self.welcome.name, self.backlog.len());
                return;
            }
        }
    }

    fn system(&mut self, token: u64, payload: &[u8], fds: Vec<OwnedFd>) {
        match wire::decode::<Sys>(payload, fds) {
            Ok(Sys::Stop) => self.stop_requested = true,
            Ok(Sys::Sync { id }) => self.answer(token, proto::REPLY, id, &()),
            Err(e) => {
                log::warn!(target: "procactor::actor", "actor {:?}: bad system message: {e}", self.welcome.name)
            }
        }
    }

    /// A linked or watched actor's connection has something: its last words or its end.
    fn watched_ended(
        &mut self,
        token: u64,
        state: &mut A,
        ctx: &mut Context<A>,
    ) -> std::result::Result<(), ExitReason> {
        let words = match self.peers.get(&token).and_then(Peer::chan) {
            None => None,
            Some(chan) => match chan.recv(Wait::No, |f| {
                if f.kind == proto::EXIT {
                    Ok(Some(
                        wire::decode::<proto::LastWords>(f.payload, Vec::new())?.reason,
                    ))
                } else {
                    Ok(None)
                }
            }) {
                Ok(Some(reason)) => Some(reason),
                Ok(None) => return Ok(()), // a welcome, or nothing for us
                Err(e) if e.is_timeout() => return Ok(()),
                Err(_) => None,
            },
        };
        let Some(peer) = self.remove_peer(token) else {
            return Ok(());
        };
        let (id, name, reason, link) = match &peer {
            Peer::Watching(w) => {
                let reason = w.target.refine(words.unwrap_or(ExitReason::Unknown));
                (w.target.id, w.target.name.clone(), reason, w.link)
            }
            Peer::LinkedIn { name, id, .. } => (
                *id,
                name.clone(),
                words.unwrap_or(ExitReason::Unknown),
                true,
            ),
            _ => (ActorId(0), String::new(), ExitReason::Unknown, false),
        };
        let watched = matches!(peer, Peer::Watching(_) | Peer::LinkedIn { .. });
        let_go(peer);
        if !watched {
            return Ok(());
        }
        let down = Down {
            id,
            name: name.clone(),
            reason: reason.clone(),
        };
        let hook = if !link {
            catch_unwind(AssertUnwindSafe(|| state.on_down(down, ctx)))
        } else if ctx.trap_exit {
            catch_unwind(AssertUnwindSafe(|| state.on_exit(down, ctx)))
        } else if reason.is_abnormal() {
            return Err(ExitReason::Linked {
                name,
                reason: Box::new(reason),
            });
        } else {
            Ok(())
        };
        hook.map_err(|p| panicked(&*p))
    }

    /// Ends the actor: drains the mailbox (normal stop only), runs the hooks, and tells every
    /// connection why it ends.
    fn finish(&mut self, state: &mut A, ctx: &mut Context<A>, reason: ExitReason) -> ExitReason {
        let mut reason = reason;
        if reason == ExitReason::Normal && self.stop_requested {
            self.stop_requested = false;
            if let Err(r) = self.drain(state, ctx) {
                reason = r;
            }
            self.stop_requested = true;
        }
        if reason == ExitReason::Normal {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| state.stopping(ctx))) {
                reason = panicked(&*p);
            }
        }
        let mut buf = Vec::new();
        if wire::encode(
            &proto::LastWords {
                reason: reason.clone(),
            },
            &mut buf,
        )
        .is_ok()
        {
            let tokens: Vec<u64> = self.peers.keys().copied().collect();
            for token in tokens {
                // After the replies still waiting on that connection, never instead of them.
                let _ = self.send_to(token, proto::EXIT, 0, &buf, &[]);
            }
        }
        self.flush_at_exit();
        let _ = catch_unwind(AssertUnwindSafe(|| state.stopped(&reason)));
        reason
    }

    /// Handles what is already waiting on every caller connection (after a stop request).
    fn drain(
        &mut self,
        state: &mut A,
        ctx: &mut Context<A>,
    ) -> std::result::Result<(), ExitReason> {
        let callers: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Caller { .. } | Peer::Watcher(_)))
            .map(|(t, _)| *t)
            .collect();
        for token in callers {
            // Bounded: a caller that keeps sending cannot keep us alive for ever.
            for _ in 0..10_000 {
                if self.backlog.get(&token).is_some_and(|b| b.paused) {
                    // Past the high-water mark: what it sent later stays unread, as it would
                    // in the loop, unless its replies go now.
                    self.flush(token);
                    if self.backlog.get(&token).is_some_and(|b| b.paused) {
                        break;
                    }
                }
                match self.read(token) {
                    Read::Batch(fds) => {
                        self.dispatch(token, fds, state, ctx)?;
                        if ctx.stop.is_some() {
                            return Ok(());
                        }
                    }
                    Read::Nothing | Read::Closed => break,
                }
            }
        }
        Ok(())
    }
}

//! An actor's event loop, the same for every actor type: it accepts connections, reads their
//! hellos and batches of envelopes, hands each message to the actor's [`Dispatch`], and sends
//! replies without ever blocking on one connection. Split by idea: [`accept`] (new connections
//! and their hellos), [`send`] (replies, backlogs, the last words); the loop itself here.

mod accept;
mod net;
mod send;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::context::Watch;
use super::dispatch::{Answer, Dispatch, Hook};
use super::gate::{self, Gate};
use super::proto::{self, Sys, Welcome};
use super::{ActorId, Down};
use crate::error::{Error, ExitReason, Result};
use crate::message::Schema;
use crate::sys;
use crate::wire::{self, Channel, Wait};
use net::{NetCallers, NetPeer};
use send::{drop_frames, Backlog};

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
    /// A caller on another host (see `net`).
    Net(Box<NetPeer>),
}

impl Peer {
    fn chan(&self) -> Option<&Channel> {
        match self {
            Peer::New(c) | Peer::Caller { chan: c, .. } | Peer::Watcher(c) => Some(c),
            Peer::LinkedIn { chan, .. } => Some(chan),
            Peer::Watching(w) => w.chan.as_ref(),
            Peer::Net(_) => None,
        }
    }

    /// The descriptor the loop watches for it, if any.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Peer::Net(n) => Some(n.stream.as_fd()),
            other => other.chan().map(AsFd::as_fd),
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
        Peer::Net(n) => {
            return match std::sync::Arc::try_unwrap(n.stream) {
                Ok(stream) => close_socket_later(stream.into_fd()),
                // The ticker holds it this moment: it closes when the ticker lets go.
                Err(shared) => sys::shutdown_both(shared.as_fd()),
            };
        }
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

/// The event loop of one actor process.
pub(crate) struct Endpoint {
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
    /// The fingerprints a caller's hello must name: the actor's message and reply types.
    schemas: (u64, u64),
    /// Their names, for a caller whose types differ.
    schema_names: String,
    /// Callers on other hosts, per tag.
    net: NetCallers,
    /// A message to a network caller, being encoded.
    net_buf: Vec<u8>,
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

impl Drop for Endpoint {
    fn drop(&mut self) {
        wire::live_channels().remove(&std::os::fd::AsRawFd::as_raw_fd(&self.listener));
    }
}

impl Endpoint {
    /// An event loop on `listener`, for callers of an actor whose message and reply types are
    /// `msg` and `reply`.
    pub(crate) fn new(
        listener: OwnedFd,
        welcome: Welcome,
        limit: u64,
        (msg, reply): (Schema, Schema),
    ) -> Result<Self> {
        let poller = sys::Poller::new().map_err(|e| Error::io("epoll", e))?;
        poller
            .add(listener.as_fd(), LISTENER)
            .map_err(|e| Error::io("epoll", e))?;
        let gate = welcome.capacity.map(Gate::create).transpose()?;
        let server = Endpoint {
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
            schemas: (msg.fingerprint, reply.fingerprint),
            schema_names: format!("{} (replies: {})", msg.name, reply.name),
            net: NetCallers::default(),
            net_buf: Vec::new(),
        };
        // A process this actor forks lets go of the listener (as of every pipe end), or the
        // actor's address would answer after the actor ended, with the actor's pid.
        wire::live_channels().insert(std::os::fd::AsRawFd::as_raw_fd(&server.listener));
        Ok(server)
    }

    fn add_peer(&mut self, peer: Peer) {
        let token = self.next_token;
        self.next_token += 1;
        if let Some(fd) = peer.fd() {
            if self.poller.add(fd, token).is_err() {
                if let Peer::Net(n) = &peer {
                    self.forget_net(n.tag());
                }
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
        if let Some(fd) = peer.fd() {
            self.poller.remove(fd);
        }
        if let Peer::Net(n) = &peer {
            self.forget_net(n.tag());
            self.closed_callers.push(token);
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

    /// Runs the actor `d` until it ends; returns why.
    pub(crate) fn run(&mut self, d: &mut dyn Dispatch) -> ExitReason {
        self.adopt_watches(d);
        if let Err(reason) = d.hook(Hook::Started) {
            return self.finish(d, reason);
        }
        let mut pending: Vec<u64> = Vec::new();
        loop {
            self.adopt_watches(d);
            self.adopt_streams(d);
            if let Some(reason) = d.control().stop.take() {
                return self.finish(d, reason);
            }
            if self.stop_requested {
                return self.finish(d, ExitReason::Normal);
            }
            if pending.is_empty() {
                let due = self.timers();
                if let Err(e) = self.wait(due) {
                    log::error!(target: "procactor::actor", "event loop failed: {e}");
                    let message = format!("its event loop failed: {e}");
                    return self.finish(d, ExitReason::Failed { message });
                }
                pending.append(&mut self.ready);
            }
            let Some(token) = pending.pop() else {
                continue;
            };
            if let Err(reason) = self.service(token, d) {
                return self.finish(d, reason);
            }
        }
    }

    /// Drops connections that did not say hello in time and wakes a resting listener whose
    /// rest is over; returns when the next of these is due (`None`: nothing is).
    fn timers(&mut self) -> Option<Instant> {
        let sweep = self
            .net
            .next_sweep()
            .and_then(|_| self.sweep_net(Instant::now()));
        if self.fresh.is_empty() && self.listener_rest.is_none() {
            return sweep;
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
        [hello_due, self.listener_rest, sweep]
            .into_iter()
            .flatten()
            .min()
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

    fn adopt_watches(&mut self, d: &mut dyn Dispatch) {
        let watches = &mut d.control().watches;
        if watches.is_empty() {
            return;
        }
        for w in std::mem::take(watches) {
            self.add_peer(Peer::Watching(w));
        }
    }

    /// Handles readiness of one token; `Err` with the reason when the actor must end.
    fn service(&mut self, token: u64, d: &mut dyn Dispatch) -> std::result::Result<(), ExitReason> {
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
                Read::Batch(fds) => self.dispatch(token, fds, d),
            },
            Some(Peer::LinkedIn { .. }) | Some(Peer::Watching(_)) => self.watched_ended(token, d),
            Some(Peer::Net(_)) => self.service_net(token, d),
        }
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
        d: &mut dyn Dispatch,
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
            if self.stop_requested || d.control().stop.is_some() {
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
                    let r = self.message(token, op, env.id, env.payload, env_fds, d);
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
            self.adopt_watches(d);
        }
        self.batch = batch;
        // Descriptors no envelope claimed: a peer chose them (see `closer`).
        crate::closer::close_later(fds);
        self.give_back_batch();
        outcome
    }

    /// One tell or ask.
    fn message(
        &mut self,
        token: u64,
        op: u8,
        id: u64,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        d: &mut dyn Dispatch,
    ) -> std::result::Result<(), ExitReason> {
        self.tell_net_counts(d);
        let ctl = d.control();
        ctl.caller = token;
        ctl.asking = op == proto::OP_ASK;
        ctl.closed_callers.append(&mut self.closed_callers);
        if op != proto::OP_ASK {
            return d.message(payload, fds, None);
        }
        let mut to = Answering {
            endpoint: self,
            token,
            id,
        };
        d.message(payload, fds, Some(&mut to))
    }

    fn system(&mut self, token: u64, payload: &[u8], fds: Vec<OwnedFd>) {
        match wire::decode::<Sys>(payload, fds) {
            Ok(Sys::Stop) => self.stop_requested = true,
            Ok(Sys::Sync { id }) => {
                self.answer_with(token, proto::REPLY, id, &mut |b| wire::encode(&(), b))
            }
            Err(e) => {
                log::warn!(target: "procactor::actor", "actor {:?}: bad system message: {e}", self.welcome.name)
            }
        }
    }

    /// A linked or watched actor's connection has something: its last words or its end.
    fn watched_ended(
        &mut self,
        token: u64,
        d: &mut dyn Dispatch,
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
        if !link {
            d.hook(Hook::Down(down))
        } else if d.control().trap_exit {
            d.hook(Hook::Exit(down))
        } else if reason.is_abnormal() {
            Err(ExitReason::Linked {
                name,
                reason: Box::new(reason),
            })
        } else {
            Ok(())
        }
    }

    /// Ends the actor: drains the mailbox (normal stop only), runs the hooks, and tells every
    /// connection why it ends.
    fn finish(&mut self, d: &mut dyn Dispatch, reason: ExitReason) -> ExitReason {
        let mut reason = reason;
        if reason == ExitReason::Normal && self.stop_requested {
            self.stop_requested = false;
            if let Err(r) = self.drain(d) {
                reason = r;
            }
            self.stop_requested = true;
        }
        if reason == ExitReason::Normal {
            if let Err(r) = d.hook(Hook::Stopping) {
                reason = r;
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
        self.flush_net_at_exit(send::EXIT_IDLE, send::EXIT_FLUSH);
        d.stopped(&reason);
        reason
    }

    /// Handles what is already waiting on every caller connection (after a stop request).
    fn drain(&mut self, d: &mut dyn Dispatch) -> std::result::Result<(), ExitReason> {
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
                        self.dispatch(token, fds, d)?;
                        if d.control().stop.is_some() {
                            return Ok(());
                        }
                    }
                    Read::Nothing | Read::Closed => break,
                }
            }
        }
        self.drain_net(d)
    }
}

/// An ask's reply on its way to the caller on `token`.
struct Answering<'a> {
    endpoint: &'a mut Endpoint,
    token: u64,
    id: u64,
}

impl Answer for Answering<'_> {
    fn reply(&mut self, encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<Vec<std::os::fd::RawFd>>) {
        self.endpoint
            .answer_with(self.token, proto::REPLY, self.id, encode);
    }

    fn failed(&mut self, e: &Error) {
        let refused = proto::Failure {
            handled: false,
            reason: e.to_string(),
        };
        self.endpoint
            .answer_with(self.token, proto::FAILED, self.id, &mut |b| {
                wire::encode(&refused, b)
            });
    }
}

//! New connections: accepted (of our own user only, a bounded number at a time, the silent
//! ones dropped first when descriptors run out), then their hellos read and answered.

use std::os::fd::{AsFd, RawFd};
use std::time::Instant;

use super::{
    close_socket_later, let_go, Endpoint, Peer, Said, ACCEPT_BATCH, ACCEPT_REST, LISTENER,
    MAX_FRESH,
};
use crate::actor::proto::{self, Role};
use crate::actor::ActorId;
use crate::error::Error;
use crate::sys;
use crate::wire::{self, Channel, Wait};

impl Endpoint {
    /// Accepts what connected, at most [`ACCEPT_BATCH`] connections per wake-up.
    pub(super) fn accept(&mut self) {
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
    pub(super) fn drop_oldest_silent(&mut self, before: u64) -> bool {
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
    pub(super) fn rest_listener(&mut self) {
        if self.listener_rest.is_none() {
            self.poller.remove(self.listener.as_fd());
        }
        self.listener_rest = Some(Instant::now() + ACCEPT_REST);
    }

    /// Watches a resting listener again.
    pub(super) fn wake_listener(&mut self) {
        if self.listener_rest.take().is_some() {
            if let Err(e) = self.poller.add(self.listener.as_fd(), LISTENER) {
                log::warn!(target: "procactor::actor", "actor {:?} cannot watch its listener again, for now: {e}", self.welcome.name);
                self.listener_rest = Some(Instant::now() + ACCEPT_REST);
            }
        }
    }

    /// Reads a hello and answers it.
    pub(super) fn hello(&mut self, token: u64) -> Said {
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
                if (msg.1, reply.1) != self.schemas {
                    refuse(&chan, self.schema_names.clone());
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
}

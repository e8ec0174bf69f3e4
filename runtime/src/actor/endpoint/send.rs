//! Sending on a connection without ever blocking the loop, and without losing a frame: what a
//! connection cannot take now waits in its backlog and goes, in order, once it has room.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use super::{Endpoint, Peer};
use crate::actor::proto;
use crate::error::{Error, Result};
use crate::sys;
use crate::wire::{self, Outgoing};

/// Bytes of frames one connection may have waiting in the actor (its socket buffer full: a
/// caller slow to read its replies) before the actor stops reading that connection until they
/// are all gone. Back-pressure, never a dropped reply; the replies of the one batch being
/// handled may go past it.
const QUEUE_HIGH: usize = 1 << 20;

/// How long an ending actor waits for connections with frames still waiting (its last words
/// last) to take them: it gives up once none took anything for `EXIT_IDLE`, and after
/// `EXIT_FLUSH` in all. The process is ending anyway; a caller that does not read for that long
/// sees the connection close without the actor's last words.
pub(super) const EXIT_IDLE: Duration = Duration::from_millis(100);
pub(super) const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// Frames a connection could not take yet (its socket buffer was full), to send in order
/// before anything else as soon as it has room.
pub(super) struct Backlog {
    pub(super) frames: VecDeque<Outgoing>,
    /// Their sizes added up (memory files included).
    pub(super) bytes: usize,
    /// Past [`QUEUE_HIGH`]: the connection is not read (its input interest is off) until the
    /// backlog is gone.
    pub(super) paused: bool,
}

/// Drops frames that will never be sent. Their descriptors are ours (duplicates), but of
/// objects a peer may have handed over, whose last copy this may be: closed off the loop.
pub(super) fn drop_frames(frames: VecDeque<Outgoing>) {
    crate::closer::close_later(frames.into_iter().flat_map(Outgoing::into_fds));
}

impl Endpoint {
    /// Sends a reply (or a failure) to the caller on `token`: what `encode` writes into the
    /// buffer it is given.
    pub(super) fn answer_with(
        &mut self,
        token: u64,
        kind: u8,
        id: u64,
        encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<Vec<RawFd>>,
    ) {
        let mut reply = std::mem::take(&mut self.reply);
        reply.clear();
        // A reply (not a refusal) means the message was handled, whatever becomes of it.
        let handled = kind == proto::REPLY;
        let (kind, fds) = match encode(&mut reply) {
            Ok(fds) => (kind, fds),
            Err(e) => {
                reply.clear();
                let lost = proto::Failure {
                    handled,
                    reason: format!("the reply could not be encoded: {e}"),
                };
                let _ = wire::encode(&lost, &mut reply);
                (proto::FAILED, Vec::new())
            }
        };
        match self.send_to(token, kind, id, &reply, &fds) {
            Ok(()) | Err(Error::Disconnected) => {}
            Err(e) => {
                // The caller is waiting: tell it why its reply cannot come.
                log::warn!(target: "procactor::actor", "actor {:?} could not send a reply: {e}", self.welcome.name);
                reply.clear();
                let lost = proto::Failure {
                    handled,
                    reason: format!("the reply could not be sent: {e}"),
                };
                if wire::encode(&lost, &mut reply).is_ok() {
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
    pub(super) fn send_to(
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
    pub(super) fn flush(&mut self, token: u64) -> bool {
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
    pub(super) fn watch(&self, token: u64) {
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
    pub(super) fn flush_at_exit(&mut self) {
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
}

//! Callers on other hosts, served by the same loop as local ones (see `actor::net` for what they
//! say). A network caller's stream is read without waiting (a message begun stays in the stream
//! until it is whole), its replies are queued in the stream and written as its socket takes
//! them, and it is not read again while any are left: a caller that does not read its replies
//! holds at most [`NET_QUEUE_HIGH`] of them here, and holds up nobody else.
//!
//! Liveness, both ways: the loop drops a caller it has not heard from for its heartbeat timeout
//! (unless its input waits unread: the loop was busy), and a [`Ticker`] thread sends every caller
//! a tick each quarter of that timeout, so that a caller hears from this process even while the
//! loop runs a long operation for someone else (a process stopped or gone sends none).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Endpoint, Peer, HELLO_DEADLINE};
use crate::actor::dispatch::{Answer, Dispatch};
use crate::actor::net::{self, Down, Up};
use crate::error::{Error, ExitReason, Result};
use crate::sys;
use crate::wire::stream::Stream;
use crate::wire::Wait;

/// Messages read from one network caller per turn of the loop, at most (then the others get
/// their turn, and it gets another).
const NET_BATCH: usize = 32;

/// Queued reply bytes past which a network caller is not read until they are written.
const NET_QUEUE_HIGH: usize = 1 << 20;

/// How often the loop looks for network callers silent past their heartbeat timeout (or past
/// the hello deadline, before their hello), while it has any.
const SWEEP: Duration = Duration::from_millis(100);

/// How often the ticker thread looks for ticks due.
const TICK_SLICE: Duration = Duration::from_millis(20);

/// A network caller (see the module documentation).
pub(super) struct NetPeer {
    /// Shared with the ticker thread only (which holds it weakly, and only sends).
    pub(super) stream: Arc<Stream>,
    /// Whoever made the loop serve it chose this (the manager: which gateway).
    tag: u64,
    /// Its heartbeat timeout, once its hello is read.
    heartbeat: Option<Duration>,
    /// When it was last heard from (adopted, for one that has not said hello).
    heard: Instant,
    /// Its socket is watched for room (replies wait in the stream), not for input.
    writing: bool,
    /// The bytes it took (acknowledged) and sent us, as of the last sweep: a caller taking its
    /// answers or sending a long message, however slowly, is not silent.
    progress_seen: (u64, u64),
}

impl NetPeer {
    pub(super) fn tag(&self) -> u64 {
        self.tag
    }
}

/// Network callers by tag, and when the loop next looks for silent ones.
#[derive(Default)]
pub(super) struct NetCallers {
    pub(super) counts: HashMap<u64, usize>,
    /// The counts changed since the actor was last told.
    pub(super) changed: bool,
    next_sweep: Option<Instant>,
    /// Started with the first caller's welcome.
    ticker: Option<Ticker>,
}

struct Ticked {
    stream: Weak<Stream>,
    every: Duration,
    next: Instant,
}

/// The thread that sends ticks (see the module documentation); it ends with the loop.
struct Ticker {
    streams: Arc<Mutex<Vec<Ticked>>>,
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start() -> std::io::Result<Ticker> {
        let ticker = Ticker {
            streams: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (streams, stop) = (ticker.streams.clone(), ticker.stop.clone());
        std::thread::Builder::new()
            .name("procactor-ticker".into())
            .spawn(move || Ticker::run(&streams, &stop))?;
        Ok(ticker)
    }

    fn run(streams: &Mutex<Vec<Ticked>>, stop: &AtomicBool) {
        let mut tick = Vec::new();
        if net::encode(&Down::Pong, &mut tick).is_err() {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK_SLICE);
            let now = Instant::now();
            let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
            streams.retain_mut(|t| {
                let Some(stream) = t.stream.upgrade() else {
                    return false;
                };
                if now >= t.next {
                    t.next = now + t.every;
                    // What the socket does not take now the loop writes on its next turn for
                    // this caller (its own pings bring one).
                    if stream.enqueue(&[&tick]).is_ok() {
                        let _ = stream.flush();
                    }
                }
                true
            });
        }
    }

    fn add(&self, stream: &Arc<Stream>, heartbeat: Duration) {
        let every = heartbeat / 4;
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Ticked {
                stream: Arc::downgrade(stream),
                every,
                next: Instant::now() + every,
            });
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl NetCallers {
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.next_sweep
    }
}

impl Endpoint {
    /// Serves the streams the actor was asked to serve, and lets go of the callers of the tags
    /// it closed.
    pub(super) fn adopt_streams(&mut self, d: &mut dyn Dispatch) {
        let ctl = d.control();
        if ctl.net_adopt.is_empty() && ctl.net_close.is_empty() {
            return;
        }
        let adopt = std::mem::take(&mut ctl.net_adopt);
        let close = std::mem::take(&mut ctl.net_close);
        for (stream, tag) in adopt {
            *self.net.counts.entry(tag).or_default() += 1;
            self.net.changed = true;
            self.net
                .next_sweep
                .get_or_insert_with(|| Instant::now() + SWEEP);
            let token = self.next_token;
            self.add_peer(Peer::Net(Box::new(NetPeer {
                stream: Arc::new(stream),
                tag,
                heartbeat: None,
                heard: Instant::now(),
                writing: false,
                progress_seen: (0, 0),
            })));
            // Its hello may be in the stream already, read with the handshake.
            if self.peers.contains_key(&token) {
                self.ready.push(token);
            }
        }
        if !close.is_empty() {
            let gone: Vec<u64> = self
                .peers
                .iter()
                .filter(|(_, p)| matches!(p, Peer::Net(n) if close.contains(&n.tag)))
                .map(|(t, _)| *t)
                .collect();
            for token in gone {
                self.drop_peer(token);
            }
        }
        self.tell_net_counts(d);
    }

    /// Counts one network caller less (it is being removed).
    pub(super) fn forget_net(&mut self, tag: u64) {
        if let Some(n) = self.net.counts.get_mut(&tag) {
            *n -= 1;
            if *n == 0 {
                self.net.counts.remove(&tag);
            }
        }
        self.net.changed = true;
        if self.net.counts.is_empty() {
            self.net.next_sweep = None;
        }
    }

    /// Tells the actor how many network callers each tag has, if that changed.
    pub(super) fn tell_net_counts(&mut self, d: &mut dyn Dispatch) {
        if std::mem::take(&mut self.net.changed) {
            d.control().net_callers.clone_from(&self.net.counts);
        }
    }

    /// Drops network callers silent past their heartbeat timeout (or their hello deadline);
    /// returns when to look again (`None`: no network caller).
    pub(super) fn sweep_net(&mut self, now: Instant) -> Option<Instant> {
        let due = self.net.next_sweep?;
        if now < due {
            return Some(due);
        }
        let silent: Vec<u64> = self
            .peers
            .iter_mut()
            .filter_map(|(&token, p)| match p {
                Peer::Net(n) => {
                    // Bytes of a long message either way are signs of life too: bytes it sent,
                    // and, while answers wait for it, bytes it took. (Not while none wait: a
                    // stopped process's kernel still acknowledges the ticks.)
                    let (delivered, received) = (n.stream.delivered(), n.stream.received());
                    let took = n.writing && delivered != n.progress_seen.0;
                    if took || received != n.progress_seen.1 {
                        n.heard = now;
                    }
                    n.progress_seen = (delivered, received);
                    let allowed = n.heartbeat.unwrap_or(HELLO_DEADLINE);
                    (now.saturating_duration_since(n.heard) > allowed).then_some(token)
                }
                _ => None,
            })
            .collect();
        for token in silent {
            let Some(Peer::Net(n)) = self.peers.get(&token) else {
                continue;
            };
            // Input waiting unread (the loop was busy, with another caller's long operation)
            // is not silence: it is read on the next turn.
            let waiting = sys::wait_ready(&[(n.stream.as_fd(), sys::Want::Read)], Some(now))
                .is_ok_and(|r| r[0]);
            if waiting && !n.writing {
                self.ready.push(token);
                continue;
            }
            log::info!(target: "procactor::actor", "actor {:?}: a network caller was silent for {:?}: it is dropped", self.welcome.name, n.heartbeat.unwrap_or(HELLO_DEADLINE));
            self.drop_peer(token);
        }
        let next = now + SWEEP;
        self.net.next_sweep = (!self.net.counts.is_empty()).then_some(next);
        self.net.next_sweep
    }

    /// Handles readiness of network caller `token`: writes what waits for it, then reads and
    /// handles what it sent (a batch at most).
    pub(super) fn service_net(
        &mut self,
        token: u64,
        d: &mut dyn Dispatch,
    ) -> std::result::Result<(), ExitReason> {
        let Some(Peer::Net(n)) = self.peers.get_mut(&token) else {
            return Ok(());
        };
        if n.writing {
            match n.stream.flush() {
                Ok(true) => {
                    n.writing = false;
                    self.watch_net(token);
                }
                Ok(false) => return Ok(()),
                Err(_) => {
                    self.drop_peer(token);
                    return Ok(());
                }
            }
        }
        for _ in 0..NET_BATCH {
            let Some(Peer::Net(n)) = self.peers.get_mut(&token) else {
                return Ok(());
            };
            if n.stream.queued() > NET_QUEUE_HIGH {
                break;
            }
            let bytes = match n.stream.recv(Wait::No) {
                Ok(b) => b,
                Err(e) if e.is_timeout() => break,
                Err(e) => {
                    if !matches!(e, Error::Disconnected) {
                        log::debug!(target: "procactor::actor", "actor {:?}: a network caller's stream failed: {e}", self.welcome.name);
                    }
                    self.drop_peer(token);
                    return Ok(());
                }
            };
            n.heard = Instant::now();
            let keep = self.net_message(token, &bytes, d);
            if let Some(Peer::Net(n)) = self.peers.get_mut(&token) {
                // The time spent on its message is not its silence.
                n.heard = Instant::now();
            }
            match keep {
                Ok(true) => {}
                Ok(false) => {
                    self.drop_peer(token);
                    return Ok(());
                }
                Err(reason) => return Err(reason),
            }
            if self.stop_requested || d.control().stop.is_some() {
                break;
            }
        }
        self.flush_net(token);
        Ok(())
    }

    /// Handles what network callers sent before a stop (bounded: a caller that keeps sending
    /// cannot keep the actor alive).
    pub(super) fn drain_net(
        &mut self,
        d: &mut dyn Dispatch,
    ) -> std::result::Result<(), ExitReason> {
        let tokens: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p, Peer::Net(_)))
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            for _ in 0..(10_000 / NET_BATCH) {
                let waiting = match self.peers.get(&token) {
                    Some(Peer::Net(n)) if !n.writing => {
                        n.stream.has_whole()
                            || sys::wait_ready(
                                &[(n.stream.as_fd(), sys::Want::Read)],
                                Some(Instant::now()),
                            )
                            .is_ok_and(|r| r[0])
                    }
                    _ => false,
                };
                if !waiting {
                    break;
                }
                self.service_net(token, d)?;
                if d.control().stop.is_some() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// At the end: writes the replies still queued for network callers, waiting for room at
    /// most `idle` without progress and `all` in all.
    pub(super) fn flush_net_at_exit(&mut self, idle: Duration, all: Duration) {
        let start = Instant::now();
        let mut progress = start;
        loop {
            let mut waiting = Vec::new();
            for p in self.peers.values() {
                if let Peer::Net(n) = p {
                    let before = n.stream.queued();
                    if before == 0 {
                        continue;
                    }
                    match n.stream.flush() {
                        Ok(true) => progress = Instant::now(),
                        Ok(false) => {
                            if n.stream.queued() < before {
                                progress = Instant::now();
                            }
                            waiting.push(n.stream.clone());
                        }
                        Err(_) => {}
                    }
                }
            }
            if waiting.is_empty() {
                return;
            }
            let deadline = (progress + idle).min(start + all);
            let fds: Vec<_> = waiting
                .iter()
                .map(|s| (s.as_fd(), sys::Want::Write))
                .collect();
            if !matches!(sys::wait_ready(&fds, Some(deadline)), Ok(r) if r.contains(&true)) {
                return;
            }
        }
    }

    /// Writes what waits for network caller `token`; watches it for room if some is left.
    fn flush_net(&mut self, token: u64) {
        let Some(Peer::Net(n)) = self.peers.get_mut(&token) else {
            return;
        };
        match n.stream.flush() {
            Ok(true) => {
                // Whole messages may wait in the stream, read with the last ones: the socket
                // will not say so. (Not a message begun: its rest comes with the socket's
                // readiness.)
                if n.stream.has_whole() {
                    self.ready.push(token);
                }
            }
            Ok(false) => {
                if !n.writing {
                    n.writing = true;
                    self.watch_net(token);
                }
            }
            Err(_) => self.drop_peer(token),
        }
    }

    /// Sets what the poller reports network caller `token` for: room while replies wait,
    /// input otherwise.
    fn watch_net(&self, token: u64) {
        let Some(Peer::Net(n)) = self.peers.get(&token) else {
            return;
        };
        let interest = sys::Interest {
            read: !n.writing,
            write: n.writing,
        };
        if let Err(e) = self.poller.modify(n.stream.as_fd(), token, interest) {
            log::warn!(target: "procactor::actor", "actor {:?} could not change what it watches on a connection: {e}", self.welcome.name);
        }
    }

    /// Queues one message of the protocol for network caller `token`.
    fn send_net(&mut self, token: u64, down: &Down) -> Result<()> {
        let mut buf = std::mem::take(&mut self.net_buf);
        let sent = net::encode(down, &mut buf).and_then(|()| match self.peers.get(&token) {
            Some(Peer::Net(n)) => n.stream.enqueue(&[&buf]),
            _ => Ok(()),
        });
        self.net_buf = buf;
        sent
    }

    /// Handles one message from network caller `token`: `Ok(false)` if it is to be dropped.
    fn net_message(
        &mut self,
        token: u64,
        bytes: &[u8],
        d: &mut dyn Dispatch,
    ) -> std::result::Result<bool, ExitReason> {
        let Some(Peer::Net(n)) = self.peers.get_mut(&token) else {
            return Ok(false);
        };
        let up = match net::decode::<Up>(bytes) {
            Ok(up) => up,
            Err(e) => {
                log::debug!(target: "procactor::actor", "actor {:?}: a network caller sent garbage: {e}", self.welcome.name);
                return Ok(false);
            }
        };
        let (tag, said_hello) = (n.tag, n.heartbeat.is_some());
        let (id, payload) = match up {
            Up::Hello {
                protocol,
                msg,
                reply,
                heartbeat_ms,
            } if !said_hello => {
                let refused = if protocol != net::PROTOCOL {
                    Some(format!(
                        "protocol {protocol}; this actor speaks {}",
                        net::PROTOCOL
                    ))
                } else if (msg, reply) != self.schemas {
                    Some(format!(
                        "other message types than this actor's, {}",
                        self.schema_names
                    ))
                } else {
                    None
                };
                if let Some(reason) = refused {
                    let _ = self.send_net(token, &Down::Refused { reason });
                    self.flush_net(token);
                    return Ok(false);
                }
                let heartbeat_ms = heartbeat_ms.clamp(net::HEARTBEAT_MIN_MS, net::HEARTBEAT_MAX_MS);
                let heartbeat = Duration::from_millis(heartbeat_ms);
                n.heartbeat = Some(heartbeat);
                let stream = n.stream.clone();
                let welcome = Down::Welcome {
                    pid: self.welcome.pid,
                    name: self.welcome.name.clone(),
                    heartbeat_ms,
                };
                if self.send_net(token, &welcome).is_err() {
                    return Ok(false);
                }
                if self.net.ticker.is_none() {
                    match Ticker::start() {
                        Ok(t) => self.net.ticker = Some(t),
                        Err(e) => {
                            log::warn!(target: "procactor::actor", "actor {:?} cannot start its ticker: {e}", self.welcome.name);
                            return Ok(false);
                        }
                    }
                }
                if let Some(t) = &self.net.ticker {
                    t.add(&stream, heartbeat);
                }
                return Ok(true);
            }
            // A second hello, or anything before the first: not a caller of ours.
            Up::Hello { .. } => return Ok(false),
            _ if !said_hello => return Ok(false),
            // Heard (the ticker speaks for us).
            Up::Ping => return Ok(true),
            Up::Ask { id, payload } => (Some(id), payload),
            Up::Tell { payload } => (None, payload),
        };
        if self.stop_requested || d.control().stop.is_some() {
            // Sent after the stop: refused, as if the actor were already gone.
            if let Some(id) = id {
                let failed = Down::Failed {
                    id,
                    handled: false,
                    reason: "the actor is stopping".into(),
                };
                return Ok(self.send_net(token, &failed).is_ok());
            }
            return Ok(true);
        }
        self.tell_net_counts(d);
        let ctl = d.control();
        ctl.caller = token;
        ctl.asking = id.is_some();
        ctl.net_tag = Some(tag);
        ctl.closed_callers.append(&mut self.closed_callers);
        let outcome = match id {
            None => d.message(payload, Vec::new(), None),
            Some(id) => {
                let mut to = NetAnswering {
                    endpoint: self,
                    token,
                    id,
                    sent: true,
                };
                let r = d.message(payload, Vec::new(), Some(&mut to));
                if !to.sent {
                    d.control().net_tag = None;
                    return r.map(|()| false);
                }
                r
            }
        };
        d.control().net_tag = None;
        self.adopt_watches(d);
        outcome.map(|()| true)
    }
}

/// An ask's reply on its way to a network caller.
struct NetAnswering<'a> {
    endpoint: &'a mut Endpoint,
    token: u64,
    id: u64,
    /// False if the reply could not be queued (the stream failed): the caller is dropped.
    sent: bool,
}

impl Answer for NetAnswering<'_> {
    fn reply(&mut self, encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<Vec<std::os::fd::RawFd>>) {
        let mut reply = std::mem::take(&mut self.endpoint.reply);
        reply.clear();
        let down = match encode(&mut reply) {
            Ok(fds) if fds.is_empty() => Down::Reply {
                id: self.id,
                payload: &reply,
            },
            Ok(_) => Down::Failed {
                id: self.id,
                handled: true,
                reason: "the reply holds descriptors (a Queue, a Connection, a proxy...), which \
                         cannot cross hosts"
                    .into(),
            },
            Err(e) => Down::Failed {
                id: self.id,
                handled: true,
                reason: format!("the reply could not be encoded: {e}"),
            },
        };
        self.sent = self.endpoint.send_net(self.token, &down).is_ok();
        self.endpoint.reply = reply;
    }

    fn failed(&mut self, e: &Error) {
        let down = Down::Failed {
            id: self.id,
            handled: false,
            reason: e.to_string(),
        };
        self.sent = self.endpoint.send_net(self.token, &down).is_ok();
    }
}

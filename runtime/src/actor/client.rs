//! The caller's side of an actor connection: one per (process, actor), shared by every
//! `ActorRef` to that actor in the process, so messages from one thread arrive in the order they
//! were sent, tells and asks alike.
//!
//! Tells go to an outbox that a per-process flusher thread writes out: a burst of tells becomes a
//! few large records (one system call per batch, not per message), and a handler that tells
//! another actor never blocks on that actor's socket (two actors telling each other cannot
//! deadlock). The flusher never waits on any one socket: it writes what each one takes, sets the
//! full ones aside and waits in poll(2) for room in them and for new work at once, so an actor
//! that stops reading (stopped, or just slow) delays the tells to itself only.
//!
//! An ask writes the outbox itself, up to and including its own envelope, and waits for its
//! reply; replies carry their request id, so several threads can ask at once: one reads, the
//! others wait for what it stashes for them. Every wait of an ask (for the writing turn, for
//! room in the socket, for the reply) ends at its deadline.
//!
//! Order: one thread at a time (the flusher or a caller) has a connection's writing turn and
//! takes batches from the front of its outbox, so records go out in the order their envelopes
//! were queued, and messages from one thread arrive in order, asks included. A caller whose
//! deadline passes puts back in front what it took and did not send, and leaves the rest to the
//! flusher.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::gate::{Full, Gate};
use super::proto::{self, Role, Welcome};
use crate::error::{Error, ExitReason, Result};
use crate::sys;
use crate::wire::{self, Channel, Wait, INLINE_MAX};

/// Why a connection could not be made.
pub(crate) enum ConnectError {
    /// Nobody listens there (the actor is gone, or the name is free).
    NotThere,
    /// The other side refused (schema mismatch) or the exchange failed.
    Failed(Error),
}

/// How long a connect waits while an actor's backlog of connections is full.
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the actor listening at `addr` (a socket in the session's private directory),
/// waiting at most `patience` for room in its backlog. The kernel says who listens there (the
/// process that last called `listen`: never a message), and only a process of our own user is
/// an actor of ours.
fn connect_own(
    addr: &str,
    patience: std::time::Duration,
) -> std::result::Result<(OwnedFd, sys::PeerCred), ConnectError> {
    let fd = match sys::connect_path(addr, patience) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(sys::ECONNREFUSED | sys::ENOENT)) => {
            return Err(ConnectError::NotThere)
        }
        Err(e) => return Err(ConnectError::Failed(Error::io("connect", e))),
    };
    let cred = sys::peer_cred(fd.as_fd())
        .map_err(|e| ConnectError::Failed(Error::io("SO_PEERCRED", e)))?;
    if cred.uid != sys::getuid() {
        // Not reachable through our private directory: say so, and hear nothing from it.
        log::warn!(
            target: "procactor::actor",
            "refused {addr:?}: it is held by pid {} of another user (uid {})",
            cred.pid,
            cred.uid
        );
        return Err(ConnectError::NotThere);
    }
    Ok((fd, cred))
}

/// True if an actor of our user listens at `addr`. Never waits: a listener whose backlog is full
/// is alive (and, in our private directory, ours). The probe connection is dropped at once.
pub(crate) fn answers(addr: &str) -> bool {
    match connect_own(addr, std::time::Duration::ZERO) {
        Ok(_) => true,
        Err(ConnectError::Failed(Error::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::WouldBlock =>
        {
            true
        }
        Err(_) => false,
    }
}

/// The pid of the process of our user that listens at `addr`, from the kernel, and a connection
/// to it that hangs up if that process ends (so the pid can be checked to be still its own).
pub(crate) fn listener_pid(addr: &str) -> Option<(u32, OwnedFd)> {
    connect_own(addr, CONNECT_PATIENCE)
        .ok()
        .map(|(fd, cred)| (cred.pid, fd))
}

/// Connects to `addr` in `role`, waiting for the welcome as `wait` says. Returns the channel, the
/// welcome and the descriptor that came with it (a bounded mailbox's gate). The welcome's pid is
/// the kernel's, not what the actor wrote.
pub(crate) fn handshake(
    addr: &str,
    role: &Role,
    wait: Wait,
) -> std::result::Result<(Channel, Welcome, Option<OwnedFd>), ConnectError> {
    let hello = Hello::say(addr, role, wait)?;
    let (welcome, fd) = hello.welcome(role, wait)?;
    Ok((hello.chan, welcome, fd))
}

/// What waiting for a welcome came to.
pub(crate) enum Finish {
    Open(Arc<Conn>),
    /// No welcome yet (the wait's expiry with it).
    NotYet(Hello, Error),
    Failed(ConnectError),
}

/// A connection that said hello, its welcome not read yet (the actor answers between two
/// messages: a `try_` form does not wait for it, and reads it on a later try).
pub(crate) struct Hello {
    chan: Channel,
    cred: sys::PeerCred,
}

impl Hello {
    /// Connects to `addr` and says hello in `role`. With `Wait::No`, an actor whose backlog of
    /// connections is full is not waited for either (a zero timeout).
    pub(crate) fn say(
        addr: &str,
        role: &Role,
        wait: Wait,
    ) -> std::result::Result<Hello, ConnectError> {
        let patience = match wait {
            Wait::No => std::time::Duration::ZERO,
            _ => CONNECT_PATIENCE,
        };
        let (fd, cred) = match connect_own(addr, patience) {
            Err(ConnectError::Failed(Error::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                return Err(ConnectError::Failed(wait.expired()))
            }
            other => other?,
        };
        // Actors answer large payloads in memory files: a reply never makes us wait on a sender.
        let chan = Channel::from_fd(fd).files_only();
        let mut hello = Vec::new();
        wire::encode(role, &mut hello).map_err(ConnectError::Failed)?;
        match chan.send(proto::HELLO, 0, &hello, &[]) {
            Ok(()) => Ok(Hello { chan, cred }),
            Err(Error::Disconnected) => Err(ConnectError::NotThere),
            Err(e) => Err(ConnectError::Failed(e)),
        }
    }

    /// The connection made whole, once its welcome came (within `wait`).
    pub(crate) fn open(
        self,
        role: &Role,
        wait: Wait,
    ) -> std::result::Result<Arc<Conn>, ConnectError> {
        match self.finish(role, wait) {
            Finish::Open(conn) => Ok(conn),
            Finish::NotYet(_, e) | Finish::Failed(ConnectError::Failed(e)) => {
                Err(ConnectError::Failed(e))
            }
            Finish::Failed(e) => Err(e),
        }
    }

    /// The connection made whole if its welcome comes within `wait`; else this hello back, to
    /// try again later.
    pub(crate) fn finish(self, role: &Role, wait: Wait) -> Finish {
        match self.welcome(role, wait) {
            Ok((welcome, fd)) => match Conn::welcomed(self.chan, welcome, fd) {
                Ok(conn) => Finish::Open(conn),
                Err(e) => Finish::Failed(e),
            },
            Err(ConnectError::Failed(e)) if e.is_timeout() => Finish::NotYet(self, e),
            Err(e) => Finish::Failed(e),
        }
    }

    /// Reads the welcome (or the refusal), waiting as `wait` says.
    fn welcome(
        &self,
        role: &Role,
        wait: Wait,
    ) -> std::result::Result<(Welcome, Option<OwnedFd>), ConnectError> {
        let (chan, cred) = (&self.chan, self.cred);
        let answer = chan.recv(wait, |f| match f.kind {
            proto::WELCOME => {
                let w: Welcome = wire::decode(f.payload, Vec::new())?;
                Ok(Ok((w, f.fds.first())))
            }
            proto::REFUSED => Ok(Err(wire::decode::<String>(f.payload, Vec::new())?)),
            // The actor ended while we were connecting: its last words came instead.
            proto::EXIT => Err(Error::Disconnected),
            k => Err(Error::Decode {
                expected: "an actor's welcome",
                reason: format!("frame of kind {k}"),
            }),
        });
        match answer {
            Ok(Ok((mut w, fd))) => {
                // The listener was ours until the actor's process took it over (it listens again
                // first thing): only then does the kernel name the actor, and only we, its
                // spawner, can have connected before.
                if cred.pid != sys::getpid() {
                    w.pid = cred.pid;
                }
                Ok((w, fd))
            }
            Ok(Err(theirs)) => Err(ConnectError::Failed(match role {
                Role::Caller { msg, .. } => Error::SchemaMismatch {
                    ours: msg.0.clone().into(),
                    theirs: theirs.into(),
                },
                _ => Error::Decode {
                    expected: "an actor's welcome",
                    reason: theirs,
                },
            })),
            Err(Error::Disconnected) => Err(ConnectError::NotThere),
            Err(e) => Err(ConnectError::Failed(e)),
        }
    }
}

/// A run of envelopes sent as one record.
struct Batch {
    /// Its place in the connection's order of records (see `Outbox::next_seq`).
    seq: u64,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

#[derive(Default)]
struct Outbox {
    /// Records to write, in order (their `seq` ascending).
    batches: VecDeque<Batch>,
    /// The `seq` of the next batch made: an ask knows its envelope is written once no batch of
    /// its number or below is left, and stops writing there.
    next_seq: u64,
    /// The flusher has this connection on its list (to write, or waiting for room), or it is
    /// `parked`: tells need not wake the flusher.
    scheduled: bool,
    /// The flusher let go of it while a caller had the writing turn: that caller hands it back
    /// when it lets go (see `Conn::let_go`).
    parked: bool,
    /// A thread has the writing turn: only it takes batches out, so they go in order.
    writing: bool,
    /// Threads waiting for the turn (`Conn::turn` is notified only if there are any: a
    /// notification is a system call).
    turn_waiters: u32,
}

/// Where [`Conn::push`] queued an envelope.
struct Queued {
    /// The batch that holds it.
    seq: u64,
    /// This push put the connection on the flusher's list.
    newly: bool,
}

/// How the flusher's [`Conn::write_some`] left a connection.
#[derive(Debug, PartialEq, Eq)]
enum Flushed {
    /// Nothing left: off the flusher's list.
    Empty,
    /// More was queued meanwhile: written on the flusher's next round.
    More,
    /// The socket is full: the flusher waits for room in it.
    Full,
    /// Another thread has the writing turn: the connection is parked with it, and handed back
    /// to the flusher when it lets go, if anything is left then.
    Busy,
}

enum Stashed {
    Reply(Vec<u8>, Vec<OwnedFd>),
    Failed(proto::Failure),
}

#[derive(Default)]
struct Replies {
    /// A thread is reading the socket; the others wait on the condvar.
    reading: bool,
    stash: HashMap<u64, Stashed>,
    /// Ids whose callers gave up: their replies are dropped when they come.
    abandoned: HashSet<u64>,
    /// The actor is gone: its last words if it said any.
    gone: Option<ExitReason>,
}

/// A caller's connection to one actor.
pub(crate) struct Conn {
    chan: Channel,
    pub(crate) welcome: Welcome,
    gate: Option<Gate>,
    outbox: Mutex<Outbox>,
    /// Notified when the writing turn (`Outbox::writing`) is given back.
    turn: Condvar,
    replies: Mutex<Replies>,
    replied: Condvar,
    next_id: AtomicU64,
    /// `replies.gone` is set: read without the lock on every tell.
    dead: AtomicBool,
    /// Tells went out since the last [`sync`](Conn::sync).
    told: AtomicBool,
    /// The process that opened it: a forked copy's drop must not touch the socket.
    pid: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an ask got back.
enum Answer<R> {
    Reply(R),
    Failed(proto::Failure),
}

impl Conn {
    pub(crate) fn open(
        addr: &str,
        role: &Role,
        wait: Wait,
    ) -> std::result::Result<Arc<Conn>, ConnectError> {
        Hello::say(addr, role, wait)?.open(role, wait)
    }

    /// The connection `chan`, welcomed by its actor (`fd`: a bounded mailbox's gate).
    fn welcomed(
        chan: Channel,
        welcome: Welcome,
        fd: Option<OwnedFd>,
    ) -> std::result::Result<Arc<Conn>, ConnectError> {
        crate::exit::at_exit(flush_before_exit);
        let gate = match (welcome.capacity, fd) {
            (Some(_), Some(fd)) => Some(Gate::map(fd).map_err(ConnectError::Failed)?),
            (Some(_), None) => {
                return Err(ConnectError::Failed(Error::Decode {
                    expected: "an actor's welcome",
                    reason: "bounded mailbox without its gate".into(),
                }))
            }
            _ => None,
        };
        Ok(Arc::new(Conn {
            chan,
            welcome,
            gate,
            outbox: Mutex::default(),
            turn: Condvar::new(),
            replies: Mutex::default(),
            replied: Condvar::new(),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            told: AtomicBool::new(false),
            pid: sys::getpid(),
        }))
    }

    fn died(&self, reason: ExitReason) -> Error {
        Error::ActorDied {
            name: self.welcome.name.clone(),
            pid: self.welcome.pid,
            reason: Box::new(reason),
        }
    }

    /// Records that the actor ended: with its last words, or (`None`) without, which does not
    /// overwrite words already heard.
    fn mark_gone(&self, r: &mut Replies, words: Option<ExitReason>) {
        match words {
            Some(reason) => r.gone = Some(reason),
            None => {
                r.gone.get_or_insert(ExitReason::Unknown);
            }
        }
        self.dead.store(true, Ordering::Release);
    }

    /// The actor's end, if this connection has seen it.
    pub(crate) fn gone(&self) -> Option<ExitReason> {
        lock(&self.replies).gone.clone()
    }

    /// Takes a mailbox slot (bounded mailboxes only).
    fn admit(&self, wait: Wait) -> Result<()> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        gate.acquire(self.welcome.slot, wait)
            .map_err(|full| match full {
                Full::Now => Error::MailboxFull {
                    name: self.welcome.name.clone(),
                    pid: self.welcome.pid,
                },
                Full::Timeout(e) => e,
            })
    }

    /// Appends one envelope to the outbox. With `for_flusher`, also puts the connection on the
    /// flusher's list (under the same lock).
    fn push<M: Serialize + ?Sized>(
        &self,
        op: u8,
        id: u64,
        msg: &M,
        for_flusher: bool,
    ) -> Result<Queued> {
        let mut out = lock(&self.outbox);
        let out = &mut *out;
        if out.batches.is_empty() {
            out.batches.push_back(Batch {
                seq: out.next_seq,
                buf: Vec::new(),
                fds: Vec::new(),
            });
            out.next_seq += 1;
        }
        let tail = out.batches.back_mut().expect("just ensured");
        let start = tail.buf.len();
        let head = proto::header_len(op);
        tail.buf.resize(start + head, 0);
        let raw = match wire::encode(msg, &mut tail.buf) {
            Ok(raw) => raw,
            Err(e) => {
                tail.buf.truncate(start);
                return Err(e);
            }
        };
        let len = tail.buf.len() - start - head;
        let record = (tail.buf.len() - start) as u64;
        if record > self.welcome.limit {
            // The actor would refuse it unread: say so here, with nothing sent.
            tail.buf.truncate(start);
            return Err(Error::TooLarge {
                size: record,
                limit: self.welcome.limit,
            });
        }
        proto::write_header(&mut tail.buf[start..start + head], op, id, len, raw.len());
        // Handles inside the message: their descriptors must outlive the caller's value.
        let mut fds = Vec::with_capacity(raw.len());
        for fd in raw {
            match sys::dup(wire::borrow_collected(fd)) {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    tail.buf.truncate(start);
                    return Err(Error::io("dup", e));
                }
            }
        }
        let cap = (INLINE_MAX as u64).min(self.welcome.limit) as usize;
        let too_big = tail.buf.len() > cap || tail.fds.len() + fds.len() > sys::MAX_FDS;
        let mut seq = tail.seq;
        if too_big && start > 0 {
            // This envelope starts the next record.
            let moved = tail.buf.split_off(start);
            seq = out.next_seq;
            out.next_seq += 1;
            out.batches.push_back(Batch {
                seq,
                buf: moved,
                fds,
            });
        } else {
            tail.fds.extend(fds);
        }
        let newly = for_flusher && !out.scheduled;
        out.scheduled |= for_flusher;
        Ok(Queued { seq, newly })
    }

    /// Sends one batch, waiting for room in the socket as `wait` says; `Ok(false)` if nothing
    /// was sent. A caller that waits reads what the actor sends meanwhile (see `send_reading`).
    fn send_batch(&self, b: &Batch, wait: Wait) -> Result<bool> {
        let raw: Vec<RawFd> = b.fds.iter().map(|f| f.as_raw_fd()).collect();
        // A large batch goes in a memory file: the actor's event loop takes no stream that could
        // make it wait on us, and the record that carries it is small.
        if matches!(wait, Wait::No) {
            return self.chan.try_send(proto::BATCH, 0, &b.buf, &raw);
        }
        match self.chan.try_send_or_keep(proto::BATCH, 0, &b.buf, &raw)? {
            None => Ok(true),
            Some(kept) => self.send_reading(&kept, wait),
        }
    }

    /// Writes what is queued up to and including batch `seq` (everything, for `u64::MAX`), in
    /// order, waiting for the writing turn and for room in the socket only as `wait` says.
    ///
    /// If the wait runs out first: `Error::Timeout`, and nothing is lost or reordered: a batch
    /// taken and not sent goes back in front, and what is left queued goes to the flusher.
    fn write_through(self: &Arc<Self>, seq: u64, wait: Wait) -> Result<()> {
        let mut out = lock(&self.outbox);
        while out.writing {
            // The holder may be a caller blocked on a full socket (a stopped actor): wait for the
            // turn within our own deadline, never longer.
            let left = match wait.deadline() {
                None => None,
                Some(d) => match d.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => return Err(wait.expired()),
                    left => Some(left),
                },
            };
            out.turn_waiters += 1;
            out = match left {
                None => self.turn.wait(out).unwrap_or_else(|p| p.into_inner()),
                Some(left) => {
                    self.turn
                        .wait_timeout(out, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            out.turn_waiters -= 1;
        }
        out.writing = true;
        let mut result = Ok(());
        // With the turn, nothing is in flight: a batch of our number or below that is not queued
        // any more was written (by us or by an earlier holder).
        while out.batches.front().is_some_and(|b| b.seq <= seq) {
            let b = out.batches.pop_front().expect("just checked");
            drop(out);
            let sent = self.send_batch(&b, wait);
            out = lock(&self.outbox);
            match sent {
                Ok(true) => {}
                Ok(false) => {
                    out.batches.push_front(b);
                    result = Err(wait.expired());
                    break;
                }
                Err(e) => {
                    if matches!(e, Error::Disconnected) {
                        // Nothing more can go: what is queued is dropped with its descriptors.
                        out.batches.clear();
                    }
                    // Otherwise the batch is lost (as a failed write always lost it), the rest
                    // still goes.
                    result = Err(e);
                    break;
                }
            }
        }
        self.let_go(out);
        if matches!(result, Err(Error::Disconnected)) {
            self.mark_gone(&mut lock(&self.replies), None);
        }
        result
    }

    /// Gives the writing turn back (a caller's, not the flusher's). What is left queued goes to
    /// the flusher, unless it has the connection already.
    fn let_go(self: &Arc<Self>, mut out: MutexGuard<'_, Outbox>) {
        out.writing = false;
        if out.turn_waiters > 0 {
            self.turn.notify_all();
        }
        let left = !out.batches.is_empty();
        let hand_over = if out.parked {
            // The flusher let go of it meanwhile, leaving it `scheduled`: ours to hand back.
            out.parked = false;
            out.scheduled = left;
            left
        } else {
            let newly = left && !out.scheduled;
            out.scheduled |= newly;
            newly
        };
        drop(out);
        if hand_over {
            flusher_schedule(self.clone());
        }
    }

    /// The flusher's write: what the socket takes now, never waiting, neither for the turn nor
    /// for room.
    fn write_some(&self) -> Flushed {
        let mut out = lock(&self.outbox);
        if out.writing {
            // Parked with the holder, which hands it back when it lets go (see `let_go`). It
            // stays `scheduled`: tells meanwhile do not wake the flusher for nothing.
            out.parked = true;
            return Flushed::Busy;
        }
        out.writing = true;
        // One round writes what was queued when it began: a connection told faster than its
        // actor reads does not keep the others waiting.
        let mut budget = out.batches.len();
        let mut full = false;
        let mut gone = false;
        while budget > 0 {
            let Some(b) = out.batches.pop_front() else {
                break;
            };
            budget -= 1;
            drop(out);
            let sent = self.send_batch(&b, Wait::No);
            out = lock(&self.outbox);
            match sent {
                Ok(true) => {}
                Ok(false) => {
                    out.batches.push_front(b);
                    full = true;
                    break;
                }
                Err(Error::Disconnected) => {
                    out.batches.clear();
                    gone = true;
                    break;
                }
                Err(e) => {
                    log::warn!(target: "procactor::actor", "tells to actor {:?} lost: {e}", self.welcome.name);
                }
            }
        }
        out.writing = false;
        if out.turn_waiters > 0 {
            self.turn.notify_all();
        }
        let state = if full {
            Flushed::Full
        } else if out.batches.is_empty() {
            out.scheduled = false;
            Flushed::Empty
        } else {
            Flushed::More
        };
        drop(out);
        if gone {
            self.mark_gone(&mut lock(&self.replies), None);
        }
        state
    }

    /// Sends a batch the socket had no room for, waiting for room as `wait` says (`Ok(false)`
    /// if it ran out), and reading what the actor sends meanwhile unless another thread of ours
    /// reads. The actor stops reading a connection whose replies pile up unread (its
    /// back-pressure: it never drops one), and replies to asks that timed out are read only when
    /// something reads: a writer that only waited for room could wait for ever. A send made while
    /// this thread decodes what it received (a handle adopted as it is decoded) only waits for
    /// room: it cannot receive from there.
    fn send_reading(&self, kept: &wire::Outgoing, wait: Wait) -> Result<bool> {
        let deadline = wait.deadline();
        let may_read = !wire::receiving();
        loop {
            let reader = may_read && self.read_available();
            if self.dead.load(Ordering::Acquire) {
                return Err(Error::Disconnected);
            }
            if self.chan.try_send_kept(kept)? {
                return Ok(true);
            }
            // Another thread reads for us: look again soon, in case it stops.
            let soon = Instant::now() + Duration::from_millis(5);
            let until = match (reader, deadline) {
                (true, d) => d,
                (false, Some(d)) => Some(d.min(soon)),
                (false, None) => Some(soon),
            };
            let fd = self.chan.as_fd();
            let watch = [(fd, sys::Want::Write), (fd, sys::Want::Read)];
            let watch = if reader { &watch[..] } else { &watch[..1] };
            let ready = sys::wait_ready(watch, until).map_err(|e| Error::io("poll", e))?;
            if !ready.contains(&true) && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Reads what the actor sent that is there now, unless another thread of ours is reading
    /// (then false): replies are stashed for their threads (or dropped, for asks that gave up),
    /// last words kept.
    fn read_available(&self) -> bool {
        {
            let mut r = lock(&self.replies);
            if r.reading {
                return false;
            }
            r.reading = true;
        }
        while !self.dead.load(Ordering::Acquire) {
            if self.read_one::<()>(u64::MAX, Wait::No).is_err() {
                break; // nothing more for now
            }
        }
        let mut r = lock(&self.replies);
        r.reading = false;
        self.replied.notify_all();
        true
    }

    /// Whether a thread of ours is reading this connection now.
    fn being_read(&self) -> bool {
        lock(&self.replies).reading
    }

    /// Sends without waiting for a reply (the flusher writes it soon).
    pub(crate) fn tell<M: Serialize>(self: &Arc<Self>, msg: &M, wait: Wait) -> Result<()> {
        self.check_alive()?;
        self.admit(wait)?;
        if self.push_admitted(proto::OP_TELL, 0, msg, true)?.newly {
            flusher_schedule(self.clone());
        }
        self.mark_told();
        Ok(())
    }

    /// Notes that this connection and this process told something since the last settle.
    fn mark_told(&self) {
        // Read first: no write to a shared cache line on every tell.
        if !self.told.load(Ordering::Relaxed) {
            self.told.store(true, Ordering::Relaxed);
        }
        if !TOLD.load(Ordering::Relaxed) {
            TOLD.store(true, Ordering::Relaxed);
        }
    }

    /// A tell written to the socket before it returns, in order with everything queued before
    /// it (the manager's adoption of a proxy: once written, this process's death cannot lose it).
    pub(crate) fn tell_now<M: Serialize>(self: &Arc<Self>, msg: &M) -> Result<()> {
        self.check_alive()?;
        self.admit(Wait::Forever)?;
        let q = self.push_admitted(proto::OP_TELL, 0, msg, false)?;
        self.mark_told();
        self.write_through(q.seq, Wait::Forever)
    }

    /// [`push`](Conn::push) of a message that took a mailbox slot: the slot is given back if
    /// the message cannot be encoded.
    fn push_admitted<M: Serialize>(
        &self,
        op: u8,
        id: u64,
        msg: &M,
        for_flusher: bool,
    ) -> Result<Queued> {
        self.push(op, id, msg, for_flusher).inspect_err(|_| {
            if let Some(gate) = &self.gate {
                gate.release(self.welcome.slot, 1);
            }
        })
    }

    /// Fails at once if this connection has seen the actor end (no lock: checked per tell).
    fn check_alive(&self) -> Result<()> {
        if !self.dead.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self.died(self.gone().unwrap_or(ExitReason::Unknown)))
    }

    /// Sends a system message (a stop), in order with the rest, without waiting: written now
    /// if the writing turn is free and the socket has room, else by the flusher soon after.
    pub(crate) fn sys(self: &Arc<Self>, msg: &proto::Sys) -> Result<()> {
        let q = self.push(proto::OP_SYS, 0, msg, false)?;
        match self.write_through(q.seq, Wait::No) {
            // Left queued: the holder of the turn, or the flusher, writes it (see `let_go`).
            Err(e) if e.is_timeout() => Ok(()),
            r => r,
        }
    }

    /// Waits until the actor has handled everything sent before on this connection.
    fn sync(self: &Arc<Self>, wait: Wait) -> Result<()> {
        self.check_alive()?;
        self.told.store(false, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let q = self.push(proto::OP_SYS, 0, &proto::Sys::Sync { id }, false)?;
        self.send_request(id, q.seq, wait)?;
        self.reply(id, wait)
    }

    /// Sends `msg` and waits for its reply as `wait` says: the wait covers a full mailbox, the
    /// writing turn and a full socket too.
    pub(crate) fn ask<M: Serialize, R: DeserializeOwned>(
        self: &Arc<Self>,
        msg: &M,
        wait: Wait,
    ) -> Result<R> {
        self.check_alive()?;
        self.admit(wait)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let q = self.push_admitted(proto::OP_ASK, id, msg, false)?;
        self.send_request(id, q.seq, wait).map_err(|e| match e {
            Error::Disconnected => self.died(self.last_words(wait)),
            e => e,
        })?;
        self.reply(id, wait)
    }

    /// Writes the request `id`, queued in batch `seq`, within `wait`. If the wait runs out
    /// first, the request stays queued (the flusher writes it later, and the actor handles it
    /// as any message it got: a bounded mailbox's slot is given back then), and its reply is
    /// dropped when it comes.
    fn send_request(self: &Arc<Self>, id: u64, seq: u64, wait: Wait) -> Result<()> {
        let written = self.write_through(seq, wait);
        if matches!(written, Err(Error::Timeout(_))) {
            lock(&self.replies).abandoned.insert(id);
        }
        written
    }

    /// Waits for the reply to `id`: the value, the actor's refusal as [`Error::Rejected`], or
    /// [`Error::ReplyLost`] for a message it handled but could not answer.
    fn reply<R: DeserializeOwned>(&self, id: u64, wait: Wait) -> Result<R> {
        match self.wait_reply::<R>(id, wait)? {
            Answer::Reply(r) => Ok(r),
            Answer::Failed(f) if f.handled => Err(Error::ReplyLost {
                name: self.welcome.name.clone().into(),
                pid: self.welcome.pid,
                reason: f.reason.into(),
            }),
            Answer::Failed(f) => Err(Error::Rejected {
                name: self.welcome.name.clone().into(),
                pid: self.welcome.pid,
                reason: f.reason.into(),
            }),
        }
    }

    /// After a failed write: reads what the actor said last (its words come before EOF).
    fn last_words(&self, wait: Wait) -> ExitReason {
        let short = Wait::timeout(std::time::Duration::from_millis(100));
        let wait = match (wait.deadline(), short.deadline()) {
            (Some(a), Some(b)) if a < b => wait,
            _ => short,
        };
        loop {
            if let Some(g) = self.gone() {
                return g;
            }
            if self.read_one::<()>(u64::MAX, wait).is_err() {
                return self.gone().unwrap_or(ExitReason::Unknown);
            }
        }
    }

    fn wait_reply<R: DeserializeOwned>(&self, id: u64, wait: Wait) -> Result<Answer<R>> {
        let mut r = lock(&self.replies);
        loop {
            if let Some(s) = r.stash.remove(&id) {
                return match s {
                    Stashed::Reply(bytes, fds) => Ok(Answer::Reply(wire::decode(&bytes, fds)?)),
                    Stashed::Failed(why) => Ok(Answer::Failed(why)),
                };
            }
            if let Some(reason) = r.gone.clone() {
                return Err(self.died(reason));
            }
            if r.reading {
                r = match wait.deadline() {
                    None => self.replied.wait(r).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let left = d.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            r.abandoned.insert(id);
                            return Err(wait.expired());
                        }
                        self.replied
                            .wait_timeout(r, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
                continue;
            }
            r.reading = true;
            drop(r);
            let got = self.read_one::<R>(id, wait);
            r = lock(&self.replies);
            r.reading = false;
            self.replied.notify_all();
            match got {
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => {}
                Err(e) if e.is_timeout() => {
                    r.abandoned.insert(id);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one frame: the answer if it is for `id`, else stashes or drops it and gives `None`.
    fn read_one<R: DeserializeOwned>(&self, id: u64, wait: Wait) -> Result<Option<Answer<R>>> {
        enum Got<R> {
            Mine(Answer<R>),
            Other(u64, Stashed),
            Words(ExitReason),
        }
        let got = self.chan.recv(wait, |f| match f.kind {
            proto::REPLY if f.fingerprint == id => {
                Ok(Got::Mine(Answer::Reply(wire::decode(f.payload, f.fds)?)))
            }
            proto::REPLY => Ok(Got::Other(
                f.fingerprint,
                Stashed::Reply(f.payload.to_vec(), f.fds.into()),
            )),
            proto::FAILED => {
                let why: proto::Failure = wire::decode(f.payload, Vec::new())?;
                if f.fingerprint == id {
                    Ok(Got::Mine(Answer::Failed(why)))
                } else {
                    Ok(Got::Other(f.fingerprint, Stashed::Failed(why)))
                }
            }
            proto::EXIT => {
                let w: proto::LastWords = wire::decode(f.payload, Vec::new())?;
                Ok(Got::Words(w.reason))
            }
            k => Err(Error::Decode {
                expected: "an actor's reply",
                reason: format!("frame of kind {k}"),
            }),
        });
        let mut r = lock(&self.replies);
        match got {
            Ok(Got::Mine(a)) => Ok(Some(a)),
            Ok(Got::Other(other, s)) => {
                if !r.abandoned.remove(&other) {
                    r.stash.insert(other, s);
                }
                Ok(None)
            }
            Ok(Got::Words(reason)) => {
                self.mark_gone(&mut r, Some(reason));
                Ok(None)
            }
            Err(Error::Disconnected) => {
                self.mark_gone(&mut r, None);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

procactor_os::per_process! {
    /// Sockets of connections dropped while tells they carried may be unhandled, shut for writing: the
    /// actor reads them to the end, then closes its side. A child that returns waits for that (see
    /// [`flush_before_exit`]), as it syncs the connections still in use.
    static LINGERING: Vec<OwnedFd> = Vec::new;
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Asks are answered, so only tells can be pending; a dead actor handles nothing more;
        // and only a child waits for its tells when it returns (the main program does not).
        if self.pid != sys::getpid()
            || !self.told.load(Ordering::Relaxed)
            || self.dead.load(Ordering::Acquire)
            || crate::identity::child_info().is_none()
        {
            return;
        }
        let Ok(fd) = sys::dup(self.chan.as_fd()) else {
            return;
        };
        sys::shutdown_write(fd.as_fd());
        let mut lingering = LINGERING.lock();
        lingering.retain(|fd| !sys::peer_closed(fd.as_fd()));
        lingering.push(fd);
    }
}

/// This process told an actor something since the last [`settle`]. Per process, so that a pool
/// worker whose tasks tell nothing pays one load per report, nothing more.
static TOLD: AtomicBool = AtomicBool::new(false);

/// How long a settle waits for each actor (and for the flusher, and for the lingering
/// connections all together).
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// True if this process told an actor anything (a Manager's pipelined writes included) since
/// the last [`settle`].
pub(crate) fn told_since_settle() -> bool {
    TOLD.load(Ordering::Relaxed)
}

/// Makes what this process told actors done: writes out every connection's queued tells, and
/// waits until the actors handled them (a sync on each connection told since the last settle,
/// and the end of the connections dropped with tells in flight), at most a few seconds per
/// actor. A child that returns runs it before it ends (see [`flush_before_exit`]), a pool
/// worker before it reports the results of tasks that told something: so whoever learns that
/// the work is done can read its effect at once (a manager's dict), as with CPython's manager,
/// whose writes are round trips.
pub(crate) fn settle() {
    // Cleared first: a tell from another thread while this runs is settled next time.
    TOLD.store(false, Ordering::Relaxed);
    // The flusher may be dropping the last reference to a connection it just wrote: once it
    // sleeps, every such connection is either still live or lingering.
    flusher_wait_idle(SETTLE_WAIT);
    for conn in super::actor_ref::live_conns() {
        let wait = Wait::timeout(SETTLE_WAIT);
        if let Err(e) = conn.write_through(u64::MAX, wait) {
            log::warn!(target: "procactor::actor", "tells to actor {:?} not written: {e}", conn.welcome.name);
            continue;
        }
        // Not from libc's exit: encoding and receiving need thread-locals that may be gone
        // there, and nobody joins the main program through procactor anyway.
        if conn.told.load(Ordering::Relaxed) && !crate::exit::in_libc_exit() {
            if let Err(e) = conn.sync(wait) {
                log::debug!(target: "procactor::actor", "tells to actor {:?} not confirmed: {e}", conn.welcome.name);
            }
        }
    }
    if crate::exit::in_libc_exit() {
        return;
    }
    // Connections dropped with tells in flight: handled once their actor closed its side.
    let lingering = std::mem::take(&mut *LINGERING.lock());
    let deadline = Instant::now() + SETTLE_WAIT;
    for fd in &lingering {
        if !sys::wait_peer_closed(fd.as_fd(), deadline) {
            log::debug!(target: "procactor::actor", "tells to an actor not confirmed");
        }
    }
}

/// Runs before this process ends (see `bootstrap::at_exit`): [`settle`]. In the main program,
/// whose dropped connections do not linger and which nobody joins, that writes out the tells.
pub(crate) fn flush_before_exit() {
    settle();
}

impl AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.chan.as_fd()
    }
}

/// The per-process flusher: connections with tells waiting to be written.
struct Flusher {
    /// Connections handed to it since it last looked.
    pending: Vec<Arc<Conn>>,
    /// It waits with nothing to write: whoever hands it a connection wakes it, through `wake`
    /// if it has one, else through `nudge`.
    sleeping: bool,
    /// While a socket it writes to is full, the flusher sleeps in poll(2) on those sockets and
    /// on this eventfd. It has one only then: no descriptor is held for it otherwise, and the
    /// common sleep is the condvar's.
    wake: Option<Arc<OwnedFd>>,
    nudge: Arc<Condvar>,
    /// Notified when the flusher goes to sleep.
    idle: Arc<Condvar>,
    running: bool,
}

procactor_os::per_process! {
    static FLUSHER: Flusher = || Flusher {
        pending: Vec::new(),
        sleeping: false,
        wake: None,
        nudge: Arc::new(Condvar::new()),
        idle: Arc::new(Condvar::new()),
        running: false,
    };
}

/// Waits (at most `limit`) until the flusher has written what it was given and dropped its
/// references to the connections (except those whose socket is full, which stay live).
fn flusher_wait_idle(limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut f = FLUSHER.lock();
    while f.running && !(f.sleeping && f.pending.is_empty()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let idle = f.idle.clone();
        f = idle
            .wait_timeout(f, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn flusher_schedule(conn: Arc<Conn>) {
    let mut f = FLUSHER.lock();
    f.pending.push(conn);
    if !f.running {
        let started = crate::per_process::spawn_thread("procactor-flush", flusher_loop);
        if started.is_ok() {
            f.running = true;
        } else {
            // No thread to spare: write in the caller's thread, without waiting. What the
            // socket does not take now goes with the connection's next write (its next tell
            // tries to start the flusher again).
            let pending = std::mem::take(&mut f.pending);
            drop(f);
            log::warn!(target: "procactor::actor", "no flusher thread: tells written by their callers");
            for conn in pending {
                if matches!(conn.write_some(), Flushed::Full | Flushed::More) {
                    lock(&conn.outbox).scheduled = false;
                }
            }
            return;
        }
    }
    if f.sleeping {
        // Once: it is awake after this.
        f.sleeping = false;
        match &f.wake {
            Some(wake) => sys::eventfd_signal(wake.as_fd()),
            None => f.nudge.notify_one(),
        }
    }
}

/// The flusher thread. It writes each connection it was given without waiting (one system call
/// per batch) and sets aside those whose socket is full. With none full it sleeps on a condvar;
/// with some, in one poll(2) on their sockets (for room) and on an eventfd (for new work). So an
/// actor that stops reading delays the tells to itself only, and nothing spins.
fn flusher_loop() {
    // To write on this round, and waiting for room.
    let mut ready: Vec<Arc<Conn>> = Vec::new();
    let mut full: Vec<Arc<Conn>> = Vec::new();
    let mut wake: Option<Arc<OwnedFd>> = None;
    loop {
        let mut f = FLUSHER.lock();
        ready.append(&mut f.pending);
        if full.is_empty() && wake.is_some() {
            // Nothing to poll for any more: the eventfd is closed (and `sleeping` is false, so
            // nobody signals it).
            f.wake = None;
            wake = None;
        }
        let sleep = ready.is_empty();
        if sleep {
            f.sleeping = true;
            f.idle.notify_all();
            if full.is_empty() {
                let nudge = f.nudge.clone();
                f = nudge.wait(f).unwrap_or_else(|p| p.into_inner());
                f.sleeping = false;
                continue;
            }
            if wake.is_none() {
                wake = sys::eventfd().ok().map(Arc::new);
                f.wake = wake.clone();
            }
        }
        drop(f);
        if !full.is_empty() {
            // Asleep: until room or new work comes (without an eventfd, no descriptor to spare,
            // a look every 10 ms for new work). With work in hand: only a look.
            //
            // A full socket may be full because its actor stopped reading it: it does that while
            // replies it owes this connection pile up unread (replies to asks that gave up are
            // read only when something reads). So the flusher reads them too, on a connection no
            // thread of ours reads: else tells could wait for ever for room. While another
            // thread reads one, the flusher looks again every 10 ms, in case it stops.
            let unread: Vec<bool> = full.iter().map(|c| !c.being_read()).collect();
            let deadline = match (sleep, &wake) {
                (false, _) => Some(Instant::now()),
                (true, Some(_)) if unread.iter().all(|&u| u) => None,
                (true, _) => Some(Instant::now() + Duration::from_millis(10)),
            };
            let mut fds = Vec::with_capacity(1 + 2 * full.len());
            fds.extend(full.iter().map(|c| (c.chan.as_fd(), sys::Want::Write)));
            for (c, &u) in full.iter().zip(&unread) {
                if u {
                    fds.push((c.chan.as_fd(), sys::Want::Read));
                }
            }
            if let Some(w) = &wake {
                fds.push((w.as_fd(), sys::Want::Read));
            }
            match sys::wait_ready(&fds, deadline) {
                Ok(got) => {
                    if let (Some(w), Some(true)) = (&wake, got.last()) {
                        sys::eventfd_drain(w.as_fd());
                    }
                    let (room, rest) = got.split_at(full.len());
                    let mut input = rest.iter();
                    for (c, &u) in full.iter().zip(&unread) {
                        if u && input.next().copied().unwrap_or(false) {
                            c.read_available();
                        }
                    }
                    let mut room = room.iter();
                    full.retain(|c| {
                        let writable = room.next().copied().unwrap_or(false);
                        if writable {
                            ready.push(c.clone());
                        }
                        !writable
                    });
                }
                Err(e) => {
                    // Cannot happen with valid descriptors; if it does, do not spin on it.
                    log::warn!(target: "procactor::actor", "flusher: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    ready.append(&mut full);
                }
            }
            if sleep {
                FLUSHER.lock().sleeping = false;
                continue;
            }
        }
        for conn in std::mem::take(&mut ready) {
            match conn.write_some() {
                Flushed::Empty | Flushed::Busy => {}
                Flushed::More => ready.push(conn),
                Flushed::Full => full.push(conn),
            }
        }
    }
}

//! The caller's side of an actor connection: one per (process, actor), shared by every
//! `ActorRef` to that actor in the process, so messages from one thread arrive in the order they
//! were sent, tells and asks alike.
//!
//! Tells go to an outbox that a per-process flusher thread writes out: a burst of tells becomes a
//! few large records (one system call per batch, not per message), and a handler that tells
//! another actor never blocks on that actor's socket (two actors telling each other cannot
//! deadlock). An ask writes the outbox (its tells first) itself and waits for its reply; replies
//! carry their request id, so several threads can ask at once: one reads, the others wait for
//! what it stashes for them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rustix::net::sockopt::Timeout;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::gate::{Full, Gate};
use super::proto::{self, Role, Welcome};
use crate::error::{Error, ExitReason, Result};
use crate::per_process::PerProcess;
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
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
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
    let (fd, cred) = connect_own(addr, CONNECT_PATIENCE)?;
    // Actors answer large payloads in memory files: a reply never makes us wait on a sender.
    let chan = Channel::from_fd(fd).files_only();
    let mut hello = Vec::new();
    wire::encode(role, &mut hello).map_err(ConnectError::Failed)?;
    match chan.send(proto::HELLO, 0, &hello, &[]) {
        Ok(()) => {}
        Err(Error::Disconnected) => return Err(ConnectError::NotThere),
        Err(e) => return Err(ConnectError::Failed(e)),
    }
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
            Ok((chan, w, fd))
        }
        Ok(Err(theirs)) => Err(ConnectError::Failed(match role {
            Role::Caller { msg, .. } => Error::SchemaMismatch {
                ours: msg.0.clone(),
                theirs,
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

/// A run of envelopes sent as one record.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

#[derive(Default)]
struct Outbox {
    batches: VecDeque<Batch>,
    /// The flusher has this connection on its list.
    scheduled: bool,
}

enum Stashed {
    Reply(Vec<u8>, Vec<OwnedFd>),
    Failed(String),
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
    /// Held while writing: whoever holds it sends everything queued before, so order is kept.
    writing: Mutex<()>,
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
    Failed(String),
}

impl Conn {
    pub(crate) fn open(
        addr: &str,
        role: &Role,
        wait: Wait,
    ) -> std::result::Result<Arc<Conn>, ConnectError> {
        let (chan, welcome, fd) = handshake(addr, role, wait)?;
        crate::bootstrap::at_exit(flush_before_exit);
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
            writing: Mutex::new(()),
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
            reason,
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
    /// flusher's list (under the same lock); true if it was not there yet.
    fn push<M: Serialize + ?Sized>(
        &self,
        op: u8,
        id: u64,
        msg: &M,
        for_flusher: bool,
    ) -> Result<bool> {
        let mut out = lock(&self.outbox);
        if out.batches.is_empty() {
            out.batches.push_back(Batch::default());
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
        if too_big && start > 0 {
            // This envelope starts the next record.
            let moved = tail.buf.split_off(start);
            out.batches.push_back(Batch { buf: moved, fds });
        } else {
            tail.fds.extend(fds);
        }
        let newly = for_flusher && !out.scheduled;
        out.scheduled |= for_flusher;
        Ok(newly)
    }

    /// Writes everything queued, in order.
    fn flush(&self) -> Result<()> {
        let _writing = lock(&self.writing);
        let batches = std::mem::take(&mut lock(&self.outbox).batches);
        for b in batches {
            let raw: Vec<RawFd> = b.fds.iter().map(|f| f.as_raw_fd()).collect();
            // A large batch goes in a memory file: the actor's event loop takes no stream that
            // could make it wait on us.
            let sent = match self.chan.try_send_or_keep(proto::BATCH, 0, &b.buf, &raw) {
                Ok(None) => Ok(()),
                Ok(Some(kept)) => self.send_reading(&kept),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                if matches!(e, Error::Disconnected) {
                    self.mark_gone(&mut lock(&self.replies), None);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends a batch the socket had no room for, reading what the actor sends meanwhile (unless
    /// another thread of ours is reading). The actor stops reading a connection whose replies
    /// pile up unread (its back-pressure: it never drops one), and replies to asks that timed
    /// out are read only when something reads: a writer that only waited for room could wait
    /// for ever. Waits as long as the socket's send timeout says (none: as long as it takes),
    /// as a blocking send would. A send made while this thread decodes what it received (a
    /// handle adopted as it is decoded) only waits for room: it cannot receive from there.
    fn send_reading(&self, kept: &wire::Outgoing) -> Result<()> {
        let timeout = rustix::net::sockopt::socket_timeout(&self.chan, Timeout::Send)
            .ok()
            .flatten();
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        let may_read = !wire::receiving();
        loop {
            let reader = may_read && {
                let mut r = lock(&self.replies);
                let free = !r.reading;
                r.reading = true;
                free
            };
            if reader {
                // What is there now: replies stashed for their threads (or dropped, for asks
                // that gave up), last words kept.
                while !self.dead.load(Ordering::Acquire) {
                    if self.read_one::<()>(u64::MAX, Wait::No).is_err() {
                        break; // nothing more for now
                    }
                }
                let mut r = lock(&self.replies);
                r.reading = false;
                self.replied.notify_all();
            }
            if self.dead.load(Ordering::Acquire) {
                return Err(Error::Disconnected);
            }
            if self.chan.try_send_kept(kept)? {
                return Ok(());
            }
            // Another thread reads for us: look again soon, in case it stops.
            let soon = std::time::Instant::now() + std::time::Duration::from_millis(5);
            let until = match (reader, deadline) {
                (true, d) => d,
                (false, Some(d)) => Some(d.min(soon)),
                (false, None) => Some(soon),
            };
            let ready = sys::wait_room(self.chan.as_fd(), reader, until)
                .map_err(|e| Error::io("poll", e))?;
            if !ready && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Error::io(
                    "send",
                    std::io::Error::from(std::io::ErrorKind::WouldBlock),
                ));
            }
        }
    }

    /// Sends without waiting for a reply (the flusher writes it soon).
    pub(crate) fn tell<M: Serialize>(self: &Arc<Self>, msg: &M, wait: Wait) -> Result<()> {
        self.check_alive()?;
        self.admit(wait)?;
        if self.push_admitted(proto::OP_TELL, 0, msg, true)? {
            flusher_schedule(self.clone());
        }
        // Read first: no write to a shared cache line on every tell.
        if !self.told.load(Ordering::Relaxed) {
            self.told.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A tell written to the socket before it returns, in order with everything queued before
    /// it (the manager's adoption of a proxy: once written, this process's death cannot lose it).
    pub(crate) fn tell_now<M: Serialize>(&self, msg: &M) -> Result<()> {
        self.check_alive()?;
        self.admit(Wait::Forever)?;
        self.push_admitted(proto::OP_TELL, 0, msg, false)?;
        if !self.told.load(Ordering::Relaxed) {
            self.told.store(true, Ordering::Relaxed);
        }
        self.flush()
    }

    /// [`push`](Conn::push) of a message that took a mailbox slot: the slot is given back if
    /// the message cannot be encoded.
    fn push_admitted<M: Serialize>(
        &self,
        op: u8,
        id: u64,
        msg: &M,
        for_flusher: bool,
    ) -> Result<bool> {
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

    /// Sends a system message, in order with the rest, and writes it out now.
    pub(crate) fn sys(&self, msg: &proto::Sys) -> Result<()> {
        self.push(proto::OP_SYS, 0, msg, false)?;
        self.flush()
    }

    /// Waits until the actor has handled everything sent before on this connection.
    fn sync(&self, wait: Wait) -> Result<()> {
        self.check_alive()?;
        self.told.store(false, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sys(&proto::Sys::Sync { id })?;
        self.reply(id, wait)
    }

    /// Sends `msg` and waits for its reply as `wait` says (the wait covers a full mailbox too).
    pub(crate) fn ask<M: Serialize, R: DeserializeOwned>(&self, msg: &M, wait: Wait) -> Result<R> {
        self.check_alive()?;
        self.admit(wait)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.push_admitted(proto::OP_ASK, id, msg, false)?;
        if let Err(e) = self.flush() {
            return Err(match e {
                Error::Disconnected => self.died(self.last_words(wait)),
                e => e,
            });
        }
        self.reply(id, wait)
    }

    /// Waits for the reply to `id`: the value, or the actor's refusal as [`Error::Rejected`].
    fn reply<R: DeserializeOwned>(&self, id: u64, wait: Wait) -> Result<R> {
        match self.wait_reply::<R>(id, wait)? {
            Answer::Reply(r) => Ok(r),
            Answer::Failed(reason) => Err(Error::Rejected {
                name: self.welcome.name.clone(),
                pid: self.welcome.pid,
                reason,
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
                let why: String = wire::decode(f.payload, Vec::new())?;
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

/// Sockets of connections dropped while tells they carried may be unhandled, shut for writing: the
/// actor reads them to the end, then closes its side. A child that returns waits for that (see
/// [`flush_before_exit`]), as it syncs the connections still in use.
static LINGERING: PerProcess<Vec<OwnedFd>> = PerProcess::new(Vec::new);

impl Drop for Conn {
    fn drop(&mut self) {
        // Asks are answered, so only tells can be pending; a dead actor handles nothing more;
        // and only a child waits for its tells when it returns (the main program does not).
        if self.pid != sys::getpid()
            || !self.told.load(Ordering::Relaxed)
            || self.dead.load(Ordering::Acquire)
            || crate::bootstrap::child_info().is_none()
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

/// Writes out every connection's queued tells and, in a child that returned, waits until they
/// were handled, at most a few seconds per actor: runs before this process ends (see
/// `bootstrap::at_exit`). So when a parent learns that a child ended, what the child told actors
/// (a manager's dict) is done: the parent may read it at once, as with CPython's manager, whose
/// writes are round trips.
pub(crate) fn flush_before_exit() {
    const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    // The flusher may be dropping the last reference to a connection it just wrote: once it
    // sleeps, every such connection is either still live or lingering.
    flusher_wait_idle(EXIT_WAIT);
    for conn in super::actor_ref::live_conns() {
        let _ = rustix::net::sockopt::set_socket_timeout(
            &conn.chan,
            rustix::net::sockopt::Timeout::Send,
            Some(EXIT_WAIT),
        );
        if let Err(e) = conn.flush() {
            log::warn!(target: "procactor::actor", "tells to actor {:?} lost at exit: {e}", conn.welcome.name);
            continue;
        }
        // Not from libc's exit: encoding and receiving need thread-locals that may be gone
        // there, and nobody joins the main program through procactor anyway.
        if conn.told.load(Ordering::Relaxed) && !crate::bootstrap::in_libc_exit() {
            if let Err(e) = conn.sync(Wait::timeout(EXIT_WAIT)) {
                log::debug!(target: "procactor::actor", "tells to actor {:?} not confirmed at exit: {e}", conn.welcome.name);
            }
        }
    }
    if crate::bootstrap::in_libc_exit() {
        return;
    }
    // Connections dropped with tells in flight: handled once their actor closed its side.
    let lingering = std::mem::take(&mut *LINGERING.lock());
    let deadline = std::time::Instant::now() + EXIT_WAIT;
    for fd in &lingering {
        if !sys::wait_peer_closed(fd.as_fd(), deadline) {
            log::debug!(target: "procactor::actor", "tells to an actor not confirmed at exit");
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.chan.as_fd()
    }
}

/// The per-process flusher: connections with tells waiting to be written.
struct Flusher {
    pending: Vec<Arc<Conn>>,
    sleeping: bool,
    wake: Arc<Condvar>,
    /// Notified when the flusher goes to sleep.
    idle: Arc<Condvar>,
    running: bool,
}

static FLUSHER: PerProcess<Flusher> = PerProcess::new(|| Flusher {
    pending: Vec::new(),
    sleeping: false,
    wake: Arc::new(Condvar::new()),
    idle: Arc::new(Condvar::new()),
    running: false,
});

/// Waits (at most `limit`) until the flusher has written what it was given and dropped its
/// references to the connections.
fn flusher_wait_idle(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    let mut f = FLUSHER.lock();
    while f.running && !(f.sleeping && f.pending.is_empty()) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
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
        f.running = true;
        let started = std::thread::Builder::new()
            .name("procactor-flush".into())
            .spawn(flusher_loop);
        if started.is_err() {
            // No thread to spare: write in the caller's thread instead.
            f.running = false;
            let pending = std::mem::take(&mut f.pending);
            drop(f);
            flush_all(pending);
            return;
        }
    }
    if f.sleeping {
        f.wake.notify_one();
    }
}

fn flush_all(pending: Vec<Arc<Conn>>) {
    for conn in pending {
        lock(&conn.outbox).scheduled = false;
        if let Err(e) = conn.flush() {
            log::debug!(target: "procactor::actor", "tells to actor {:?} lost: {e}", conn.welcome.name);
        }
    }
}

fn flusher_loop() {
    let mut f = FLUSHER.lock();
    loop {
        if f.pending.is_empty() {
            f.sleeping = true;
            f.idle.notify_all();
            let wake = f.wake.clone();
            f = wake.wait(f).unwrap_or_else(|p| p.into_inner());
            f.sleeping = false;
            continue;
        }
        let pending = std::mem::take(&mut f.pending);
        drop(f);
        flush_all(pending);
        f = FLUSHER.lock();
    }
}

//! [`ActorRef`]: the typed address of an actor, and the call forms the `#[actor]` macro's
//! methods go through ([`Caller`]).

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Conn, ConnectError, Finish, Hello};
use super::proto::{self, Role, Sys};
use super::{Actor, ActorId, Down};
use crate::error::{Error, ExitReason, Result, TrySendError};
use crate::message::Message;
use crate::process::ProcessHandle;
use crate::sys;
use crate::wire::{self, Channel, Wait};

/// What every `ActorRef` to one actor shares, whatever its type parameter.
pub(crate) struct RefInner {
    pub id: ActorId,
    pub name: String,
    pub pid: u32,
    pub addr: String,
    /// The actor's process handle, in the process that spawned it (and only there).
    pub owner: Option<(u32, ProcessHandle<ExitReason>)>,
    /// How it ended, once known (a process's value can be taken once; this is asked often).
    exit: Mutex<Option<ExitReason>>,
    /// This process's connection to it (re-made in a forked copy).
    conn: Mutex<Option<OwnConn>>,
    /// A connection a `try_` form began and did not wait for: its hello sent, its welcome read
    /// by a later try (pid of the process that made it, the connection's key).
    hello: Mutex<Option<(u32, ConnKey, Hello)>>,
}

/// A connection and who may use it: (pid of the process that made it, the actor type it was
/// checked for (None: system messages only), connection).
type OwnConn = (u32, Option<TypeId>, Arc<Conn>);

/// Connections of this process, per (address, message schema, reply schema): every `ActorRef`
/// to an actor uses one, so one thread's messages keep their order whichever ref sent them.
type ConnKey = (String, u64, u64);
/// How long a connection's welcome may take when the caller set no bound of its own (the actor
/// answers between two messages: a long handler delays it).
const CONNECT_WAIT: Duration = Duration::from_secs(30);

procactor_os::per_process! {
    static CONNS: HashMap<ConnKey, Weak<Conn>> = HashMap::new;
}

/// Every connection of this process still in use.
pub(crate) fn live_conns() -> Vec<Arc<Conn>> {
    CONNS.lock().values().filter_map(Weak::upgrade).collect()
}

impl RefInner {
    pub(crate) fn new(
        id: ActorId,
        name: String,
        pid: u32,
        addr: String,
        owner: Option<ProcessHandle<ExitReason>>,
    ) -> RefInner {
        RefInner {
            id,
            name,
            pid,
            addr,
            owner: owner.map(|h| (sys::getpid(), h)),
            exit: Mutex::new(None),
            conn: Mutex::new(None),
            hello: Mutex::new(None),
        }
    }

    fn handle(&self) -> Option<&ProcessHandle<ExitReason>> {
        match &self.owner {
            Some((pid, h)) if *pid == sys::getpid() => Some(h),
            _ => None,
        }
    }

    fn died(&self, reason: ExitReason) -> Error {
        Error::ActorDied {
            name: self.name.clone(),
            pid: self.pid,
            reason: Box::new(reason),
        }
    }

    /// The error for an actor found gone: how it ended, where this process can know.
    pub(crate) fn gone_error(&self) -> Error {
        self.died(self.refine(ExitReason::Unknown))
    }

    /// Waits (as `wait` says) for the exit reason through the process handle: exact, but only in
    /// the spawning process. `None` elsewhere.
    pub(crate) fn reason_from_handle(&self, wait: Wait) -> Option<Result<ExitReason>> {
        let h = self.handle()?;
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &*exit {
            return Some(Ok(r.clone()));
        }
        let got = match wait {
            Wait::Forever => h.join(),
            Wait::No => h.join_timeout(Duration::ZERO),
            Wait::Until { deadline, .. } => {
                h.join_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            }
        };
        let reason = match got {
            Ok(r) => r,
            Err(Error::ProcessFailed { reason, .. }) => *reason,
            Err(Error::Timeout(_)) => return Some(Err(wait.expired())),
            Err(e) => return Some(Err(e)),
        };
        *exit = Some(reason.clone());
        // A killed actor could not remove its socket's file.
        sys::unlink(&self.addr);
        Some(Ok(reason))
    }

    /// Makes `reason` exact where we can: an actor that ended without a word is our child's
    /// business, and its exit status says how it ended.
    pub(crate) fn refine(&self, reason: ExitReason) -> ExitReason {
        if reason != ExitReason::Unknown {
            return reason;
        }
        match self.reason_from_handle(Wait::timeout(Duration::from_secs(2))) {
            Some(Ok(r)) => r,
            _ => reason,
        }
    }

    fn refine_err(&self, e: Error) -> Error {
        match e {
            Error::ActorDied { name, pid, reason } if *reason == ExitReason::Unknown => {
                Error::ActorDied {
                    name,
                    pid,
                    reason: Box::new(self.refine(ExitReason::Unknown)),
                }
            }
            e => e,
        }
    }

    /// Installs a connection made elsewhere (by `whereis`) as this ref's, for actor type `A`.
    pub(crate) fn adopt<A: Actor>(&self, conn: Arc<Conn>) {
        let key = (A::Msg::schema().fingerprint, A::Reply::schema().fingerprint);
        let mut all = CONNS.lock();
        all.retain(|_, w| w.strong_count() > 0);
        all.insert((self.addr.clone(), key.0, key.1), Arc::downgrade(&conn));
        drop(all);
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((sys::getpid(), Some(TypeId::of::<A>()), conn));
    }

    /// A connection of any message type, for system messages: this process's existing one if
    /// there is one (so a stop comes after what this process sent before it).
    pub(crate) fn any_conn(&self) -> Result<Arc<Conn>> {
        if let Some((pid, _, c)) = &*self.conn.lock().unwrap_or_else(|p| p.into_inner()) {
            if *pid == sys::getpid() {
                return Ok(c.clone());
            }
        }
        let existing = CONNS
            .lock()
            .iter()
            .filter(|(k, _)| k.0 == self.addr)
            .find_map(|(_, w)| w.upgrade());
        if let Some(c) = existing {
            return Ok(c);
        }
        // A monitor-role hello does not check the schema: any ref may stop or register.
        self.conn(
            None,
            || (Role::Monitor, (0, 0)),
            Wait::timeout(CONNECT_WAIT),
        )
    }

    /// This process's connection to the actor as a caller of `msg`/`reply`.
    pub(crate) fn typed_conn<A: Actor>(&self, wait: Wait) -> Result<Arc<Conn>> {
        self.conn(
            Some(TypeId::of::<A>()),
            || {
                let (m, r) = (A::Msg::schema(), A::Reply::schema());
                (Role::caller(m, r), (m.fingerprint, r.fingerprint))
            },
            wait,
        )
    }

    /// This process's connection to the actor: the cached one if it was made here for `local`,
    /// else one shared with other refs (by address and schemas), else a new one.
    fn conn(
        &self,
        local: Option<TypeId>,
        make: impl FnOnce() -> (Role, (u64, u64)),
        wait: Wait,
    ) -> Result<Arc<Conn>> {
        let me = sys::getpid();
        let mut mine = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((pid, k, c)) = &*mine {
            if *pid == me && *k == local {
                return Ok(c.clone());
            }
        }
        let (role, key) = make();
        let k = (self.addr.clone(), key.0, key.1);
        let shared = CONNS.lock().get(&k).and_then(Weak::upgrade);
        let conn = match shared {
            Some(c) => c,
            None => {
                let c = self.open(&role, &k, wait).map_err(|e| match e {
                    ConnectError::NotThere => self.gone_error(),
                    ConnectError::Failed(e) => e,
                })?;
                let mut all = CONNS.lock();
                all.retain(|_, w| w.strong_count() > 0);
                all.insert(k, Arc::downgrade(&c));
                c
            }
        };
        *mine = Some((me, local, conn.clone()));
        Ok(conn)
    }

    /// A new connection in `role`. With `Wait::No` it never waits for the welcome (the actor
    /// answers between two messages, and may be busy, or be this very process): the hello
    /// stays pending and a later call reads the welcome; until then it fails with a zero
    /// timeout.
    fn open(&self, role: &Role, key: &ConnKey, wait: Wait) -> Result<Arc<Conn>, ConnectError> {
        let me = sys::getpid();
        let mut pending = self.hello.lock().unwrap_or_else(|p| p.into_inner());
        let begun = match pending.take() {
            Some((pid, k, hello)) if pid == me && k == *key => hello,
            // Another process's (a forked copy's inheritance), or another role's: dropped.
            _ => Hello::say(&self.addr, role, wait)?,
        };
        match begun.finish(role, wait) {
            Finish::Open(conn) => Ok(conn),
            Finish::NotYet(hello, e) => {
                if matches!(wait, Wait::No) {
                    *pending = Some((me, key.clone(), hello));
                }
                Err(ConnectError::Failed(e))
            }
            Finish::Failed(e) => Err(e),
        }
    }
}

/// A typed, cloneable, serializable reference to a running actor.
///
/// Clones share one connection; a ref sent to another process (in `Process` args, in a message,
/// in a Pool task) connects from there on first use, and checks there that both sides mean the
/// same message types ([`Error::SchemaMismatch`] otherwise).
///
/// The actor's process is a child of the process that spawned it: it ends when stopped, killed,
/// or when that process ends. Dropping refs does not stop it.
///
/// ```
/// # procactor::init();
/// use procactor::{ActorRef, Process};
///
/// struct Counter { n: u64 }
/// #[procactor::actor]
/// impl Counter {
///     fn init(_: ()) -> Self { Counter { n: 0 } }
///     pub fn add(&mut self, k: u64) -> u64 { self.n += k; self.n }
/// }
///
/// fn worker(c: ActorRef<Counter>) -> u64 { c.add(1).unwrap() }
///
/// let c = procactor::spawn::<Counter>(())?;
/// let ps: Vec<_> = (0..3).map(|_| Process::new(worker, c.clone()).start()).collect::<Result<_, _>>()?;
/// for p in ps { p.join()?; }
/// assert_eq!(c.add(0)?, 3);
/// c.stop()?;
/// # c.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct ActorRef<A> {
    pub(crate) inner: Arc<RefInner>,
    _a: PhantomData<fn() -> A>,
}

impl<A> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            inner: self.inner.clone(),
            _a: PhantomData,
        }
    }
}

impl<A> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("name", &self.inner.name)
            .field("pid", &self.inner.pid)
            .field("id", &self.inner.id)
            .finish()
    }
}

impl<A> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl<A> Eq for ActorRef<A> {}

impl<A> ActorRef<A> {
    pub(crate) fn from_inner(inner: Arc<RefInner>) -> Self {
        ActorRef {
            inner,
            _a: PhantomData,
        }
    }

    /// This incarnation's id (a restarted actor has a new one).
    pub fn id(&self) -> ActorId {
        self.inner.id
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The actor's process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Watches the actor from this process: [`Monitor::wait`] returns once it has ended.
    ///
    /// ```
    /// # procactor::init();
    /// # struct Idle;
    /// # #[procactor::actor] impl Idle { fn init(_: ()) -> Self { Idle } pub fn ping(&self) {} }
    /// let a = procactor::spawn::<Idle>(())?;
    /// let m = a.monitor()?;
    /// a.kill()?;
    /// let down = m.wait_timeout(std::time::Duration::from_secs(10))?;
    /// assert_eq!(down.reason, procactor::ExitReason::Killed { signal: 9 });
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn monitor(&self) -> Result<Monitor> {
        Monitor::open(self.inner.clone())
    }

    /// Asks the actor to stop: it handles every message this process sent before, runs its
    /// `stopping` hook and ends normally. Returns at once, even if the actor does not read its
    /// socket (the stop is written once it does); [`join`](ActorRef::join) waits.
    /// Stopping an actor that has already ended is not an error.
    pub fn stop(&self) -> Result<()> {
        let conn = match self.any_conn() {
            Ok(c) => c,
            Err(Error::ActorDied { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match conn.sys(&Sys::Stop) {
            Ok(()) | Err(Error::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Kills the actor's process (SIGKILL): no hook runs, messages in flight are lost.
    pub fn kill(&self) -> Result<()> {
        if let Some(h) = self.inner.handle() {
            return h.kill();
        }
        // Not our child: the pid is the kernel's answer to who listens at the actor's address
        // (a process of our user), never one a message named.
        let Some((pid, probe)) = super::client::listener_pid(&self.inner.addr) else {
            return Ok(()); // gone already
        };
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => return Ok(()),
        };
        // The listener outlived the pid's check only if its process did: our pending connection
        // hangs up when it ends. So the pidfd is the actor's, not a recycled pid's.
        if sys::peer_closed(std::os::fd::AsFd::as_fd(&probe)) {
            return Ok(());
        }
        sys::signal(std::os::fd::AsFd::as_fd(&pidfd), sys::SIGKILL)
            .map_err(|e| Error::io("pidfd_send_signal", e))
    }

    /// Waits for the actor to end and says how. In the process that spawned it the reason is
    /// exact (its exit status); elsewhere an actor killed by a signal reads as
    /// [`ExitReason::Unknown`].
    pub fn join(&self) -> Result<ExitReason> {
        self.join_wait(Wait::Forever)
    }

    /// [`join`](ActorRef::join), waiting at most `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<ExitReason> {
        self.join_wait(Wait::timeout(timeout))
    }

    fn join_wait(&self, wait: Wait) -> Result<ExitReason> {
        if let Some(r) = self.inner.reason_from_handle(wait) {
            return r;
        }
        Monitor::open(self.inner.clone())?
            .wait_for(wait)
            .map(|d| d.reason)
    }

    /// True while the actor's process runs.
    pub fn is_alive(&self) -> bool {
        match self.inner.handle() {
            Some(h) => h.is_alive(),
            None => super::client::answers(&self.inner.addr),
        }
    }

    fn any_conn(&self) -> Result<Arc<Conn>> {
        self.inner.any_conn()
    }
}

impl<A: Actor> ActorRef<A> {
    fn typed_conn(&self, wait: Wait) -> Result<Arc<Conn>> {
        self.inner.typed_conn::<A>(wait)
    }

    fn ask_wait(&self, msg: &A::Msg, wait: Wait) -> Result<A::Reply> {
        let conn = self.typed_conn(wait)?;
        conn.ask(msg, wait).map_err(|e| self.inner.refine_err(e))
    }

    /// An ask whose message is encoded from another type than `A::Msg` with the same encoding
    /// (the manager's proxies send operations that borrow their arguments).
    pub(crate) fn ask_as<M: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        msg: &M,
        wait: Wait,
    ) -> Result<R> {
        let conn = self.typed_conn(wait)?;
        conn.ask(msg, wait).map_err(|e| self.inner.refine_err(e))
    }

    /// The tell form of [`ask_as`](ActorRef::ask_as).
    pub(crate) fn tell_as<M: Serialize>(&self, msg: &M) -> Result<()> {
        let conn = self.typed_conn(Wait::Forever)?;
        conn.tell(msg, Wait::Forever)
            .map_err(|e| self.inner.refine_err(e))
    }

    /// [`tell_as`](ActorRef::tell_as), written to the socket before it returns (not left to
    /// the flusher): the manager's proxies adopt their references this way.
    pub(crate) fn tell_now_as<M: Serialize>(&self, msg: &M) -> Result<()> {
        let conn = self.typed_conn(Wait::Forever)?;
        conn.tell_now(msg).map_err(|e| self.inner.refine_err(e))
    }

    fn tell_wait(&self, msg: &A::Msg, wait: Wait) -> Result<()> {
        // A `try_` form's first use in a process sends the hello and returns: a later try
        // reads the welcome (see `RefInner::open`).
        let conn = self.typed_conn(wait)?;
        conn.tell(msg, wait).map_err(|e| self.inner.refine_err(e))
    }

    /// Sends `msg` and waits for the reply (the "ask"). A handler that panics, or an actor that
    /// dies first, gives [`Error::ActorDied`] with the reason.
    pub fn ask(&self, msg: A::Msg) -> Result<A::Reply> {
        self.ask_wait(&msg, Wait::Forever)
    }

    /// [`ask`](ActorRef::ask), waiting at most `timeout` in all: a full mailbox, an actor that
    /// does not read its socket and other threads writing to it included. The actor may still
    /// handle the message (if the time ran out before it was written, it stays queued in its
    /// place and is written later); its late reply is dropped.
    pub fn ask_timeout(&self, msg: A::Msg, timeout: Duration) -> Result<A::Reply> {
        self.ask_wait(&msg, Wait::timeout(timeout))
    }

    /// Sends `msg` without waiting for a reply (the "tell"). Tells are written in batches by a
    /// background thread; messages from one thread arrive in order, asks included. Messages
    /// from different processes have no order with each other (as in Erlang: each sender has its
    /// own connection). When a child process returns, its tells are written out and it waits
    /// (at most 5 s per actor) until they were handled, so a parent that joined it sees their
    /// effect (a pool worker does the same before it reports its tasks' results); when the
    /// program exits, they are written out. Blocks only while a bounded mailbox is full: an
    /// actor that does not read its socket delays the tells to itself, never the caller, nor
    /// this process's tells to other actors.
    pub fn tell(&self, msg: A::Msg) -> Result<()> {
        self.tell_wait(&msg, Wait::Forever)
    }

    /// [`tell`](ActorRef::tell) that never waits: the message comes back if it could not go
    /// ([`TrySendError::is_full`]: [`Error::MailboxFull`], no room in a bounded mailbox). The
    /// first use in a process that has not reached the actor yet sends its hello and does not
    /// wait for the answer (the actor answers between two messages, and may be busy, or be the
    /// caller itself): that try comes back with [`TrySendError::is_timeout`], and a later one
    /// goes once the actor answered.
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), TrySendError<A::Msg>> {
        match self.tell_wait(&msg, Wait::No) {
            Ok(()) => Ok(()),
            Err(e) => Err(TrySendError::new(msg, e)),
        }
    }

    /// [`tell`](ActorRef::tell) that waits at most `timeout` for room in a bounded mailbox; the
    /// message comes back if it could not go.
    pub fn tell_timeout(&self, msg: A::Msg, timeout: Duration) -> Result<(), TrySendError<A::Msg>> {
        match self.tell_wait(&msg, Wait::timeout(timeout)) {
            Ok(()) => Ok(()),
            Err(e) => Err(TrySendError::new(msg, e)),
        }
    }

    /// The tell form of the generated methods (Erlang's `cast`): `actor.cast().add(1)?` sends
    /// without waiting for the reply.
    pub fn cast(&self) -> Tell<'_, A> {
        Tell(self)
    }

    /// The non-blocking tell form: `actor.try_cast().add(1)?` fails with
    /// [`Error::MailboxFull`] rather than wait for room in a bounded mailbox (and, on a first
    /// use from a process not connected yet, with a zero timeout: see
    /// [`try_tell`](ActorRef::try_tell)).
    pub fn try_cast(&self) -> TryTell<'_, A> {
        TryTell(self)
    }

    /// The bounded ask form: `actor.timeout(d).add(1)?` gives up after `d`.
    pub fn timeout(&self, timeout: Duration) -> Timed<'_, A> {
        Timed(self, timeout)
    }
}

/// Serialized as its address: the receiving process connects on first use.
#[derive(Serialize, Deserialize)]
struct RefWire {
    id: u64,
    name: String,
    pid: u32,
    addr: String,
}

impl<A> Serialize for ActorRef<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        RefWire {
            id: self.inner.id.0,
            name: self.inner.name.clone(),
            pid: self.inner.pid,
            addr: self.inner.addr.clone(),
        }
        .serialize(s)
    }
}

impl<'de, A> Deserialize<'de> for ActorRef<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = RefWire::deserialize(d)?;
        Ok(ActorRef::from_inner(Arc::new(RefInner::new(
            ActorId(w.id),
            w.name,
            w.pid,
            w.addr,
            None,
        ))))
    }
}

/// How the methods `#[procactor::actor]` generates send their message: implemented by
/// [`ActorRef`] (ask), [`Tell`], [`TryTell`] and [`Timed`].
pub trait Caller<A: Actor> {
    /// What a method returning `R` gives back in this form.
    type Out<R>;

    /// Sends `msg`; `pick` takes this message's value out of the actor's reply enum.
    #[doc(hidden)]
    fn call<R>(&self, msg: A::Msg, pick: fn(A::Reply) -> Option<R>) -> Self::Out<R>;
}

fn picked<R, Rep>(reply: Rep, pick: fn(Rep) -> Option<R>) -> Result<R> {
    // (`_else`: the error is built only when it happens, not on every reply.)
    pick(reply).ok_or_else(|| Error::Decode {
        expected: std::any::type_name::<R>(),
        reason: "the actor answered with the reply of another message".into(),
    })
}

impl<A: Actor> Caller<A> for ActorRef<A> {
    type Out<R> = Result<R>;
    fn call<R>(&self, msg: A::Msg, pick: fn(A::Reply) -> Option<R>) -> Result<R> {
        picked(self.ask(msg)?, pick)
    }
}

/// The tell form (see [`ActorRef::cast`]): generated methods return `Result<()>` at once.
pub struct Tell<'a, A>(&'a ActorRef<A>);

impl<A: Actor> Caller<A> for Tell<'_, A> {
    type Out<R> = Result<()>;
    fn call<R>(&self, msg: A::Msg, _pick: fn(A::Reply) -> Option<R>) -> Result<()> {
        self.0.tell(msg)
    }
}

/// The non-blocking tell form (see [`ActorRef::try_cast`]).
pub struct TryTell<'a, A>(&'a ActorRef<A>);

impl<A: Actor> Caller<A> for TryTell<'_, A> {
    type Out<R> = Result<()>;
    fn call<R>(&self, msg: A::Msg, _pick: fn(A::Reply) -> Option<R>) -> Result<()> {
        self.0.try_tell(msg).map_err(Error::from)
    }
}

/// The bounded ask form (see [`ActorRef::timeout`]).
pub struct Timed<'a, A>(&'a ActorRef<A>, Duration);

impl<A: Actor> Caller<A> for Timed<'_, A> {
    type Out<R> = Result<R>;
    fn call<R>(&self, msg: A::Msg, pick: fn(A::Reply) -> Option<R>) -> Result<R> {
        picked(self.0.ask_timeout(msg, self.1)?, pick)
    }
}

/// A watch on an actor from any process (see [`ActorRef::monitor`]).
#[must_use = "dropping a Monitor stops watching"]
pub struct Monitor {
    chan: Option<Channel>,
    inner: Arc<RefInner>,
    down: Mutex<Option<Down>>,
}

impl Monitor {
    fn open(inner: Arc<RefInner>) -> Result<Monitor> {
        let chan = match super::client::handshake(
            &inner.addr,
            &Role::Monitor,
            Wait::timeout(Duration::from_secs(30)),
        ) {
            Ok((chan, _, _)) => Some(chan),
            Err(ConnectError::NotThere) => None,
            Err(ConnectError::Failed(e)) => return Err(e),
        };
        Ok(Monitor {
            chan,
            inner,
            down: Mutex::new(None),
        })
    }

    /// Waits until the actor has ended.
    pub fn wait(&self) -> Result<Down> {
        self.wait_for(Wait::Forever)
    }

    /// [`wait`](Monitor::wait), at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Down> {
        self.wait_for(Wait::timeout(timeout))
    }

    fn wait_for(&self, wait: Wait) -> Result<Down> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = &*down {
            return Ok(d.clone());
        }
        let mut reason = ExitReason::Unknown;
        if let Some(chan) = &self.chan {
            loop {
                let got = chan.recv(wait, |f| match f.kind {
                    proto::EXIT => Ok(Some(
                        wire::decode::<proto::LastWords>(f.payload, Vec::new())?.reason,
                    )),
                    _ => Ok(None),
                });
                match got {
                    Ok(Some(r)) => {
                        reason = r;
                        break;
                    }
                    Ok(None) => {}
                    Err(Error::Disconnected) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        // Its exit status, where we have it, says more than its last words (a kill has none).
        let reason = match self.inner.reason_from_handle(wait) {
            Some(Ok(r)) => r,
            Some(Err(e)) if e.is_timeout() => return Err(e),
            _ => reason,
        };
        let d = Down {
            id: self.inner.id,
            name: self.inner.name.clone(),
            reason,
        };
        *down = Some(d.clone());
        Ok(d)
    }
}

impl<A> fmt::Debug for Tell<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tell").field(self.0).finish()
    }
}

impl<A> fmt::Debug for TryTell<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TryTell").field(self.0).finish()
    }
}

impl<A> fmt::Debug for Timed<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Timed").field(self.0).field(&self.1).finish()
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("actor", &self.inner.name)
            .field("pid", &self.inner.pid)
            .finish_non_exhaustive()
    }
}

//! A manager reached over the network: [`RemoteManager`] (the client side) and the protocol it
//! speaks with a [`Gateway`](super::Gateway) (the serving side, `gateway.rs`).
//!
//! The same proxy types work remotely: a `ListProxy<T>` from a `RemoteManager` sends its
//! operations over one encrypted connection (a *session*) to the gateway, which applies them in
//! the manager and answers. What cannot cross hosts is refused with a clear error, at the caller:
//! values holding descriptors, functions by address (use `#[procactor::entry]` functions, sent by
//! name), and remote proxies sent on to another process.
//!
//! A session speaks the protocol of an actor's network callers (`actor::net`): its messages are
//! the manager's own requests, those a remote session may make (see `server/serving.rs`).
//!
//! Every call has a deadline (30 s unless set). Both sides watch the session: the client pings
//! every quarter of the heartbeat timeout; the manager ends a session it has not heard from for a
//! heartbeat timeout (releasing every reference the session held), and a client that has not
//! heard from the manager for as long fails its calls with [`Error::Disconnected`] at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::dict::{DictProxy, DictTag};
use super::list::{ListProxy, ListTag};
use super::proto::{PackedRef, Request, Response};
use super::proxy::{Handle, ProxyCore, Via};
use super::server::MakeFn;
use super::set::{SetProxy, SetTag};
use super::value::{Namespace, NamespaceTag, ValueProxy, ValueTag};
use crate::actor::net::{self, Down, Up};
use crate::connection::{Address, Client};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::pipe::Connection;
use crate::wire::{self, Turn, Wait};

/// How long a remote call waits for its answer, unless set.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a side waits without hearing from the other before it ends the session, unless
/// set (Erlang's `net_ticktime`, scaled to a LAN).
pub(crate) const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(8);

thread_local! {
    /// An operation for a remote manager is being encoded: functions go by name only.
    static REMOTE: Cell<bool> = const { Cell::new(false) };
    /// ... and it held a function without a name (postcard keeps no error message: this says
    /// why the encoding failed).
    static UNNAMED: Cell<bool> = const { Cell::new(false) };
}

/// Notes that the operation being encoded holds a function without a name.
pub(crate) fn refused_unnamed() {
    UNNAMED.with(|u| u.set(true));
}

/// Whether an operation for a remote manager is being encoded on this thread.
pub(crate) fn encoding_remote() -> bool {
    REMOTE.with(Cell::get)
}

/// Encodes an operation for a remote manager: refused if it holds descriptors or a function
/// that has no name (see [`encoding_remote`]).
pub(super) fn encode_op<O: Serialize + ?Sized>(op: &O, bytes: &mut Vec<u8>) -> Result<()> {
    let prev = REMOTE.with(|r| r.replace(true));
    UNNAMED.with(|u| u.set(false));
    let encoded = wire::encode_plain(op, bytes);
    REMOTE.with(|r| r.set(prev));
    if UNNAMED.with(|u| u.replace(false)) {
        return Err(Error::Unsupported(super::proto::NAMED_ONLY));
    }
    match encoded {
        Err(Error::Encode { reason, .. }) if reason == wire::HANDLE_OUTSIDE => {
            Err(Error::Unsupported(
                "a value holding descriptors (a Queue, a Connection, a local proxy...) cannot \
                 cross hosts",
            ))
        }
        other => other,
    }
}

/// A network session with a gateway (one per [`RemoteManager`]); its proxies share it.
///
/// A call is one exchange on the connection, made by the calling thread itself (no hand-over
/// to a reader thread: the answer is read where it is wanted). One exchange at a time: the
/// others wait for their turn, within their own deadline. A call that timed out leaves its
/// answer to come: the next exchange skips answers of other ids. The pinger thread, when no
/// exchange runs, sends a ping and reads the pong: a gateway silent past the heartbeat timeout
/// ends the session.
pub(crate) struct Session {
    conn: Connection<()>,
    address: Address,
    manager_pid: u32,
    manager_name: String,
    call_timeout: Duration,
    heartbeat_timeout: Duration,
    next_id: AtomicU64,
    /// The connection's bytes received, as of the last receive that timed out.
    received: AtomicU64,
    /// Whether an exchange runs (its turn), and its waiters.
    exchange: Turn<()>,
    /// When the gateway was last heard from.
    heard: Mutex<Instant>,
    /// Why the session ended (`None` while it lives).
    ended: Mutex<Option<String>>,
}

impl Session {
    pub(crate) fn manager_pid(&self) -> u32 {
        self.manager_pid
    }

    fn check(&self) -> Result<()> {
        match &*self.ended.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(why) => {
                log::debug!(target: "procactor::manager", "remote manager at {}: {why}", self.address);
                Err(Error::Disconnected)
            }
        }
    }

    fn end(&self, why: String) {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.is_none() {
            log::debug!(target: "procactor::manager", "remote manager at {}: session over: {why}", self.address);
            *ended = Some(why);
        }
    }

    fn send(&self, up: &Up) -> Result<()> {
        let mut bytes = Vec::new();
        net::encode(up, &mut bytes)?;
        match self
            .conn
            .send_bytes_wait(&bytes, Wait::timeout(self.call_timeout))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                self.end(format!("a send failed: {e}"));
                Err(if e.is_timeout() {
                    e
                } else {
                    Error::Disconnected
                })
            }
        }
    }

    /// Reads until the message `wanted` picks, or `deadline` (`None` then); the session ends
    /// if the connection fails or the gateway breaks the protocol.
    fn read_until<T>(
        &self,
        deadline: Instant,
        mut wanted: impl FnMut(Down<'_>) -> Option<T>,
    ) -> Result<Option<T>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let bytes = match self.conn.recv_bytes_timeout(left) {
                Ok(b) => b,
                Err(e) if e.is_timeout() => {
                    // Part of a long message came: the manager is there, sending.
                    let got = self.conn.bytes_received();
                    if self.received.swap(got, Ordering::Relaxed) != got {
                        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    }
                    return Ok(None);
                }
                Err(e) => {
                    self.end(format!("the connection failed: {e}"));
                    return Err(Error::Disconnected);
                }
            };
            *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            match net::decode::<Down>(&bytes) {
                Ok(down) => {
                    if let Some(t) = wanted(down) {
                        return Ok(Some(t));
                    }
                }
                Err(e) => {
                    self.end(format!("the manager sent what is not a reply: {e}"));
                    return Err(Error::Disconnected);
                }
            }
        }
    }

    /// Sends `req` and reads the manager's answer, at most the call timeout.
    pub(crate) fn ask(&self, req: &Request<PackedRef>) -> Result<Response> {
        self.check()?;
        let mut payload = Vec::new();
        wire::encode_plain(req, &mut payload)?;
        let deadline = after(self.call_timeout);
        let wait = Wait::Until {
            deadline,
            asked: self.call_timeout,
        };
        let _turn = self.exchange.take(wait)?;
        self.check()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(&Up::Ask {
            id,
            payload: &payload,
        })?;
        // Read until the answer, the call's deadline, or a heartbeat timeout without a word
        // from the manager (it ticks even while busy: silence means stopped or gone).
        let answer = loop {
            let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
            let silent_at = heard
                .checked_add(self.heartbeat_timeout)
                .unwrap_or(deadline);
            let got = self.read_until(deadline.min(silent_at), |down| match down {
                Down::Reply { id: got, payload } if got == id => {
                    Some(wire::decode::<Response>(payload, Vec::new()))
                }
                Down::Failed {
                    id: got,
                    handled,
                    reason,
                } if got == id => {
                    let (name, pid) = (self.manager_name.as_str().into(), self.manager_pid);
                    let reason = reason.into();
                    Some(Err(if handled {
                        Error::ReplyLost { name, pid, reason }
                    } else {
                        Error::Rejected { name, pid, reason }
                    }))
                }
                // A late answer to a call that timed out, a tick: not ours.
                _ => None,
            })?;
            if got.is_some() || Instant::now() >= deadline {
                break got;
            }
            let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
            if heard.elapsed() >= self.heartbeat_timeout {
                self.end(format!(
                    "nothing heard from the manager for {:?} (heartbeat timeout) during a call",
                    self.heartbeat_timeout
                ));
                return Err(Error::Disconnected);
            }
        };
        answer.ok_or(Error::Timeout(self.call_timeout))?
    }

    /// A proxy's call, as the manager would answer it.
    pub(crate) fn call(&self, req: &Request<PackedRef>) -> Result<Response> {
        let Request::Call { obj, kind, op } = req else {
            return Err(Error::Unsupported("not a call a remote manager takes"));
        };
        self.ask(&Request::RemoteCall {
            obj: *obj,
            kind: *kind,
            op: PackedRef::new(op.bytes, &[]),
        })
    }

    /// A proxy's pipelined operation or release.
    pub(crate) fn tell(&self, req: &Request<PackedRef>) -> Result<()> {
        self.check()?;
        let mut payload = Vec::new();
        match req {
            Request::Call { obj, kind, op } => wire::encode_plain(
                &Request::RemoteCall {
                    obj: *obj,
                    kind: *kind,
                    op: PackedRef::new(op.bytes, &[]),
                },
                &mut payload,
            )?,
            Request::Release { .. } => wire::encode_plain(req, &mut payload)?,
            _ => return Err(Error::Unsupported("not a message a remote manager takes")),
        }
        self.send(&Up::Tell { payload: &payload })
    }

    /// The pinger: when nothing was heard for a tick and no exchange runs, a ping and its pong.
    /// It holds the session weakly: it ends with the session's last user.
    fn ping_loop(weak: std::sync::Weak<Self>, tick: Duration) {
        loop {
            std::thread::sleep(tick.min(Duration::from_millis(250)));
            let Some(session) = weak.upgrade() else {
                return;
            };
            if !session.ping_once(tick) {
                return;
            }
        }
    }

    /// One look of the pinger; false once the session is over.
    fn ping_once(&self, tick: Duration) -> bool {
        if self.check().is_err() {
            return false;
        }
        {
            // A call in progress reads for itself (and has its own deadline, which may be
            // longer than the heartbeat: the gateway is busy for it, not gone).
            let Ok(_turn) = self.exchange.take(Wait::No) else {
                return true;
            };
            let heard = *self.heard.lock().unwrap_or_else(|p| p.into_inner());
            if heard.elapsed() < tick {
                return true;
            }
            let silent = || {
                format!(
                    "nothing heard from the manager for {:?} (heartbeat timeout)",
                    self.heartbeat_timeout
                )
            };
            if heard.elapsed() > self.heartbeat_timeout {
                self.end(silent());
                return false;
            }
            if self.send(&Up::Ping).is_err() {
                return false;
            }
            let until = heard
                .checked_add(self.heartbeat_timeout)
                .unwrap_or_else(|| after(Duration::MAX));
            match self.read_until(until, |down| matches!(down, Down::Pong).then_some(())) {
                Ok(Some(())) => {
                    // Ticks and late answers the calls left: read, so they never pile up.
                    let _ = self.read_until(Instant::now(), |_| None::<()>);
                    true
                }
                Ok(None) => {
                    self.end(silent());
                    false
                }
                Err(_) => false,
            }
        }
    }
}

/// A manager on another host (or served by another program), reached through its gateway: the
/// client side of CPython's `BaseManager(address, authkey).connect()`. See
/// [`Manager::serve`](super::Manager::serve) for the serving side.
///
/// ```
/// # procactor::init();
/// use procactor::connection::{Client, Listener};
/// use procactor::manager::{ListProxy, RemoteManager};
/// use procactor::Manager;
///
/// // The serving side: a manager, published on an address with a key.
/// let m = Manager::start()?;
/// let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"key"))?;
/// gateway.allow::<ListProxy<u32>>()?;
/// let jobs = m.list_from(vec![1u32, 2])?;
/// gateway.register("jobs", &jobs)?;
///
/// // Elsewhere: connect with the address and the key.
/// let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"key"))?;
/// let jobs: ListProxy<u32> = remote.get("jobs")?;
/// jobs.append(3)?;
/// assert_eq!(jobs.snapshot()?, [1, 2, 3]);
/// let mine = remote.list::<u32>()?; // created in the manager, through the gateway
/// mine.extend(vec![7, 8])?;
/// assert_eq!(mine.len()?, 2);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct RemoteManager {
    session: Arc<Session>,
}

/// Options for [`RemoteManager::connect_with`] (defaults: 30 s per call, 8 s heartbeat
/// timeout).
///
/// ```
/// use std::time::Duration;
/// let o = procactor::manager::RemoteOptions {
///     call_timeout: Duration::from_secs(5),
///     ..Default::default()
/// };
/// assert_eq!(o.heartbeat_timeout, Duration::from_secs(8));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RemoteOptions {
    /// How long each call waits for its answer ([`Error::Timeout`] then).
    pub call_timeout: Duration,
    /// How long without hearing from the gateway before the session is over (and how long the
    /// gateway waits to hear from us before it releases our references).
    pub heartbeat_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        }
    }
}

impl RemoteManager {
    /// Connects to the gateway `client` names (its address, key and connect timeout), with the
    /// default [`RemoteOptions`].
    pub fn connect(client: &Client) -> Result<RemoteManager> {
        Self::connect_with(client, RemoteOptions::default())
    }

    /// [`connect`](RemoteManager::connect) with other timeouts.
    pub fn connect_with(client: &Client, options: RemoteOptions) -> Result<RemoteManager> {
        let conn = client.connect::<()>()?;
        let heartbeat_ms = u64::try_from(options.heartbeat_timeout.as_millis()).unwrap_or(u64::MAX);
        let (msg, reply) = (
            Request::<super::proto::Packed>::schema(),
            Response::schema(),
        );
        let mut hello = Vec::new();
        net::encode(
            &Up::Hello {
                protocol: net::PROTOCOL,
                msg: msg.fingerprint,
                reply: reply.fingerprint,
                heartbeat_ms,
            },
            &mut hello,
        )?;
        conn.send_bytes(&hello)?;
        let welcome = conn.recv_bytes_timeout(options.call_timeout)?;
        let (manager_pid, manager_name, heartbeat) = match net::decode::<Down>(&welcome)? {
            Down::Welcome {
                pid,
                name,
                heartbeat_ms,
            } => (pid, name, Duration::from_millis(heartbeat_ms)),
            Down::Refused { reason } => {
                return Err(Error::Rejected {
                    name: "manager".into(),
                    pid: 0,
                    reason: reason.into(),
                })
            }
            other => {
                return Err(Error::Decode {
                    expected: "a manager's welcome",
                    reason: format!("{other:?}"),
                })
            }
        };
        let session = Arc::new(Session {
            conn,
            address: client
                .address()
                .cloned()
                .unwrap_or(Address::Abstract(String::new())),
            manager_pid,
            manager_name,
            call_timeout: options.call_timeout,
            heartbeat_timeout: heartbeat,
            next_id: AtomicU64::new(1),
            received: AtomicU64::new(0),
            exchange: Turn::new(()),
            heard: Mutex::new(Instant::now()),
            ended: Mutex::new(None),
        });
        let (weak, tick) = (Arc::downgrade(&session), heartbeat / 4);
        std::thread::Builder::new()
            .name("procactor-remote".into())
            .spawn(move || Session::ping_loop(weak, tick))
            .map_err(|e| Error::io("spawn the session's pinger", e))?;
        Ok(RemoteManager { session })
    }

    /// Whether the session lives (false once the gateway is gone or silent past the heartbeat
    /// timeout: every call then fails at once with [`Error::Disconnected`]).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// assert!(remote.is_connected());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn is_connected(&self) -> bool {
        self.session.check().is_ok()
    }

    /// The manager's pid (on its host).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// assert_eq!(remote.manager_pid(), m.pid());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn manager_pid(&self) -> u32 {
        self.session.manager_pid
    }

    /// How many objects the manager hosts.
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let l = remote.list::<u32>()?;
    /// assert_eq!(remote.object_count()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn object_count(&self) -> Result<usize> {
        match self.session.ask(&Request::Count)? {
            Response::Count(n) => Ok(n as usize),
            Response::Failed(f) => Err(f.into_error(self.manager_pid())),
            _ => Err(unexpected()),
        }
    }

    fn create<P: Shared, I: Serialize + ?Sized>(&self, init: &I) -> Result<P> {
        let mut bytes = Vec::new();
        encode_op(init, &mut bytes)?;
        let kind = P::kind();
        match self.session.ask(&Request::RemoteCreate {
            kind: kind.kind,
            kind_name: kind.name.to_string(),
            init: PackedRef::new(&bytes, &[]),
        })? {
            Response::Created(obj) => Ok(P::from_core(self.core(obj, kind.kind))),
            Response::Failed(f) => Err(f.into_error(self.manager_pid())),
            _ => Err(unexpected()),
        }
    }

    fn core(&self, obj: u64, kind: u64) -> Core {
        Core(Arc::new(ProxyCore::created(
            Via::Remote(self.session.clone()),
            obj,
            kind,
        )))
    }

    /// The object the gateway published as `name` (`Gateway::register`), as a proxy of type
    /// `P`: [`Error::NotFound`] if there is none, an error naming both types if it is another.
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// assert!(matches!(remote.get::<ListProxy<u32>>("nothing"), Err(procactor::Error::NotFound(_))));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get<P: Shared>(&self, name: &str) -> Result<P> {
        let kind = P::kind().kind;
        match self.session.ask(&Request::Get {
            name: name.to_string(),
            kind,
        })? {
            Response::Created(obj) => Ok(P::from_core(self.core(obj, kind))),
            Response::Failed(f) => Err(f.into_error(self.manager_pid())),
            _ => Err(unexpected()),
        }
    }

    /// A new, empty shared list (the gateway must allow `ListProxy<T>`).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let l = remote.list::<u32>()?;
    /// l.append(5)?;
    /// assert_eq!(l.pop()?, 5);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn list<T: Serialize + DeserializeOwned + 'static>(&self) -> Result<ListProxy<T>> {
        self.create(&Vec::<T>::new())
    }

    /// A new, empty shared dict (the gateway must allow `DictProxy<K, V>`).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let d = remote.dict::<u32, String>()?;
    /// d.insert(1, "one".into())?;
    /// assert_eq!(d.len()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned + Eq + std::hash::Hash + std::fmt::Debug + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        self.create(&Vec::<(K, V)>::new())
    }

    /// A new, empty shared set (the gateway must allow `SetProxy<T>`).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// gateway.allow::<SetProxy<u32>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let s = remote.set::<u32>()?;
    /// s.update([1, 2, 2])?;
    /// assert_eq!(s.len()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn set<T>(&self) -> Result<SetProxy<T>>
    where
        T: Serialize + DeserializeOwned + Eq + std::hash::Hash + std::fmt::Debug + 'static,
    {
        self.create(&Vec::<T>::new())
    }

    /// A new shared value (the gateway must allow `ValueProxy<T>`).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let v = remote.value(1.5f64)?;
    /// v.set(2.5)?;
    /// assert_eq!(v.get()?, 2.5);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn value<T: Serialize + DeserializeOwned + 'static>(
        &self,
        value: T,
    ) -> Result<ValueProxy<T>> {
        self.create(&value)
    }

    /// A new namespace (always allowed: its fields are encoded values).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// # gateway.allow::<ListProxy<u32>>()?;
    /// # gateway.allow::<DictProxy<u32, String>>()?;
    /// # gateway.allow::<ValueProxy<f64>>()?;
    /// # let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let ns = remote.namespace()?;
    /// ns.set("epoch", &7u32)?;
    /// assert_eq!(ns.get::<u32>("epoch")?, 7);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn namespace(&self) -> Result<Namespace> {
        self.create(&())
    }
}

impl std::fmt::Debug for RemoteManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteManager")
            .field("address", &self.session.address)
            .field("manager_pid", &self.session.manager_pid)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// `timeout` from now; one too long to add is as good as a year.
fn after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(365 * 86_400))
}

fn unexpected() -> Error {
    Error::Decode {
        expected: "a remote manager's answer",
        reason: "an answer of another kind".into(),
    }
}

/// A proxy kind: its fingerprint, its name, and how the manager makes one.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Kind {
    pub(crate) kind: u64,
    pub(crate) name: &'static str,
    pub(crate) make: MakeFn,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).finish()
    }
}

/// One counted reference, as a proxy wraps it.
#[doc(hidden)]
pub struct Core(pub(crate) Arc<ProxyCore>);

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("object", &self.0.obj).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A proxy type that a [`Gateway`](super::Gateway) can publish and a [`RemoteManager`] create:
/// [`ListProxy`], [`DictProxy`], [`SetProxy`], [`ValueProxy`] and [`Namespace`].
///
/// ```
/// fn publishable<P: procactor::manager::Shared>() {}
/// publishable::<procactor::manager::ListProxy<String>>();
/// publishable::<procactor::manager::Namespace>();
/// ```
pub trait Shared: sealed::Sealed + Sized + 'static {
    #[doc(hidden)]
    fn kind() -> Kind;
    #[doc(hidden)]
    fn from_core(core: Core) -> Self;
    #[doc(hidden)]
    fn core(&self) -> Core;
}

macro_rules! shared {
    ($proxy:ty, $tag:ty, $make:expr, [$($g:tt)*] where $($bounds:tt)*) => {
        impl<$($g)*> sealed::Sealed for $proxy where $($bounds)* {}
        impl<$($g)*> Shared for $proxy where $($bounds)* {
            fn kind() -> Kind {
                Kind {
                    kind: Handle::<$tag>::kind(),
                    name: std::any::type_name::<$proxy>(),
                    make: $make,
                }
            }
            fn from_core(core: Core) -> Self {
                Self::from_handle(Handle::from_core(core.0))
            }
            fn core(&self) -> Core {
                Core(self.handle.core.clone())
            }
        }
    };
}

shared!(ListProxy<T>, (ListTag, T), super::list::make::<T>, [T] where T: Serialize + DeserializeOwned + 'static);
shared!(DictProxy<K, V>, (DictTag, K, V), super::dict::make::<K, V>, [K, V] where
    K: Serialize + DeserializeOwned + Eq + std::hash::Hash + std::fmt::Debug + 'static,
    V: Serialize + DeserializeOwned + 'static);
shared!(SetProxy<T>, (SetTag, T), super::set::make::<T>, [T] where
    T: Serialize + DeserializeOwned + Eq + std::hash::Hash + std::fmt::Debug + 'static);
shared!(ValueProxy<T>, (ValueTag, T), super::value::make_value::<T>, [T] where T: Serialize + DeserializeOwned + 'static);
shared!(Namespace, NamespaceTag, super::value::make_namespace, [] where);

//! The serving side of a remote manager: a [`Gateway`] accepts sessions from
//! [`RemoteManager`](super::RemoteManager)s and applies their operations in the manager.
//!
//! Each session is served by a thread of its own (a slow or stopped client holds up only its own
//! session), and holds its references as proxies of this process: when the session ends (the
//! client closed, or was silent past the heartbeat timeout: a host gone, a link down), they are
//! dropped, and the manager frees what nobody else holds. A session reaches only the objects it
//! created or was given by name; it creates only the kinds the serving side allowed (a remote
//! program's functions are never called by address: each kind's constructor is this process's
//! own, looked up by the kind's fingerprint).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proto::{self, Fault, PackedRef, Request, Response};
use super::proxy::{ProxyCore, Via};
use super::remote::{self, Answer, Down, Kind, Shared, Up, DEFAULT_CALL_TIMEOUT, PROTOCOL};
use super::server::ManagerCore;
use super::Manager;
use crate::actor::ActorRef;
use crate::connection::{Address, Listener, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::wire::Wait;

/// Sessions served at once; more are closed at once.
const MAX_SESSIONS: usize = 1024;
/// How often threads look at the stop flag.
const SLICE: Duration = Duration::from_millis(200);

struct Published {
    obj: u64,
    kind: u64,
    kind_name: &'static str,
    /// Keeps the object alive while it is published.
    _keep: Arc<ProxyCore>,
}

struct Inner {
    manager: ActorRef<ManagerCore>,
    address: Address,
    allowed: Mutex<HashMap<u64, Kind>>,
    published: Mutex<HashMap<String, Published>>,
    sessions: AtomicUsize,
    stop: AtomicBool,
}

/// Serves a [`Manager`] to [`RemoteManager`](super::RemoteManager)s on other hosts (CPython's
/// `BaseManager(address, authkey).get_server()`). Made by [`Manager::serve`]; dropping it stops
/// serving (sessions end, their references are released).
pub struct Gateway {
    inner: Arc<Inner>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

impl Manager {
    /// Serves this manager on `listener` (which must have an authkey, and encrypt: a gateway
    /// never speaks in the clear). Sessions are served by threads of this process: the gateway
    /// lives as long as the returned [`Gateway`] and this process.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::connection::{Client, Listener};
    /// use procactor::manager::{DictProxy, RemoteManager};
    /// let m = procactor::Manager::start()?;
    /// let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// gateway.allow::<DictProxy<String, u64>>();
    /// let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let d = remote.dict::<String, u64>()?;
    /// d.insert("x".into(), 1)?;
    /// assert_eq!(d.get(&"x".to_string())?, Some(1));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn serve(&self, listener: Listener) -> Result<Gateway> {
        if listener.is_plaintext() {
            return Err(Error::Unsupported(
                "a manager's gateway speaks only encrypted connections: drop `plaintext()`",
            ));
        }
        let inner = Arc::new(Inner {
            manager: self.core.clone(),
            address: listener.address().clone(),
            allowed: Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            sessions: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let namespace = Namespace::kind();
        inner
            .allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.kind, namespace);
        let for_thread = inner.clone();
        let accepter = std::thread::Builder::new()
            .name("procactor-gateway".into())
            .spawn(move || accept_loop(&for_thread, &listener))
            .map_err(|e| Error::io("spawn the gateway", e))?;
        Ok(Gateway {
            inner,
            accepter: Some(accepter),
        })
    }
}

use super::value::Namespace;

impl Gateway {
    /// Where it listens.
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// assert!(gateway.address().is_local());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// Lets remote clients create objects of proxy type `P` (a namespace is always allowed).
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// assert!(remote.value(1u8).is_err()); // not allowed yet
    /// gateway.allow::<ValueProxy<u8>>();
    /// assert_eq!(remote.value(1u8)?.get()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn allow<P: Shared>(&self) {
        let k = P::kind();
        self.inner
            .allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.kind, k);
    }

    /// Publishes `proxy`'s object as `name` (CPython's `BaseManager.register` of a shared
    /// object): remote clients get it with `RemoteManager::get(name)`. Replaces an earlier one
    /// of the same name. The object lives at least as long as it is published.
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// let d = m.dict::<String, u32>()?;
    /// gateway.register("config", &d)?;
    /// let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// let config: DictProxy<String, u32> = remote.get("config")?;
    /// config.insert("workers".into(), 4)?; // pipelined: applied by the next call that waits
    /// assert_eq!(config.len()?, 1);
    /// assert_eq!(d.get(&"workers".to_string())?, Some(4));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn register<P: Shared>(&self, name: &str, proxy: &P) -> Result<()> {
        let core = proxy.core().0;
        if !matches!(&core.manager, Via::Local(m) if m.id() == self.inner.manager.id()) {
            return Err(Error::InvalidState(
                "only objects of the manager this gateway serves can be published",
            ));
        }
        let k = P::kind();
        self.inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                Published {
                    obj: core.obj,
                    kind: k.kind,
                    kind_name: k.name,
                    _keep: core.clone(),
                },
            );
        Ok(())
    }

    /// Sessions being served now.
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// assert_eq!(gateway.sessions(), 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn sessions(&self) -> usize {
        self.inner.sessions.load(Ordering::Relaxed)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("address", &self.inner.address)
            .field("manager_pid", &self.inner.manager.pid())
            .field("sessions", &self.sessions())
            .finish()
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &Listener) {
    while !inner.stop.load(Ordering::Relaxed) {
        match listener.accept_timeout::<()>(SLICE) {
            Ok(conn) => {
                if inner.sessions.load(Ordering::Relaxed) >= MAX_SESSIONS {
                    log::warn!(target: "procactor::manager", "gateway {}: {MAX_SESSIONS} sessions; a new one is closed", inner.address);
                    continue;
                }
                inner.sessions.fetch_add(1, Ordering::Relaxed);
                let for_session = inner.clone();
                let started = std::thread::Builder::new()
                    .name("procactor-session".into())
                    .spawn(move || {
                        serve_session(&for_session, &conn);
                        for_session.sessions.fetch_sub(1, Ordering::Relaxed);
                    });
                if started.is_err() {
                    inner.sessions.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => {
                log::warn!(target: "procactor::manager", "gateway {}: accept failed: {e}", inner.address);
                std::thread::sleep(SLICE);
            }
        }
    }
}

/// One session, from its hello to its end; its references are released when it returns.
fn serve_session(inner: &Inner, conn: &Connection<()>) {
    // A relay: while it waits for the manager, the manager needs the core more.
    crate::wire::never_spin_on_this_thread();
    let heartbeat = match hello(inner, conn) {
        Ok(h) => h,
        Err(e) => {
            log::debug!(target: "procactor::manager", "gateway {}: a session did not start: {e}", inner.address);
            return;
        }
    };
    let mut session = SessionState {
        inner,
        held: HashMap::new(),
    };
    let mut heard = Instant::now();
    while !inner.stop.load(Ordering::Relaxed) {
        let up = match conn.recv_bytes_timeout(SLICE.min(heartbeat)) {
            Ok(bytes) => match remote::decode::<Up>(&bytes) {
                Ok(up) => up,
                Err(e) => {
                    log::debug!(target: "procactor::manager", "gateway {}: a session sent garbage: {e}", inner.address);
                    break;
                }
            },
            Err(e) if e.is_timeout() => {
                if heard.elapsed() > heartbeat {
                    log::info!(target: "procactor::manager", "gateway {}: a session was silent for {heartbeat:?}: its references are released", inner.address);
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        heard = Instant::now();
        let reply = match session.handle(up) {
            Some(down) => down,
            None => continue,
        };
        let sent = remote::encode(&reply)
            .and_then(|bytes| conn.send_bytes_wait(&bytes, Wait::timeout(heartbeat)));
        if let Err(e) = sent {
            log::debug!(target: "procactor::manager", "gateway {}: a reply failed: {e}", inner.address);
            break;
        }
        // The time spent working for the client is not its silence.
        heard = Instant::now();
    }
    // `session.held` drops here: every reference of the session is released.
}

/// Reads the client's hello (its protocol and heartbeat timeout) and welcomes it.
fn hello(inner: &Inner, conn: &Connection<()>) -> Result<Duration> {
    let bytes = conn.recv_bytes_timeout(DEFAULT_HANDSHAKE_TIMEOUT)?;
    let Up::Hello {
        protocol,
        heartbeat_ms,
    } = remote::decode::<Up>(&bytes)?
    else {
        return Err(Error::Decode {
            expected: "a remote manager's hello",
            reason: "another message first".into(),
        });
    };
    if protocol != PROTOCOL {
        return Err(Error::Decode {
            expected: "a remote manager's hello",
            reason: format!("protocol {protocol}, this gateway speaks {PROTOCOL}"),
        });
    }
    // A heartbeat timeout from 100 ms to an hour: the client is told which, and pings by it.
    let heartbeat_ms = heartbeat_ms.clamp(100, 3_600_000);
    let welcome = remote::encode(&Down::Welcome {
        manager_pid: inner.manager.pid(),
        heartbeat_ms,
    })?;
    conn.send_bytes_wait(&welcome, Wait::timeout(DEFAULT_HANDSHAKE_TIMEOUT))?;
    Ok(Duration::from_millis(heartbeat_ms))
}

struct SessionState<'a> {
    inner: &'a Inner,
    /// The references this session holds, per object.
    held: HashMap<u64, Vec<ProxyCore>>,
}

impl SessionState<'_> {
    /// Applies one message; the reply to send, if it wants one.
    fn handle(&mut self, up: Up) -> Option<Down> {
        let manager = &self.inner.manager;
        let (id, answer) = match up {
            Up::Ping => return Some(Down::Pong),
            Up::Hello { .. } => return None,
            Up::Release { obj } => {
                if let Some(refs) = self.held.get_mut(&obj) {
                    refs.pop();
                    if refs.is_empty() {
                        self.held.remove(&obj);
                    }
                }
                return None;
            }
            Up::Call { id, obj, kind, op } => {
                let req = Request::RemoteCall {
                    obj,
                    kind,
                    op: PackedRef::new(&op, &[]),
                };
                if !self.held.contains_key(&obj) {
                    (id, Answer::Failed(Fault::Gone(obj)))
                } else if id == 0 {
                    if let Err(e) = manager.tell_as(&req) {
                        log::debug!(target: "procactor::manager", "gateway: a pipelined call failed: {e}");
                    }
                    return None;
                } else {
                    (id, self.ask(&req))
                }
            }
            Up::Count { id } => (id, self.ask(&Request::<PackedRef>::Count)),
            Up::Create {
                id,
                kind,
                kind_name,
                init,
            } => (id, self.create(kind, &kind_name, &init)),
            Up::Get { id, name, kind } => (id, self.get(&name, kind)),
        };
        (id != 0).then_some(Down::Reply { id, answer })
    }

    fn ask(&self, req: &Request<PackedRef>) -> Answer {
        match self
            .inner
            .manager
            .ask_as::<_, Response>(req, Wait::timeout(DEFAULT_CALL_TIMEOUT))
        {
            Ok(Response::Value(p)) if p.fds.is_empty() => Answer::Value(p.bytes),
            Ok(Response::Value(_)) => Answer::Failed(Fault::bad(
                "the answer holds handles (proxies, queues...), which cannot cross hosts",
            )),
            Ok(Response::Failed(f)) => Answer::Failed(f),
            Ok(Response::Count(n)) => Answer::Count(n),
            Ok(Response::Created(obj)) => Answer::Created(obj),
            Ok(Response::Done) => Answer::Failed(Fault::bad("an answer of another kind")),
            Err(e) => Answer::Failed(Fault::bad(format!("the manager: {e}"))),
        }
    }

    fn hold(&mut self, obj: u64, kind: u64) {
        let core = ProxyCore::created(Via::Local(self.inner.manager.clone()), obj, kind);
        self.held.entry(obj).or_default().push(core);
    }

    fn create(&mut self, kind: u64, kind_name: &str, init: &[u8]) -> Answer {
        let allowed = self
            .inner
            .allowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
            .copied();
        let Some(k) = allowed else {
            return Answer::Failed(Fault::bad(format!(
                "this gateway does not let clients create a {kind_name}: on the serving side, \
                 call gateway.allow::<{kind_name}>()"
            )));
        };
        let make = match proto::sign(k.make) {
            Ok(m) => m,
            Err(e) => return Answer::Failed(Fault::bad(e)),
        };
        let req = Request::RemoteCreate {
            make,
            init: PackedRef::new(init, &[]),
        };
        match self.ask(&req) {
            Answer::Created(obj) => {
                self.hold(obj, kind);
                Answer::Created(obj)
            }
            other => other,
        }
    }

    fn get(&mut self, name: &str, kind: u64) -> Answer {
        // Held until the adoption is sent: a `register` replacing the name cannot free the
        // object in between.
        let published = self
            .inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let found = published.get(name).map(|p| (p.obj, p.kind, p.kind_name));
        let Some((obj, published_kind, kind_name)) = found else {
            return Answer::Failed(Fault::NotFound(format!(
                "no object is published as {name:?}"
            )));
        };
        if published_kind != kind {
            return Answer::Failed(Fault::bad(format!(
                "{name:?} is a {kind_name}, not the proxy type asked for"
            )));
        }
        // One more reference for this session (over this process's connection), then held.
        let adopt = Request::<PackedRef>::Adopt {
            obj,
            lend: 0,
            proof: PackedRef::new(&[], &[]),
        };
        if let Err(e) = self.inner.manager.tell_as(&adopt) {
            return Answer::Failed(Fault::bad(format!("the manager: {e}")));
        }
        drop(published);
        self.hold(obj, kind);
        Answer::Created(obj)
    }
}

//! The serving side of a remote manager: a [`Gateway`] accepts connections from
//! [`RemoteManager`](super::RemoteManager)s and hands each, its handshake over, to the manager's
//! process, whose event loop serves it beside its local callers (one hop, no relay).
//!
//! A session holds its references as a connection of the manager: when it ends (the client
//! closed, or was silent past the heartbeat timeout: a host gone, a link down), they are
//! released, and the manager frees what nobody else holds. A session reaches only the objects it
//! created or was given by name; it creates only the kinds the serving side allowed (a remote
//! program's functions are never called by address: each kind's constructor is this program's
//! own, named by the kind's fingerprint). See `server/serving.rs` for the manager's side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::proto::{self, Packed, Request, Response};
use super::proxy::Via;
use super::remote::{Kind, Shared};
use super::server::ManagerCore;
use super::Manager;
use crate::actor::ActorRef;
use crate::connection::{Address, Listener};
use crate::error::{Error, Result};
use crate::wire::Wait;

/// How long a request about the gateway waits for the manager.
const MANAGER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often threads look at the stop flag.
const SLICE: Duration = Duration::from_millis(200);

struct Inner {
    manager: ActorRef<ManagerCore>,
    /// Its id in the manager.
    id: u64,
    address: Address,
    stop: AtomicBool,
}

impl Inner {
    /// Asks the manager something about this gateway.
    fn ask(&self, req: &Request<Packed>) -> Result<Response> {
        ask(&self.manager, req)
    }
}

fn ask(manager: &ActorRef<ManagerCore>, req: &Request<Packed>) -> Result<Response> {
    let pid = manager.pid();
    match manager.ask_as::<_, Response>(req, Wait::timeout(MANAGER_TIMEOUT))? {
        Response::Failed(f) => Err(f.into_error(pid)),
        other => Ok(other),
    }
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
    /// never speaks in the clear). A thread of this process accepts connections and runs their
    /// handshakes; the manager's process serves the sessions. The gateway lives as long as the
    /// returned [`Gateway`] and this process.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::connection::{Client, Listener};
    /// use procactor::manager::{DictProxy, RemoteManager};
    /// let m = procactor::Manager::start()?;
    /// let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// gateway.allow::<DictProxy<String, u64>>()?;
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
        let id = match ask(&self.core, &Request::OpenGateway)? {
            Response::Created(id) => id,
            _ => return Err(Error::InvalidState("the manager did not open a gateway")),
        };
        let inner = Arc::new(Inner {
            manager: self.core.clone(),
            id,
            address: listener.address().clone(),
            stop: AtomicBool::new(false),
        });
        let gateway = Gateway {
            inner: inner.clone(),
            accepter: None,
        };
        gateway.allow_kind(Namespace::kind())?;
        let for_thread = inner.clone();
        let accepter = std::thread::Builder::new()
            .name("procactor-gateway".into())
            .spawn(move || accept_loop(&for_thread, &listener))
            .map_err(|e| Error::io("spawn the gateway", e))?;
        let mut gateway = gateway;
        gateway.accepter = Some(accepter);
        Ok(gateway)
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
    /// Fails only if the manager cannot be reached.
    ///
    /// ```
    /// # procactor::init();
    /// # use procactor::connection::{Client, Listener};
    /// # use procactor::manager::*;
    /// # let m = procactor::Manager::start()?;
    /// # let gateway = m.serve(Listener::bind("127.0.0.1:0")?.authkey(b"k"))?;
    /// let remote = RemoteManager::connect(&Client::new(gateway.address()).authkey(b"k"))?;
    /// assert!(remote.value(1u8).is_err()); // not allowed yet
    /// gateway.allow::<ValueProxy<u8>>()?;
    /// assert_eq!(remote.value(1u8)?.get()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn allow<P: Shared>(&self) -> Result<()> {
        self.allow_kind(P::kind())
    }

    fn allow_kind(&self, k: Kind) -> Result<()> {
        let make = proto::sign(k.make)?;
        self.inner
            .ask(&Request::Allow {
                gateway: self.inner.id,
                kind: k.kind,
                kind_name: k.name.to_string(),
                make,
            })
            .map(drop)
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
        let Via::Local(through) = &core.manager else {
            unreachable!("checked above");
        };
        // Through the proxy's own connection, which holds the object.
        ask(
            through,
            &Request::Publish {
                gateway: self.inner.id,
                name: name.to_string(),
                obj: core.obj,
                kind: P::kind().kind,
            },
        )
        .map(drop)
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
    ///
    /// (0 if the manager cannot be reached.)
    pub fn sessions(&self) -> usize {
        match self.inner.ask(&Request::Sessions {
            gateway: self.inner.id,
        }) {
            Ok(Response::Count(n)) => n as usize,
            _ => 0,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
        let close = Request::CloseGateway {
            gateway: self.inner.id,
        };
        if let Err(e) = self.inner.ask(&close) {
            log::debug!(target: "procactor::manager", "gateway {}: could not close it in the manager: {e}", self.inner.address);
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("address", &self.inner.address)
            .field("manager_pid", &self.inner.manager.pid())
            .field("id", &self.inner.id)
            .finish()
    }
}

fn accept_loop(inner: &Inner, listener: &Listener) {
    while !inner.stop.load(Ordering::Relaxed) {
        match listener.accept_timeout::<()>(SLICE) {
            Ok(conn) => {
                // The connection moves to the manager's process, keys and all.
                let handed = Packed::encode(&conn).and_then(|conn| {
                    inner.ask(&Request::Session {
                        gateway: inner.id,
                        conn,
                    })
                });
                if let Err(e) = handed {
                    log::warn!(target: "procactor::manager", "gateway {}: a session was not served: {e}", inner.address);
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

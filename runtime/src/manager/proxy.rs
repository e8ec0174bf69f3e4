//! The proxy side: [`ProxyCore`], what every typed proxy wraps. It sends operations to the
//! manager over this process's connection to it, and counts this process's reference.
//!
//! A serialized proxy *lends* a reference (`Lend`, sent before the bytes leave), which keeps the
//! object alive while the bytes travel; the process that decodes the proxy adopts the lent
//! reference on first use (or on drop), over its own connection. So a proxy can be sent and its
//! original dropped at once. A lend whose bytes are never decoded keeps its object until the
//! manager ends.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::proto::{PackedRef, Request, Response};
use super::server::{self, LocalRef, ManagerCore};
use crate::actor::ActorRef;
use crate::error::{Error, Result};
use crate::sys;
use crate::wire::{self, Wait};

/// No lend waits to be adopted.
const ADOPTED: u64 = u64::MAX;

thread_local! {
    /// Proxies serialized now are pinned: their objects live as long as the manager.
    static PINNING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every proxy it serializes pinned (a `Namespace` field: stored as bytes, so the
/// manager cannot count the references inside).
pub(crate) fn pinning<R>(f: impl FnOnce() -> R) -> R {
    let prev = PINNING.with(|p| p.replace(true));
    let out = f();
    PINNING.with(|p| p.set(prev));
    out
}

/// A fresh lend id: unique among the lends in flight (process-unique counter, a per-process
/// random-ish base so a recycled pid does not repeat a dead process's ids).
fn new_lend() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let base = *BASE.get_or_init(|| {
        let t = sys::monotonic_ns();
        (u64::from(sys::getpid()) << 40) ^ t.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    let id = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) << 1);
    if id == 0 || id == ADOPTED {
        1
    } else {
        id
    }
}

/// One process's reference to one object of a manager.
pub(crate) struct ProxyCore {
    pub(crate) manager: ActorRef<ManagerCore>,
    pub(crate) obj: u64,
    kind: u64,
    /// The process this reference belongs to: a forked copy neither adopts nor releases it.
    pid: u32,
    /// The lend this reference came as, until adopted ([`ADOPTED`]).
    pending: AtomicU64,
}

impl ProxyCore {
    /// The reference a `Create` gave this process.
    pub(crate) fn created(manager: ActorRef<ManagerCore>, obj: u64, kind: u64) -> ProxyCore {
        ProxyCore {
            manager,
            obj,
            kind,
            pid: sys::getpid(),
            pending: AtomicU64::new(ADOPTED),
        }
    }

    fn in_manager(&self) -> bool {
        server::is_hosting(self.manager.id().0)
    }

    /// Takes up the lent reference this one came as, if not done yet.
    fn adopt(&self) -> Result<()> {
        let lend = self.pending.swap(ADOPTED, Ordering::AcqRel);
        if lend == ADOPTED {
            return Ok(());
        }
        self.send_tell(&Request::<PackedRef>::Adopt {
            obj: self.obj,
            lend,
        })
    }

    fn send_tell(&self, req: &Request<PackedRef>) -> Result<()> {
        self.manager.tell_as(req).map_err(gone)
    }

    /// Applies `op` in the manager and returns its result.
    pub(crate) fn call<O: Serialize + ?Sized, R: DeserializeOwned>(&self, op: &O) -> Result<R> {
        self.check_outside()?;
        self.adopt()?;
        let mut bytes = Vec::new();
        let fds = wire::encode(op, &mut bytes)?;
        let req = Request::Call {
            obj: self.obj,
            kind: self.kind,
            op: PackedRef::new(&bytes, &fds),
        };
        let resp: Response = self.manager.ask_as(&req, Wait::Forever).map_err(gone)?;
        match resp {
            Response::Value(p) => p.decode(),
            Response::Failed(f) => Err(f.into_error(self.manager.pid())),
            _ => Err(unexpected()),
        }
    }

    /// Sends `op` without waiting (pipelined): a failure is reported by the next call on this
    /// object from this process that waits.
    pub(crate) fn tell<O: Serialize + ?Sized>(&self, op: &O) -> Result<()> {
        self.check_outside()?;
        self.adopt()?;
        let mut bytes = Vec::new();
        let fds = wire::encode(op, &mut bytes)?;
        self.send_tell(&Request::Call {
            obj: self.obj,
            kind: self.kind,
            op: PackedRef::new(&bytes, &fds),
        })
    }

    fn check_outside(&self) -> Result<()> {
        if self.in_manager() {
            return Err(Error::Deadlock(
                "a proxy was used inside its own manager (from a hosted object's method): \
                 the manager serves one operation at a time",
            ));
        }
        Ok(())
    }

    /// Lends a reference for a serialized copy of this proxy; returns the lend id.
    fn lend(&self) -> u64 {
        let lend = if PINNING.with(Cell::get) {
            0
        } else {
            new_lend()
        };
        if self.in_manager() {
            server::local(LocalRef::Lend {
                obj: self.obj,
                lend,
            });
        } else if self.adopt().is_err()
            || self
                .send_tell(&Request::<PackedRef>::Lend {
                    obj: self.obj,
                    lend,
                })
                .is_err()
        {
            // The manager is gone: the copy will find it gone too.
            return lend;
        }
        lend
    }
}

impl Drop for ProxyCore {
    fn drop(&mut self) {
        if self.pid != sys::getpid() {
            return;
        }
        if self.in_manager() {
            server::local(LocalRef::Release { obj: self.obj });
            return;
        }
        // Errors: the manager is gone, and with it every count.
        if self.adopt().is_ok() {
            let _ = self.send_tell(&Request::<PackedRef>::Release { obj: self.obj });
        }
    }
}

/// A dead manager is `Disconnected` to its proxies.
pub(super) fn gone(e: Error) -> Error {
    match e {
        Error::ActorDied { .. } => Error::Disconnected,
        e => e,
    }
}

fn unexpected() -> Error {
    Error::Decode {
        expected: "a manager's answer",
        reason: "an answer of another kind".into(),
    }
}

/// A proxy as it travels.
#[derive(Serialize, Deserialize)]
struct ProxyWire {
    manager: ActorRef<ManagerCore>,
    obj: u64,
    kind: u64,
    lend: u64,
}

/// The shared part of every typed proxy: a counted reference, typed by `P` (the proxy type,
/// whose fingerprint the manager checks on every call).
pub(crate) struct Handle<P> {
    pub(crate) core: Arc<ProxyCore>,
    _p: PhantomData<fn() -> P>,
}

impl<P> Clone for Handle<P> {
    fn clone(&self) -> Self {
        Handle {
            core: self.core.clone(),
            _p: PhantomData,
        }
    }
}

impl<P> Handle<P> {
    pub(crate) fn kind() -> u64 {
        wire::fingerprint::<P>()
    }

    pub(crate) fn new(core: ProxyCore) -> Self {
        Handle {
            core: Arc::new(core),
            _p: PhantomData,
        }
    }

    pub(crate) fn call<O: Serialize + ?Sized, R: DeserializeOwned>(&self, op: &O) -> Result<R> {
        self.core.call(op)
    }

    pub(crate) fn tell<O: Serialize + ?Sized>(&self, op: &O) -> Result<()> {
        self.core.tell(op)
    }

    pub(crate) fn fmt(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("object", &self.core.obj)
            .field("manager_pid", &self.core.manager.pid())
            .finish()
    }
}

impl<P> PartialEq for Handle<P> {
    fn eq(&self, other: &Self) -> bool {
        self.core.obj == other.core.obj && self.core.manager.id() == other.core.manager.id()
    }
}

impl<P> Serialize for Handle<P> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ProxyWire {
            manager: self.core.manager.clone(),
            obj: self.core.obj,
            kind: self.core.kind,
            lend: self.core.lend(),
        }
        .serialize(s)
    }
}

impl<'de, P> Deserialize<'de> for Handle<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = ProxyWire::deserialize(d)?;
        if w.kind != Self::kind() {
            return Err(serde::de::Error::custom(format!(
                "a proxy of another type than {} (object #{})",
                std::any::type_name::<P>(),
                w.obj
            )));
        }
        let core = ProxyCore {
            manager: w.manager,
            obj: w.obj,
            kind: w.kind,
            pid: sys::getpid(),
            pending: AtomicU64::new(w.lend),
        };
        if core.in_manager() {
            // The manager itself now holds it (inside a hosted value): counted at once.
            let lend = core.pending.swap(ADOPTED, Ordering::AcqRel);
            server::local(LocalRef::Adopt {
                obj: core.obj,
                lend,
            });
        }
        Ok(Handle::new(core))
    }
}

/// The impls every typed proxy shares (each wraps a `Handle` in a field `handle`): `Clone`,
/// `Debug`, `PartialEq` (the same object), `Serialize` and `Deserialize`.
macro_rules! proxy_impls {
    ($name:ident [$($p:ident),*]) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                $name { handle: self.handle.clone() }
            }
        }

        impl<$($p),*> std::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.handle.fmt(stringify!($name), f)
            }
        }

        /// Two proxies are equal when they refer to the same object.
        impl<$($p),*> PartialEq for $name<$($p),*> {
            fn eq(&self, other: &Self) -> bool {
                self.handle == other.handle
            }
        }

        impl<$($p),*> serde::Serialize for $name<$($p),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.handle, s)
            }
        }

        impl<'de, $($p),*> serde::Deserialize<'de> for $name<$($p),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name { handle: serde::Deserialize::deserialize(d)? })
            }
        }
    };
}
pub(crate) use proxy_impls;

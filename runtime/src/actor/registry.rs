//! The name registry: `register`, `whereis`, `unregister`.
//!
//! A name is an abstract-namespace socket address in the session (`procactor/<session>/n/<name>`),
//! bound by `register` and served by the actor itself. So the kernel keeps the registry: binding
//! a taken name fails at once, and a name disappears with the actor's process, however it ends.
//! A supervisor re-registers a restarted child, and callers that look it up reach the new one.

use std::sync::Arc;
use std::time::Duration;

use super::actor_ref::{ActorRef, RefInner};
use super::client::{Conn, ConnectError};
use super::proto::{self, Role, Sys};
use super::{Actor, ActorId};
use crate::bootstrap;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::sys;
use crate::wire::{Fd, Wait};

/// Registers `actor` under `name` in this process tree (names are shared by the root program and
/// all its descendants). [`Error::NameTaken`] if a live actor holds it.
///
/// ```
/// # procactor::init();
/// struct Clock;
/// #[procactor::actor]
/// impl Clock {
///     fn init(_: ()) -> Self { Clock }
///     pub fn now(&self) -> u64 { 42 }
/// }
/// let c = procactor::spawn::<Clock>(())?;
/// procactor::register("clock", &c)?;
/// assert!(matches!(procactor::register("clock", &c), Err(procactor::Error::NameTaken(_))));
/// let found = procactor::whereis::<Clock>("clock")?.expect("registered");
/// assert_eq!(found.now()?, 42);
/// assert_eq!(found.pid(), c.pid());
/// procactor::unregister("clock")?;
/// # std::thread::sleep(std::time::Duration::from_millis(50));
/// assert!(procactor::whereis::<Clock>("clock")?.is_none());
/// # c.stop()?; c.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn register<A>(name: &str, actor: &ActorRef<A>) -> Result<()> {
    let addr = proto::name_addr(&bootstrap::session(), name)?;
    let listener = match sys::listen_abstract(&addr) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            return Err(Error::NameTaken(name.to_string()))
        }
        Err(e) => return Err(Error::io("listen", e)),
    };
    // The ref's own connection if it has one: the registration comes after what it sent.
    let conn = actor.inner.any_conn()?;
    conn.sys(&Sys::Register {
        name: name.to_string(),
        listener: Fd(listener),
    })
}

/// Gives `name` up: later `whereis` calls find nothing (the actor goes on running). Not an error
/// if the name is not registered.
pub fn unregister(name: &str) -> Result<()> {
    let addr = proto::name_addr(&bootstrap::session(), name)?;
    let conn = match Conn::open(
        &addr,
        &Role::Monitor,
        Wait::timeout(Duration::from_secs(30)),
    ) {
        Ok(c) => c,
        Err(ConnectError::NotThere) => return Ok(()),
        Err(ConnectError::Failed(e)) => return Err(e),
    };
    conn.sys(&Sys::Unregister(name.to_string()))
}

/// The actor registered under `name`, if any. Its message types are checked against `A`:
/// [`Error::SchemaMismatch`] if the name belongs to an actor of another type.
pub fn whereis<A: Actor>(name: &str) -> Result<Option<ActorRef<A>>> {
    let addr = proto::name_addr(&bootstrap::session(), name)?;
    let (m, r) = (A::Msg::schema(), A::Reply::schema());
    let conn = match Conn::open(
        &addr,
        &Role::caller(m, r),
        Wait::timeout(Duration::from_secs(30)),
    ) {
        Ok(c) => c,
        Err(ConnectError::NotThere) => return Ok(None),
        Err(ConnectError::Failed(e)) => return Err(e),
    };
    let w = conn.welcome.clone();
    let inner = Arc::new(RefInner::new(ActorId(w.id), w.name, w.pid, w.addr, None));
    inner.adopt::<A>(conn);
    Ok(Some(ActorRef::from_inner(inner)))
}

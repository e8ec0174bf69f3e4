//! The name registry: `register`, `whereis`, `unregister`.
//!
//! Names live in a table in shared memory that the root program makes and every process it
//! starts inherits (the table travels with each child's job), so a name is shared by the root and
//! all its descendants and by nobody else. No other user can see, take or squat a name: a socket
//! address could not promise that, since every user sees the abstract socket namespace (in
//! `/proc/net/unix`) and may bind in it.
//!
//! An entry holds the actor's own address. `whereis` connects there, and the connection checks
//! with the kernel that the listener is a process of our user (see `client::handshake`). An entry
//! whose actor has ended is stale: `whereis` finds nobody at its address and reports none, and
//! `register` takes the name over. A supervisor registers a restarted child again, and callers
//! that look the name up reach the new one.

use std::sync::Arc;
use std::time::Duration;

use super::actor_ref::{ActorRef, RefInner};
use super::client::{self, Conn, ConnectError};
use super::proto::Role;
use super::{Actor, ActorId};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::names;
use crate::wire::Wait;

/// Registers `actor` under `name` in this process tree (names are shared by the root program and
/// all its descendants, and by nobody else). [`Error::NameTaken`] if a live actor holds it; an
/// actor that has ended gives its names up.
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
/// procactor::actor::register("clock", &c)?;
/// assert!(matches!(procactor::actor::register("clock", &c), Err(procactor::Error::NameTaken(_))));
/// let found = procactor::actor::whereis::<Clock>("clock")?.expect("registered");
/// assert_eq!(found.now()?, 42);
/// assert_eq!(found.pid(), c.pid());
/// procactor::actor::unregister("clock")?;
/// assert!(procactor::actor::whereis::<Clock>("clock")?.is_none());
/// # c.stop()?; c.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn register<A>(name: &str, actor: &ActorRef<A>) -> Result<()> {
    names::check_name(name)?;
    let addr = actor.inner.addr.clone();
    if addr.len() > names::ADDR_MAX {
        return Err(Error::Unsupported("actor address too long"));
    }
    if !client::answers(&addr) {
        return Err(actor.inner.gone_error());
    }
    names::claim(name, &addr, client::answers)
}

/// Gives `name` up: later `whereis` calls find nothing (the actor goes on running). Not an error
/// if the name is not registered.
///
/// ```
/// # procactor::init();
/// procactor::actor::unregister("nobody-has-this-name")?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn unregister(name: &str) -> Result<()> {
    names::check_name(name)?;
    names::release(name)
}

/// The actor registered under `name`, if any. Its message types are checked against `A`:
/// [`Error::SchemaMismatch`] if the name belongs to an actor of another type.
///
/// ```
/// # procactor::init();
/// struct Idle;
/// #[procactor::actor]
/// impl Idle { fn init(_: ()) -> Self { Idle } pub fn ping(&self) {} }
/// assert!(procactor::actor::whereis::<Idle>("not-registered")?.is_none());
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn whereis<A: Actor>(name: &str) -> Result<Option<ActorRef<A>>> {
    names::check_name(name)?;
    let Some(addr) = names::lookup(name)? else {
        return Ok(None);
    };
    let (m, r) = (A::Msg::schema(), A::Reply::schema());
    let conn = match Conn::open(
        &addr,
        &Role::caller(m, r),
        Wait::timeout(Duration::from_secs(30)),
    ) {
        Ok(c) => c,
        Err(ConnectError::NotThere) => {
            names::forget_stale(name, &addr);
            return Ok(None);
        }
        Err(ConnectError::Failed(e)) => return Err(e),
    };
    let w = conn.welcome.clone();
    let inner = Arc::new(RefInner::new(ActorId(w.id), w.name, w.pid, addr, None));
    inner.adopt::<A>(conn);
    Ok(Some(ActorRef::from_inner(inner)))
}

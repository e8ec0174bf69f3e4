//! [`HostedProxy`]: an actor's state hosted inside the manager's process, called through the
//! methods `#[procactor::actor]` generates, like any actor.

use std::os::fd::OwnedFd;

use super::proto::{Fault, Packed};
use super::proxy::{proxy_impls, Handle};
use super::server::{self, reply, Hosted, Object};
use crate::actor::{Actor, ActorRef, Caller, Context};
use crate::error::{Error, ExitReason, Result};
use crate::wire;

/// Marks the proxies of this kind (their type fingerprint).
pub(super) struct HostTag;

struct HostedObj<A: Actor> {
    state: A,
    ctx: Context<A>,
}

pub(super) fn make<A: Actor>(
    init: &[u8],
    fds: Vec<OwnedFd>,
) -> std::result::Result<Box<dyn Hosted>, Fault> {
    let args: A::Args = wire::decode(init, fds).map_err(Fault::bad)?;
    let me = server::myself().ok_or_else(|| Fault::bad("not in a manager's process"))?;
    let mut ctx = Context::new(ActorRef::<A>::from_inner(me));
    let mut state = A::init(args, &mut ctx)
        .map_err(|e| Fault::Bad(format!("the hosted object's init failed: {e}")))?;
    state.started(&mut ctx);
    Ok(Box::new(HostedObj { state, ctx }))
}

impl<A: Actor> Object for HostedObj<A> {
    type Op = A::Msg;
    type Tag = (HostTag, A);
    type Proxy = HostedProxy<A>;

    fn apply(&mut self, msg: A::Msg, out: &mut Packed) -> std::result::Result<(), Fault> {
        let answer = self.state.handle(msg, &mut self.ctx);
        reply(&answer, out)
    }
}

impl<A: Actor> Drop for HostedObj<A> {
    fn drop(&mut self) {
        self.state.stopping(&mut self.ctx);
        self.state.stopped(&ExitReason::Normal);
    }
}

/// A proxy to an actor's state hosted in a [`Manager`](crate::Manager) (see
/// [`Manager::host`](crate::Manager::host)): the actor's generated methods work on it as on an
/// [`ActorRef`], and it travels like any proxy. Many hosted objects share the manager's one
/// process; each call is atomic.
///
/// Inside a hosted object, [`Context::myself`] refers to the manager, and a hosted object may
/// not call proxies of its own manager (that would wait for itself:
/// [`Error::Deadlock`](crate::Error::Deadlock)).
///
/// **What a proxy can call** (CPython's `exposed=`): the actor's `pub` handlers, and nothing
/// else. They are its message type; a private method is not a message, so no proxy has it (a
/// compile error, pinned in `tests/ui/hosted_private_method.rs`), and a forged message naming
/// anything else does not decode in the manager.
///
/// ```
/// # procactor::init();
/// use procactor::{manager::HostedProxy, Manager, Process};
///
/// struct Register { names: Vec<String> }
/// #[procactor::actor]
/// impl Register {
///     fn init(_: ()) -> Self { Register { names: vec![] } }
///     pub fn sign(&mut self, name: String) -> usize { self.names.push(name); self.names.len() }
/// }
///
/// fn visit(r: HostedProxy<Register>) -> usize { r.sign("child".into()).unwrap() }
///
/// let m = Manager::start()?;
/// let r = m.host::<Register>(())?;
/// r.sign("parent".into())?;
/// assert_eq!(Process::new(visit, r.clone()).start()?.join()?, 2);
/// r.cast().sign("later".into())?; // pipelined
/// assert_eq!(r.sign("last".into())?, 4);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct HostedProxy<A> {
    handle: Handle<(HostTag, A)>,
}

proxy_impls!(HostedProxy[A]);

impl<A: Actor> HostedProxy<A> {
    pub(super) fn from_handle(handle: Handle<(HostTag, A)>) -> Self {
        HostedProxy { handle }
    }

    /// The pipelined form: the generated methods return `Result<()>` once queued (a failure is
    /// reported by the next call that waits).
    pub fn cast(&self) -> HostedTell<'_, A> {
        HostedTell(self)
    }
}

impl<A: Actor> Caller<A> for HostedProxy<A> {
    type Out<R> = Result<R>;
    fn call<R>(&self, msg: A::Msg, pick: fn(A::Reply) -> Option<R>) -> Result<R> {
        let answer: A::Reply = self.handle.call(&msg)?;
        pick(answer).ok_or_else(|| Error::Decode {
            expected: std::any::type_name::<R>(),
            reason: "the hosted object answered with the reply of another message".into(),
        })
    }
}

/// The pipelined call form of a [`HostedProxy`] (see [`HostedProxy::send`]).
pub struct HostedTell<'a, A>(&'a HostedProxy<A>);

impl<A: Actor> Caller<A> for HostedTell<'_, A> {
    type Out<R> = Result<()>;
    fn call<R>(&self, msg: A::Msg, _pick: fn(A::Reply) -> Option<R>) -> Result<()> {
        self.0.handle.tell(&msg)
    }
}

impl<A> std::fmt::Debug for HostedTell<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HostedTell")
            .field(&std::any::type_name::<A>())
            .finish()
    }
}

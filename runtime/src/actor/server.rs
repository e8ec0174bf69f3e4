//! Starting an actor: `spawn` on the caller's side, and the actor process's `main`, which builds
//! the state and hands it to the (non-generic) [`Endpoint`] to run.

use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::actor_ref::{ActorRef, RefInner};
use super::context::Context;
use super::dispatch::{panicked, Running};
use super::endpoint::Endpoint;
use super::proto::{self, Welcome};
use super::{Actor, ActorBuilder, ActorId, Mailbox};
use crate::error::{Error, ExitReason, Result};
use crate::message::Message;
use crate::process::Process;
use crate::sys;
use crate::wire::{Fd, Wait};

/// What the new process gets.
#[derive(Serialize, Deserialize)]
pub(crate) struct Boot<Args> {
    listener: Fd,
    id: u64,
    name: String,
    addr: String,
    capacity: Option<u32>,
    /// The largest message the actor accepts.
    limit: u64,
    args: Args,
}

/// A fresh id: 64 random bits from the kernel. With the session's 128, an actor's address cannot
/// be guessed (or bound first) by anyone.
fn new_id() -> Result<u64> {
    sys::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .map_err(|e| Error::io("getrandom", e))
}

fn type_short_name<A>() -> String {
    let full = std::any::type_name::<A>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

pub(crate) fn spawn<A: Actor>(b: ActorBuilder<A>) -> Result<ActorRef<A>> {
    ready(launch(b)?)
}

pub(crate) fn spawn_many<A: Actor>(
    builders: impl IntoIterator<Item = ActorBuilder<A>>,
) -> Result<Vec<ActorRef<A>>> {
    // All processes first, then all welcomes: the children start up side by side.
    let mut launched = Vec::new();
    for b in builders {
        match launch(b) {
            Ok(l) => launched.push(l),
            Err(e) => {
                for l in &launched {
                    abandon(&l.actor);
                }
                return Err(e);
            }
        }
    }
    let refs: Vec<ActorRef<A>> = launched.iter().map(|l| l.actor.clone()).collect();
    let mut out = Vec::with_capacity(launched.len());
    for l in launched {
        match ready(l) {
            Ok(r) => out.push(r),
            Err(e) => {
                for r in &refs {
                    abandon(r);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// An actor whose process runs, and whose `init` may not have finished.
struct Launched<A> {
    actor: ActorRef<A>,
    start_timeout: Duration,
    register: Option<String>,
}

fn launch<A: Actor>(b: ActorBuilder<A>) -> Result<Launched<A>> {
    let session = crate::identity::session()?;
    let name = b.opts.name.unwrap_or_else(type_short_name::<A>);
    let (id, addr, listener) = loop {
        let id = new_id()?;
        let addr = proto::actor_addr(&session, id);
        match sys::listen_path(&addr) {
            Ok(l) => break (id, addr, l),
            Err(e) if e.raw_os_error() == Some(sys::EADDRINUSE) => continue,
            Err(e) => return Err(Error::io("listen", e)),
        }
    };
    let boot = Boot {
        listener: Fd(listener),
        id,
        name: name.clone(),
        addr: addr.clone(),
        capacity: match b.opts.mailbox {
            Mailbox::Unbounded => None,
            Mailbox::Bounded(n) => Some(n),
        },
        limit: b.opts.max_message,
        args: b.args,
    };
    // No wait for the child's bootstrap: its welcome (below) says it is running.
    let mut p = Process::new(actor_main::<A>, boot)
        .name(name.clone())
        .daemon(true)
        .start_timeout(b.opts.start_timeout)
        .no_hello_wait();
    if let Some(m) = b.opts.method {
        p = p.start_method(m);
    }
    // Our copy of the listener goes with `p`: from here only the child holds it.
    let handle = p.start()?;
    let pid = handle.pid();
    Ok(Launched {
        actor: ActorRef::from_inner(Arc::new(RefInner::new(
            ActorId(id),
            name,
            pid,
            addr,
            Some(handle),
        ))),
        start_timeout: b.opts.start_timeout,
        register: b.opts.register,
    })
}

/// Kills and reaps an actor that will not be handed out.
fn abandon<A>(r: &ActorRef<A>) {
    let _ = r.kill();
    let _ = r.join_timeout(Duration::from_secs(5));
}

/// Waits for the welcome, which comes once `init` has returned: the ref is ready then.
fn ready<A: Actor>(l: Launched<A>) -> Result<ActorRef<A>> {
    let r = l.actor;
    if let Err(e) = r.inner.typed_conn::<A>(Wait::timeout(l.start_timeout)) {
        abandon(&r);
        return Err(match e {
            Error::Timeout(t) => Error::Start {
                name: r.name().to_string(),
                reason: format!(
                    "the actor did not finish starting (bootstrap and init) within {t:?}"
                )
                .into(),
            },
            e => e,
        });
    }
    if let Some(n) = l.register {
        if let Err(e) = super::registry::register(&n, &r) {
            abandon(&r);
            return Err(e);
        }
    }
    Ok(r)
}

/// The job of an actor's process. Its socket's file goes with it, however the actor ends (its
/// spawner removes it too, for an actor that was killed).
fn actor_main<A: Actor>(boot: Boot<A::Args>) -> ExitReason {
    let addr = boot.addr.clone();
    let reason = serve::<A>(boot);
    sys::unlink(&addr);
    reason
}

fn serve<A: Actor>(boot: Boot<A::Args>) -> ExitReason {
    let Boot {
        listener,
        id,
        name,
        addr,
        capacity,
        limit,
        args,
    } = boot;
    // Listening again makes the kernel name this process, not its spawner, to those who connect:
    // a caller takes the actor's pid from there (never from a message).
    if let Err(e) = sys::relisten(listener.0.as_fd()) {
        return ExitReason::InitFailed {
            message: format!("listen: {e}"),
        };
    }
    let me = ActorRef::<A>::from_inner(Arc::new(RefInner::new(
        ActorId(id),
        name.clone(),
        sys::getpid(),
        addr.clone(),
        None,
    )));
    let mut ctx = Context::new(me);
    let welcome = Welcome {
        name,
        pid: sys::getpid(),
        id,
        addr,
        capacity,
        slot: 0,
        limit,
    };
    // A hand-written `schema()` may panic: the actor then ends as for a panic in `init`.
    let schemas = match catch_unwind(|| (A::Msg::schema(), A::Reply::schema())) {
        Ok(s) => s,
        Err(p) => return panicked(&*p),
    };
    let mut endpoint = match Endpoint::new(listener.0, welcome, limit, schemas) {
        Ok(e) => e,
        Err(e) => {
            return ExitReason::InitFailed {
                message: e.to_string(),
            }
        }
    };
    let state = match catch_unwind(AssertUnwindSafe(|| A::init(args, &mut ctx))) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return ExitReason::InitFailed {
                message: e.to_string(),
            }
        }
        Err(p) => return panicked(&*p),
    };
    endpoint.run(&mut Running { state, ctx })
}

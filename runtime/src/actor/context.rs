//! [`Context`]: what a handler can do besides computing its reply.

use std::sync::Arc;
use std::time::Duration;

use super::actor_ref::{ActorRef, RefInner};
use super::client::{handshake, ConnectError};
use super::proto::Role;
use super::{Actor, ActorBuilder, ActorId};
use crate::error::{ExitReason, Result};
use crate::wire::{Channel, Wait};

/// A watch this actor asked for, handed to its event loop.
pub(crate) struct Watch {
    /// `None`: the target was already gone when we looked.
    pub chan: Option<Channel>,
    pub target: Arc<RefInner>,
    pub link: bool,
}

/// Given to every handler and hook: the actor's own ref, and ways to spawn, watch and stop.
///
/// ```
/// # procactor::init();
/// use procactor::{ActorRef, Context, actor::Down};
///
/// struct Worker;
/// #[procactor::actor]
/// impl Worker {
///     fn init(_: ()) -> Self { Worker }
///     pub fn crash(&self) { panic!("on purpose") }
/// }
///
/// struct Boss { worker: Option<ActorRef<Worker>>, downs: Vec<String> }
/// #[procactor::actor]
/// impl Boss {
///     fn init(_: ()) -> Self { Boss { worker: None, downs: vec![] } }
///     pub fn hire(&mut self, ctx: &mut Context<Self>) -> u32 {
///         let w = ctx.spawn::<Worker>(()).unwrap();
///         ctx.monitor(&w).unwrap();
///         let pid = w.pid();
///         self.worker = Some(w);
///         pid
///     }
///     pub fn break_worker(&self) {
///         let _ = self.worker.as_ref().unwrap().cast().crash();
///     }
///     pub fn downs(&self) -> Vec<String> { self.downs.clone() }
///     fn on_down(&mut self, down: Down, _ctx: &mut Context<Self>) {
///         self.downs.push(down.reason.to_string());
///     }
/// }
///
/// let boss = procactor::spawn::<Boss>(())?;
/// boss.hire()?;
/// boss.break_worker()?;
/// let t = std::time::Instant::now();
/// while boss.downs()?.is_empty() && t.elapsed().as_secs() < 10 {
///     std::thread::sleep(std::time::Duration::from_millis(10));
/// }
/// assert!(boss.downs()?[0].contains("on purpose"));
/// boss.stop()?;
/// # boss.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Context<A: Actor> {
    me: ActorRef<A>,
    pub(crate) ctl: Control,
}

/// The part of a [`Context`] the event loop reads and writes: the same for every actor type.
#[derive(Default)]
pub(crate) struct Control {
    /// Set by a handler that ends the actor.
    pub stop: Option<ExitReason>,
    pub trap_exit: bool,
    /// Watches made since the loop last looked.
    pub watches: Vec<Watch>,
    pub children: Vec<Arc<RefInner>>,
    /// The connection the message being handled came on (a token of the event loop).
    pub caller: u64,
    /// The message being handled is an ask (its reply is awaited).
    pub asking: bool,
    /// Caller connections closed since the last message (their processes may have died, or
    /// a network caller went silent): the manager releases what they held.
    pub closed_callers: Vec<u64>,
    /// Network streams to serve as callers (see `actor::net`), each with its tag, since the
    /// loop last looked.
    pub net_adopt: Vec<(crate::wire::stream::Stream, u64)>,
    /// Tags whose network callers the loop is to let go of.
    pub net_close: Vec<u64>,
    /// Network callers served now, per tag (as of the message being handled).
    pub net_callers: std::collections::HashMap<u64, usize>,
    /// The tag of the network caller the message being handled came from (`None`: a caller
    /// on this host).
    pub net_tag: Option<u64>,
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(me: ActorRef<A>) -> Self {
        Context {
            me,
            ctl: Control::default(),
        }
    }

    /// This actor's own ref (to hand to others, or to tell itself something later).
    pub fn myself(&self) -> &ActorRef<A> {
        &self.me
    }

    /// This actor's id.
    pub fn id(&self) -> ActorId {
        self.me.id()
    }

    /// This actor's name.
    pub fn name(&self) -> &str {
        self.me.name()
    }

    /// Starts a child actor: its process is a child of this actor's, and ends with it.
    pub fn spawn<B: Actor>(&mut self, args: B::Args) -> Result<ActorRef<B>> {
        self.spawn_with(ActorBuilder::new(args))
    }

    /// [`spawn`](Context::spawn) with options.
    pub fn spawn_with<B: Actor>(&mut self, builder: ActorBuilder<B>) -> Result<ActorRef<B>> {
        let child = builder.spawn()?;
        self.ctl.children.retain(|c| Arc::strong_count(c) > 1);
        self.ctl.children.push(child.inner.clone());
        Ok(child)
    }

    /// Watches `other`: when it ends, this actor's `on_down` gets a [`Down`](super::Down)
    /// (at once if it has already ended).
    pub fn monitor<B>(&mut self, other: &ActorRef<B>) -> Result<()> {
        self.watch(other.inner.clone(), Role::Monitor, false)
    }

    /// Links this actor and `other`: when either ends abnormally the other ends too (with
    /// [`ExitReason::Linked`]), unless it traps exits.
    pub fn link<B>(&mut self, other: &ActorRef<B>) -> Result<()> {
        let role = Role::Link {
            name: self.me.name().to_string(),
            pid: self.me.pid(),
            id: self.me.id().0,
        };
        self.watch(other.inner.clone(), role, true)
    }

    fn watch(&mut self, target: Arc<RefInner>, role: Role, link: bool) -> Result<()> {
        let chan = match handshake(&target.addr, &role, Wait::timeout(Duration::from_secs(30))) {
            Ok((chan, _, _)) => Some(chan),
            Err(ConnectError::NotThere) => None,
            Err(ConnectError::Failed(e)) => return Err(e),
        };
        self.ctl.watches.push(Watch { chan, target, link });
        Ok(())
    }

    /// Watches `chan` until its peer end is closed in every process: then `on_down` gets a
    /// [`Down`](super::Down) with `id` and an unknown reason (the manager's lifelines).
    pub(crate) fn watch_hangup(&mut self, chan: Channel, id: ActorId) {
        let target = Arc::new(RefInner::new(id, String::new(), 0, String::new(), None));
        self.ctl.watches.push(Watch {
            chan: Some(chan),
            target,
            link: false,
        });
    }

    /// With `true`, a linked actor's death reaches `on_exit` instead of ending this actor.
    pub fn trap_exit(&mut self, trap: bool) {
        self.ctl.trap_exit = trap;
    }

    /// Ends this actor normally once the current handler returns (messages still queued are
    /// not handled; their callers get [`Error::ActorDied`](crate::Error::ActorDied)).
    pub fn stop(&mut self) {
        self.ctl.stop.get_or_insert(ExitReason::Normal);
    }

    /// Ends this actor abnormally with [`ExitReason::Failed`] once the current handler returns:
    /// linked actors die too, and a supervisor restarts it as for a crash.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.ctl.stop = Some(ExitReason::Failed {
            message: message.into(),
        });
    }
}

impl<A: Actor> std::fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("myself", &self.me)
            .field("trap_exit", &self.ctl.trap_exit)
            .finish_non_exhaustive()
    }
}

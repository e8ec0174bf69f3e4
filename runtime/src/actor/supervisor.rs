//! [`Supervisor`]: an actor that starts child actors from specs and restarts them when they end,
//! as Erlang/OTP's supervisors do.
//!
//! The supervisor is an actor process of its own; its children are its child processes, so it
//! learns exactly how each one ended (panic, signal, exit code). A restarted child is a fresh
//! process, registered again under its spec's name, so callers that find it with
//! [`whereis`](super::whereis) reach the new one. Past its restart intensity the supervisor gives
//! up: it ends with [`ExitReason::Failed`], and its own children end with it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::actor_ref::{ActorRef, RefInner};
use super::{Actor, ActorBuilder, Context, Down, InitError, Mailbox};
use crate::error::{Error, ExitReason, Result};
use crate::message::{Message, Schema};
use crate::wire;
use procactor_os::code::{CodeRef, SignedCode};

/// Which children restart when one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the one that ended.
    OneForOne,
    /// All of them (the others are stopped first).
    OneForAll,
    /// The one that ended and those started after it.
    RestForOne,
}

/// When a child is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal end (not after a normal stop).
    Transient,
    /// Never.
    Temporary,
}

/// Starts one child; travels signed (see `procactor_os::code`).
type StartFn = fn(&mut Context<SupervisorActor>, &SpecWire) -> Result<Arc<RefInner>>;

fn start_child<A: Actor>(
    ctx: &mut Context<SupervisorActor>,
    spec: &SpecWire,
) -> Result<Arc<RefInner>> {
    let args: A::Args = wire::decode(&spec.args, Vec::new())?;
    let child = ctx.spawn_with(
        ActorBuilder::<A>::new(args)
            .name(spec.name.clone())
            .mailbox(spec.mailbox),
    )?;
    super::registry::register(&spec.name, &child)?;
    Ok(child.inner)
}

/// How to start (and restart) one child.
///
/// ```
/// use procactor::{actor::ChildSpec, actor::Restart};
/// struct Worker;
/// #[procactor::actor]
/// impl Worker { fn init(_: ()) -> Self { Worker } pub fn work(&self) {} }
/// let spec = ChildSpec::new::<Worker>("worker-1", ())?.restart(Restart::Transient);
/// assert_eq!(spec.name(), "worker-1");
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a ChildSpec does nothing until given to a Supervisor"]
pub struct ChildSpec(SpecWire);

/// A child spec as it travels to the supervisor's process. Not public, and neither is the
/// supervisor actor: a function offset is only ever made by `ChildSpec::new`, never decoded from
/// bytes a user could forge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SpecWire {
    name: String,
    start: SignedCode,
    args: Vec<u8>,
    restart: Restart,
    mailbox: Mailbox,
}

impl ChildSpec {
    /// A child of type `A` built from `args`, registered under `name` (unique in the process
    /// tree), restarted always ([`Restart::Permanent`]) unless told otherwise.
    pub fn new<A: Actor>(name: impl Into<String>, args: A::Args) -> Result<ChildSpec> {
        let mut bytes = Vec::new();
        if !wire::encode(&args, &mut bytes)?.is_empty() {
            return Err(Error::Unsupported(
                "a child spec's arguments cannot hold descriptors (pipes, queues): a restart \
                 would need them again",
            ));
        }
        Ok(ChildSpec(SpecWire {
            name: name.into(),
            start: CodeRef::new(start_child::<A> as StartFn)?.sign(),
            args: bytes,
            restart: Restart::Permanent,
            mailbox: Mailbox::Unbounded,
        }))
    }

    /// Its restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.0.restart = restart;
        self
    }

    /// Its mailbox.
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.0.mailbox = mailbox;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl SpecWire {
    fn start(&self, ctx: &mut Context<SupervisorActor>) -> Result<Arc<RefInner>> {
        // A supervisor only gets specs through its start-up arguments, from the process that
        // spawned it; `verify` checks the signature anyway.
        CodeRef::<StartFn>::verify(self.start)?.get()(ctx, self)
    }
}

/// A supervisor's configuration; [`start`](Supervisor::start) runs it.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// use procactor::{actor::ChildSpec, actor::Strategy, actor::Supervisor};
///
/// struct Flaky { n: u32 }
/// #[procactor::actor]
/// impl Flaky {
///     fn init(_: ()) -> Self { Flaky { n: 0 } }
///     pub fn work(&mut self) -> u32 {
///         self.n += 1;
///         if self.n == 3 { panic!("every third message") }
///         self.n
///     }
/// }
///
/// let sup = Supervisor::new(Strategy::OneForOne)
///     .intensity(5, Duration::from_secs(10))
///     .child(ChildSpec::new::<Flaky>("flaky-doc", ())?)
///     .start()?;
/// let w = procactor::actor::whereis::<Flaky>("flaky-doc")?.unwrap();
/// assert_eq!(w.work()?, 1);
/// assert_eq!(w.work()?, 2);
/// assert!(w.work().is_err()); // it died...
/// let t = std::time::Instant::now();
/// while sup.restarts()? == 0 && t.elapsed() < Duration::from_secs(10) {
///     std::thread::sleep(Duration::from_millis(10));
/// }
/// // ...and was replaced by a fresh process, reachable by the same name.
/// let w2 = sup.child::<Flaky>("flaky-doc")?;
/// assert_ne!(w2.pid(), w.pid());
/// assert_eq!(w2.work()?, 1);
/// sup.stop()?;
/// # sup.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Supervisor does nothing until `start()`"]
pub struct Supervisor(SupervisorArgs);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SupervisorArgs {
    name: String,
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    children: Vec<SpecWire>,
}

impl Supervisor {
    /// A supervisor with this strategy, no children yet, and Erlang's default intensity (3
    /// restarts in 5 seconds).
    pub fn new(strategy: Strategy) -> Self {
        Supervisor(SupervisorArgs {
            name: "supervisor".into(),
            strategy,
            max_restarts: 3,
            period: Duration::from_secs(5),
            children: Vec::new(),
        })
    }

    /// Its name (its process's name too).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = name.into();
        self
    }

    /// At most `max_restarts` restarts within `period`; one more and the supervisor fails.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.0.max_restarts = max_restarts;
        self.0.period = period;
        self
    }

    /// Adds a child (started in the order added).
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.0.children.push(spec.0);
        self
    }

    /// Starts the supervisor's process, which starts the children. A child that fails to start
    /// fails the whole start.
    pub fn start(self) -> Result<SupervisorRef> {
        let name = self.0.name.clone();
        let r = ActorBuilder::<SupervisorActor>::new(self.0)
            .name(name)
            .spawn()?;
        Ok(SupervisorRef(r))
    }
}

/// What a supervisor says about one child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// The spec's name (its registered name).
    pub name: String,
    /// Its current process, if running.
    pub pid: Option<u32>,
    /// How often it was restarted.
    pub restarts: u32,
}

/// A running supervisor (see [`Supervisor`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupervisorRef(ActorRef<SupervisorActor>);

impl SupervisorRef {
    /// Its children, in start order.
    pub fn which_children(&self) -> Result<Vec<ChildInfo>> {
        match self.0.ask(SupMsg::Children)? {
            SupReply::Children(c) => Ok(c),
            SupReply::Restarts(_) => Err(unexpected()),
        }
    }

    /// Restarts so far, all children together.
    pub fn restarts(&self) -> Result<u32> {
        match self.0.ask(SupMsg::Restarts)? {
            SupReply::Restarts(n) => Ok(n),
            SupReply::Children(_) => Err(unexpected()),
        }
    }

    /// The current incarnation of child `name`, typed. [`Error::NotFound`] if no child of
    /// that name runs now (another name, or a child between two incarnations: try again).
    pub fn child<A: Actor>(&self, name: &str) -> Result<ActorRef<A>> {
        super::whereis::<A>(name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no child named {name:?} runs under this supervisor now (another name, or it is \
                 between restarts)"
            ))
        })
    }

    /// Watches the supervisor (it fails when it gives up).
    pub fn monitor(&self) -> Result<super::Monitor> {
        self.0.monitor()
    }

    /// Kills the supervisor; its children die with it.
    pub fn kill(&self) -> Result<()> {
        self.0.kill()
    }

    /// Stops the children (last first), then the supervisor.
    pub fn stop(&self) -> Result<()> {
        self.0.stop()
    }

    /// Waits for the supervisor to end.
    pub fn join(&self) -> Result<ExitReason> {
        self.0.join()
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.0.pid()
    }
}

fn unexpected() -> Error {
    Error::Decode {
        expected: "a supervisor reply",
        reason: "the reply of another request".into(),
    }
}

/// The supervisor actor (see [`Supervisor`]); used through [`SupervisorRef`].
pub(crate) struct SupervisorActor {
    config: SupervisorArgs,
    running: Vec<Option<Arc<RefInner>>>,
    restarts_of: Vec<u32>,
    recent: VecDeque<Instant>,
    total: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum SupMsg {
    Children,
    Restarts,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum SupReply {
    Children(Vec<ChildInfo>),
    Restarts(u32),
}

impl Message for SupMsg {
    fn schema() -> Schema {
        Schema::of::<Self>("Children|Restarts")
    }
}

impl Message for SupReply {
    fn schema() -> Schema {
        Schema::of::<Self>("Children(Vec<ChildInfo{name,pid,restarts}>)|Restarts(u32)")
    }
}

impl Actor for SupervisorActor {
    type Args = SupervisorArgs;
    type Msg = SupMsg;
    type Reply = SupReply;

    fn init(
        config: SupervisorArgs,
        ctx: &mut Context<Self>,
    ) -> std::result::Result<Self, InitError> {
        let n = config.children.len();
        let mut s = SupervisorActor {
            config,
            running: vec![None; n],
            restarts_of: vec![0; n],
            recent: VecDeque::new(),
            total: 0,
        };
        for i in 0..n {
            s.start(i, ctx)
                .map_err(|e| format!("child {:?}: {e}", s.config.children[i].name))?;
        }
        Ok(s)
    }

    fn handle(&mut self, msg: SupMsg, _ctx: &mut Context<Self>) -> SupReply {
        match msg {
            SupMsg::Children => SupReply::Children(
                self.config
                    .children
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| ChildInfo {
                        name: spec.name.clone(),
                        pid: self.running[i].as_ref().map(|c| c.pid),
                        restarts: self.restarts_of[i],
                    })
                    .collect(),
            ),
            SupMsg::Restarts => SupReply::Restarts(self.total),
        }
    }

    fn on_down(&mut self, down: Down, ctx: &mut Context<Self>) {
        let Some(i) = self
            .running
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.id == down.id))
        else {
            return; // an incarnation we replaced ourselves
        };
        // Reap the old process first: its registered name is free only once it is gone.
        if let Some(old) = self.running[i].take() {
            let _ = ActorRef::<()>::from_inner(old).join_timeout(Duration::from_secs(5));
        }
        let spec = &self.config.children[i];
        let restart = match spec.restart {
            Restart::Permanent => true,
            Restart::Transient => down.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if !restart {
            log::info!(target: "procactor::supervisor", "child {:?} ended ({}); not restarted", spec.name, down.reason);
            return;
        }
        let now = Instant::now();
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.period)
        {
            self.recent.pop_front();
        }
        if self.recent.len() > self.config.max_restarts as usize {
            let message = format!(
                "more than {} restarts in {:?} (last: child {:?} {})",
                self.config.max_restarts, self.config.period, spec.name, down.reason
            );
            log::error!(target: "procactor::supervisor", "supervisor {:?} gives up: {message}", self.config.name);
            ctx.fail(message);
            return;
        }
        log::info!(target: "procactor::supervisor", "child {:?} ended ({}); restarting", spec.name, down.reason);
        let range = match self.config.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::OneForAll => 0..self.running.len(),
            Strategy::RestForOne => i..self.running.len(),
        };
        // Stop the others in the range, last first, then start them all again in order.
        for j in range.clone().rev() {
            if let Some(c) = self.running[j].take() {
                shut_down(&c);
            }
        }
        for j in range {
            self.restarts_of[j] += 1;
            self.total += 1;
            if let Err(e) = self.start(j, ctx) {
                ctx.fail(format!(
                    "could not restart child {:?}: {e}",
                    self.config.children[j].name
                ));
                return;
            }
        }
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) {
        for c in self.running.iter_mut().rev() {
            if let Some(c) = c.take() {
                shut_down(&c);
            }
        }
    }
}

impl SupervisorActor {
    fn start(&mut self, i: usize, ctx: &mut Context<Self>) -> Result<()> {
        let child = self.config.children[i].start(ctx)?;
        ctx.monitor(&ActorRef::<()>::from_inner(child.clone()))?;
        self.running[i] = Some(child);
        Ok(())
    }
}

/// Stops a child: politely, then by force after a grace period.
fn shut_down(child: &Arc<RefInner>) {
    let r = ActorRef::<()>::from_inner(child.clone());
    let _ = r.stop();
    if r.join_timeout(Duration::from_secs(2)).is_err() {
        let _ = r.kill();
        let _ = r.join_timeout(Duration::from_secs(5));
    }
}

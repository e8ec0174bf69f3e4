//! Actors: each one an isolated OS process with a mailbox, reached through a typed
//! [`ActorRef`].
//!
//! Write the actor as a plain struct and put `#[procactor::actor]` on its `impl` block: every
//! `pub fn` becomes a message, `fn init(args) -> Self` builds the state in the child. Or implement
//! [`Actor`] by hand with a `#[derive(Message)]` enum.
//!
//! ```
//! # procactor::init();
//! use procactor::ActorRef;
//!
//! struct Counter { total: u64 }
//!
//! #[procactor::actor]
//! impl Counter {
//!     fn init(start: u64) -> Self { Counter { total: start } }
//!     pub fn add(&mut self, n: u64) -> u64 { self.total += n; self.total }
//!     pub fn get(&self) -> u64 { self.total }
//! }
//!
//! let c: ActorRef<Counter> = procactor::spawn::<Counter>(10)?; // a new process
//! assert_eq!(c.add(5)?, 15);                                   // ask: typed reply
//! c.cast().add(1)?;                                            // tell: no reply awaited
//! assert_eq!(c.get()?, 16);
//! c.stop()?;
//! assert_eq!(c.join()?, procactor::ExitReason::Normal);
//! # Ok::<(), procactor::Error>(())
//! ```

mod actor_ref;
mod client;
mod context;
mod dispatch;
mod endpoint;
#[cfg(test)]
pub(crate) mod fuzz_targets;
mod gate;
mod named;
pub(crate) mod net;
mod proto;
mod registry;
mod server;
mod supervisor;

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) use actor_ref::RefInner;
pub use actor_ref::{ActorRef, Caller, Monitor, Tell, Timed, TryTell};
pub(crate) use client::{settle as settle_tells, told_since_settle};
pub use context::Context;
#[doc(hidden)]
pub use named::ACTORS;
pub use named::{name_of, named, spawn_named, ActorEntry};
pub use registry::{register, unregister, whereis};
pub use supervisor::{ChildInfo, ChildSpec, Restart, Strategy, Supervisor, SupervisorRef};

use crate::bootstrap::StartMethod;
use crate::error::{ExitReason, Result};
use crate::message::Message;

/// The error an actor's `init` may return: any error type converts into it with `?`.
pub type InitError = Box<dyn std::error::Error + std::marker::Send + Sync>;

/// An actor: state that lives in its own process and handles one message at a time.
///
/// `#[procactor::actor]` writes this impl for you; by hand it looks like this:
///
/// ```
/// # procactor::init();
/// use procactor::{Actor, Context, actor::InitError, Message};
/// use serde::{Deserialize, Serialize};
///
/// struct Greeter { greeting: String }
///
/// #[derive(Serialize, Deserialize, Message)]
/// enum GreeterMsg { Greet(String), Count }
///
/// #[derive(Serialize, Deserialize, Message, Debug, PartialEq)]
/// enum GreeterReply { Text(String), Number(usize) }
///
/// impl Actor for Greeter {
///     type Args = String;
///     type Msg = GreeterMsg;
///     type Reply = GreeterReply;
///
///     fn init(greeting: String, _ctx: &mut Context<Self>) -> Result<Self, InitError> {
///         Ok(Greeter { greeting })
///     }
///
///     fn handle(&mut self, msg: GreeterMsg, _ctx: &mut Context<Self>) -> GreeterReply {
///         match msg {
///             GreeterMsg::Greet(name) => GreeterReply::Text(format!("{}, {name}!", self.greeting)),
///             GreeterMsg::Count => GreeterReply::Number(self.greeting.len()),
///         }
///     }
/// }
///
/// let g = procactor::spawn::<Greeter>("Hello".into())?;
/// assert_eq!(g.ask(GreeterMsg::Greet("Ada".into()))?, GreeterReply::Text("Hello, Ada!".into()));
/// g.stop()?;
/// # g.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub trait Actor: Sized + 'static {
    /// What `init` is built from: sent to the new process.
    type Args: Serialize + DeserializeOwned;
    /// The messages it handles.
    type Msg: Message;
    /// What it answers (a tell's answer is computed and dropped).
    type Reply: Message;

    /// Builds the state, in the actor's own process (so it need not be serializable). An error
    /// ends the actor with [`ExitReason::InitFailed`], and `spawn` returns it.
    fn init(args: Self::Args, ctx: &mut Context<Self>) -> std::result::Result<Self, InitError>;

    /// Handles one message.
    fn handle(&mut self, msg: Self::Msg, ctx: &mut Context<Self>) -> Self::Reply;

    /// Runs once after `init`, before the first message.
    fn started(&mut self, _ctx: &mut Context<Self>) {}

    /// Runs when the actor is about to stop normally, after its mailbox was drained.
    fn stopping(&mut self, _ctx: &mut Context<Self>) {}

    /// Runs last, with the reason the actor ends (after a panic too, on a best-effort basis).
    fn stopped(&mut self, _reason: &ExitReason) {}

    /// A monitored actor ended (see [`Context::monitor`]).
    fn on_down(&mut self, _down: Down, _ctx: &mut Context<Self>) {}

    /// A linked actor ended while this one traps exits (see [`Context::trap_exit`]).
    fn on_exit(&mut self, _exit: Down, _ctx: &mut Context<Self>) {}
}

/// A message that a watched actor ended: which one, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// The actor's id.
    pub id: ActorId,
    /// The actor's name.
    pub name: String,
    /// How it ended.
    pub reason: ExitReason,
}

/// An actor incarnation's identity: a restarted actor is a new process with a new id.
///
/// ```
/// let id = procactor::actor::ActorId(0x2a);
/// assert_eq!(id.to_string(), "000000000000002a");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId(pub u64);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The size of an actor's mailbox.
///
/// ```
/// use procactor::actor::Mailbox;
/// assert_eq!(Mailbox::default(), Mailbox::Unbounded);
/// assert_eq!(Mailbox::bounded(8), Mailbox::Bounded(8));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Mailbox {
    /// Tells never block; a slow actor's backlog grows in memory.
    #[default]
    Unbounded,
    /// At most this many messages wait: a `tell` blocks while it is full (`try_send` fails with
    /// [`Error::MailboxFull`](crate::Error::MailboxFull), `tell_timeout` times out).
    Bounded(u32),
}

impl Mailbox {
    /// A bounded mailbox of `capacity` (at least 1).
    pub fn bounded(capacity: u32) -> Mailbox {
        Mailbox::Bounded(capacity.clamp(1, u32::MAX / 2))
    }
}

/// Starts actor `A` in a new process with default options; see [`ActorBuilder`] for the others.
///
/// ```
/// # procactor::init();
/// struct Echo;
/// #[procactor::actor]
/// impl Echo {
///     fn init(_: ()) -> Self { Echo }
///     pub fn echo(&self, s: String) -> String { s }
/// }
/// let e = procactor::spawn::<Echo>(())?;
/// assert_eq!(e.echo("hi".into())?, "hi");
/// # e.stop()?; e.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn spawn<A: Actor>(args: A::Args) -> Result<ActorRef<A>> {
    ActorBuilder::new(args).spawn()
}

/// Starts one actor `A` per item of `args`, all at once: the processes start side by side, then
/// every `init` is awaited. If one fails, all are killed and the error returned.
///
/// ```
/// # procactor::init();
/// struct Cell { v: u32 }
/// #[procactor::actor]
/// impl Cell {
///     fn init(v: u32) -> Self { Cell { v } }
///     pub fn value(&self) -> u32 { self.v }
/// }
/// let cells = procactor::actor::spawn_many::<Cell>(0..8)?;
/// assert_eq!(cells[5].value()?, 5);
/// for c in &cells { c.stop()?; }
/// # for c in &cells { c.join()?; }
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn spawn_many<A: Actor>(args: impl IntoIterator<Item = A::Args>) -> Result<Vec<ActorRef<A>>> {
    server::spawn_many(args.into_iter().map(ActorBuilder::new))
}

/// Options for a new actor: name, mailbox, start method, registered name.
///
/// ```
/// # procactor::init();
/// use procactor::{actor::ActorBuilder, actor::Mailbox};
/// struct Sink { n: u64 }
/// #[procactor::actor]
/// impl Sink {
///     fn init(_: ()) -> Self { Sink { n: 0 } }
///     pub fn put(&mut self, _x: u64) { self.n += 1 }
///     pub fn count(&self) -> u64 { self.n }
/// }
/// let s = ActorBuilder::<Sink>::new(())
///     .name("sink")
///     .mailbox(Mailbox::bounded(100))
///     .register("the-sink")
///     .spawn()?;
/// assert_eq!(s.name(), "sink");
/// let found = procactor::actor::whereis::<Sink>("the-sink")?.expect("registered");
/// found.put(7)?;
/// assert_eq!(s.count()?, 1);
/// # s.stop()?; s.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "an ActorBuilder does nothing until `spawn()`"]
pub struct ActorBuilder<A: Actor> {
    args: A::Args,
    opts: Options,
    _a: PhantomData<fn() -> A>,
}

/// An [`ActorBuilder`]'s options, whatever the actor's type: what a spawn by name carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Options {
    name: Option<String>,
    mailbox: Mailbox,
    method: Option<StartMethod>,
    start_timeout: Duration,
    register: Option<String>,
    max_message: u64,
}

impl<A: Actor> ActorBuilder<A> {
    /// Options for an actor built from `args`.
    pub fn new(args: A::Args) -> Self {
        ActorBuilder {
            args,
            opts: Options {
                name: None,
                mailbox: Mailbox::Unbounded,
                method: None,
                start_timeout: Duration::from_secs(30),
                register: None,
                max_message: crate::wire::DEFAULT_LIMIT,
            },
            _a: PhantomData,
        }
    }

    /// The actor's name (its process's name too); default: the type's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// Its mailbox (default: unbounded).
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.opts.mailbox = mailbox;
        self
    }

    /// How to make its process (default: [`get_start_method`](crate::get_start_method)).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.opts.method = Some(method);
        self
    }

    /// How long `spawn` waits for the process to start and `init` to finish (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.opts.start_timeout = timeout;
        self
    }

    /// Registers the actor under `name` (see [`whereis`]) before `spawn` returns.
    pub fn register(mut self, name: impl Into<String>) -> Self {
        self.opts.register = Some(name.into());
        self
    }

    /// The largest message (in bytes, after encoding) the actor accepts from a caller: the
    /// caller's `ask` or `tell` of a larger one fails with [`Error::TooLarge`] before anything
    /// is sent (and the actor refuses such a record unread, whoever sends it).
    /// Default [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE), 1 GiB.
    ///
    /// It is also what one record (a batch of messages) can cost the actor: a record is read
    /// whole before its messages are handled, one in a memory file as the file's size says (up
    /// to this limit, even a sparse file that cost its sender nothing). The actor handles one
    /// record at a time and gives a large buffer back afterwards, so its peak is about this
    /// limit plus what handling the record takes (decoding copies what a message carries).
    ///
    /// ```
    /// # procactor::init();
    /// struct Sink;
    /// #[procactor::actor]
    /// impl Sink {
    ///     fn init(_: ()) -> Self { Sink }
    ///     pub fn take(&self, data: String) -> usize { data.len() }
    /// }
    /// let s = procactor::actor::ActorBuilder::<Sink>::new(()).max_message_size(1 << 20).spawn()?;
    /// assert_eq!(s.take("x".repeat(1000))?, 1000);
    /// let too_big = s.take("x".repeat(2 << 20));
    /// assert!(matches!(too_big, Err(procactor::Error::TooLarge { limit, .. }) if limit == 1 << 20));
    /// assert_eq!(s.take("still fine".into())?, 10);
    /// # s.stop()?; s.join()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.opts.max_message = bytes;
        self
    }

    /// Starts the process, waits for `init` and returns a ref to the actor.
    pub fn spawn(self) -> Result<ActorRef<A>> {
        server::spawn(self)
    }

    /// Starts the actor registered as `name` (see [`named`]), which must be an `A`: the way
    /// a program that knows an actor only by name starts it. The options and the arguments go
    /// encoded, as they would to another binary.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::actor::ActorBuilder;
    /// struct Tally { n: u64 }
    /// #[procactor::actor(name = "docs::tally")]
    /// impl Tally {
    ///     fn init(n: u64) -> Self { Tally { n } }
    ///     pub fn get(&self) -> u64 { self.n }
    /// }
    /// let t = ActorBuilder::<Tally>::new(7).name("t1").spawn_named("docs::tally")?;
    /// assert_eq!((t.name(), t.get()?), ("t1", 7));
    /// # t.stop()?; t.join()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn spawn_named(self, name: &str) -> Result<ActorRef<A>> {
        named::spawn(name, self.opts, &self.args)
    }

    /// The builder of an actor known by its options and encoded arguments.
    pub(crate) fn from_parts(opts: Options, args: A::Args) -> Self {
        ActorBuilder {
            args,
            opts,
            _a: PhantomData,
        }
    }
}

impl<A: Actor> std::fmt::Debug for ActorBuilder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorBuilder")
            .field("actor", &std::any::type_name::<A>())
            .field("name", &self.opts.name)
            .field("mailbox", &self.opts.mailbox)
            .field("method", &self.opts.method)
            .finish_non_exhaustive()
    }
}

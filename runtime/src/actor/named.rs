//! Actor types registered by name: `#[procactor::actor]` registers every actor it writes (under
//! `module::Type`, or the name it is given), `#[procactor::entry]` one implemented by hand. A
//! program that knows an actor only by its name (a peer on another host, in the end) starts it
//! with its options and its arguments encoded; nothing it sends is code, and the type on the
//! other side is checked by its schemas before anything is decoded as it.

use std::sync::Arc;

use super::actor_ref::{ActorRef, RefInner};
use super::{server, Actor, ActorBuilder, Options};
use crate::error::{Error, Result};
use crate::message::{Message, Schema};
use crate::wire;

/// An actor type registered by name, gathered at link time (what `#[procactor::actor]` and
/// `#[procactor::entry]` write). Find one with [`named`].
///
/// ```
/// struct Meter;
/// #[procactor::actor(name = "docs::meter")]
/// impl Meter {
///     fn init(_: ()) -> Self { Meter }
///     pub fn read(&self) -> f64 { 1.5 }
/// }
/// let e = procactor::actor::named("docs::meter")?;
/// assert_eq!(e.name(), "docs::meter");
/// assert!(e.type_name().ends_with("::Meter"));
/// let (messages, replies) = e.schemas();
/// assert!(messages.name.ends_with("MeterMsg") && replies.name.ends_with("MeterReply"));
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct ActorEntry {
    name: &'static str,
    type_name: fn() -> &'static str,
    args_type: fn() -> &'static str,
    schemas: fn() -> (Schema, Schema),
    spawn: fn(Options, &[u8]) -> Result<Arc<RefInner>>,
}

/// Every actor type registered in this binary.
#[doc(hidden)]
#[procactor_os::linkme::distributed_slice]
#[linkme(crate = procactor_os::linkme)]
pub static ACTORS: [ActorEntry];

impl ActorEntry {
    /// The entry of actor type `A` under `name`.
    #[doc(hidden)]
    pub const fn new<A: Actor>(name: &'static str) -> ActorEntry {
        ActorEntry {
            name,
            type_name: std::any::type_name::<A>,
            args_type: std::any::type_name::<A::Args>,
            schemas: schemas::<A>,
            spawn: spawn_encoded::<A>,
        }
    }

    /// The name it is registered under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The actor's type, as `std::any::type_name` says it.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// Its message and reply schemas (what a caller's hello must match).
    pub fn schemas(&self) -> (Schema, Schema) {
        (self.schemas)()
    }

    /// Is it an `A`: the same type (by its path: the same in every binary of the program), the
    /// same messages, replies and arguments? (Two actor types with the same messages are still
    /// told apart: a ref of one must never run the other's code.)
    fn check<A: Actor>(&self) -> Result<()> {
        let (m, r) = self.schemas();
        let (our_m, our_r) = schemas::<A>();
        let args = std::any::type_name::<A::Args>();
        if (m.fingerprint, r.fingerprint) == (our_m.fingerprint, our_r.fingerprint)
            && (self.args_type)() == args
            && self.type_name() == std::any::type_name::<A>()
        {
            return Ok(());
        }
        Err(Error::SchemaMismatch {
            ours: format!(
                "{} (messages {}, replies {}, arguments {args})",
                std::any::type_name::<A>(),
                our_m.name,
                our_r.name
            )
            .into(),
            theirs: format!(
                "{} registered as {:?} (messages {}, replies {}, arguments {})",
                self.type_name(),
                self.name,
                m.name,
                r.name,
                (self.args_type)()
            )
            .into(),
        })
    }
}

impl std::fmt::Debug for ActorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorEntry")
            .field("name", &self.name)
            .field("type", &self.type_name())
            .finish()
    }
}

fn schemas<A: Actor>() -> (Schema, Schema) {
    (A::Msg::schema(), A::Reply::schema())
}

/// Decodes the arguments of an `A` and starts it (the receiving side of a spawn by name).
fn spawn_encoded<A: Actor>(opts: Options, args: &[u8]) -> Result<Arc<RefInner>> {
    let args = wire::decode::<A::Args>(args, Vec::new())?;
    let r = server::spawn(ActorBuilder::<A>::from_parts(opts, args))?;
    Ok(r.inner.clone())
}

/// The actor type registered as `name` in this binary.
///
/// ```
/// struct Clerk;
/// #[procactor::actor(name = "docs::clerk")]
/// impl Clerk {
///     fn init(_: ()) -> Self { Clerk }
///     pub fn hello(&self) -> String { "hello".into() }
/// }
/// let e = procactor::actor::named("docs::clerk")?;
/// assert!(e.type_name().ends_with("Clerk"));
/// assert!(matches!(procactor::actor::named("docs::nobody"), Err(procactor::Error::NotFound(_))));
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn named(name: &str) -> Result<&'static ActorEntry> {
    let mut found = ACTORS.iter().filter(|e| e.name == name);
    let entry = found.next().ok_or_else(|| {
        Error::NotFound(format!(
            "no actor is registered as {name:?} in this binary (#[procactor::actor] registers \
             `module::Type`, or the name it is given)"
        ))
    })?;
    if found.next().is_some() {
        return Err(Error::NotFound(format!(
            "two actors are registered as {name:?}: give one another name with \
             #[procactor::actor(name = \"...\")]"
        )));
    }
    Ok(entry)
}

/// The name actor type `A` is registered under: `None` if it is not, or if that name is
/// registered more than once (two actor types of the same path, declared in two functions of one
/// module: give one a `#[procactor::actor(name = "...")]`), which [`named`] would refuse.
///
/// ```
/// struct Porter;
/// #[procactor::actor]
/// impl Porter { fn init(_: ()) -> Self { Porter } pub fn carry(&self) {} }
/// let name = procactor::actor::name_of::<Porter>().expect("registered by #[actor]");
/// assert!(name.ends_with("::Porter"));
/// ```
pub fn name_of<A: Actor>() -> Option<&'static str> {
    let ours = std::any::type_name::<A>();
    let name = ACTORS
        .iter()
        .find(|e| e.type_name() == ours && e.check::<A>().is_ok())?
        .name;
    named(name).ok().map(|e| e.name)
}

/// Starts the actor registered as `name`, which must be an `A`, with default options (see
/// [`ActorBuilder::spawn_named`]).
///
/// ```
/// # procactor::init();
/// struct Doubler;
/// #[procactor::actor(name = "docs::doubler")]
/// impl Doubler {
///     fn init(_: ()) -> Self { Doubler }
///     pub fn double(&self, x: i64) -> i64 { 2 * x }
/// }
/// let d = procactor::actor::spawn_named::<Doubler>("docs::doubler", ())?;
/// assert_eq!(d.double(21)?, 42);
/// # d.stop()?; d.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn spawn_named<A: Actor>(name: &str, args: A::Args) -> Result<ActorRef<A>> {
    ActorBuilder::new(args).spawn_named(name)
}

/// A spawn by name: the entry checked against `A`, the arguments encoded, the entry's own code
/// decoding and starting them.
pub(super) fn spawn<A: Actor>(name: &str, opts: Options, args: &A::Args) -> Result<ActorRef<A>> {
    let entry = named(name)?;
    entry.check::<A>()?;
    let mut bytes = Vec::new();
    let fds = wire::encode(args, &mut bytes)?;
    if !fds.is_empty() {
        return Err(Error::Unsupported(
            "arguments that carry handles cannot be sent by name",
        ));
    }
    let inner = (entry.spawn)(opts, &bytes)?;
    Ok(ActorRef::from_inner(inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::{Context, InitError};

    struct Probe;

    impl Actor for Probe {
        type Args = (u64, String);
        type Msg = u64;
        type Reply = u64;
        fn init(_: (u64, String), _: &mut Context<Self>) -> std::result::Result<Self, InitError> {
            Ok(Probe)
        }
        fn handle(&mut self, m: u64, _: &mut Context<Self>) -> u64 {
            m
        }
    }

    /// Arguments that do not decode as the entry's type are an error, before any process starts
    /// (a peer's bytes never reach `init` unless they are an `Args`).
    #[test]
    fn garbage_arguments_are_refused_without_a_process() {
        let entry = ActorEntry::new::<Probe>("tests::probe");
        let opts = ActorBuilder::<Probe>::new((0, String::new())).opts;
        for bytes in [
            &b""[..],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x01\xff\xff\xff\xff\x0f",
        ] {
            let err = (entry.spawn)(opts.clone(), bytes).map(|_| ()).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
        }
    }

    /// The same messages, replies and arguments as `Probe`, other code.
    struct Twin;

    impl Actor for Twin {
        type Args = (u64, String);
        type Msg = u64;
        type Reply = u64;
        fn init(_: (u64, String), _: &mut Context<Self>) -> std::result::Result<Self, InitError> {
            Ok(Twin)
        }
        fn handle(&mut self, m: u64, _: &mut Context<Self>) -> u64 {
            m + 1
        }
    }

    #[test]
    fn an_entry_checks_the_type_it_is_asked_for() {
        let entry = ActorEntry::new::<Probe>("tests::probe");
        assert!(entry.check::<Probe>().is_ok());
        // `spawn` checks before it encodes or starts anything: a twin is refused there.
        assert!(matches!(
            entry.check::<Twin>(),
            Err(Error::SchemaMismatch { .. })
        ));
        assert_eq!(entry.name(), "tests::probe");
        assert!(format!("{entry:?}").contains("Probe"));
    }
}

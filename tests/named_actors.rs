//! Actor types registered by name: `#[procactor::actor]` registers each (under `module::Type` or
//! the name given), `#[procactor::entry]` a hand-written `impl Actor`. A program that knows only
//! the name starts the actor with its arguments encoded, here and in a child that is a fresh run
//! of the binary; a name of another type, an unknown name or other arguments are refused before
//! any process starts.

mod common;

use common::bounded;
use procactor::actor::{self, ActorBuilder, Mailbox};
use procactor::{Actor, Context, Error, ExitReason, Process, StartMethod};
use serde::{Deserialize, Serialize};

procactor::test_support!();

struct Counter {
    n: u64,
}

#[procactor::actor(name = "tests::counter")]
impl Counter {
    fn init(start: u64) -> Self {
        Counter { n: start }
    }
    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }
    pub fn process_id(&self) -> u32 {
        std::process::id()
    }
}

/// Same messages and replies as `Counter`, other arguments.
struct Lookalike {
    n: u64,
}

#[procactor::actor(name = "tests::lookalike")]
impl Lookalike {
    fn init(start: String) -> Self {
        Lookalike {
            n: start.len() as u64,
        }
    }
    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }
    pub fn process_id(&self) -> u32 {
        std::process::id()
    }
}

/// Registered under its path (no name given).
struct Echo;

#[procactor::actor]
impl Echo {
    fn init(_: ()) -> Self {
        Echo
    }
    pub fn echo(&self, s: String) -> String {
        s
    }
}

/// Implemented by hand, registered with `#[procactor::entry]`.
struct Upper;

#[derive(Serialize, Deserialize, procactor::Message)]
struct Shout(String);

#[procactor::entry(name = "tests::upper")]
impl Actor for Upper {
    type Args = ();
    type Msg = Shout;
    type Reply = String;

    fn init(_: (), _ctx: &mut Context<Self>) -> Result<Self, procactor::actor::InitError> {
        Ok(Upper)
    }

    fn handle(&mut self, Shout(s): Shout, _ctx: &mut Context<Self>) -> String {
        s.to_uppercase()
    }
}

#[test]
fn an_actor_starts_by_its_name_with_its_options() {
    bounded(|| {
        let c = ActorBuilder::<Counter>::new(40)
            .name("by-name")
            .mailbox(Mailbox::bounded(8))
            .spawn_named("tests::counter")
            .unwrap();
        assert_eq!(c.add(2).unwrap(), 42);
        assert_eq!(c.name(), "by-name");
        assert_eq!(c.process_id().unwrap(), c.pid());
        c.stop().unwrap();
        assert_eq!(c.join().unwrap(), ExitReason::Normal);

        let u = actor::spawn_named::<Upper>("tests::upper", ()).unwrap();
        assert_eq!(u.ask(Shout("hi".into())).unwrap(), "HI");
        u.stop().unwrap();
        u.join().unwrap();
    });
}

#[test]
fn names_and_types_are_listed() {
    let echo = actor::name_of::<Echo>().unwrap();
    assert_eq!(echo, concat!(module_path!(), "::Echo"));
    assert_eq!(actor::name_of::<Counter>(), Some("tests::counter"));
    assert_eq!(actor::name_of::<Upper>(), Some("tests::upper"));
    let e = actor::named("tests::counter").unwrap();
    assert_eq!(e.name(), "tests::counter");
    assert!(e.type_name().ends_with("::Counter"), "{}", e.type_name());
    let (m, r) = e.schemas();
    assert!(m.name.ends_with("CounterMsg"), "{}", m.name);
    assert!(r.name.ends_with("CounterReply"), "{}", r.name);
}

/// Runs in a child that is a fresh run of this binary: starts the actor by name there.
fn start_there(start: u64) -> Result<(u64, u32), String> {
    let c = actor::spawn_named::<Counter>("tests::counter", start).map_err(|e| e.to_string())?;
    let out = (
        c.add(1).map_err(|e| e.to_string())?,
        c.process_id().map_err(|e| e.to_string())?,
    );
    c.stop().map_err(|e| e.to_string())?;
    c.join().map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn a_name_resolves_in_another_run_of_the_binary() {
    bounded(|| {
        let p = Process::new(start_there, 9)
            .start_method(StartMethod::Spawn)
            .start()
            .unwrap();
        let child = p.pid();
        let (n, actor_pid) = p.join().unwrap().unwrap();
        assert_eq!(n, 10);
        assert_ne!(actor_pid, child);
        assert_ne!(actor_pid, std::process::id());
    });
}

/// Runs in a child of its own (the other tests' processes are not its children): the refusals,
/// and how many children it had before and after them.
fn refusals(_: ()) -> Result<(usize, usize), String> {
    let before = procactor::process::active_children().len();
    refuse_all();
    Ok((before, procactor::process::active_children().len()))
}

fn refuse_all() {
    // Same messages and replies, other arguments.
    let err = actor::spawn_named::<Counter>("tests::lookalike", 1).unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMismatch { theirs, .. } if theirs.contains("String")),
        "{err}"
    );
    // Other messages.
    let err = actor::spawn_named::<Echo>("tests::counter", ()).unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMismatch { theirs, .. } if theirs.contains("tests::counter")),
        "{err}"
    );
    let err = actor::spawn_named::<Echo>("tests::nobody", ()).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("tests::nobody")),
        "{err}"
    );
}

#[test]
fn another_type_or_an_unknown_name_is_refused_before_anything_starts() {
    bounded(|| {
        refuse_all();
        let p = Process::new(refusals, ()).start().unwrap();
        let (before, after) = p.join().unwrap().unwrap();
        assert_eq!((before, after), (0, 0), "a refused spawn left a process");
        // The lookalike itself starts under its own type.
        let l = actor::spawn_named::<Lookalike>("tests::lookalike", "abc".into()).unwrap();
        assert_eq!(l.add(1).unwrap(), 4);
        l.stop().unwrap();
        l.join().unwrap();
    });
}

#[test]
fn a_crash_of_an_actor_started_by_name_is_reported() {
    bounded(|| {
        let c = actor::spawn_named::<Counter>("tests::counter", 0).unwrap();
        c.kill().unwrap();
        let reason = c.join().unwrap();
        assert!(reason.is_abnormal(), "{reason:?}");
        assert!(c.add(1).is_err());
    });
}

/// Two hand-written actors with the same messages, replies and arguments: a name of one is never
/// started as the other (its ref would run the other's code).
struct Adder;

#[procactor::entry(name = "tests::adder")]
impl Actor for Adder {
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    fn init(_: (), _: &mut Context<Self>) -> Result<Self, procactor::actor::InitError> {
        Ok(Adder)
    }
    fn handle(&mut self, m: u64, _: &mut Context<Self>) -> u64 {
        m + 1
    }
}

struct Doubler;

impl Actor for Doubler {
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    fn init(_: (), _: &mut Context<Self>) -> Result<Self, procactor::actor::InitError> {
        Ok(Doubler)
    }
    fn handle(&mut self, m: u64, _: &mut Context<Self>) -> u64 {
        m * 2
    }
}

#[test]
fn a_name_is_never_started_as_another_type_with_the_same_messages() {
    bounded(|| {
        assert_eq!(actor::name_of::<Doubler>(), None, "never registered");
        let err = actor::spawn_named::<Doubler>("tests::adder", ()).unwrap_err();
        assert!(
            matches!(&err, Error::SchemaMismatch { theirs, .. } if theirs.contains("Adder")),
            "{err}"
        );
        let a = actor::spawn_named::<Adder>("tests::adder", ()).unwrap();
        assert_eq!(a.ask(10).unwrap(), 11);
        a.stop().unwrap();
        a.join().unwrap();
    });
}

fn first_twin() -> Option<&'static str> {
    struct Twin;
    #[procactor::actor]
    impl Twin {
        fn init(_: ()) -> Self {
            Twin
        }
        pub fn one(&self) -> u8 {
            1
        }
    }
    actor::name_of::<Twin>()
}

fn second_twin() -> Option<&'static str> {
    struct Twin;
    #[procactor::actor]
    impl Twin {
        fn init(_: ()) -> Self {
            Twin
        }
        pub fn two(&self) -> u8 {
            2
        }
    }
    actor::name_of::<Twin>()
}

/// Two actor types of one path (declared in two functions of a module) share a default name:
/// `name_of` says none, rather than a name `named` would refuse.
#[test]
fn a_default_name_two_types_share_is_nobodys() {
    assert_eq!(first_twin(), None);
    assert_eq!(second_twin(), None);
    let shared = concat!(module_path!(), "::Twin");
    let err = actor::named(shared).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("two actors")),
        "{err}"
    );
}

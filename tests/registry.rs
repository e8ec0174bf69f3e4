//! The name registry across a process tree: names registered by one process are found by every
//! other process of the tree, a name is free again once its actor ended, and the table's 1024
//! slots make room from ended actors only. One test per binary: the table is the whole tree's.

mod common;

use common::BOUND;
use procactor::{ActorRef, Error, Process, StartMethod};

procactor::test_support!();

pub struct Counter {
    n: u64,
}

#[procactor::actor]
impl Counter {
    fn init(_: ()) -> Self {
        Counter { n: 0 }
    }

    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }
}

fn counter() -> ActorRef<Counter> {
    procactor::spawn::<Counter>(()).unwrap()
}

fn register_in_child(c: ActorRef<Counter>) {
    procactor::actor::register("tree-name", &c).unwrap();
}

fn find_here(_: ()) -> u32 {
    let c = procactor::actor::whereis::<Counter>("tree-name")
        .unwrap()
        .unwrap();
    c.add(0).unwrap();
    c.pid()
}

fn find_in_grandchild(_: ()) -> u32 {
    Process::new(find_here, ())
        .start()
        .unwrap()
        .join_timeout(BOUND)
        .unwrap()
}

#[test]
fn names_are_shared_by_the_process_tree_and_freed_when_their_actor_ends() {
    let c = counter();
    // Registered by a child, found by the parent and by a grandchild.
    Process::new(register_in_child, c.clone())
        .start()
        .unwrap()
        .join_timeout(BOUND)
        .unwrap();
    let found = procactor::actor::whereis::<Counter>("tree-name")
        .unwrap()
        .unwrap();
    assert_eq!(found.pid(), c.pid());
    let seen = Process::new(find_in_grandchild, ())
        .start()
        .unwrap()
        .join_timeout(BOUND)
        .unwrap();
    assert_eq!(seen, c.pid());
    // Forked children (the fork server's too) find it as well: they have the tree's table from
    // the process they were forked from.
    for method in [StartMethod::Fork, StartMethod::ForkServer] {
        let seen = Process::new(find_here, ())
            .start_method(method)
            .start()
            .unwrap()
            .join_timeout(BOUND)
            .unwrap();
        assert_eq!(seen, c.pid(), "{method:?}");
    }

    // The table holds 1024 names; past that, only names of ended actors make room.
    let names: Vec<String> = (0..1023).map(|i| format!("many-{i}")).collect();
    for n in &names {
        procactor::actor::register(n, &c).unwrap();
    }
    let other = counter();
    let full = procactor::actor::register("one-too-many", &other);
    assert!(matches!(full, Err(Error::Unsupported(_))), "{full:?}");
    c.kill().unwrap();
    c.join_timeout(BOUND).unwrap();
    // A name of an ended actor is free again, and the ended actor's entries make room.
    procactor::actor::register("tree-name", &other).unwrap();
    procactor::actor::register("one-too-many", &other).unwrap();
    assert_eq!(
        procactor::actor::whereis::<Counter>("tree-name")
            .unwrap()
            .unwrap()
            .pid(),
        other.pid()
    );
    for n in names
        .iter()
        .chain(["tree-name".to_string(), "one-too-many".to_string()].iter())
    {
        procactor::actor::unregister(n).unwrap();
    }
    assert!(procactor::actor::whereis::<Counter>("one-too-many")
        .unwrap()
        .is_none());
    other.kill().unwrap();
    other.join_timeout(BOUND).unwrap();
}

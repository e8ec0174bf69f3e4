//! Deeply nested message types: a field type's change 40 levels down still changes the schema
//! (the recursion guard's fixed array is only the first 32 levels), and a caller and an actor
//! agree on such a type under both start methods.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{bounded, BOUND};
use procactor::actor::Schema;
use procactor::Message;
use serde::{Deserialize, Serialize};

procactor::test_support!();

/// A leaf whose schema stands for "version 1" or "version 2" of a program.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Leaf(pub u64);
static V2: AtomicBool = AtomicBool::new(false);
impl Message for Leaf {
    fn schema() -> Schema {
        if V2.load(Ordering::SeqCst) {
            Schema::derived::<Self>("struct(_)", &[i64::schema])
        } else {
            Schema::derived::<Self>("struct(_)", &[u64::schema])
        }
    }
}

macro_rules! nest {
    ($inner:ident; ) => {};
    ($inner:ident; $outer:ident $($rest:ident)*) => {
        #[derive(Serialize, Deserialize, Message, Clone, Debug, PartialEq)]
        pub struct $outer { pub x: $inner }
        nest!($outer; $($rest)*);
    };
}
nest!(Leaf; N1 N2 N3 N4 N5 N6 N7 N8 N9 N10 N11 N12 N13 N14 N15 N16 N17 N18 N19 N20
      N21 N22 N23 N24 N25 N26 N27 N28 N29 N30 N31 N32 N33 N34 N35 N36 N37 N38 N39 N40);

fn flip<T: Message>() -> (u64, u64) {
    V2.store(false, Ordering::SeqCst);
    let a = T::schema().fingerprint;
    V2.store(true, Ordering::SeqCst);
    let b = T::schema().fingerprint;
    V2.store(false, Ordering::SeqCst);
    (a, b)
}

#[test]
fn a_change_deep_down_shows_in_the_fingerprint() {
    for (depth, (a, b)) in [
        (1, flip::<N1>()),
        (30, flip::<N30>()),
        (31, flip::<N31>()),
        (32, flip::<N32>()),
        (33, flip::<N33>()),
        (40, flip::<N40>()),
    ] {
        assert_ne!(
            a, b,
            "a field type change {depth} levels down is invisible to the schema"
        );
    }
    // Stable: the same twice (the guard leaves nothing behind between calls).
    assert_eq!(flip::<N40>(), flip::<N40>());
}

pub struct Deep;
#[procactor::actor]
impl Deep {
    fn init(_: ()) -> Self {
        Deep
    }
    pub fn echo(&self, n: N40) -> N40 {
        n
    }
}

fn make(v: u64) -> N40 {
    macro_rules! build {
        ($e:expr; ) => { $e };
        ($e:expr; $t:ident $($rest:ident)*) => { build!($t { x: $e }; $($rest)*) };
    }
    build!(Leaf(v); N1 N2 N3 N4 N5 N6 N7 N8 N9 N10 N11 N12 N13 N14 N15 N16 N17 N18 N19 N20
      N21 N22 N23 N24 N25 N26 N27 N28 N29 N30 N31 N32 N33 N34 N35 N36 N37 N38 N39 N40)
}

#[test]
fn forty_levels_caller_and_actor_agree() {
    bounded(|| {
        for m in [procactor::StartMethod::Fork, procactor::StartMethod::Spawn] {
            let d = procactor::actor::ActorBuilder::<Deep>::new(())
                .start_method(m)
                .spawn()
                .unwrap();
            assert_eq!(d.timeout(BOUND).echo(make(7)).unwrap(), make(7));
            d.stop().unwrap();
            d.join_timeout(BOUND).unwrap();
        }
    });
}

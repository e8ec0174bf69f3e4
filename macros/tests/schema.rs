//! The schemas `#[derive(Message)]` and `#[actor]` generate follow the field *types*, not the
//! text they are written with.
//!
//! Two types defined in two blocks of one function have the same path (`std::any::type_name`
//! does not tell the blocks apart), so each test compares two definitions of "the same type" in
//! two versions of a program, and checks first that their names agree: the fingerprints differ,
//! or not, for what is inside them alone.

// The actors here are never spawned: only their schemas are compared.
#![allow(dead_code)]

use procactor::{actor::Schema, Message};
use serde::{Deserialize, Serialize};

#[test]
fn how_a_type_is_spelled_does_not_matter() {
    let short = {
        #[derive(Serialize, Deserialize, Message)]
        struct Blob {
            bytes: Vec<u8>,
            label: Option<String>,
        }
        Blob::schema()
    };
    let long = {
        #[derive(Serialize, Deserialize, Message)]
        struct Blob {
            bytes: std::vec::Vec<u8>,
            label: ::core::option::Option<std::string::String>,
        }
        Blob::schema()
    };
    let aliased = {
        type Bytes = Vec<u8>;
        #[derive(Serialize, Deserialize, Message)]
        struct Blob {
            bytes: Bytes,
            label: Option<String>,
        }
        Blob::schema()
    };
    assert_eq!(short.name, long.name, "the same path");
    assert_eq!(short, long);
    assert_eq!(short, aliased);
}

#[test]
fn a_change_behind_a_type_alias_changes_the_fingerprint() {
    let before = {
        #[derive(Serialize, Deserialize, Message)]
        struct Inner {
            amount: u32,
        }
        type Payload = Inner;
        #[derive(Serialize, Deserialize, Message)]
        struct Outer {
            payload: Payload,
        }
        Outer::schema()
    };
    let after = {
        #[derive(Serialize, Deserialize, Message)]
        struct Inner {
            amount: u64, // the only change, behind the alias
        }
        type Payload = Inner;
        #[derive(Serialize, Deserialize, Message)]
        struct Outer {
            payload: Payload,
        }
        Outer::schema()
    };
    assert_eq!(before.name, after.name, "the same path");
    assert_ne!(before.fingerprint, after.fingerprint);
}

#[test]
fn names_count_too() {
    let a = {
        #[derive(Serialize, Deserialize, Message)]
        enum Cmd {
            Add { n: u64 },
            Reset,
        }
        Cmd::schema()
    };
    let renamed_field = {
        #[derive(Serialize, Deserialize, Message)]
        enum Cmd {
            Add { k: u64 },
            Reset,
        }
        Cmd::schema()
    };
    let renamed_variant = {
        #[derive(Serialize, Deserialize, Message)]
        enum Cmd {
            Add { n: u64 },
            Clear,
        }
        Cmd::schema()
    };
    assert_eq!(a.name, renamed_field.name);
    assert_ne!(a, renamed_field);
    assert_ne!(a, renamed_variant);
    assert_ne!(renamed_field, renamed_variant);
}

#[derive(Serialize, Deserialize, Message)]
enum Tree {
    Leaf(u32),
    Node(Vec<Tree>),
}

#[derive(Serialize, Deserialize, Message)]
struct Wrapper<T> {
    inner: T,
    many: Vec<T>,
}

#[test]
fn recursive_and_generic_types() {
    let tree = Tree::schema();
    assert_eq!(tree, Tree::schema(), "finite, and the same every time");
    let _ = (Tree::Leaf(1), Tree::Node(vec![]));
    assert_ne!(
        Wrapper::<u32>::schema().fingerprint,
        Wrapper::<u64>::schema().fingerprint
    );
    assert_eq!(
        Wrapper::<Vec<u8>>::schema(),
        Wrapper::<std::vec::Vec<u8>>::schema()
    );
}

/// An actor's messages: the same rules, and a type that is not a `Message` (only serde's
/// derives) is still accepted, by name.
#[test]
fn actor_messages() {
    #[derive(Serialize, Deserialize)]
    struct Opaque(u8);

    let a = {
        struct Store;
        #[procactor::actor]
        impl Store {
            fn init(_: ()) -> Self {
                Store
            }
            pub fn put(&mut self, data: Vec<u8>, tag: Opaque) -> usize {
                data.len() + usize::from(tag.0)
            }
        }
        (StoreMsg::schema(), StoreReply::schema())
    };
    let spelled_out = {
        struct Store;
        #[procactor::actor]
        impl Store {
            fn init(_: ()) -> Self {
                Store
            }
            pub fn put(
                &mut self,
                data: std::vec::Vec<u8>,
                tag: Opaque,
            ) -> ::core::primitive::usize {
                data.len() + usize::from(tag.0)
            }
        }
        (StoreMsg::schema(), StoreReply::schema())
    };
    let retyped = {
        struct Store;
        #[procactor::actor]
        impl Store {
            fn init(_: ()) -> Self {
                Store
            }
            pub fn put(&mut self, data: Vec<u16>, tag: Opaque) -> usize {
                data.len() + usize::from(tag.0)
            }
        }
        (StoreMsg::schema(), StoreReply::schema())
    };
    assert_eq!(a.0.name, retyped.0.name, "the same path");
    assert_eq!(a, spelled_out);
    assert_ne!(a.0, retyped.0);
    assert_ne!(a.1, retyped.1);
    assert_ne!(
        a.0.fingerprint, a.1.fingerprint,
        "messages and replies differ"
    );
}

#[test]
fn a_hand_written_schema_can_compose_too() {
    #[derive(Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }
    impl Message for Point {
        fn schema() -> Schema {
            Schema::derived::<Self>("struct{x:_,y:_}", &[i32::schema, i32::schema])
        }
    }
    let derived = {
        #[derive(Serialize, Deserialize, Message)]
        struct Point {
            x: i32,
            y: i32,
        }
        Point::schema()
    };
    let _ = Point { x: 0, y: 0 };
    assert_eq!(Point::schema().name, derived.name);
    assert_eq!(Point::schema(), derived, "what the derive writes");
}

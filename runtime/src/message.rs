//! Messages with a schema: the [`Message`] trait that `#[derive(Message)]` implements, and the
//! fingerprint two processes compare before they trust each other's bytes.
//!
//! postcard is not self-describing: a field added in one version of a program and missing in
//! another does not fail to decode, it decodes into garbage. So every actor mailbox checks, when a
//! caller first connects, that both sides mean the same type: same path, same field names, same
//! field types. A mismatch is [`Error::SchemaMismatch`](crate::Error::SchemaMismatch).

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message type's identity: its full type name and a fingerprint of its shape.
///
/// ```
/// use procactor::{Message, actor::Schema};
///
/// #[derive(serde::Serialize, serde::Deserialize, Message)]
/// enum Cmd { Add { n: u64 }, Get }
///
/// let s: Schema = Cmd::schema();
/// assert!(s.name.ends_with("Cmd"));
/// assert_eq!(s, Cmd::schema());
/// assert_ne!(s.fingerprint, u64::schema().fingerprint);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schema {
    /// The type's full name, as `std::any::type_name` gives it.
    pub name: &'static str,
    /// A hash of the name, the field names and the field types.
    pub fingerprint: u64,
}

impl Schema {
    /// The schema of `T` with the given shape description (what `#[derive(Message)]` writes:
    /// variants, field names and field types).
    pub fn of<T: ?Sized>(shape: &str) -> Schema {
        let name = std::any::type_name::<T>();
        let mut h = Fnv::new();
        h.write(name.as_bytes());
        h.write(&[0]);
        h.write(shape.as_bytes());
        Schema {
            name,
            fingerprint: h.0,
        }
    }

    /// The schema of a container `T` of the given element schemas: a change inside an element
    /// type changes the container's fingerprint too.
    pub fn composed<T: ?Sized>(parts: &[Schema]) -> Schema {
        let mut h = Fnv::new();
        h.write(std::any::type_name::<T>().as_bytes());
        for p in parts {
            h.write(&p.fingerprint.to_le_bytes());
        }
        Schema {
            name: std::any::type_name::<T>(),
            fingerprint: h.0,
        }
    }
}

/// 64-bit FNV-1a: tiny, stable across builds and platforms (unlike `std`'s hashers).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A value that can be a message between processes: serde both ways, plus a [`Schema`].
///
/// Derive it with `#[derive(Message)]` (next to serde's derives); it is implemented for the
/// standard types an actor commonly answers with (integers, `String`, `Vec`, `Option`, tuples,
/// maps...).
///
/// ```
/// use procactor::Message;
///
/// #[derive(serde::Serialize, serde::Deserialize, Message)]
/// struct Transfer { from: String, to: String, cents: u64 }
///
/// // The field names and types are part of the schema.
/// #[derive(serde::Serialize, serde::Deserialize, Message)]
/// struct Transfer2 { from: String, to: String, cents: i64 }
/// assert_ne!(Transfer::schema().fingerprint, Transfer2::schema().fingerprint);
/// ```
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// This type's schema.
    fn schema() -> Schema;
}

macro_rules! leaf_messages {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn schema() -> Schema {
                Schema::of::<$t>("")
            }
        }
    )*};
}

leaf_messages!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    std::time::Duration
);

impl<T: Message> Message for Vec<T> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[T::schema()])
    }
}

impl<T: Message> Message for Option<T> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[T::schema()])
    }
}

impl<T: Message> Message for Box<T> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[T::schema()])
    }
}

impl<T: Message, E: Message> Message for Result<T, E> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[T::schema(), E::schema()])
    }
}

impl<K: Message + Eq + std::hash::Hash, V: Message> Message for HashMap<K, V> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[K::schema(), V::schema()])
    }
}

impl<K: Message + Ord, V: Message> Message for BTreeMap<K, V> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[K::schema(), V::schema()])
    }
}

macro_rules! tuple_messages {
    ($(($($t:ident),+)),*) => {$(
        impl<$($t: Message),+> Message for ($($t,)+) {
            fn schema() -> Schema {
                Schema::composed::<Self>(&[$($t::schema()),+])
            }
        }
    )*};
}

tuple_messages!((A), (A, B), (A, B, C), (A, B, C, D));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_follow_their_elements() {
        assert_ne!(
            Vec::<u32>::schema().fingerprint,
            Vec::<u64>::schema().fingerprint
        );
        assert_eq!(
            Option::<String>::schema(),
            Option::<String>::schema(),
            "stable"
        );
        assert_ne!(
            Schema::of::<u8>("a").fingerprint,
            Schema::of::<u8>("b").fingerprint
        );
    }
}

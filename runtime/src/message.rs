//! Messages with a schema: the [`Message`] trait that `#[derive(Message)]` implements, and the
//! fingerprint two processes compare before they trust each other's bytes.
//!
//! postcard is not self-describing: a field added in one version of a program and missing in
//! another does not fail to decode, it decodes into garbage. So every actor mailbox checks, when a
//! caller first connects, that both sides mean the same type: same path, same field names, same
//! field types. A mismatch is [`Error::SchemaMismatch`](crate::Error::SchemaMismatch).

use std::any::TypeId;
use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::marker::PhantomData;
use std::num::Wrapping;

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
    /// The schema of `T` with the given shape description: a hash of `T`'s name and of `shape`.
    /// For a type with no parts (a number, a string) or a hand-written protocol tag.
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

    /// The schema of a type made of fields, what `#[derive(Message)]` and `#[actor]` write:
    /// `shape` names its variants and fields (with `_` where a field's type goes), `fields` gives
    /// each field type's own schema, in order. So the fingerprint follows the field *types*, not
    /// how they are spelled: `Vec<u8>` and `std::vec::Vec<u8>` agree, and a change behind a type
    /// alias shows.
    ///
    /// A type that contains itself (`enum Tree { Leaf(u32), Node(Vec<Tree>) }`) is hashed by name
    /// and shape where it recurs, so its schema is finite and still the same in every build.
    ///
    /// ```
    /// use procactor::{Message, actor::Schema};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Point { x: i32, y: i32 }
    ///
    /// impl Message for Point {
    ///     fn schema() -> Schema {
    ///         Schema::derived::<Self>("struct{x:_,y:_}", &[i32::schema, i32::schema])
    ///     }
    /// }
    /// assert_ne!(Point::schema(), Schema::derived::<Point>("struct{x:_,y:_}", &[]));
    /// ```
    pub fn derived<T: ?Sized + 'static>(shape: &str, fields: &[fn() -> Schema]) -> Schema {
        let name = std::any::type_name::<T>();
        let mut h = Fnv::new();
        h.write(name.as_bytes());
        h.write(&[0]);
        h.write(shape.as_bytes());
        match Building::enter(TypeId::of::<T>()) {
            // `T` is being built further up this thread's stack: a recursive field.
            None => h.write(&[0xff]),
            Some(_building) => {
                for field in fields {
                    h.write(&[1]);
                    h.write(&field().fingerprint.to_le_bytes());
                }
            }
        }
        Schema {
            name,
            fingerprint: h.0,
        }
    }
}

/// How deep derived schemas nest in the guard below that costs a thread nothing to set up; deeper
/// ones (rare) go on a growable stack.
const MAX_NESTING: usize = 32;

thread_local! {
    /// The types whose [`Schema::derived`] is being computed on this thread, outermost first.
    /// A plain array, not a `Vec`: a thread-local without a destructor costs a new process
    /// nothing to set up (one with a destructor registers it with the C library, whose code
    /// pages each forked actor would then hold on its own).
    static BUILDING: Cell<[Option<TypeId>; MAX_NESTING]> = const { Cell::new([None; MAX_NESTING]) };
    /// The types nested deeper than [`MAX_NESTING`], outermost first (touched only then).
    static BUILDING_DEEP: std::cell::RefCell<Vec<TypeId>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A type on [`BUILDING`] (or [`BUILDING_DEEP`]), taken off when dropped (a panicking field
/// schema included).
enum Building {
    Slot(usize),
    Deep,
}

impl Building {
    /// `None` if `id` is already being built (a recursion), else `id` pushed.
    fn enter(id: TypeId) -> Option<Building> {
        BUILDING.with(|b| {
            let stack: &Cell<[Option<TypeId>]> = b;
            let stack = stack.as_slice_of_cells();
            if stack.iter().any(|s| s.get() == Some(id)) {
                return None;
            }
            match stack.iter().position(|s| s.get().is_none()) {
                Some(free) => {
                    stack[free].set(Some(id));
                    Some(Building::Slot(free))
                }
                None => BUILDING_DEEP.with(|deep| {
                    let mut deep = deep.borrow_mut();
                    if deep.contains(&id) {
                        return None;
                    }
                    deep.push(id);
                    Some(Building::Deep)
                }),
            }
        })
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        match self {
            Building::Slot(at) => BUILDING.with(|b| {
                let stack: &Cell<[Option<TypeId>]> = b;
                stack.as_slice_of_cells()[*at].set(None);
            }),
            // Innermost first: the last one pushed is ours.
            Building::Deep => BUILDING_DEEP.with(|deep| {
                deep.borrow_mut().pop();
            }),
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
/// Derive it with `#[derive(Message)]` (next to serde's derives): the derived schema is made of
/// the type's variant and field names and of each field type's own schema, so every field type
/// must be a `Message` too. It is implemented for the standard types (integers, floats, `bool`,
/// `char`, `String`, `()`, `Duration`, `Vec`, `VecDeque`, `Option`, `Result`, `Box`, tuples,
/// arrays, `HashMap`, `BTreeMap`, `HashSet`, `BTreeSet`...).
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a procactor `Message`",
    label = "not a `Message`: the schema of a message is made of its field types' schemas",
    note = "derive it next to serde's derives: \
            `#[derive(serde::Serialize, serde::Deserialize, procactor::Message)]`"
)]
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// This type's schema.
    fn schema() -> Schema;
}

macro_rules! leaf_messages {
    ($($t:ty),* $(,)?) => {$(
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
    Box<str>,
    std::num::NonZeroU8,
    std::num::NonZeroU16,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroU128,
    std::num::NonZeroUsize,
    std::num::NonZeroI8,
    std::num::NonZeroI16,
    std::num::NonZeroI32,
    std::num::NonZeroI64,
    std::num::NonZeroI128,
    std::num::NonZeroIsize,
    std::time::Duration,
    std::time::SystemTime,
    std::path::PathBuf,
    std::net::IpAddr,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
    std::net::SocketAddr,
    std::net::SocketAddrV4,
    std::net::SocketAddrV6,
);

/// Containers of one element type `T` (with the bounds in brackets): their schema follows `T`'s.
macro_rules! container_messages {
    ($($t:ident $([$($bound:tt)+])?),* $(,)?) => {$(
        impl<T: Message $(+ $($bound)+)?> Message for $t<T> {
            fn schema() -> Schema {
                Schema::composed::<Self>(&[T::schema()])
            }
        }
    )*};
}

container_messages!(
    Vec,
    VecDeque,
    LinkedList,
    Option,
    Box,
    Wrapping,
    Reverse,
    BTreeSet[Ord],
    BinaryHeap[Ord],
    HashSet[std::hash::Hash + Eq],
);

impl<T: Message> Message for Box<[T]> {
    fn schema() -> Schema {
        Schema::composed::<Self>(&[T::schema()])
    }
}

/// Arrays of every length serde reads and writes.
impl<T: Message, const N: usize> Message for [T; N]
where
    [T; N]: Serialize + DeserializeOwned,
{
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

/// `Cow<'static, str>`, `Cow<'static, [T]>`: what travels is the owned form.
impl<B> Message for Cow<'static, B>
where
    B: ?Sized + ToOwned + 'static,
    B::Owned: Message,
    Self: Serialize + DeserializeOwned + Send,
{
    fn schema() -> Schema {
        Schema::composed::<Self>(&[B::Owned::schema()])
    }
}

/// A marker: nothing travels, but the type it names is part of the schema (by name).
impl<T: ?Sized + Send + 'static> Message for PhantomData<T> {
    fn schema() -> Schema {
        Schema::of::<Self>("")
    }
}

macro_rules! tuple_messages {
    ($(($($t:ident),+)),* $(,)?) => {$(
        impl<$($t: Message),+> Message for ($($t,)+) {
            fn schema() -> Schema {
                Schema::composed::<Self>(&[$($t::schema()),+])
            }
        }
    )*};
}

tuple_messages!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
    (A, B, C, D, E, F, G, H, I),
    (A, B, C, D, E, F, G, H, I, J),
    (A, B, C, D, E, F, G, H, I, J, K),
    (A, B, C, D, E, F, G, H, I, J, K, L),
);

/// What `#[actor]` hashes for an argument or reply type `T`: `T`'s own [`Message::schema`] where
/// `T` is a `Message`, else a schema of `T`'s name (an argument type that only has serde's
/// derives, or one from a crate that does not know procactor). Picked at compile time by method
/// resolution (`(&&SchemaProbe::<T>::new()).probe_schema()`, with both traits in scope): an
/// actor's argument types are concrete, so the `Message` impl is chosen whenever it exists.
#[doc(hidden)]
pub struct SchemaProbe<T: ?Sized>(PhantomData<fn() -> PhantomData<T>>);

impl<T: ?Sized> SchemaProbe<T> {
    /// A probe for `T`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        SchemaProbe(PhantomData)
    }
}

/// The preferred probe: `T`'s own schema (found through one more `&`).
#[doc(hidden)]
pub trait ProbeMessage {
    /// `T::schema()`.
    fn probe_schema(&self) -> Schema;
}

impl<T: Message> ProbeMessage for &SchemaProbe<T> {
    fn probe_schema(&self) -> Schema {
        T::schema()
    }
}

/// The fallback probe: `T`'s name.
#[doc(hidden)]
pub trait ProbeTypeName {
    /// A schema of `T`'s name.
    fn probe_schema(&self) -> Schema;
}

impl<T: ?Sized> ProbeTypeName for SchemaProbe<T> {
    fn probe_schema(&self) -> Schema {
        Schema::of::<T>("")
    }
}

impl<T: ?Sized> std::fmt::Debug for SchemaProbe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SchemaProbe")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

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
        assert_ne!(
            <[u8; 3]>::schema().fingerprint,
            <[u8; 4]>::schema().fingerprint
        );
        assert_ne!(
            <(u8, String)>::schema().fingerprint,
            <(String, u8)>::schema().fingerprint
        );
    }

    #[test]
    fn derived_follows_names_and_field_schemas() {
        let base = Schema::derived::<u8>("struct{a:_}", &[u32::schema]);
        assert_eq!(base, Schema::derived::<u8>("struct{a:_}", &[u32::schema]));
        assert_ne!(base, Schema::derived::<u8>("struct{b:_}", &[u32::schema]));
        assert_ne!(base, Schema::derived::<u8>("struct{a:_}", &[u64::schema]));
        assert_ne!(base, Schema::derived::<u16>("struct{a:_}", &[u32::schema]));
        assert_eq!(base.name, "u8");
    }

    /// `enum Tree { Leaf(u32), Node(Vec<Tree>) }`, by hand: its schema asks for its own.
    #[derive(Serialize, serde::Deserialize)]
    enum Tree {
        Leaf(u32),
        Node(Vec<Tree>),
    }

    impl Message for Tree {
        fn schema() -> Schema {
            Schema::derived::<Self>("enum{Leaf(_)|Node(_)}", &[u32::schema, Vec::<Tree>::schema])
        }
    }

    #[test]
    fn a_recursive_type_has_a_finite_stable_schema() {
        let _ = (Tree::Leaf(1), Tree::Node(vec![]));
        let first = Tree::schema();
        assert_eq!(first, Tree::schema(), "the same every time");
        assert_ne!(first, Schema::derived::<Tree>("enum{Leaf(_)|Node(_)}", &[]));
        assert!(
            BUILDING.with(|b| b.get().iter().all(Option::is_none)),
            "nothing left behind"
        );
    }

    /// Nesting past the array goes on the growable stack: a change there still shows, and both
    /// stacks are whole again afterwards.
    #[test]
    fn nesting_past_the_array_is_still_tracked_and_hashed() {
        macro_rules! ids {
            ($($n:literal)*) => { [$(TypeId::of::<[u8; $n]>()),*] };
        }
        let ids = ids!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
        assert_eq!(ids.len(), MAX_NESTING);
        let normal = Tree::schema();
        let held: Vec<Building> = ids.iter().map(|id| Building::enter(*id).unwrap()).collect();
        // Full: Tree and its fields go deep, and are hashed as at the top.
        assert_eq!(Tree::schema(), normal);
        // A recursion deep down is still one.
        let deep = Building::enter(TypeId::of::<u128>()).unwrap();
        assert!(Building::enter(TypeId::of::<u128>()).is_none());
        assert!(Building::enter(ids[3]).is_none());
        drop(deep);
        drop(held);
        assert!(BUILDING.with(|b| b.get().iter().all(Option::is_none)));
        assert!(BUILDING_DEEP.with(|d| d.borrow().is_empty()));
        assert_eq!(Tree::schema(), normal);
    }
}

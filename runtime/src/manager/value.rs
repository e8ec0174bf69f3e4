//! [`ValueProxy`] (one shared value) and [`Namespace`] (named fields of any type).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::proto::{mut_fn, sign, Fault, FnRef, Packed, PackedRef};
use super::proxy::{pinning, proxy_impls, Handle};
use super::server::{reply, Hosted, Object};
use crate::error::Result;
use crate::wire;

#[derive(Serialize, Deserialize)]
enum ValueOp<T> {
    Get,
    Set(T),
    Swap(T),
    Update(FnRef),
}

/// Marks value proxies (their type fingerprint).
pub(super) struct ValueTag;

/// Marks namespaces.
pub(super) struct NamespaceTag;

struct ValueObj<T>(T);

pub(super) fn make_value<T: Serialize + DeserializeOwned + 'static>(
    init: &[u8],
    fds: Vec<OwnedFd>,
) -> std::result::Result<Box<dyn Hosted>, Fault> {
    Ok(Box::new(ValueObj::<T>(
        wire::decode(init, fds).map_err(Fault::bad)?,
    )))
}

impl<T: Serialize + DeserializeOwned + 'static> Object for ValueObj<T> {
    type Op = ValueOp<T>;
    type Tag = (ValueTag, T);
    type Proxy = ValueProxy<T>;

    fn apply(&mut self, op: ValueOp<T>, out: &mut Packed) -> std::result::Result<(), Fault> {
        match op {
            ValueOp::Get => reply(&self.0, out),
            ValueOp::Set(x) => {
                self.0 = x;
                reply(&(), out)
            }
            ValueOp::Swap(x) => reply(&std::mem::replace(&mut self.0, x), out),
            ValueOp::Update(f) => {
                mut_fn::<T>(f)?(&mut self.0);
                reply(&self.0, out)
            }
        }
    }
}

/// A proxy to one value in a [`Manager`](crate::Manager) (Python's `manager.Value`), of any
/// serializable type. For plain numbers shared by processes on one machine, a
/// [`Value`](crate::Value) in shared memory is faster: no round trip.
///
/// ```
/// # procactor::init();
/// use procactor::{Manager, Process, manager::ValueProxy};
///
/// fn record(best: ValueProxy<Vec<u32>>) {
///     best.update(|v| v.push(1)).unwrap();
/// }
///
/// let m = Manager::start()?;
/// let best = m.value(Vec::<u32>::new())?;
/// Process::new(record, best.clone()).start()?.join()?;
/// assert_eq!(best.get()?, [1]);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct ValueProxy<T> {
    pub(super) handle: Handle<(ValueTag, T)>,
}

proxy_impls!(ValueProxy[T]);

impl<T: Serialize + DeserializeOwned + 'static> ValueProxy<T> {
    pub(super) fn from_handle(handle: Handle<(ValueTag, T)>) -> Self {
        ValueProxy { handle }
    }

    /// The current value.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// assert_eq!(m.value('x')?.get()?, 'x');
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.handle.call(&ValueOp::<&T>::Get)
    }

    /// Replaces the value (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let v = m.value(1)?;
    /// v.set(2)?;
    /// assert_eq!(v.get()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        self.handle.tell(&ValueOp::Set(&value))
    }

    /// Replaces the value and returns the old one, atomically.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let v = m.value(1)?;
    /// assert_eq!(v.swap(2)?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn swap(&self, value: T) -> Result<T> {
        self.handle.call(&ValueOp::Swap(&value))
    }

    /// Applies `f` to the value inside the manager, atomically, and returns the new value (`f`:
    /// a function pointer of this same program, run in the manager's process).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let v = m.value(String::from("a"))?;
    /// assert_eq!(v.update(|s| s.push('b'))?, "ab");
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn update(&self, f: fn(&mut T)) -> Result<T> {
        self.handle.call(&ValueOp::<&T>::Update(sign(f)?))
    }
}

#[derive(Serialize, Deserialize)]
enum NsOp<P> {
    Set(String, P),
    Get(String),
    Remove(String),
    Names,
}

struct NamespaceObj(BTreeMap<String, Packed>);

pub(super) fn make_namespace(
    _init: &[u8],
    _fds: Vec<OwnedFd>,
) -> std::result::Result<Box<dyn Hosted>, Fault> {
    Ok(Box::new(NamespaceObj(BTreeMap::new())))
}

impl Object for NamespaceObj {
    type Op = NsOp<Packed>;
    type Tag = NamespaceTag;
    type Proxy = Namespace;

    fn apply(&mut self, op: NsOp<Packed>, out: &mut Packed) -> std::result::Result<(), Fault> {
        match op {
            NsOp::Set(name, value) => {
                self.0.insert(name, value);
                reply(&(), out)
            }
            NsOp::Get(name) => match self.0.get(&name) {
                Some(p) => reply(&p.try_clone().map_err(Fault::bad)?, out),
                None => Err(Fault::NotFound(format!(
                    "the namespace has no field {name:?}"
                ))),
            },
            NsOp::Remove(name) => reply(&self.0.remove(&name).is_some(), out),
            NsOp::Names => reply(&self.0.keys().collect::<Vec<_>>(), out),
        }
    }
}

/// A namespace in a [`Manager`](crate::Manager) (Python's `manager.Namespace()`): named fields,
/// each of any serializable type, read back with the type it was set with.
///
/// A proxy stored in a field keeps its object alive until the manager ends (fields are stored
/// encoded, so the manager cannot count the references inside them).
///
/// ```
/// # procactor::init();
/// use procactor::{Manager, manager::Namespace, Process};
///
/// fn child(ns: Namespace) {
///     let lr: f64 = ns.get("learning_rate").unwrap();
///     ns.set("result", &format!("trained at {lr}")).unwrap();
/// }
///
/// let m = Manager::start()?;
/// let ns = m.namespace()?;
/// ns.set("learning_rate", &0.01)?;
/// Process::new(child, ns.clone()).start()?.join()?;
/// assert_eq!(ns.get::<String>("result")?, "trained at 0.01");
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Namespace {
    pub(super) handle: Handle<NamespaceTag>,
}

proxy_impls!(Namespace[]);

impl Namespace {
    pub(super) fn from_handle(handle: Handle<NamespaceTag>) -> Self {
        Namespace { handle }
    }

    /// Sets field `name` to `value` (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("tags", &vec!["a", "b"])?;
    /// assert_eq!(ns.get::<Vec<String>>("tags")?, ["a", "b"]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let mut bytes = Vec::new();
        let fds = pinning(|| wire::encode(value, &mut bytes))?;
        self.handle
            .tell(&NsOp::Set(name.to_string(), PackedRef::new(&bytes, &fds)))
    }

    /// Field `name`, decoded as `T`: [`Error::NotFound`](crate::Error::NotFound) if there is no
    /// such field, [`Error::Decode`](crate::Error::Decode) if it holds another type.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let ns = m.namespace()?;
    /// assert!(matches!(ns.get::<u8>("nope"), Err(procactor::Error::NotFound(_))));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let p: Packed = self
            .handle
            .call(&NsOp::<PackedRef>::Get(name.to_string()))?;
        p.decode()
    }

    /// Removes field `name`; whether it was there.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", &1)?;
    /// assert!(ns.remove("x")?);
    /// assert!(!ns.remove("x")?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.handle
            .call(&NsOp::<PackedRef>::Remove(name.to_string()))
    }

    /// The names of the fields, sorted.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("b", &1)?;
    /// ns.set("a", &2)?;
    /// assert_eq!(ns.names()?, ["a", "b"]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn names(&self) -> Result<Vec<String>> {
        self.handle.call(&NsOp::<PackedRef>::Names)
    }
}

/// Valid operations on a `ValueProxy<u64>` and on a `Namespace`, encoded (for the fuzz tests).
#[cfg(test)]
pub(super) fn fuzz_samples() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    fn inc(n: &mut u64) {
        *n += 1;
    }
    let update = sign(inc as fn(&mut u64)).unwrap();
    let values = [
        ValueOp::Get,
        ValueOp::Set(5u64),
        ValueOp::Swap(6),
        ValueOp::Update(update),
    ]
    .iter()
    .map(|op| Packed::encode(op).expect("encodes").bytes)
    .collect();
    let field = Packed::encode(&42u64).expect("encodes");
    let ns = [
        NsOp::Set("x".to_string(), field),
        NsOp::Get("x".into()),
        NsOp::Remove("x".into()),
        NsOp::Names,
    ]
    .iter()
    .map(|op| Packed::encode(op).expect("encodes").bytes)
    .collect();
    (values, ns)
}

/// A hosted `u64` and a namespace.
#[cfg(test)]
pub(super) fn fuzz_objects() -> (Box<dyn Hosted>, Box<dyn Hosted>) {
    (
        Box::new(ValueObj(3u64)),
        Box::new(NamespaceObj(BTreeMap::new())),
    )
}

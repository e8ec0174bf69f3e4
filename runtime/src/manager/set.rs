//! [`SetProxy`]: a set in the manager.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::proto::{Fault, Packed};
use super::proxy::{proxy_impls, Handle};
use super::server::{copy_by_encoding, reply, Hosted, Object};
use crate::error::Result;
use crate::wire;

/// Operations on a set (the proxy sends `SetOp<&T>`, the manager decodes `SetOp<T>`).
#[derive(Serialize, Deserialize)]
enum SetOp<T> {
    Add(T),
    Discard(T),
    Remove(T),
    Contains(T),
    Len,
    Clear,
    Snapshot,
    Pop,
    Update(Vec<T>),
    DifferenceUpdate(Vec<T>),
    IntersectionUpdate(Vec<T>),
}

/// Marks the proxies of this kind (their type fingerprint).
pub(super) struct SetTag;

struct SetObj<T>(HashSet<T>);

pub(super) fn make<T>(init: &[u8], fds: Vec<OwnedFd>) -> std::result::Result<Box<dyn Hosted>, Fault>
where
    T: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
{
    let items: Vec<T> = wire::decode(init, fds).map_err(Fault::bad)?;
    Ok(Box::new(SetObj(items.into_iter().collect::<HashSet<T>>())))
}

impl<T> Object for SetObj<T>
where
    T: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
{
    type Op = SetOp<T>;
    type Tag = (SetTag, T);
    type Proxy = SetProxy<T>;

    fn apply(&mut self, op: SetOp<T>, out: &mut Packed) -> std::result::Result<(), Fault> {
        let s = &mut self.0;
        match op {
            SetOp::Add(x) => reply(&s.insert(x), out),
            SetOp::Discard(x) => reply(&s.remove(&x), out),
            SetOp::Remove(x) => {
                if s.remove(&x) {
                    reply(&(), out)
                } else {
                    Err(Fault::NotFound(format!("{x:?} is not in the set")))
                }
            }
            SetOp::Contains(x) => reply(&s.contains(&x), out),
            SetOp::Len => reply(&(s.len() as u64), out),
            SetOp::Clear => {
                s.clear();
                reply(&(), out)
            }
            SetOp::Snapshot => reply(&s.iter().collect::<Vec<_>>(), out),
            SetOp::Pop => {
                let Some(x) = s.iter().next() else {
                    return Err(Fault::NotFound("pop from an empty set".into()));
                };
                let x = copy_by_encoding(x)?;
                match s.take(&x) {
                    Some(x) => reply(&x, out),
                    None => Err(Fault::bad("an item that does not encode to itself")),
                }
            }
            SetOp::Update(xs) => {
                s.extend(xs);
                reply(&(), out)
            }
            SetOp::DifferenceUpdate(xs) => {
                for x in &xs {
                    s.remove(x);
                }
                reply(&(), out)
            }
            SetOp::IntersectionUpdate(xs) => {
                let keep: HashSet<T> = xs.into_iter().collect();
                s.retain(|x| keep.contains(x));
                reply(&(), out)
            }
        }
    }
}

/// A proxy to a set (a `HashSet`) in a [`Manager`](crate::Manager) (Python's `m.set()` through
/// a registered type): every process that holds a clone sees the one set, and each operation is
/// atomic. `add`, `discard`, `clear` and the bulk updates answer (they say what they did) or
/// are pipelined as documented on each.
///
/// ```
/// # procactor::init();
/// use procactor::{manager::SetProxy, Manager, Process};
///
/// fn tag(s: SetProxy<String>) {
///     s.add("seen".into()).unwrap();
/// }
///
/// let m = Manager::start()?;
/// let s = m.set::<String>()?;
/// for p in (0..3).map(|_| Process::new(tag, s.clone()).start()).collect::<Result<Vec<_>, _>>()? {
///     p.join()?;
/// }
/// assert_eq!(s.len()?, 1);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct SetProxy<T> {
    pub(super) handle: Handle<(SetTag, T)>,
}

proxy_impls!(SetProxy[T]);

impl<T> SetProxy<T>
where
    T: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
{
    pub(super) fn from_handle(handle: Handle<(SetTag, T)>) -> Self {
        SetProxy { handle }
    }

    /// Adds `item`; true if it was not there.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set::<u8>()?;
    /// assert!(s.add(1)?);
    /// assert!(!s.add(1)?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn add(&self, item: T) -> Result<bool> {
        self.handle.call(&SetOp::Add(&item))
    }

    /// Removes `item` if it is there; true if it was (Python's `discard`, which says nothing).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8, 2])?;
    /// assert!(s.discard(&1)?);
    /// assert!(!s.discard(&1)?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn discard(&self, item: &T) -> Result<bool> {
        self.handle.call(&SetOp::Discard(item))
    }

    /// Removes `item`; [`Error::NotFound`](crate::Error::NotFound) if it is not there.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8])?;
    /// s.remove(&1)?;
    /// assert!(matches!(s.remove(&1), Err(procactor::Error::NotFound(_))));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn remove(&self, item: &T) -> Result<()> {
        self.handle.call(&SetOp::Remove(item))
    }

    /// Whether `item` is in the set.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from(["a".to_string()])?;
    /// assert!(s.contains(&"a".to_string())?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn contains(&self, item: &T) -> Result<bool> {
        self.handle.call(&SetOp::Contains(item))
    }

    /// How many items the set holds.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8, 2, 2])?;
    /// assert_eq!(s.len()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.handle
            .call::<_, u64>(&SetOp::<&T>::Len)
            .map(|n| n as usize)
    }

    /// Whether the set is empty.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// assert!(m.set::<u8>()?.is_empty()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every item (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8, 2])?;
    /// s.clear()?;
    /// assert!(s.is_empty()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.tell(&SetOp::<&T>::Clear)
    }

    /// A copy of the whole set, in one round trip.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([2u8, 1])?;
    /// let mut v: Vec<u8> = s.snapshot()?.into_iter().collect();
    /// v.sort();
    /// assert_eq!(v, [1, 2]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn snapshot(&self) -> Result<HashSet<T>> {
        self.handle
            .call::<_, Vec<T>>(&SetOp::<&T>::Snapshot)
            .map(|v| v.into_iter().collect())
    }

    /// Removes some item and returns it; [`Error::NotFound`](crate::Error::NotFound) if the set
    /// is empty.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([9u8])?;
    /// assert_eq!(s.pop()?, 9);
    /// assert!(s.pop().is_err());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pop(&self) -> Result<T> {
        self.handle.call(&SetOp::<&T>::Pop)
    }

    /// Adds every item of `items`, in one operation (Python's `update`, `|=`; pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8])?;
    /// s.update([1, 2, 3])?;
    /// assert_eq!(s.len()?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        self.handle
            .tell(&SetOp::<&T>::Update(items.iter().collect()))
    }

    /// Removes every item of `items` that is there (Python's `difference_update`, `-=`;
    /// pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8, 2, 3])?;
    /// s.difference_update([2, 9])?;
    /// assert_eq!(s.len()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn difference_update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        self.handle
            .tell(&SetOp::<&T>::DifferenceUpdate(items.iter().collect()))
    }

    /// Keeps only the items also in `items` (Python's `intersection_update`, `&=`; pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u8, 2, 3])?;
    /// s.intersection_update([2, 3, 4])?;
    /// assert!(s.contains(&2)? && !s.contains(&1)?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn intersection_update(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        self.handle
            .tell(&SetOp::<&T>::IntersectionUpdate(items.iter().collect()))
    }
}

/// Valid operations on a `SetProxy<String>`, encoded (for the fuzz tests to mutate).
#[cfg(test)]
pub(super) fn fuzz_samples() -> Vec<Vec<u8>> {
    let s = || "item".to_string();
    [
        SetOp::Add(s()),
        SetOp::Discard(s()),
        SetOp::Remove(s()),
        SetOp::Contains(s()),
        SetOp::Len,
        SetOp::Clear,
        SetOp::Snapshot,
        SetOp::Pop,
        SetOp::Update(vec![s(), "other".into()]),
        SetOp::DifferenceUpdate(vec![s()]),
        SetOp::IntersectionUpdate(vec![s()]),
    ]
    .iter()
    .map(|op| Packed::encode(op).expect("encodes").bytes)
    .collect()
}

/// A hosted `HashSet<String>` of three items.
#[cfg(test)]
pub(super) fn fuzz_object() -> Box<dyn Hosted> {
    Box::new(SetObj(
        ["a", "b", "c"].into_iter().map(String::from).collect(),
    ))
}

//! [`ListProxy`]: a list in the manager.

use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::proto::{cmp_fn, eq_fn, eq_ptr, mut_fn, sign, Fault, FnRef, Packed};
use super::proxy::{proxy_impls, Handle, Pages};
use super::server::{reply, Hosted, Object};
use crate::error::Result;
use crate::wire;

/// Operations on a list (the proxy sends `ListOp<&T>`, the manager decodes `ListOp<T>`).
#[derive(Serialize, Deserialize)]
enum ListOp<T> {
    Append(T),
    Extend(Vec<T>),
    Insert(u64, T),
    Pop(Option<u64>),
    Remove(T, Equality),
    Get(u64),
    Set(u64, T),
    Len,
    Clear,
    Contains(T, Equality),
    Index(T, Equality),
    Snapshot,
    Page(u64, u64),
    Modify(u64, FnRef),
    Count(T, Equality),
    Reverse,
    /// A stable sort with `fn(&T, &T) -> Ordering`.
    Sort(FnRef),
}

/// How a search compares items with the value sought.
#[derive(Serialize, Deserialize)]
enum Equality {
    /// `T`'s own `eq`, by reference (the proxy is of this program, or of one with the same
    /// code: the reference is checked).
    Fn(FnRef),
    /// Equal encodings: from a remote manager, whose program's `eq` has no name to go by.
    Encoded,
}

/// The position of the first item of `v` equal to `x`.
fn position<T: Serialize + 'static>(
    v: &[T],
    x: &T,
    eq: Equality,
) -> std::result::Result<Option<usize>, Fault> {
    let mut first = None;
    matching(v, x, eq, &mut |i| {
        first = Some(i);
        false
    })?;
    Ok(first)
}

/// Calls `found` with the position of each item of `v` equal to `x`, in order, while it says
/// to go on.
fn matching<T: Serialize + 'static>(
    v: &[T],
    x: &T,
    eq: Equality,
    found: &mut dyn FnMut(usize) -> bool,
) -> std::result::Result<(), Fault> {
    match eq {
        Equality::Fn(f) => {
            let eq = eq_fn::<T>(f)?;
            for (i, y) in v.iter().enumerate() {
                if eq(y, x) && !found(i) {
                    break;
                }
            }
            Ok(())
        }
        Equality::Encoded => {
            let mut want = Vec::new();
            wire::encode_plain(x, &mut want).map_err(Fault::bad)?;
            let mut item = Vec::new();
            for (i, y) in v.iter().enumerate() {
                item.clear();
                wire::encode_plain(y, &mut item).map_err(|e| {
                    Fault::bad(format!(
                        "a remote search compares encoded items, and this one does not encode \
                         for another host (it holds a proxy?): {e}"
                    ))
                })?;
                if item == want && !found(i) {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// Marks the proxies of this kind (their type fingerprint).
pub(super) struct ListTag;

struct ListObj<T>(Vec<T>);

pub(super) fn make<T: Serialize + DeserializeOwned + 'static>(
    init: &[u8],
    fds: Vec<OwnedFd>,
) -> std::result::Result<Box<dyn Hosted>, Fault> {
    let items: Vec<T> = wire::decode(init, fds).map_err(Fault::bad)?;
    Ok(Box::new(ListObj(items)))
}

fn index_fault(index: u64, len: usize) -> Fault {
    Fault::Index {
        index,
        len: len as u64,
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Object for ListObj<T> {
    type Op = ListOp<T>;
    type Tag = (ListTag, T);
    type Proxy = ListProxy<T>;

    fn apply(&mut self, op: ListOp<T>, out: &mut Packed) -> std::result::Result<(), Fault> {
        let v = &mut self.0;
        let at = |i: u64, len: usize| {
            if (i as usize) < len {
                Ok(i as usize)
            } else {
                Err(index_fault(i, len))
            }
        };
        match op {
            ListOp::Append(x) => {
                v.push(x);
                reply(&(), out)
            }
            ListOp::Extend(xs) => {
                v.extend(xs);
                reply(&(), out)
            }
            ListOp::Insert(i, x) => {
                v.insert((i as usize).min(v.len()), x);
                reply(&(), out)
            }
            ListOp::Pop(i) => {
                let len = v.len();
                let i = match i {
                    Some(i) => at(i, len)?,
                    None if len > 0 => len - 1,
                    None => return Err(Fault::NotFound("pop from an empty list".into())),
                };
                reply(&v.remove(i), out)
            }
            ListOp::Remove(x, eq) => match position(v, &x, eq)? {
                Some(i) => {
                    v.remove(i);
                    reply(&(), out)
                }
                None => Err(Fault::NotFound("the value is not in the list".into())),
            },
            ListOp::Get(i) => reply(&v[at(i, v.len())?], out),
            ListOp::Set(i, x) => {
                let i = at(i, v.len())?;
                v[i] = x;
                reply(&(), out)
            }
            ListOp::Len => reply(&(v.len() as u64), out),
            ListOp::Clear => {
                v.clear();
                reply(&(), out)
            }
            ListOp::Contains(x, eq) => reply(&position(v, &x, eq)?.is_some(), out),
            ListOp::Index(x, eq) => match position(v, &x, eq)? {
                Some(i) => reply(&(i as u64), out),
                None => Err(Fault::NotFound("the value is not in the list".into())),
            },
            ListOp::Snapshot => reply(&v[..], out),
            ListOp::Page(start, n) => {
                let s = (start as usize).min(v.len());
                let e = s.saturating_add(n as usize).min(v.len());
                reply(&v[s..e], out)
            }
            ListOp::Modify(i, f) => {
                let f = mut_fn::<T>(f)?;
                let i = at(i, v.len())?;
                f(&mut v[i]);
                reply(&v[i], out)
            }
            ListOp::Count(x, eq) => {
                let mut n = 0u64;
                matching(v, &x, eq, &mut |_| {
                    n += 1;
                    true
                })?;
                reply(&n, out)
            }
            ListOp::Reverse => {
                v.reverse();
                reply(&(), out)
            }
            ListOp::Sort(f) => {
                let cmp = cmp_fn::<T>(f)?;
                v.sort_by(cmp);
                reply(&(), out)
            }
        }
    }
}

/// A proxy to a list in a [`Manager`](crate::Manager): every process that holds a clone sees
/// the one list, and each operation is atomic.
///
/// `append`, `extend`, `insert` and `clear` are pipelined (they return once queued; see the
/// [`Manager`](crate::Manager) docs); the others wait for the manager's answer.
///
/// ```
/// # procactor::init();
/// use procactor::{manager::ListProxy, Manager, Process};
///
/// fn add_seeds(l: ListProxy<u32>) {
///     let me = procactor::current_process().pid;
///     l.append(me).unwrap();
/// }
///
/// let m = Manager::start()?;
/// let seeds = m.list::<u32>()?;
/// let ps: Vec<_> = (0..3).map(|_| Process::new(add_seeds, seeds.clone()).start()).collect::<Result<_, _>>()?;
/// for p in ps { p.join()?; }
/// assert_eq!(seeds.len()?, 3);
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct ListProxy<T> {
    pub(super) handle: Handle<(ListTag, T)>,
}

proxy_impls!(ListProxy[T]);

/// Items fetched per round trip by [`ListProxy::iter`].
const PAGE: u64 = 256;

impl<T: Serialize + DeserializeOwned + 'static> ListProxy<T> {
    pub(super) fn from_handle(handle: Handle<(ListTag, T)>) -> Self {
        ListProxy { handle }
    }

    /// How a search compares: with `T`'s equality, whose address means nothing to another
    /// program and which has no name to go by, or, on a remote manager, by encoded values.
    fn eq(&self) -> Result<Equality>
    where
        T: PartialEq,
    {
        if self.handle.is_remote() {
            return Ok(Equality::Encoded);
        }
        eq_ptr::<T>().map(Equality::Fn)
    }

    /// Adds `item` at the end (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list::<u8>()?;
    /// l.append(7)?;
    /// assert_eq!(l.snapshot()?, [7]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn append(&self, item: T) -> Result<()> {
        self.handle.tell(&ListOp::Append(&item))
    }

    /// Adds every item of `items` at the end, in one operation (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list::<u8>()?;
    /// l.extend([1, 2, 3])?;
    /// assert_eq!(l.len()?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        self.handle
            .tell(&ListOp::<&T>::Extend(items.iter().collect()))
    }

    /// Inserts `item` before position `index` (at the end if `index` is past it; pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 3])?;
    /// l.insert(1, 2)?;
    /// assert_eq!(l.snapshot()?, [1, 2, 3]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn insert(&self, index: usize, item: T) -> Result<()> {
        self.handle.tell(&ListOp::Insert(index as u64, &item))
    }

    /// Removes and returns the last item; [`Error::NotFound`](crate::Error::NotFound) if the
    /// list is empty.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2])?;
    /// assert_eq!(l.pop()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pop(&self) -> Result<T> {
        self.handle.call(&ListOp::<&T>::Pop(None))
    }

    /// Removes and returns the item at `index`
    /// ([`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) past the end).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2])?;
    /// assert_eq!(l.pop_at(0)?, 1);
    /// assert!(l.pop_at(5).is_err());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pop_at(&self, index: usize) -> Result<T> {
        self.handle.call(&ListOp::<&T>::Pop(Some(index as u64)))
    }

    /// Removes the first item equal to `item` ([`Error::NotFound`](crate::Error::NotFound) if
    /// there is none).
    ///
    /// On a [`RemoteManager`](super::RemoteManager)'s list, items are compared by their encoded
    /// values (`T`'s `eq` is code of this program, and cannot be named to another): the same for
    /// plain data, but a type whose equality is not "same fields" (floats' `NaN` and `-0.0`, a
    /// `HashMap`, whose order varies, or a custom `PartialEq`) may be found, or not, otherwise.
    /// Items that hold proxies cannot be compared so (a proxy does not cross hosts): an error.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2, 1])?;
    /// l.remove(&1)?;
    /// assert_eq!(l.snapshot()?, [2, 1]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn remove(&self, item: &T) -> Result<()>
    where
        T: PartialEq,
    {
        self.handle.call(&ListOp::Remove(item, self.eq()?))
    }

    /// The item at `index` ([`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) past the
    /// end).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec!['a', 'b'])?;
    /// assert_eq!(l.get(1)?, 'b');
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        self.handle.call(&ListOp::<&T>::Get(index as u64))
    }

    /// Replaces the item at `index`.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![0, 0])?;
    /// l.set(1, 9)?;
    /// assert_eq!(l.snapshot()?, [0, 9]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn set(&self, index: usize, item: T) -> Result<()> {
        self.handle.call(&ListOp::Set(index as u64, &item))
    }

    /// The number of items.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// assert_eq!(m.list_from(vec![(); 4])?.len()?, 4);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.handle
            .call::<_, u64>(&ListOp::<&T>::Len)
            .map(|n| n as usize)
    }

    /// Whether the list is empty.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// assert!(m.list::<u8>()?.is_empty()?);
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
    /// let l = m.list_from(vec![1, 2])?;
    /// l.clear()?;
    /// assert!(l.is_empty()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.tell(&ListOp::<&T>::Clear)
    }

    /// Whether an item equals `item`.
    ///
    /// On a [`RemoteManager`](super::RemoteManager)'s list, items are compared by their encoded
    /// values (`T`'s `eq` is code of this program, and cannot be named to another): the same for
    /// plain data, but a type whose equality is not "same fields" (floats' `NaN` and `-0.0`, a
    /// `HashMap`, whose order varies, or a custom `PartialEq`) may be found, or not, otherwise.
    /// Items that hold proxies cannot be compared so (a proxy does not cross hosts): an error.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec!["a".to_string()])?;
    /// assert!(l.contains(&"a".to_string())?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn contains(&self, item: &T) -> Result<bool>
    where
        T: PartialEq,
    {
        self.handle.call(&ListOp::Contains(item, self.eq()?))
    }

    /// The position of the first item equal to `item`
    /// ([`Error::NotFound`](crate::Error::NotFound) if there is none).
    ///
    /// On a [`RemoteManager`](super::RemoteManager)'s list, items are compared by their encoded
    /// values (`T`'s `eq` is code of this program, and cannot be named to another): the same for
    /// plain data, but a type whose equality is not "same fields" (floats' `NaN` and `-0.0`, a
    /// `HashMap`, whose order varies, or a custom `PartialEq`) may be found, or not, otherwise.
    /// Items that hold proxies cannot be compared so (a proxy does not cross hosts): an error.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![5, 6, 7])?;
    /// assert_eq!(l.index(&7)?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn index(&self, item: &T) -> Result<usize>
    where
        T: PartialEq,
    {
        self.handle
            .call::<_, u64>(&ListOp::Index(item, self.eq()?))
            .map(|i| i as usize)
    }

    /// A copy of the whole list, in one round trip.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2])?;
    /// let v: Vec<i32> = l.snapshot()?;
    /// assert_eq!(v, [1, 2]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn snapshot(&self) -> Result<Vec<T>> {
        self.handle.call(&ListOp::<&T>::Snapshot)
    }

    /// Iterates over the items, fetching them in pages of 256 (one round trip per page). Other
    /// processes may change the list meanwhile: each page is a consistent slice, the whole is not.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from((0..1000).collect())?;
    /// let sum: u64 = l.iter().map(|x| x.unwrap()).sum();
    /// assert_eq!(sum, 499_500);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn iter(&self) -> ListIter<'_, T> {
        ListIter {
            list: self,
            pages: Pages::new(),
        }
    }

    /// Applies `f` to the item at `index` inside the manager, atomically, and returns the new
    /// value. `f` runs in the manager's process: a function pointer of this same program (a
    /// closure that captures nothing).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2])?;
    /// assert_eq!(l.modify(0, |x| *x += 10)?, 11);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn modify(&self, index: usize, f: fn(&mut T)) -> Result<T> {
        self.handle
            .call(&ListOp::<&T>::Modify(index as u64, sign(f)?))
    }

    /// How many items equal `item` (Python's `list.count`).
    ///
    /// On a [`RemoteManager`](super::RemoteManager)'s list, items are compared by their encoded
    /// values, as [`contains`](ListProxy::contains) says.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2, 1, 1])?;
    /// assert_eq!(l.count(&1)?, 3);
    /// assert_eq!(l.count(&5)?, 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn count(&self, item: &T) -> Result<usize>
    where
        T: PartialEq,
    {
        self.handle
            .call::<_, u64>(&ListOp::Count(item, self.eq()?))
            .map(|n| n as usize)
    }

    /// Reverses the list in place, in the manager (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2, 3])?;
    /// l.reverse()?;
    /// assert_eq!(l.snapshot()?, [3, 2, 1]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn reverse(&self) -> Result<()> {
        self.handle.tell(&ListOp::<&T>::Reverse)
    }

    /// Sorts the list in place, in the manager, by `T`'s order (stable; pipelined). On a
    /// [`RemoteManager`](super::RemoteManager)'s list `T`'s order has no name to go by: use
    /// [`sort_by`](ListProxy::sort_by) with a `#[procactor::entry]` function.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![3, 1, 2])?;
    /// l.sort()?;
    /// assert_eq!(l.snapshot()?, [1, 2, 3]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn sort(&self) -> Result<()>
    where
        T: Ord,
    {
        if self.handle.is_remote() {
            return Err(crate::error::Error::Unsupported(
                "sort() on a remote manager's list: T's order cannot be named to another \
                 program; use sort_by with a #[procactor::entry] function",
            ));
        }
        self.sort_by(<T as Ord>::cmp)
    }

    /// Sorts the list in place, in the manager, by `compare` (stable; pipelined). `compare`
    /// runs in the manager's process: a function of this program (a `#[procactor::entry]`
    /// function on a remote manager).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec!["bb".to_string(), "a".into(), "ccc".into()])?;
    /// l.sort_by(|a, b| b.len().cmp(&a.len()))?;
    /// assert_eq!(l.snapshot()?, ["ccc", "bb", "a"]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn sort_by(&self, compare: fn(&T, &T) -> std::cmp::Ordering) -> Result<()> {
        self.handle.tell(&ListOp::<&T>::Sort(sign(compare)?))
    }
}

/// The iterator of [`ListProxy::iter`].
pub struct ListIter<'a, T> {
    list: &'a ListProxy<T>,
    pages: Pages<T>,
}

impl<T: Serialize + DeserializeOwned + 'static> Iterator for ListIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let list = self.list;
        self.pages.next(PAGE, |start| {
            list.handle.call(&ListOp::<&T>::Page(start, PAGE))
        })
    }
}

/// Valid operations on a `ListProxy<String>`, encoded (for the fuzz tests to mutate).
#[cfg(test)]
pub(super) fn fuzz_samples() -> Vec<Vec<u8>> {
    #[allow(clippy::ptr_arg)] // the type a `modify` of a `ListProxy<String>` takes
    fn shout(s: &mut String) {
        s.make_ascii_uppercase();
    }
    let s = || "item".to_string();
    let modify = sign(shout as fn(&mut String)).unwrap();
    [
        ListOp::Append(s()),
        ListOp::Extend(vec![s(), s()]),
        ListOp::Insert(1, s()),
        ListOp::Pop(Some(0)),
        ListOp::Pop(None),
        ListOp::Remove(s(), Equality::Fn(eq_ptr::<String>().unwrap())),
        ListOp::Remove(s(), Equality::Encoded),
        ListOp::Get(0),
        ListOp::Set(0, s()),
        ListOp::Len,
        ListOp::Clear,
        ListOp::Contains(s(), Equality::Fn(eq_ptr::<String>().unwrap())),
        ListOp::Index(s(), Equality::Encoded),
        ListOp::Snapshot,
        ListOp::Page(0, 2),
        ListOp::Modify(0, modify),
        ListOp::Count(s(), Equality::Encoded),
        ListOp::Reverse,
        ListOp::Sort(sign(<String as Ord>::cmp as fn(&String, &String) -> _).unwrap()),
    ]
    .iter()
    .map(|op| Packed::encode(op).expect("encodes").bytes)
    .collect()
}

/// A hosted `Vec<String>` of three items.
#[cfg(test)]
pub(super) fn fuzz_object() -> Box<dyn Hosted> {
    Box::new(ListObj(vec!["a".to_string(), "b".into(), "c".into()]))
}

impl<T> std::fmt::Debug for ListIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListIter")
            .field("item", &std::any::type_name::<T>())
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

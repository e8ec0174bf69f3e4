//! [`DictProxy`]: a dict in the manager.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::proto::{mut_fn, sign, Fault, FnRef, Packed};
use super::proxy::{proxy_impls, Handle, Pages};
use super::server::{copy_by_encoding, reply, Hosted, Object};
use crate::error::Result;
use crate::wire;

/// Operations on a dict (the proxy sends `DictOp<&K, &V>`, the manager decodes `DictOp<K, V>`).
#[derive(Serialize, Deserialize)]
enum DictOp<K, V> {
    Insert(K, V),
    Get(K),
    Remove(K),
    ContainsKey(K),
    Len,
    Keys,
    Values,
    Items,
    Extend(Vec<(K, V)>),
    GetOrInsert(K, V),
    Pop(K),
    Clear,
    Snapshot,
    Update(K, FnRef),
    Upsert(K, V, FnRef),
    PopItem,
    /// Items `start..start + n` of the map's order, if its keys did not change since `version`
    /// (none: the first page); answered with the current version.
    Page(u64, u64, Option<u64>),
}

/// Marks the proxies of this kind (their type fingerprint).
pub(super) struct DictTag;

struct DictObj<K, V>(HashMap<K, V>, Version);

/// Bumped by every operation that may change the map's keys or their order: an iteration's
/// pages are consistent while it holds.
#[derive(Default)]
struct Version(u64);

pub(super) fn make<K, V>(
    init: &[u8],
    fds: Vec<OwnedFd>,
) -> std::result::Result<Box<dyn Hosted>, Fault>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    let items: Vec<(K, V)> = wire::decode(init, fds).map_err(Fault::bad)?;
    Ok(Box::new(DictObj(
        items.into_iter().collect::<HashMap<K, V>>(),
        Version::default(),
    )))
}

fn missing<K: Debug>(k: &K) -> Fault {
    Fault::NotFound(format!("key {k:?} is not in the dict"))
}

impl<K, V> Object for DictObj<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    type Op = DictOp<K, V>;
    type Tag = (DictTag, K, V);
    type Proxy = DictProxy<K, V>;

    fn apply(&mut self, op: DictOp<K, V>, out: &mut Packed) -> std::result::Result<(), Fault> {
        // Anything that may add, remove, or insert (even over an existing key: the table may
        // grow or rehash, and its order change) starts a new version, before it runs (a
        // function that panics half-way still changed it). Reads and `update` (a value changed
        // in place) do not.
        let reorders = !matches!(
            op,
            DictOp::Get(_)
                | DictOp::ContainsKey(_)
                | DictOp::Len
                | DictOp::Keys
                | DictOp::Values
                | DictOp::Items
                | DictOp::Snapshot
                | DictOp::Page(..)
                | DictOp::Update(..)
        );
        if reorders {
            self.1 .0 += 1;
        }
        self.apply_op(op, out)
    }
}

impl<K, V> DictObj<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    fn apply_op(&mut self, op: DictOp<K, V>, out: &mut Packed) -> std::result::Result<(), Fault> {
        let version = self.1 .0;
        let d = &mut self.0;
        match op {
            DictOp::Insert(k, v) => {
                d.insert(k, v);
                reply(&(), out)
            }
            DictOp::Get(k) => reply(&d.get(&k), out),
            DictOp::Remove(k) => reply(&d.remove(&k), out),
            DictOp::ContainsKey(k) => reply(&d.contains_key(&k), out),
            DictOp::Len => reply(&(d.len() as u64), out),
            DictOp::Keys => reply(&d.keys().collect::<Vec<_>>(), out),
            DictOp::Values => reply(&d.values().collect::<Vec<_>>(), out),
            DictOp::Items => reply(&d.iter().collect::<Vec<_>>(), out),
            DictOp::Extend(items) => {
                d.extend(items);
                reply(&(), out)
            }
            DictOp::GetOrInsert(k, v) => reply(&*d.entry(k).or_insert(v), out),
            DictOp::Pop(k) => match d.remove(&k) {
                Some(v) => reply(&v, out),
                None => Err(missing(&k)),
            },
            DictOp::Clear => {
                d.clear();
                reply(&(), out)
            }
            DictOp::Snapshot => reply(&*d, out),
            DictOp::Update(k, f) => {
                let f = mut_fn::<V>(f)?;
                match d.get_mut(&k) {
                    Some(v) => {
                        f(v);
                        reply(&*v, out)
                    }
                    None => Err(missing(&k)),
                }
            }
            DictOp::Upsert(k, default, f) => {
                let f = mut_fn::<V>(f)?;
                let v = d.entry(k).or_insert(default);
                f(v);
                reply(&*v, out)
            }
            DictOp::PopItem => {
                let Some(k) = d.keys().next() else {
                    return Err(Fault::NotFound("popitem(): the dict is empty".into()));
                };
                let key = copy_by_encoding(k)?;
                match d.remove_entry(&key) {
                    Some(item) => reply(&item, out),
                    None => Err(Fault::bad("a key that does not encode to itself")),
                }
            }
            DictOp::Page(start, n, since) => {
                if since.is_some_and(|v| v != version) {
                    return Err(Fault::Changed("the dict".into()));
                }
                let page: Vec<(&K, &V)> = d
                    .iter()
                    .skip(usize::try_from(start).unwrap_or(usize::MAX))
                    .take(usize::try_from(n).unwrap_or(usize::MAX))
                    .collect();
                reply(&(version, page), out)
            }
        }
    }
}

/// A proxy to a dict (a `HashMap`) in a [`Manager`](crate::Manager): every process that holds
/// a clone sees the one dict, and each operation is atomic.
///
/// Python's `d[k] += 1` on a manager dict is a read then a write: two processes doing it at once
/// lose updates. Here [`update`](DictProxy::update) and [`upsert`](DictProxy::upsert) run the
/// change inside the manager, so nothing is lost:
///
/// ```
/// # procactor::init();
/// use procactor::{manager::DictProxy, Manager, Pool};
///
/// fn bump(d: DictProxy<String, u64>) -> u64 {
///     // Racy, as in Python: `let n = d.get(&k)?.unwrap(); d.insert(k, n + 1)?;`
///     d.update(&"hits".to_string(), |n| *n += 1).unwrap()
/// }
///
/// let m = Manager::start()?;
/// let d = m.dict::<String, u64>()?;
/// d.insert("hits".into(), 0)?;
/// let pool = Pool::new(2)?;
/// pool.map(bump, vec![d.clone(); 100])?;
/// assert_eq!(d.get(&"hits".to_string())?, Some(100));
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// `insert`, `extend` and `clear` are pipelined (see the [`Manager`](crate::Manager) docs).
pub struct DictProxy<K, V> {
    pub(super) handle: Handle<(DictTag, K, V)>,
}

proxy_impls!(DictProxy[K, V]);

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    pub(super) fn from_handle(handle: Handle<(DictTag, K, V)>) -> Self {
        DictProxy { handle }
    }

    /// Sets `key` to `value` (Python's `d[key] = value`; pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// assert_eq!(d.get(&1)?, Some(2));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        self.handle.tell(&DictOp::Insert(&key, &value))
    }

    /// The value of `key`, if any.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert_eq!(d.get(&1)?, None);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.handle.call(&DictOp::<&K, &V>::Get(key))
    }

    /// Removes `key` and returns its value, if any.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// assert_eq!(d.remove(&1)?, Some(2));
    /// assert_eq!(d.remove(&1)?, None);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        self.handle.call(&DictOp::<&K, &V>::Remove(key))
    }

    /// Removes `key` and returns its value; [`Error::NotFound`](crate::Error::NotFound) if it is
    /// missing (Python's `d.pop(k)`).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// assert_eq!(d.pop(&1)?, 2);
    /// assert!(matches!(d.pop(&1), Err(procactor::Error::NotFound(_))));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pop(&self, key: &K) -> Result<V> {
        self.handle.call(&DictOp::<&K, &V>::Pop(key))
    }

    /// Removes some `(key, value)` pair and returns it;
    /// [`Error::NotFound`](crate::Error::NotFound) if the dict is empty (Python's
    /// `d.popitem()`, except which pair: a `HashMap` has no order, so not the last inserted).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// assert_eq!(d.popitem()?, (1, 2));
    /// assert!(matches!(d.popitem(), Err(procactor::Error::NotFound(_))));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn popitem(&self) -> Result<(K, V)> {
        self.handle.call(&DictOp::<&K, &V>::PopItem)
    }

    /// Whether `key` is in the dict.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// assert!(d.contains_key(&1)?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.handle.call(&DictOp::<&K, &V>::ContainsKey(key))
    }

    /// The number of entries.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.extend([(1, 1), (2, 2)])?;
    /// assert_eq!(d.len()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        self.handle
            .call::<_, u64>(&DictOp::<&K, &V>::Len)
            .map(|n| n as usize)
    }

    /// Whether the dict is empty.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// assert!(m.dict::<u8, u8>()?.is_empty()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in no particular order.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(3, 0)?;
    /// assert_eq!(d.keys()?, [3]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        self.handle.call(&DictOp::<&K, &V>::Keys)
    }

    /// The values, in no particular order.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(3, 4)?;
    /// assert_eq!(d.values()?, [4]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        self.handle.call(&DictOp::<&K, &V>::Values)
    }

    /// The entries, in no particular order.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(3, 4)?;
    /// assert_eq!(d.items()?, [(3, 4)]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.handle.call(&DictOp::<&K, &V>::Items)
    }

    /// Iterates over the entries, fetching them in pages of 256 (one round trip per page). If
    /// another process changes the dict's keys meanwhile (adds, removes, or inserts, even over a
    /// key already there: the table may reorder), the next page is refused and the iteration
    /// ends with [`Error::Changed`](crate::Error::Changed) (Python's "dictionary changed size
    /// during iteration") instead of skipping or repeating entries. Values changed in place
    /// ([`update`](DictProxy::update)) are fine. A change after the last page is not seen: a
    /// dict of 256 entries or fewer comes in one page, a consistent snapshot.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict_from((0..600u32).map(|i| (i, i * 2)).collect())?;
    /// let mut sum = 0;
    /// for entry in d.iter() {
    ///     let (k, v) = entry?;
    ///     assert_eq!(v, k * 2);
    ///     sum += 1;
    /// }
    /// assert_eq!(sum, 600);
    /// let mut it = d.iter();
    /// it.next().unwrap()?;
    /// d.insert(9999, 0)?;
    /// assert!(it.any(|e| matches!(e, Err(procactor::Error::Changed(_)))));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn iter(&self) -> DictIter<'_, K, V> {
        DictIter {
            dict: self,
            version: None,
            pages: Pages::new(),
        }
    }

    /// Inserts every entry of `items`, in one operation (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<char, u32>()?;
    /// d.extend("abc".chars().zip(0..))?;
    /// assert_eq!(d.get(&'c')?, Some(2));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let items: Vec<(K, V)> = items.into_iter().collect();
        let refs: Vec<(&K, &V)> = items.iter().map(|(k, v)| (k, v)).collect();
        self.handle.tell(&DictOp::<&K, &V>::Extend(refs))
    }

    /// The value of `key`, inserting `default` first if it is missing (Python's `setdefault`).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert_eq!(d.get_or_insert(1, 5)?, 5);
    /// assert_eq!(d.get_or_insert(1, 9)?, 5);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get_or_insert(&self, key: K, default: V) -> Result<V> {
        self.handle.call(&DictOp::GetOrInsert(&key, &default))
    }

    /// Removes every entry (pipelined).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 1)?;
    /// d.clear()?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle.tell(&DictOp::<&K, &V>::Clear)
    }

    /// A copy of the whole dict, in one round trip.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.insert(1, 2)?;
    /// let copy: std::collections::HashMap<u8, u8> = d.snapshot()?;
    /// assert_eq!(copy[&1], 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn snapshot(&self) -> Result<HashMap<K, V>> {
        self.handle.call(&DictOp::<&K, &V>::Snapshot)
    }

    /// Applies `f` to the value of `key` inside the manager, atomically, and returns the new
    /// value; [`Error::NotFound`](crate::Error::NotFound) if `key` is missing. `f` runs in the
    /// manager's process: a function pointer of this same program (a closure that captures
    /// nothing). A panic in `f` is an error for this call; the manager goes on.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<String, u64>()?;
    /// d.insert("n".into(), 1)?;
    /// assert_eq!(d.update(&"n".into(), |n| *n += 1)?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn update(&self, key: &K, f: fn(&mut V)) -> Result<V> {
        self.handle.call(&DictOp::<&K, &V>::Update(key, sign(f)?))
    }

    /// Like [`update`](DictProxy::update), inserting `default` first if `key` is missing.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<String, u64>()?;
    /// assert_eq!(d.upsert(&"n".into(), 0, |n| *n += 1)?, 1);
    /// assert_eq!(d.upsert(&"n".into(), 0, |n| *n += 1)?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn upsert(&self, key: &K, default: V, f: fn(&mut V)) -> Result<V> {
        self.handle.call(&DictOp::Upsert(key, &default, sign(f)?))
    }
}

/// Valid operations on a `DictProxy<String, u64>`, encoded (for the fuzz tests to mutate).
#[cfg(test)]
pub(super) fn fuzz_samples() -> Vec<Vec<u8>> {
    fn inc(n: &mut u64) {
        *n += 1;
    }
    let k = || "key".to_string();
    let f = || sign(inc as fn(&mut u64)).unwrap();
    [
        DictOp::Insert(k(), 1u64),
        DictOp::Get(k()),
        DictOp::Remove(k()),
        DictOp::ContainsKey(k()),
        DictOp::Len,
        DictOp::Keys,
        DictOp::Values,
        DictOp::Items,
        DictOp::Extend(vec![(k(), 2)]),
        DictOp::GetOrInsert(k(), 3),
        DictOp::Pop(k()),
        DictOp::Clear,
        DictOp::Snapshot,
        DictOp::Update(k(), f()),
        DictOp::Upsert(k(), 4, f()),
        DictOp::PopItem,
        DictOp::Page(0, 2, None),
        DictOp::Page(1, 2, Some(0)),
    ]
    .iter()
    .map(|op| Packed::encode(op).expect("encodes").bytes)
    .collect()
}

/// A hosted `HashMap<String, u64>` of one entry.
#[cfg(test)]
pub(super) fn fuzz_object() -> Box<dyn Hosted> {
    Box::new(DictObj(
        HashMap::from([("key".to_string(), 7u64)]),
        Version::default(),
    ))
}

/// Entries fetched per round trip by [`DictProxy::iter`].
const PAGE: u64 = 256;

/// The iterator of [`DictProxy::iter`].
pub struct DictIter<'a, K, V> {
    dict: &'a DictProxy<K, V>,
    /// The dict's version when the iteration began.
    version: Option<u64>,
    pages: Pages<(K, V)>,
}

impl<K, V> Iterator for DictIter<'_, K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Debug + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Result<(K, V)>> {
        let (dict, version) = (self.dict, &mut self.version);
        self.pages.next(PAGE, |start| {
            let op = DictOp::<&K, &V>::Page(start, PAGE, *version);
            let (now, items) = dict.handle.call::<_, (u64, Vec<(K, V)>)>(&op)?;
            *version = Some(now);
            Ok(items)
        })
    }
}

impl<K, V> std::fmt::Debug for DictIter<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DictIter")
            .field("version", &self.version)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

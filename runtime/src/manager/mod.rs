//! The manager: a process that hosts shared lists, dicts, values and objects behind proxies,
//! as Python's `multiprocessing.Manager()` does, typed and without its lost updates. See
//! [`Manager`].

mod dict;
#[cfg(test)]
pub(crate) mod fuzz_targets;
mod gateway;
mod hosted;
mod list;
mod proto;
mod proxy;
mod remote;
mod server;
mod set;
mod value;

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use dict::{DictIter, DictProxy};
pub use gateway::Gateway;
pub use hosted::{HostedProxy, HostedTell};
pub use list::{ListIter, ListProxy};
pub use remote::{RemoteManager, RemoteOptions, Shared};
pub use set::SetProxy;

pub use value::{Namespace, ValueProxy};

use proto::{PackedRef, Request, Response};
use proxy::{Handle, ProxyCore};
use server::{MakeFn, ManagerCore};

use crate::actor::{Actor, ActorBuilder, ActorRef};
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::sync::{Barrier, Event, Lock};
use crate::wire::{self, Wait};

/// A running manager process, and the way to create shared objects in it.
///
/// [`Manager::start`] starts the manager process (an actor); its methods create objects in it
/// and return proxies. A proxy is `Clone + Serialize`: pass it to child processes as an
/// argument, in Pool tasks or in actor messages, and every process sees the one object. Each
/// operation is atomic, and read-modify-write runs *inside* the manager:
///
/// ```
/// # procactor::init();
/// use procactor::{manager::DictProxy, Manager, Process};
///
/// fn count_words(d: DictProxy<String, u64>) {
///     for w in ["a", "b", "a"] {
///         // Python's `d[w] += 1` reads, then writes: two processes lose updates.
///         // `upsert` runs the function in the manager, one operation at a time.
///         d.upsert(&w.to_string(), 0, |n| *n += 1).unwrap();
///     }
/// }
///
/// let m = Manager::start()?;
/// let d = m.dict::<String, u64>()?;
/// let ps: Vec<_> = (0..4).map(|_| Process::new(count_words, d.clone()).start()).collect::<Result<_, _>>()?;
/// for p in ps { p.join()?; }
/// assert_eq!(d.get(&"a".to_string())?, Some(8));
/// assert_eq!(d.get(&"b".to_string())?, Some(4));
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// Operations whose result is not needed (`append`, `extend`, `insert`, `clear`, `set`) are
/// *pipelined*: they return once queued, and a failure (the object was freed) is reported by the
/// next operation on the same proxy's object from this process that waits for an answer. Other
/// processes see a pipelined write once the writer made a call that waits for an answer, or
/// ended (a process that ends first waits until its writes were applied, so a parent that joined
/// a child sees what it wrote). To announce a write by another channel (a `Queue`), make a read
/// such as `len()` first. Objects are freed when the last proxy to them is dropped in every
/// process; a process that dies releases its references when its connection closes, including
/// those of proxies it received and never used (a proxy is adopted as it is decoded). Proxies
/// whose bytes are destroyed before anyone decodes them (a receiver killed before reading) are
/// released too when they travelled through procactor's sockets; the README's manager section
/// lists what is not guarded (a `Queue` item never taken, a `Namespace` field).
///
/// Dropping it (or [`shutdown`](Manager::shutdown)) stops the process: proxies to its objects
/// then fail with [`Error::Disconnected`].
///
/// ```
/// # procactor::init();
/// let m = procactor::Manager::start()?;
/// let l = m.list::<u32>()?;
/// l.append(4)?;
/// assert_eq!(l.snapshot()?, vec![4]);
/// m.shutdown()?;
/// assert!(matches!(l.len(), Err(procactor::Error::Disconnected)));
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Manager {
    core: ActorRef<ManagerCore>,
}

/// Options for a [`Manager`], from [`Manager::builder`].
pub struct ManagerBuilder {
    init: Option<Result<crate::init_fn::Call>>,
}

impl ManagerBuilder {
    /// Runs `f(args)` in the manager's process before it serves anything (CPython's
    /// `initializer`, `initargs`): set up logging, load what its hosted objects need. A panic in
    /// it fails [`start`](ManagerBuilder::start) with its message. `f` is a function of this
    /// program (a closure that captures nothing).
    ///
    /// ```
    /// # procactor::init();
    /// fn hello(who: String) { eprintln!("manager for {who} starting") }
    /// let m = procactor::Manager::builder().initializer(hello, "docs".to_string()).start()?;
    /// # drop(m);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: crate::target::Portable,
    {
        self.init = Some(crate::init_fn::Call::new(f, &args));
        self
    }

    /// Starts the manager process (after its initializer, if it has one).
    ///
    /// ```
    /// # procactor::init();
    /// let m = procactor::Manager::builder().start()?;
    /// assert_eq!(m.object_count()?, 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start(self) -> Result<Manager> {
        let init = self.init.transpose()?;
        let core = ActorBuilder::<ManagerCore>::new(init)
            .name("manager")
            .spawn()?;
        Ok(Manager { core })
    }
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("initializer", &self.init.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("pid", &self.core.pid())
            .finish()
    }
}

impl Manager {
    /// Starts a manager process.
    ///
    /// ```
    /// # procactor::init();
    /// let m = procactor::Manager::start()?;
    /// assert!(m.pid() > 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start() -> Result<Manager> {
        Manager::builder().start()
    }

    /// Options for a manager: an initializer (CPython's `start(initializer, initargs)`).
    ///
    /// ```
    /// # procactor::init();
    /// fn setup(level: u8) { assert!(level < 10, "bad level") }
    /// let m = procactor::Manager::builder().initializer(setup, 3).start()?;
    /// assert!(m.pid() > 0);
    /// // A panic in the initializer fails the start, with its message.
    /// let err = procactor::Manager::builder().initializer(setup, 12).start().unwrap_err();
    /// assert!(err.to_string().contains("bad level"));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder { init: None }
    }

    /// The manager's process id.
    pub fn pid(&self) -> u32 {
        self.core.pid()
    }

    /// How many objects the manager hosts now (a leak check: it falls back as proxies drop).
    ///
    /// ```
    /// # procactor::init();
    /// let m = procactor::Manager::start()?;
    /// let l = m.list::<u8>()?;
    /// assert_eq!(m.object_count()?, 1);
    /// drop(l);
    /// assert_eq!(m.object_count()?, 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn object_count(&self) -> Result<usize> {
        match self
            .core
            .ask_as::<_, Response>(&Request::<PackedRef>::Count, Wait::Forever)
            .map_err(proxy::gone)?
        {
            Response::Count(n) => Ok(n as usize),
            _ => Err(Error::Decode {
                expected: "an object count",
                reason: "an answer of another kind".into(),
            }),
        }
    }

    /// Stops the manager process and waits for it (at most 10 s, then it is killed). Its
    /// objects are gone; their proxies fail with [`Error::Disconnected`].
    pub fn shutdown(&self) -> Result<()> {
        if !self.core.is_alive() {
            let _ = self.core.join_timeout(Duration::from_secs(1));
            return Ok(());
        }
        self.core.stop()?;
        match self.core.join_timeout(Duration::from_secs(10)) {
            Ok(_) => Ok(()),
            Err(e) if e.is_timeout() => {
                self.core.kill()?;
                self.core.join_timeout(Duration::from_secs(10)).map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Hosts a new object built by `make` from `init`.
    fn create<P, I: Serialize + ?Sized>(&self, make: MakeFn, init: &I) -> Result<Handle<P>> {
        let mut bytes = Vec::new();
        let fds = wire::encode(init, &mut bytes)?;
        let req = Request::Create {
            make: proto::sign(make)?,
            init: PackedRef::new(&bytes, &fds),
        };
        match self
            .core
            .ask_as::<_, Response>(&req, Wait::Forever)
            .map_err(proxy::gone)?
        {
            Response::Created(obj) => Ok(Handle::new(ProxyCore::created(
                proxy::Via::Local(self.core.clone()),
                obj,
                Handle::<P>::kind(),
            ))),
            Response::Failed(f) => Err(f.into_error(self.pid())),
            _ => Err(Error::Decode {
                expected: "a new object's id",
                reason: "an answer of another kind".into(),
            }),
        }
    }

    /// A new, empty shared list.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list::<String>()?;
    /// l.append("x".into())?;
    /// assert_eq!(l.len()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn list<T: Serialize + DeserializeOwned + 'static>(&self) -> Result<ListProxy<T>> {
        self.list_from(Vec::new())
    }

    /// A new shared list holding `items`.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let l = m.list_from(vec![1, 2, 3])?;
    /// assert_eq!(l.get(2)?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn list_from<T: Serialize + DeserializeOwned + 'static>(
        &self,
        items: Vec<T>,
    ) -> Result<ListProxy<T>> {
        Ok(ListProxy::from_handle(
            self.create(list::make::<T> as MakeFn, &items)?,
        ))
    }

    /// A new, empty shared dict.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict::<u32, String>()?;
    /// d.insert(1, "one".into())?;
    /// assert_eq!(d.get(&1)?.as_deref(), Some("one"));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned + Eq + Hash + std::fmt::Debug + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        self.dict_from(HashMap::new())
    }

    /// A new shared dict holding `map`.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let d = m.dict_from([("a".to_string(), 1u64)].into_iter().collect())?;
    /// assert_eq!(d.len()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn dict_from<K, V>(&self, map: HashMap<K, V>) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned + Eq + Hash + std::fmt::Debug + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        let items: Vec<(K, V)> = map.into_iter().collect();
        Ok(DictProxy::from_handle(
            self.create(dict::make::<K, V> as MakeFn, &items)?,
        ))
    }

    /// A new, empty shared set (Python's set registered with a manager).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set::<String>()?;
    /// s.add("a".into())?;
    /// assert!(s.contains(&"a".to_string())?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn set<T>(&self) -> Result<SetProxy<T>>
    where
        T: Serialize + DeserializeOwned + Eq + Hash + std::fmt::Debug + 'static,
    {
        self.set_from(std::iter::empty())
    }

    /// A new shared set holding `items`.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let s = m.set_from([1u32, 2, 2])?;
    /// assert_eq!(s.len()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn set_from<T>(&self, items: impl IntoIterator<Item = T>) -> Result<SetProxy<T>>
    where
        T: Serialize + DeserializeOwned + Eq + Hash + std::fmt::Debug + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        Ok(SetProxy::from_handle(
            self.create(set::make::<T> as MakeFn, &items)?,
        ))
    }

    /// A new shared value holding `value`.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let v = m.value(10i64)?;
    /// assert_eq!(v.update(|x| *x *= 2)?, 20);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn value<T: Serialize + DeserializeOwned + 'static>(
        &self,
        value: T,
    ) -> Result<ValueProxy<T>> {
        Ok(ValueProxy::from_handle(
            self.create(value::make_value::<T> as MakeFn, &value)?,
        ))
    }

    /// A new, empty namespace: named fields of any serializable type.
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("epoch", &3u32)?;
    /// assert_eq!(ns.get::<u32>("epoch")?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace::from_handle(
            self.create(value::make_namespace as MakeFn, &())?,
        ))
    }

    /// Hosts an actor's state in the manager's process (no process of its own) and returns a
    /// proxy with its methods, like Python's `BaseManager.register`. `init` runs in the manager.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::Manager;
    ///
    /// struct Tally { n: u64 }
    /// #[procactor::actor]
    /// impl Tally {
    ///     fn init(start: u64) -> Self { Tally { n: start } }
    ///     pub fn add(&mut self, k: u64) -> u64 { self.n += k; self.n }
    /// }
    ///
    /// let m = Manager::start()?;
    /// let t = m.host::<Tally>(10)?;
    /// assert_eq!(t.add(5)?, 15);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn host<A: Actor>(&self, args: A::Args) -> Result<HostedProxy<A>> {
        Ok(HostedProxy::from_handle(
            self.create(hosted::make::<A> as MakeFn, &args)?,
        ))
    }

    /// A new queue (a procactor [`Queue`]: it needs no round trip through the manager, and can
    /// be stored in the manager's lists and dicts like any handle).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let q = m.queue::<u32>()?;
    /// q.put(1)?;
    /// assert_eq!(q.get()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(&self) -> Result<Queue<T>> {
        Queue::new()
    }

    /// A new queue holding at most `maxsize` items (see [`queue`](Manager::queue)).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let q = m.queue_bounded::<u32>(1)?;
    /// q.put(1)?;
    /// assert!(q.try_put(2).is_err());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn queue_bounded<T: Serialize + DeserializeOwned>(&self, maxsize: u32) -> Result<Queue<T>> {
        Queue::bounded(maxsize)
    }

    /// A new lock (a procactor [`Lock`] in shared memory: no round trip through the manager,
    /// and a holder that dies does not leave it locked).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let lock = m.lock()?;
    /// drop(lock.acquire()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn lock(&self) -> Result<Lock> {
        Lock::new()
    }

    /// A new event (a procactor [`Event`], see [`lock`](Manager::lock)).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let e = m.event()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn event(&self) -> Result<Event> {
        Event::new()
    }

    /// A new barrier for `parties` processes (a procactor [`Barrier`], see
    /// [`lock`](Manager::lock)).
    ///
    /// ```
    /// # procactor::init();
    /// # let m = procactor::Manager::start()?;
    /// let b = m.barrier(1)?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn barrier(&self, parties: u32) -> Result<Barrier> {
        Barrier::new(parties)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!(target: "procactor::manager", "manager (pid {}) did not stop cleanly: {e}", self.pid());
        }
    }
}

//! `Pool` (Python's `multiprocessing.Pool`) and `Executor` (`ProcessPoolExecutor`): a fixed set
//! of worker processes running `fn(A) -> R` over many items.
//!
//! Unlike CPython's, a worker that dies mid-task (SIGKILL, `exit`, a segfault) costs exactly that
//! task, which fails with [`Error::WorkerLost`]; the worker is replaced and everything else
//! completes. A panicking task is [`Error::TaskPanicked`]; a task past the pool's
//! [`task_timeout`](PoolBuilder::task_timeout) has its worker killed and fails with
//! [`Error::Timeout`]. Nothing hangs.
//!
//! Modules: `job` (one call's results, decoded in the caller's thread), `core` (workers,
//! dispatch, the pool thread), `blame` (who pays for a worker's death), `worker` (the worker
//! process), `items` (how a run's items lie in its bytes), `feed` (an `imap`'s input, read as
//! results are taken), `executor` (futures).

mod blame;
mod callbacks;
mod core;
mod executor;
mod feed;
#[cfg(test)]
pub(crate) mod fuzz_targets;
mod items;
mod job;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::core::{Config, Core, InitSpec, Phase, Run, RunData};
use self::feed::Feed;
use self::job::{collect_all, Delivery, ItemResult, Items, JobCore, JobState};
use self::worker::Callable;
use crate::bootstrap::StartMethod;
use crate::error::{Error, Result};
use crate::sys;
use crate::target::{Portable, Target};
use crate::wire::{self, Wait};

/// How long a joined pool waits for the closer to close what its workers sent. Those are memory
/// files, whose close never blocks: the bound only keeps a join from waiting on a close that
/// some other peer's descriptor blocks ahead of them.
const SETTLE_BOUND: Duration = Duration::from_secs(1);

pub use executor::{
    as_completed, as_completed_timeout, wait, wait_timeout, AsCompleted, AsCompletedTimeout,
    Executor, ExecutorBuilder, Future, ReturnWhen, Waited,
};

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// ```
/// # procactor::init();
/// use procactor::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
/// assert_eq!(pool.apply(square, 7)?, 49);
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// Dropping the pool terminates it: the workers are killed and reaped, and what had not finished
/// fails with [`Error::Cancelled`]. Call [`close`](Pool::close) and [`join`](Pool::join) to
/// let the work in hand finish first.
///
/// A task's tells and Manager writes are done when its result comes back: a worker waits until
/// the actors handled what its tasks told them (a [`Manager`](crate::Manager)'s pipelined
/// writes, such as `append`, are tells too) before it reports their results, at most a few
/// seconds per actor. So once `map` returns, the caller reads their effect at once, as in the
/// Python habit of filling a manager list from a pool. Tasks that tell nothing pay nothing for
/// it.
///
/// ```
/// # procactor::init();
/// use procactor::{manager::ListProxy, Manager, Pool};
///
/// fn record((squares, x): (ListProxy<u64>, u64)) -> u64 {
///     squares.append(x * x).unwrap(); // pipelined: returns once queued
///     x
/// }
///
/// let m = Manager::start()?;
/// let squares = m.list::<u64>()?;
/// let pool = Pool::new(2)?;
/// pool.map(record, (0..100).map(|x| (squares.clone(), x)))?;
/// assert_eq!(squares.len()?, 100); // every append is there as soon as map returns
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Pool {
    core: Arc<Core>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Options for a [`Pool`] (or an [`Executor`]).
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// use procactor::{Pool, StartMethod};
///
/// fn setup(greeting: String) { assert_eq!(greeting, "hi") }
/// fn double(x: u32) -> u32 { x * 2 }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .start_method(StartMethod::ForkServer)
///     .initializer(setup, "hi".to_string())
///     .max_tasks_per_child(100)
///     .task_timeout(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(pool.map(double, [1, 2, 3])?, [2, 4, 6]);
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "a PoolBuilder does nothing until .build()"]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    init: Option<Result<InitSpec>>,
    max_tasks: Option<usize>,
    task_timeout: Option<Duration>,
    idle_spin: Duration,
}

impl PoolBuilder {
    /// How long an idle worker polls for more work before it sleeps, unless
    /// [`idle_spin`](PoolBuilder::idle_spin) says otherwise.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::pool::PoolBuilder;
    /// // Twice the default, for bursts of work a little further apart.
    /// let pool = procactor::Pool::builder()
    ///     .idle_spin(PoolBuilder::DEFAULT_IDLE_SPIN * 2)
    ///     .build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_millis(5);

    /// How many worker processes (default: [`cpu_count`](crate::cpu_count)). Zero is an error
    /// at [`build`](PoolBuilder::build).
    ///
    /// ```
    /// # procactor::init();
    /// let pool = procactor::Pool::builder().processes(3).build()?;
    /// assert_eq!(pool.processes(), 3);
    /// assert!(procactor::Pool::new(0).is_err());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// How the workers are started (default: the process-wide default).
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Pool, StartMethod};
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// let pool = Pool::builder().processes(1).start_method(StartMethod::Fork).build()?;
    /// assert_eq!(pool.apply(inc, 1)?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// `f(args)` runs once in every worker before its first task (and in every replacement).
    /// If it panics, [`build`](PoolBuilder::build) fails with [`Error::InitializerFailed`]; a
    /// replacement whose initializer panics makes every later task fail with it, rather than
    /// restarting workers in a loop.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Error, Pool};
    /// fn refuse(_: ()) { panic!("no database") }
    /// let err = Pool::builder().processes(1).initializer(refuse, ()).build().err().unwrap();
    /// assert!(matches!(err, Error::InitializerFailed { ref panic, .. } if panic.message == "no database"));
    /// ```
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Portable,
    {
        let spec = (|| {
            let mut bytes = Vec::new();
            let fds = wire::encode(&args, &mut bytes)?;
            let fds = dup_all(&fds)?;
            let (entry, func) = crate::init_fn::sign(f)?;
            Ok(InitSpec {
                entry,
                func,
                bytes,
                fds,
            })
        })();
        self.init = Some(spec);
        self
    }

    /// A worker is replaced by a fresh process after this many tasks (a `map` chunk counts as
    /// one, as in Python): a bound on what leaky task code can accumulate.
    ///
    /// ```
    /// # procactor::init();
    /// fn pid(_: u32) -> u32 { std::process::id() }
    /// let pool = procactor::Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    /// let a = pool.apply(pid, 0)?;
    /// let b = pool.apply(pid, 0)?;
    /// assert_ne!(a, b);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn max_tasks_per_child(mut self, k: usize) -> Self {
        self.max_tasks = Some(k);
        self
    }

    /// Every task (every item of a `map`) has this long to run. Past it, its worker is killed
    /// and replaced, and the task fails with [`Error::Timeout`].
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let pool = procactor::Pool::builder()
    ///     .processes(1)
    ///     .task_timeout(Duration::from_millis(300))
    ///     .build()?;
    /// assert!(pool.apply(nap, 30_000).unwrap_err().is_timeout());
    /// assert_eq!(pool.apply(nap, 1)?, 1); // a new worker took over
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// How long an idle worker keeps polling for more work before it sleeps (default
    /// [`DEFAULT_IDLE_SPIN`](PoolBuilder::DEFAULT_IDLE_SPIN), 5 ms; zero: sleep at once).
    ///
    /// A worker that is still polling when work comes starts it without a wake-up, and keeps
    /// its own core: a worker that slept is often woken on the core of the process that woke
    /// it, next to another worker, and the kernel may take milliseconds to move one of them
    /// away. The poll yields the core to any other thread that wants it; it costs an idle
    /// pool at most this long of CPU per worker after each burst of work. A worker whose
    /// process may run on one CPU only never polls.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// let pool = procactor::Pool::builder().idle_spin(Duration::ZERO).build()?;
    /// fn inc(x: u8) -> u8 { x + 1 }
    /// assert_eq!(pool.apply(inc, 1)?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.idle_spin = spin;
        self
    }

    /// Starts the workers and waits until each has run the initializer.
    ///
    /// ```
    /// # procactor::init();
    /// let pool = procactor::Pool::builder().build()?;
    /// assert_eq!(pool.processes(), procactor::cpu_count());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn build(self) -> Result<Pool> {
        let (core, thread) = Core::start(self.config()?)?;
        Ok(Pool {
            core,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn config(self) -> Result<Config> {
        let processes = self.processes.unwrap_or_else(crate::process::cpu_count);
        if processes == 0 {
            return Err(Error::InvalidState("a pool needs at least one process"));
        }
        if self.max_tasks == Some(0) {
            return Err(Error::InvalidState(
                "max_tasks_per_child must be at least 1",
            ));
        }
        if self.task_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidState("task_timeout must be above zero"));
        }
        Ok(Config {
            processes,
            method: self.method,
            init: self.init.transpose()?,
            max_tasks: self.max_tasks,
            task_timeout: self.task_timeout,
            idle_spin: self.idle_spin,
        })
    }
}

fn dup_all(fds: &[std::os::fd::RawFd]) -> Result<Vec<std::os::fd::OwnedFd>> {
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    fds.iter()
        .map(|&fd| sys::dup(wire::borrow_collected(fd)).map_err(|e| Error::io("dup", e)))
        .collect()
}

/// CPython's default chunk size for `map`: `ceil(n / (4 * workers))`.
fn default_chunksize(n: usize, workers: usize) -> usize {
    n.div_ceil(4 * workers).max(1)
}

impl Pool {
    /// A pool of `processes` workers, started now. `Pool::new(0)` is an error.
    ///
    /// ```
    /// # procactor::init();
    /// let pool = procactor::Pool::new(2)?;
    /// assert_eq!(pool.pids().len(), 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// Options: processes, start method, initializer, `max_tasks_per_child`, task timeout.
    ///
    /// ```
    /// # procactor::init();
    /// let pool = procactor::Pool::builder().processes(1).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            method: None,
            init: None,
            max_tasks: None,
            task_timeout: None,
            idle_spin: PoolBuilder::DEFAULT_IDLE_SPIN,
        }
    }

    /// The number of worker processes.
    ///
    /// ```
    /// # procactor::init();
    /// assert_eq!(procactor::Pool::new(2)?.processes(), 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.core.processes()
    }

    /// The pids of the live workers (a replaced worker has a new pid).
    ///
    /// ```
    /// # procactor::init();
    /// let pool = procactor::Pool::new(1)?;
    /// assert_ne!(pool.pids()[0], std::process::id());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    /// `f` over every item, results in order, in chunks of CPython's default size
    /// (`ceil(n / (4 * processes))`). The first failing item (by position) is the error; the
    /// pool stays usable. See [`try_map`](Pool::try_map) for every item's result.
    ///
    /// ```
    /// # procactor::init();
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procactor::Pool::new(2)?;
    /// let squares = pool.map(square, 0..1000)?;
    /// assert_eq!(squares[999], 998_001);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn map<A, R, M>(
        &self,
        f: impl Target<A, R, M>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let job = self.start_job::<fn(A) -> R, A, R>(f, items, None)?;
        collect_ordered(&job)
    }

    /// [`map`](Pool::map) with chunks of `chunksize` items: each chunk goes to a worker as one
    /// task, and its results come back together.
    ///
    /// ```
    /// # procactor::init();
    /// fn neg(x: i32) -> i32 { -x }
    /// let pool = procactor::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(neg, 1..=5, 2)?, [-1, -2, -3, -4, -5]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn map_chunked<A, R, M>(
        &self,
        f: impl Target<A, R, M>,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let job = self.start_job::<fn(A) -> R, A, R>(f, items, Some(chunksize))?;
        collect_ordered(&job)
    }

    /// [`map`](Pool::map) that returns every item's result: a panic, a lost worker or a timeout
    /// fails only its own item. The outer `Err` is for the call itself (a closed pool, an item
    /// that cannot be encoded).
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::Error;
    /// fn picky(x: u32) -> u32 { assert!(x != 2, "not two"); x }
    /// let pool = procactor::Pool::new(2)?;
    /// let results = pool.try_map(picky, 0..4)?;
    /// assert_eq!(results[1].as_ref().unwrap(), &1);
    /// assert!(matches!(&results[2], Err(Error::TaskPanicked { index: 2, panic, .. }) if panic.message == "not two"));
    /// assert_eq!(pool.map(picky, [5])?, [5]); // still usable
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn try_map<A, R, M>(
        &self,
        f: impl Target<A, R, M>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R>>>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let job = self.start_job::<fn(A) -> R, A, R>(f, items, None)?;
        let mut out = Vec::with_capacity(job.total());
        drive::<R>(&job, Wait::Forever, &mut Ordered::new(), |_, r| {
            out.push(r.map_err(|e| *e));
            true
        })?;
        Ok(out)
    }

    /// `f(a, b)` for every pair (Python's `starmap`), results in order.
    ///
    /// ```
    /// # procactor::init();
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// let pool = procactor::Pool::new(2)?;
    /// assert_eq!(pool.starmap(pow, [(2, 10), (3, 3)])?, [1024, 27]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>>
    where
        A: Portable,
        B: Portable,
        R: Portable,
    {
        let job = self.start_job::<fn(A, B) -> R, (A, B), R>(f, items, None)?;
        collect_ordered(&job)
    }

    /// Results in order, each as soon as it (and those before it) are done: good for progress
    /// bars. Items go to workers one by one (Python's `chunksize=1`; the pool still groups tiny
    /// tasks into batches). Dropping the iterator early cancels what has not started.
    ///
    /// The input is read as the results are taken, in the caller's thread: at most a window of
    /// `32 × processes` items is ahead of the results taken (queued, running, or done and
    /// waiting), so an endless input streams in bounded memory. If the input panics, the results
    /// of the items before the panic come first, then the panic reaches the caller, from `next`
    /// (CPython raises the input's exception the same way). The input must be `Send`, so that
    /// the iterator stays `Send`.
    ///
    /// ```
    /// # procactor::init();
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procactor::Pool::new(2)?;
    /// let mut done = 0;
    /// for r in pool.imap(square, 0..10)? {
    ///     r?;
    ///     done += 1; // e.g. bar.inc(1)
    /// }
    /// assert_eq!(done, 10);
    /// // An endless input: the first results come while it is still being read.
    /// let first: Vec<u64> = pool.imap(square, 0..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn imap<'a, A, R, I, M>(&self, f: impl Target<A, R, M>, items: I) -> Result<Imap<'a, R>>
    where
        A: Portable,
        R: Portable,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let f: fn(A) -> R = f.into_fn()?;
        Ok(Imap::new(self.start_feed(f, items)?, None))
    }

    /// Like [`imap`](Pool::imap), but in completion order. Each item comes with its position.
    /// The input is read as results are taken, as for [`imap`](Pool::imap).
    ///
    /// ```
    /// # procactor::init();
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procactor::Pool::new(2)?;
    /// let mut got: Vec<(usize, u64)> = pool
    ///     .imap_unordered(square, 0..5)?
    ///     .map(|(i, r)| (i, r.unwrap()))
    ///     .collect();
    /// got.sort();
    /// assert_eq!(got, [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn imap_unordered<'a, A, R, I, M>(
        &self,
        f: impl Target<A, R, M>,
        items: I,
    ) -> Result<ImapUnordered<'a, R>>
    where
        A: Portable,
        R: Portable,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let feed = self.start_feed(f, items)?;
        Ok(ImapUnordered {
            job: feed.job().clone(),
            feed,
            ready: VecDeque::new(),
            yielded: 0,
            _r: PhantomData,
        })
    }

    /// Runs `f(arg)` in a worker and waits for it.
    ///
    /// ```
    /// # procactor::init();
    /// fn shout(s: String) -> String { s.to_uppercase() }
    /// let pool = procactor::Pool::new(1)?;
    /// assert_eq!(pool.apply(shout, "hey".into())?, "HEY");
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn apply<A, R, M>(&self, f: impl Target<A, R, M>, arg: A) -> Result<R>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        self.apply_async(f, arg)?.get()
    }

    /// Starts `f(arg)` in a worker; the result comes through the returned [`AsyncResult`].
    ///
    /// ```
    /// # procactor::init();
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procactor::Pool::new(2)?;
    /// let pending: Vec<_> = (0..100).map(|i| pool.apply_async(square, i)).collect::<Result<_, _>>()?;
    /// let total: u64 = pending.iter().map(|r| r.get()).sum::<Result<u64, _>>()?;
    /// assert_eq!(total, (0..100u64).map(|i| i * i).sum());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn apply_async<A, R, M>(&self, f: impl Target<A, R, M>, arg: A) -> Result<AsyncResult<R>>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let job = self.start_job::<fn(A) -> R, A, R>(f, [arg], Some(1))?;
        Ok(AsyncResult {
            job,
            collect: collect_one::<R>,
        })
    }

    /// [`map`](Pool::map) without waiting: the results come through the returned
    /// [`AsyncResult`].
    ///
    /// ```
    /// # procactor::init();
    /// fn inc(x: u8) -> u8 { x + 1 }
    /// let pool = procactor::Pool::new(2)?;
    /// let r = pool.map_async(inc, [1, 2, 3])?;
    /// assert_eq!(r.get()?, [2, 3, 4]);
    /// assert!(r.ready() && r.successful()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn map_async<A, R, M>(
        &self,
        f: impl Target<A, R, M>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let job = self.start_job::<fn(A) -> R, A, R>(f, items, None)?;
        Ok(AsyncResult {
            job,
            collect: collect_all::<R>,
        })
    }

    /// [`starmap`](Pool::starmap) without waiting (Python's `starmap_async`): the results, in
    /// order, come through the returned [`AsyncResult`].
    ///
    /// ```
    /// # procactor::init();
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    /// let pool = procactor::Pool::new(2)?;
    /// let r = pool.starmap_async(pow, [(2, 10), (3, 3)])?;
    /// assert_eq!(r.get()?, [1024, 27]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Portable,
        B: Portable,
        R: Portable,
    {
        let job = self.start_job::<fn(A, B) -> R, (A, B), R>(f, items, None)?;
        Ok(AsyncResult {
            job,
            collect: collect_all::<R>,
        })
    }

    /// No more tasks may be submitted ([`Error::Closed`]); the workers exit once the work in
    /// hand is done. Then [`join`](Pool::join).
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// let r = pool.apply_async(id, 1)?;
    /// pool.close();
    /// assert!(matches!(pool.apply(id, 2), Err(procactor::Error::Closed)));
    /// pool.join()?;
    /// assert_eq!(r.get()?, 1); // finished before the workers left
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn close(&self) {
        self.core.close();
    }

    /// Waits for the workers to exit, after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate) (before either, [`Error::InvalidState`]).
    ///
    /// ```
    /// # procactor::init();
    /// let pool = procactor::Pool::new(1)?;
    /// assert!(pool.join().is_err());
    /// pool.close();
    /// pool.join()?;
    /// assert!(pool.pids().is_empty());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.core.phase() == Phase::Running {
            return Err(Error::InvalidState("join() before close() or terminate()"));
        }
        self.core.wait_stopped(Wait::Forever)?;
        self.join_thread();
        Ok(())
    }

    /// Kills the workers now and reaps them; every task not finished fails with
    /// [`Error::Cancelled`]. Returns once the workers are gone.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(s: u64) { std::thread::sleep(Duration::from_secs(s)) }
    /// let pool = procactor::Pool::new(2)?;
    /// let r = pool.map_async(nap, vec![60; 1000])?;
    /// pool.terminate();
    /// assert!(matches!(r.get(), Err(procactor::Error::Cancelled)));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.core.terminate();
        let _ = self.core.wait_stopped(Wait::Forever);
        self.join_thread();
    }

    /// Whether this is the pool's own thread (a done-callback runs there): it must not wait
    /// for itself.
    fn on_pool_thread(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id())
    }

    /// Joins the pool thread, then lets the closer finish closing what the workers sent (memory
    /// files of large outcomes): once a pool is joined, none of its descriptors is open.
    fn join_thread(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
            crate::closer::settle(SETTLE_BOUND);
        }
    }

    /// A feed for an `imap` of `items` through `f`, with its first window queued.
    fn start_feed<'a, A, R, I>(&self, f: fn(A) -> R, items: I) -> Result<Feed<'a>>
    where
        A: Portable,
        R: Portable,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.core.check_open()?;
        let mut feed = Feed::new::<fn(A) -> R, A, R, I>(self.core.clone(), f, items)?;
        feed.top_up(0);
        Ok(feed)
    }

    /// Encodes the items into runs (chunks of `chunksize`, or CPython's default) and queues them.
    fn start_job<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Arc<JobCore>>
    where
        F: Callable<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = chunksize
            .unwrap_or_else(|| default_chunksize(items.len(), self.processes()))
            .max(1);
        let job = Arc::new(JobCore::new(items.len()));
        let code = worker::run_code::<F, A, R>(f)?;
        // Chunk by chunk: the workers start on the first while the rest is encoded.
        for (i, chunk) in items.chunks(chunksize).enumerate() {
            // Room for the usual encoding (varints are at most as long as the value, plus a
            // length byte per item), no regrowth.
            let room = std::mem::size_of_val(chunk) + chunk.len();
            let mut bytes = Vec::with_capacity(room.min(1 << 26));
            let fds = items::encode_items(chunk, &mut bytes)?;
            let run = Run {
                job: job.clone(),
                code: code.clone(),
                data: Arc::new(RunData {
                    bytes,
                    count: chunk.len() as u32,
                    fds: dup_all(&fds)?,
                }),
                base: i * chunksize,
                skip: Vec::new(),
                chunk: chunksize > 1,
                strikes: 0,
            };
            if let Err(e) = self.core.submit(vec![run]) {
                job.abandon();
                return Err(e);
            }
        }
        Ok(job)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.core.phase() != Phase::Stopped {
            self.terminate();
        }
        self.join_thread();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes())
            .field("pids", &self.pids())
            .finish()
    }
}

fn collect_one<R: DeserializeOwned>(job: &JobCore, st: &JobState) -> Result<R> {
    collect_all::<R>(job, st)?
        .pop()
        .ok_or(Error::InvalidState("an empty task"))
}

/// A job's results in item order, failing fast: the first failing item (by position) is the
/// error, and what has not started is cancelled.
fn collect_ordered<R: DeserializeOwned>(job: &JobCore) -> Result<Vec<R>> {
    let mut out = Vec::with_capacity(job.total());
    let mut failed = None;
    drive::<R>(job, Wait::Forever, &mut Ordered::new(), |_, r| match r {
        Ok(v) => {
            out.push(v);
            true
        }
        Err(e) => {
            failed = Some(*e);
            false
        }
    })?;
    match failed {
        Some(e) => {
            job.abandon();
            Err(e)
        }
        None => Ok(out),
    }
}

/// Feeds a job's results to `sink` in item order as they arrive, until every item went to it
/// or `sink` returns false. Items that never came (a cancelled job) are [`Error::Cancelled`].
fn drive<R: DeserializeOwned>(
    job: &JobCore,
    wait: Wait,
    order: &mut Ordered<R>,
    mut sink: impl FnMut(usize, ItemResult<R>) -> bool,
) -> Result<()> {
    let total = job.total();
    loop {
        if !order.pump(&mut sink) {
            return Ok(());
        }
        if order.next >= total {
            return Ok(());
        }
        let batch = take_deliveries(job, wait)?;
        if batch.is_empty() {
            // Over, and these items never came: they were cancelled.
            while order.next < total {
                order.next += 1;
                if !sink(order.next - 1, Err(Box::new(Error::Cancelled))) {
                    return Ok(());
                }
            }
            return Ok(());
        }
        order.absorb(batch);
    }
}

/// Puts deliveries back in item order. A delivery of a range waits whole until its turn and is
/// decoded then; the items of a retried run come one by one and wait decoded.
struct Ordered<R> {
    next: usize,
    ranges: BTreeMap<usize, Delivery>,
    singles: BTreeMap<usize, ItemResult<R>>,
}

impl<R: DeserializeOwned> Ordered<R> {
    fn new() -> Self {
        Ordered {
            next: 0,
            ranges: BTreeMap::new(),
            singles: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, batch: Vec<Delivery>) {
        for d in batch {
            match d.items() {
                Items::Range(r) if r.is_empty() => {}
                Items::Range(r) => {
                    self.ranges.insert(r.start, d);
                }
                Items::List(_) => d.decode::<R>(|i, r| {
                    self.singles.insert(i, r);
                }),
            }
        }
    }

    /// Hands every item that is next in order to `sink`; false if `sink` said stop.
    fn pump(&mut self, sink: &mut impl FnMut(usize, ItemResult<R>) -> bool) -> bool {
        loop {
            if let Some(r) = self.singles.remove(&self.next) {
                self.next += 1;
                if !sink(self.next - 1, r) {
                    return false;
                }
            } else if let Some(d) = self.ranges.remove(&self.next) {
                self.next += d.items().len();
                let mut go = true;
                d.decode::<R>(|i, r| {
                    if go {
                        go = sink(i, r);
                    }
                });
                if !go {
                    return false;
                }
            } else {
                return true;
            }
        }
    }
}

/// Waits for deliveries and takes them (empty: the job is over and everything was taken).
fn take_deliveries(job: &JobCore, wait: Wait) -> Result<Vec<Delivery>> {
    let mut st = job.wait_until(wait, |st| !st.deliveries.is_empty() || st.is_done())?;
    Ok(std::mem::take(&mut st.deliveries))
}

/// The result of [`Pool::apply_async`] or [`Pool::map_async`] (Python's `AsyncResult`).
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// fn slow(x: u32) -> u32 { std::thread::sleep(Duration::from_millis(200)); x }
/// let pool = procactor::Pool::new(1)?;
/// let r = pool.apply_async(slow, 5)?;
/// assert!(!r.ready());
/// assert!(r.get_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// assert!(r.successful().is_err()); // not ready yet
/// assert_eq!(r.get()?, 5);
/// assert_eq!(r.get()?, 5); // as often as you like
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "the result arrives only through `get()`/`wait()`"]
pub struct AsyncResult<T> {
    job: Arc<JobCore>,
    collect: fn(&JobCore, &JobState) -> Result<T>,
}

impl<T> AsyncResult<T> {
    /// Waits for the result.
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// assert_eq!(pool.apply_async(id, 3)?.get()?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_wait(Wait::Forever)
    }

    /// Waits at most `timeout` ([`Error::Timeout`] after; the task goes on).
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// assert_eq!(pool.apply_async(id, 3)?.get_timeout(Duration::from_secs(30))?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_wait(Wait::timeout(timeout))
    }

    fn get_wait(&self, wait: Wait) -> Result<T> {
        let st = self.job.wait_done(wait)?;
        (self.collect)(&self.job, &st)
    }

    /// Waits until the result is ready.
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// let r = pool.apply_async(id, 3)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn wait(&self) {
        drop(self.job.wait_done(Wait::Forever));
    }

    /// Waits at most `timeout`; true if the result is ready.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// assert!(pool.apply_async(id, 3)?.wait_timeout(Duration::from_secs(30)));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.job.wait_done(Wait::timeout(timeout)).is_ok()
    }

    /// Is the result ready (a value or an error)?
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// let r = pool.apply_async(id, 3)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.job.lock().is_done()
    }

    /// Did the task succeed? [`Error::InvalidState`] while it is not ready (Python's
    /// `ValueError`).
    ///
    /// ```
    /// # procactor::init();
    /// fn boom(_: ()) { panic!("boom") }
    /// let pool = procactor::Pool::new(1)?;
    /// let r = pool.apply_async(boom, ())?;
    /// r.wait();
    /// assert!(!r.successful()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        let st = self.job.lock();
        if !st.is_done() {
            return Err(Error::InvalidState("the result is not ready"));
        }
        Ok((self.collect)(&self.job, &st).is_ok())
    }
    /// Runs `callback` with the result once it is ready (Python's `callback` and
    /// `error_callback` of every `*_async`, in one: an `Err` is the error). It runs once, in
    /// this process, on a thread of callbacks: never on the pool's own thread (a slow callback
    /// holds up later callbacks, not the pool), nor in the caller's (unless that thread cannot
    /// be started: then where the result came). A callback that panics costs only itself.
    /// Unlike CPython's, it may run after [`get`](AsyncResult::get) returned, and callbacks
    /// still queued when the program ends do not run: wait for what a callback reports if you
    /// need it.
    ///
    /// ```
    /// # procactor::init();
    /// use std::sync::mpsc;
    /// fn double(x: u32) -> u32 { x * 2 }
    /// let pool = procactor::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// pool.map_async(double, [1, 2, 3])?.on_done(move |r| tx.send(r).unwrap());
    /// let got = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(got?, [2, 4, 6]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn on_done(&self, callback: impl FnOnce(Result<T>) + Send + 'static)
    where
        T: 'static,
    {
        let (job, collect) = (self.job.clone(), self.collect);
        self.job.on_done(Box::new(move || {
            // The result is decoded on the callback thread too, not on the pool's.
            callbacks::run(Box::new(move || {
                let result = {
                    let st = job.lock();
                    collect(&job, &st)
                };
                callback(result);
            }));
        }));
    }
}

/// The iterator of [`Pool::imap`] (and [`Executor::map`]): results in input order, the input
/// read as they are taken (see [`Pool::imap`]).
///
/// ```
/// # procactor::init();
/// fn square(x: u64) -> u64 { x * x }
/// let pool = procactor::Pool::new(2)?;
/// let it: procactor::pool::Imap<u64> = pool.imap(square, [1, 2, 3])?;
/// assert_eq!(it.collect::<Result<Vec<_>, _>>()?, [1, 4, 9]);
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "an iterator does nothing unless consumed"]
pub struct Imap<'a, R> {
    job: Arc<JobCore>,
    feed: Feed<'a>,
    order: Ordered<R>,
    /// Decoded, in order, not yet yielded.
    ready: VecDeque<Result<R>>,
    yielded: usize,
    deadline: Option<(Instant, Duration)>,
}

impl<'a, R: DeserializeOwned> Imap<'a, R> {
    fn new(feed: Feed<'a>, deadline: Option<(Instant, Duration)>) -> Imap<'a, R> {
        Imap {
            job: feed.job().clone(),
            feed,
            order: Ordered::new(),
            ready: VecDeque::new(),
            yielded: 0,
            deadline,
        }
    }

    /// The next result, waiting at most `timeout` for it ([`Error::Timeout`] after; the
    /// iterator can go on). `None` at the end.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procactor::Pool::new(1)?;
    /// let mut it = pool.imap(id, [7])?;
    /// assert_eq!(it.next_timeout(Duration::from_secs(30)).unwrap()?, 7);
    /// assert!(it.next_timeout(Duration::from_secs(30)).is_none());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_wait(Wait::timeout(timeout))
            .map(Next::into_result)
    }

    fn next_wait(&mut self, wait: Wait) -> Option<Next<R>> {
        self.feed.top_up(self.yielded);
        if self.ready.is_empty() {
            if self.yielded >= self.job.total() {
                // Every item read was yielded: the end of the input, or its panic.
                self.feed.resume_panic();
                return None;
            }
            let ready = &mut self.ready;
            // Stop at the first item: yield as soon as one is in.
            let got = drive::<R>(&self.job, wait, &mut self.order, |_, r| {
                ready.push_back(r.map_err(|e| *e));
                false
            });
            if let Err(e) = got {
                // The wait ran out (or the pool failed) before any result: not a task's error,
                // which comes through `ready` like any result (a task killed for its own
                // timeout is one).
                return Some(if e.is_timeout() {
                    Next::Expired(e)
                } else {
                    Next::Item(Err(e))
                });
            }
            // Whatever else is in order already, without waiting.
            self.order.pump(&mut |_, r| {
                ready.push_back(r.map_err(|e| *e));
                true
            });
        }
        let r = self.ready.pop_front()?;
        self.yielded += 1;
        Some(Next::Item(r))
    }
}

/// What waiting for an [`Imap`]'s next result came to.
enum Next<R> {
    /// A result, or a task's error.
    Item(Result<R>),
    /// The wait's own time ran out before a result came.
    Expired(Error),
}

impl<R> Next<R> {
    fn into_result(self) -> Result<R> {
        match self {
            Next::Item(r) => r,
            Next::Expired(e) => Err(e),
        }
    }
}

impl<R: DeserializeOwned> Iterator for Imap<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        match self.deadline {
            None => self.next_wait(Wait::Forever).map(Next::into_result),
            Some((deadline, asked)) => match self.next_wait(Wait::Until { deadline, asked })? {
                Next::Item(r) => Some(r),
                Next::Expired(e) => {
                    // Python's executor.map: past the deadline, the rest is cancelled.
                    self.feed.end();
                    self.job.abandon();
                    self.yielded = self.job.total();
                    Some(Err(e))
                }
            },
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Every item read yields one result; more may come while the input goes on.
        let left = self.job.total().saturating_sub(self.yielded);
        (left, self.job.is_sealed().then_some(left))
    }
}

impl<R> Drop for Imap<'_, R> {
    fn drop(&mut self) {
        self.job.abandon();
    }
}

impl<R> std::fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("read", &self.job.total())
            .field("yielded", &self.yielded)
            .finish()
    }
}

/// The iterator of [`Pool::imap_unordered`]: `(position, result)` in completion order, the input
/// read as they are taken (see [`Pool::imap`]).
///
/// ```
/// # procactor::init();
/// fn square(x: u64) -> u64 { x * x }
/// let pool = procactor::Pool::new(2)?;
/// let it: procactor::pool::ImapUnordered<u64> = pool.imap_unordered(square, [3])?;
/// assert_eq!(it.map(|(i, r)| (i, r.unwrap())).collect::<Vec<_>>(), [(0, 9)]);
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "an iterator does nothing unless consumed"]
pub struct ImapUnordered<'a, R> {
    job: Arc<JobCore>,
    feed: Feed<'a>,
    ready: VecDeque<(usize, Result<R>)>,
    yielded: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Iterator for ImapUnordered<'_, R> {
    type Item = (usize, Result<R>);

    fn next(&mut self) -> Option<(usize, Result<R>)> {
        loop {
            self.feed.top_up(self.yielded);
            if let Some(item) = self.ready.pop_front() {
                self.yielded += 1;
                return Some(item);
            }
            if self.yielded >= self.job.total() {
                // Every item read was yielded: the end of the input, or its panic.
                self.feed.resume_panic();
                return None;
            }
            let batch = take_deliveries(&self.job, Wait::Forever).ok()?;
            if batch.is_empty() {
                self.feed.resume_panic();
                return None;
            }
            for d in &batch {
                d.decode::<R>(|i, r| self.ready.push_back((i, r.map_err(|e| *e))));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.job.total().saturating_sub(self.yielded);
        (left, self.job.is_sealed().then_some(left))
    }
}

impl<R> Drop for ImapUnordered<'_, R> {
    fn drop(&mut self) {
        self.job.abandon();
    }
}

impl<R> std::fmt::Debug for ImapUnordered<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("read", &self.job.total())
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("initializer", &self.init.is_some())
            .field("max_tasks_per_child", &self.max_tasks)
            .finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("value", &std::any::type_name::<T>())
            .field("ready", &self.ready())
            .finish()
    }
}

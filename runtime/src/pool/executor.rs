//! `Executor` and `Future`: Python's `concurrent.futures.ProcessPoolExecutor` over the same
//! workers as `Pool`, so a killed worker costs one future ([`Error::WorkerLost`]) instead of
//! breaking the executor for good (CPython's `BrokenProcessPool`).

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::job::JobCore;
use super::{collect_one, Imap, Pool, PoolBuilder};
use crate::bootstrap::StartMethod;
use crate::error::{Error, Result};
use crate::target::{Portable, Target};
use crate::wire::Wait;

/// A pool of worker processes behind futures (Python's `ProcessPoolExecutor`).
///
/// ```
/// # procactor::init();
/// use procactor::{pool::as_completed, Executor};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let ex = Executor::new(2)?;
/// let futures: Vec<_> = (0..10).map(|i| ex.submit(square, i)).collect::<Result<_, _>>()?;
/// let mut total = 0;
/// for f in as_completed(&futures) {
///     total += f.result()?;
/// }
/// assert_eq!(total, 285);
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// Dropping an executor is `shutdown(true, false)`: it waits for the submitted work, as Python's
/// `with` block does.
pub struct Executor {
    pool: Pool,
}

/// Options for an [`Executor`]: the same as a [`PoolBuilder`]'s.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// fn id(x: u8) -> u8 { x }
/// let ex = procactor::Executor::builder()
///     .processes(2)
///     .task_timeout(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(ex.submit(id, 4)?.result()?, 4);
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "an ExecutorBuilder does nothing until .build()"]
pub struct ExecutorBuilder(PoolBuilder);

impl ExecutorBuilder {
    /// See [`PoolBuilder::processes`].
    ///
    /// ```
    /// # procactor::init();
    /// assert!(procactor::Executor::builder().processes(0).build().is_err());
    /// ```
    pub fn processes(self, n: usize) -> Self {
        ExecutorBuilder(self.0.processes(n))
    }

    /// See [`PoolBuilder::start_method`].
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Executor, StartMethod};
    /// let ex = Executor::builder().processes(1).start_method(StartMethod::ForkServer).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start_method(self, method: StartMethod) -> Self {
        ExecutorBuilder(self.0.start_method(method))
    }

    /// See [`PoolBuilder::initializer`].
    ///
    /// ```
    /// # procactor::init();
    /// fn setup(_: ()) {}
    /// let ex = procactor::Executor::builder().processes(1).initializer(setup, ()).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn initializer<A: Portable>(self, f: fn(A), args: A) -> Self {
        ExecutorBuilder(self.0.initializer(f, args))
    }

    /// See [`PoolBuilder::max_tasks_per_child`].
    ///
    /// ```
    /// # procactor::init();
    /// let ex = procactor::Executor::builder().processes(1).max_tasks_per_child(10).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn max_tasks_per_child(self, k: usize) -> Self {
        ExecutorBuilder(self.0.max_tasks_per_child(k))
    }

    /// See [`PoolBuilder::task_timeout`].
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// let ex = procactor::Executor::builder().processes(1).task_timeout(Duration::from_secs(5)).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn task_timeout(self, timeout: Duration) -> Self {
        ExecutorBuilder(self.0.task_timeout(timeout))
    }

    /// See [`PoolBuilder::idle_spin`].
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// let ex = procactor::Executor::builder().processes(1).idle_spin(Duration::ZERO).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn idle_spin(self, spin: Duration) -> Self {
        ExecutorBuilder(self.0.idle_spin(spin))
    }

    /// Starts the workers.
    ///
    /// ```
    /// # procactor::init();
    /// let ex = procactor::Executor::builder().build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn build(self) -> Result<Executor> {
        Ok(Executor {
            pool: self.0.build()?,
        })
    }
}

impl Executor {
    /// An executor with `processes` workers, started now.
    ///
    /// ```
    /// # procactor::init();
    /// let ex = procactor::Executor::new(2)?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Executor> {
        Executor::builder().processes(processes).build()
    }

    /// Options (see [`PoolBuilder`]).
    ///
    /// ```
    /// # procactor::init();
    /// let ex = procactor::Executor::builder().processes(1).build()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder(Pool::builder())
    }

    /// Schedules `f(arg)`; [`Error::Closed`] after [`shutdown`](Executor::shutdown).
    ///
    /// ```
    /// # procactor::init();
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    /// let ex = procactor::Executor::new(1)?;
    /// let f = ex.submit(add, (2, 3))?;
    /// assert_eq!(f.result()?, 5);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn submit<A, R, M>(&self, f: impl Target<A, R, M>, arg: A) -> Result<Future<R>>
    where
        A: Portable,
        R: Portable,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let job = self.pool.start_job::<fn(A) -> R, A, R>(f, [arg], Some(1))?;
        Ok(Future {
            job,
            _r: PhantomData,
        })
    }

    /// `f` over the items, results in input order as they are ready (Python's `executor.map`).
    /// The input is read as the results are taken, a window ahead, as for [`Pool::imap`]: an
    /// endless input streams, and an input that panics yields the results before the panic first.
    ///
    /// ```
    /// # procactor::init();
    /// fn square(x: u32) -> u32 { x * x }
    /// let ex = procactor::Executor::new(2)?;
    /// let squares: Vec<u32> = ex.map(square, 0..5)?.collect::<Result<_, _>>()?;
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn map<'a, A, R, I, M>(&self, f: impl Target<A, R, M>, items: I) -> Result<Imap<'a, R>>
    where
        A: Portable,
        R: Portable,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let f: fn(A) -> R = f.into_fn()?;
        self.pool.imap(f, items)
    }

    /// [`map`](Executor::map) whose results must all be ready `timeout` after this call:
    /// past it, the iterator yields [`Error::Timeout`], cancels the rest and ends.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let ex = procactor::Executor::new(1)?;
    /// let mut it = ex.map_timeout(nap, [1, 5_000], Duration::from_millis(500))?;
    /// assert_eq!(it.next().unwrap()?, 1);
    /// assert!(it.next().unwrap().unwrap_err().is_timeout());
    /// assert!(it.next().is_none());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn map_timeout<'a, A, R, I, M>(
        &self,
        f: impl Target<A, R, M>,
        items: I,
        timeout: Duration,
    ) -> Result<Imap<'a, R>>
    where
        A: Portable,
        R: Portable,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let f: fn(A) -> R = f.into_fn()?;
        let deadline = Instant::now() + timeout;
        let feed = self.pool.start_feed(f, items)?;
        Ok(Imap::new(feed, Some((deadline, timeout))))
    }

    /// Stops accepting work. With `cancel_futures`, futures that have not started are
    /// cancelled. With `wait`, returns once the running work is done and the workers exited.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let ex = procactor::Executor::new(1)?;
    /// let futures: Vec<_> = (0..20).map(|_| ex.submit(nap, 50)).collect::<Result<_, _>>()?;
    /// ex.shutdown(true, true);
    /// assert_eq!(futures[0].result()?, 50); // it was running
    /// assert!(futures[19].cancelled());
    /// assert!(matches!(ex.submit(nap, 1), Err(procactor::Error::Closed)));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.pool.core.close();
        if cancel_futures {
            for job in self.pool.core.pending_jobs() {
                job.cancel();
            }
        }
        if wait {
            let _ = self.pool.core.wait_stopped(Wait::Forever);
            self.pool.join_thread();
        }
    }

    /// Stops every worker now with SIGTERM (SIGKILL for those not ended within 3 s), and shuts
    /// the executor down (Python 3.14's `terminate_workers`): running tasks never finish, their
    /// futures and the pending ones fail, and a later `submit` is [`Error::Closed`]. Safe on an
    /// idle, broken or already stopped executor. It returns once the workers are gone; called
    /// from a future's done-callback (the pool's own thread), it returns at once and the
    /// workers stop when the callback returns.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let ex = procactor::Executor::new(1)?;
    /// let f = ex.submit(nap, 60_000)?;
    /// ex.terminate_workers();
    /// assert!(f.result().is_err());
    /// assert!(matches!(ex.submit(nap, 1), Err(procactor::Error::Closed)));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn terminate_workers(&self) {
        self.stop_workers(true);
    }

    /// [`terminate_workers`](Executor::terminate_workers) with SIGKILL (Python 3.14's
    /// `kill_workers`).
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let ex = procactor::Executor::new(1)?;
    /// let f = ex.submit(nap, 60_000)?;
    /// ex.kill_workers();
    /// assert!(f.result().is_err());
    /// ex.kill_workers(); // again: nothing to do
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn kill_workers(&self) {
        self.stop_workers(false);
    }

    fn stop_workers(&self, gently: bool) {
        self.pool.core.close();
        self.pool.core.terminate_with(gently);
        // From a done-callback (the pool's own thread), the stop happens once it returns.
        if self.pool.on_pool_thread() {
            return;
        }
        let _ = self.pool.core.wait_stopped(Wait::Forever);
        self.pool.join_thread();
    }

    /// The number of worker processes.
    ///
    /// ```
    /// # procactor::init();
    /// assert_eq!(procactor::Executor::new(2)?.processes(), 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.pool.processes()
    }

    /// The pids of the live workers.
    ///
    /// ```
    /// # procactor::init();
    /// assert_eq!(procactor::Executor::new(2)?.pids().len(), 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pids(&self) -> Vec<u32> {
        self.pool.pids()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

/// The eventual result of [`Executor::submit`]. Cheap to clone; `.await` works too.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// fn slow(x: u32) -> u32 { std::thread::sleep(Duration::from_millis(100)); x }
/// let ex = procactor::Executor::new(1)?;
/// let f = ex.submit(slow, 9)?;
/// assert!(!f.done());
/// assert_eq!(f.result_timeout(Duration::from_secs(30))?, 9);
/// assert!(f.done() && !f.cancelled());
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "the result arrives only through `result()` or `.await`"]
pub struct Future<R> {
    job: Arc<JobCore>,
    _r: PhantomData<fn() -> R>,
}

impl<R> Clone for Future<R> {
    fn clone(&self) -> Self {
        Future {
            job: self.job.clone(),
            _r: PhantomData,
        }
    }
}

impl<R: DeserializeOwned> Future<R> {
    /// Waits for the result (the task's error, if it failed; [`Error::Cancelled`] if cancelled).
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let ex = procactor::Executor::new(1)?;
    /// assert_eq!(ex.submit(id, 1)?.result()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn result(&self) -> Result<R> {
        self.result_wait(Wait::Forever)
    }

    /// Waits at most `timeout` ([`Error::Timeout`] after; the task goes on).
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let ex = procactor::Executor::new(1)?;
    /// let f = ex.submit(nap, 300)?;
    /// assert!(f.result_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// f.result()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.result_wait(Wait::timeout(timeout))
    }

    fn result_wait(&self, wait: Wait) -> Result<R> {
        let st = self.job.wait_done(wait)?;
        collect_one::<R>(&self.job, &st)
    }

    /// Has it finished (a value, an error, or cancelled)?
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let ex = procactor::Executor::new(1)?;
    /// let f = ex.submit(id, 1)?;
    /// f.result()?;
    /// assert!(f.done());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn done(&self) -> bool {
        self.job.lock().is_done()
    }

    /// Cancels the task if it has not started; true if it is (now) cancelled.
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// let ex = procactor::Executor::new(1)?;
    /// let running = ex.submit(nap, 200)?;
    /// let queued: Vec<_> = (0..5).map(|_| ex.submit(nap, 200)).collect::<Result<_, _>>()?;
    /// assert!(queued[4].cancel());
    /// assert!(matches!(queued[4].result(), Err(procactor::Error::Cancelled)));
    /// running.result()?;
    /// assert!(!running.cancel()); // too late
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.job.cancel()
    }

    /// Was it cancelled?
    ///
    /// ```
    /// # procactor::init();
    /// fn id(x: u8) -> u8 { x }
    /// let ex = procactor::Executor::new(1)?;
    /// let f = ex.submit(id, 1)?;
    /// f.result()?;
    /// assert!(!f.cancelled());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn cancelled(&self) -> bool {
        self.job.was_cancelled()
    }

    /// Runs `callback` when the future finishes (at once, in this thread, if it has). It runs on
    /// the pool's thread otherwise: keep it short, and do not wait on other futures in it.
    ///
    /// ```
    /// # procactor::init();
    /// use std::sync::mpsc;
    /// fn id(x: u8) -> u8 { x }
    /// let ex = procactor::Executor::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// ex.submit(id, 8)?.add_done_callback(move |f| tx.send(f.result().unwrap()).unwrap());
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap(), 8);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn add_done_callback(&self, callback: impl FnOnce(&Future<R>) + Send + 'static)
    where
        R: 'static,
    {
        let me = self.clone();
        self.job.on_done(Box::new(move || callback(&me)));
    }

    /// Did it finish with an error (Python's "raised an exception")? A cancelled future did
    /// not; neither did one that is not done.
    fn raised(&self) -> bool {
        let st = self.job.lock();
        st.is_done() && !st.was_cancelled() && collect_one::<R>(&self.job, &st).is_err()
    }
}

/// `.await` a future from async code: its output is [`Future::result`]'s.
///
/// ```
/// # procactor::init();
/// use std::future::Future as _;
/// use std::task::{Context, Poll, Waker};
/// fn id(x: u8) -> u8 { x }
/// let ex = procactor::Executor::new(1)?;
/// let mut f = ex.submit(id, 6)?;
/// // A tiny executor: poll until ready (a real program would `.await` in its runtime).
/// let mut cx = Context::from_waker(Waker::noop());
/// let out = loop {
///     if let Poll::Ready(v) = std::pin::Pin::new(&mut f).poll(&mut cx) { break v; }
///     std::thread::sleep(std::time::Duration::from_millis(1));
/// };
/// assert_eq!(out?, 6);
/// # Ok::<(), procactor::Error>(())
/// ```
impl<R: DeserializeOwned> std::future::Future for Future<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        if self.job.register_waker(cx.waker()) {
            return Poll::Pending;
        }
        let st = self.job.lock();
        Poll::Ready(collect_one::<R>(&self.job, &st))
    }
}

/// The futures of `futures` with duplicates left out (the same future twice, or two clones of
/// one), first occurrence first: Python's `set(fs)`, in a stable order.
fn distinct<R>(futures: &[Future<R>]) -> Vec<&Future<R>> {
    let mut seen = std::collections::HashSet::with_capacity(futures.len());
    futures
        .iter()
        .filter(|f| seen.insert(Arc::as_ptr(&f.job)))
        .collect()
}

/// Completion notices for a set of futures: each sends its index when it finishes.
fn notices<R: DeserializeOwned>(futures: &[&Future<R>]) -> mpsc::Receiver<usize> {
    let (tx, rx) = mpsc::channel();
    for (i, f) in futures.iter().enumerate() {
        let tx = tx.clone();
        f.job.on_done(Box::new(move || {
            let _ = tx.send(i);
        }));
    }
    rx
}

/// The futures in the order they finish (Python's `as_completed`). A future given twice (or a
/// clone of one given) is yielded once, as in Python.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let ex = procactor::Executor::new(2)?;
/// let futures = vec![ex.submit(nap, 400)?, ex.submit(nap, 10)?];
/// let order: Vec<u64> = procactor::pool::as_completed(&futures).map(|f| f.result().unwrap()).collect();
/// assert_eq!(order, [10, 400]);
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn as_completed<R: DeserializeOwned>(futures: &[Future<R>]) -> AsCompleted<'_, R> {
    let futures = distinct(futures);
    AsCompleted {
        rx: notices(&futures),
        left: futures.len(),
        futures,
    }
}

/// The iterator of [`as_completed`].
#[must_use = "an iterator does nothing unless consumed"]
pub struct AsCompleted<'a, R> {
    futures: Vec<&'a Future<R>>,
    rx: mpsc::Receiver<usize>,
    left: usize,
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = &'a Future<R>;

    fn next(&mut self) -> Option<&'a Future<R>> {
        if self.left == 0 {
            return None;
        }
        let i = self.rx.recv().ok()?;
        self.left -= 1;
        self.futures.get(i).copied()
    }
}

/// [`as_completed`] that gives up `timeout` after this call: then it yields one
/// [`Error::Timeout`] and ends.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let ex = procactor::Executor::new(2)?;
/// let futures = vec![ex.submit(nap, 10)?, ex.submit(nap, 10_000)?];
/// let got: Vec<_> = procactor::pool::as_completed_timeout(&futures, Duration::from_millis(500)).collect();
/// assert_eq!(got.len(), 2);
/// assert_eq!(got[0].as_ref().unwrap().result()?, 10);
/// assert!(got[1].as_ref().unwrap_err().is_timeout());
/// # futures[1].cancel();
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn as_completed_timeout<R: DeserializeOwned>(
    futures: &[Future<R>],
    timeout: Duration,
) -> AsCompletedTimeout<'_, R> {
    AsCompletedTimeout {
        inner: as_completed(futures),
        deadline: Instant::now() + timeout,
        timeout,
    }
}

/// The iterator of [`as_completed_timeout`].
pub struct AsCompletedTimeout<'a, R> {
    inner: AsCompleted<'a, R>,
    deadline: Instant,
    timeout: Duration,
}

impl<'a, R> Iterator for AsCompletedTimeout<'a, R> {
    type Item = Result<&'a Future<R>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.inner.left == 0 {
            return None;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.inner.rx.recv_timeout(left) {
            Ok(i) => {
                self.inner.left -= 1;
                self.inner.futures.get(i).copied().map(Ok)
            }
            Err(_) => {
                self.inner.left = 0;
                Some(Err(Error::Timeout(self.timeout)))
            }
        }
    }
}

/// When [`wait`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReturnWhen {
    /// As soon as any future finishes.
    FirstCompleted,
    /// As soon as any future finishes with an error (a cancelled one does not count: it did
    /// not raise), or when all finish.
    FirstException,
    /// When all futures finish.
    AllCompleted,
}

/// The futures that finished and those that did not, as [`wait`] found them (each future once,
/// however often it was given).
#[derive(Debug)]
pub struct Waited<'a, R> {
    /// Finished: a value, an error, or cancelled.
    pub done: Vec<&'a Future<R>>,
    /// Not finished yet.
    pub not_done: Vec<&'a Future<R>>,
}

impl<R> std::fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Future")
            .field("done", &self.job.lock().is_done())
            .finish()
    }
}

/// Waits until `when` holds for `futures` (Python's `concurrent.futures.wait`). A future given
/// twice is counted, and returned, once.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// use procactor::pool::ReturnWhen;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let ex = procactor::Executor::new(2)?;
/// let futures = vec![ex.submit(nap, 10)?, ex.submit(nap, 2_000)?];
/// let w = procactor::pool::wait(&futures, ReturnWhen::FirstCompleted);
/// assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
/// assert_eq!(w.done[0].result()?, 10);
/// # futures[1].result()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn wait<R: DeserializeOwned>(futures: &[Future<R>], when: ReturnWhen) -> Waited<'_, R> {
    wait_until(futures, when, None)
}

/// [`wait`] for at most `timeout`; then it returns what is done so far.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// use procactor::pool::ReturnWhen;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let ex = procactor::Executor::new(1)?;
/// let futures = vec![ex.submit(nap, 5_000)?];
/// let w = procactor::pool::wait_timeout(&futures, ReturnWhen::AllCompleted, Duration::from_millis(50));
/// assert_eq!(w.not_done.len(), 1);
/// # futures[0].cancel();
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn wait_timeout<R: DeserializeOwned>(
    futures: &[Future<R>],
    when: ReturnWhen,
    timeout: Duration,
) -> Waited<'_, R> {
    wait_until(futures, when, Some(Instant::now() + timeout))
}

fn wait_until<R: DeserializeOwned>(
    futures: &[Future<R>],
    when: ReturnWhen,
    deadline: Option<Instant>,
) -> Waited<'_, R> {
    let futures = distinct(futures);
    // The futures done already send their notices at once.
    let rx = notices(&futures);
    let mut finished = 0;
    let mut raised = false;
    loop {
        let enough = match when {
            ReturnWhen::AllCompleted => finished == futures.len(),
            ReturnWhen::FirstCompleted => finished > 0 || futures.is_empty(),
            ReturnWhen::FirstException => finished == futures.len() || raised,
        };
        if enough {
            break;
        }
        let got = match deadline {
            None => rx.recv().ok(),
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok(),
        };
        let Some(i) = got else {
            break;
        };
        finished += 1;
        raised |= futures[i].raised();
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.done());
    Waited { done, not_done }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("pool", &self.pool)
            .finish()
    }
}

impl std::fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ExecutorBuilder").field(&self.0).finish()
    }
}

impl<R> std::fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("futures", &self.futures.len())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl<R> std::fmt::Debug for AsCompletedTimeout<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedTimeout")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

//! A job: one `map`, one `apply_async` or one `submit`, as the parent sees it. The pool thread
//! delivers its items' raw outcomes here; the user's thread decodes them into `R` (typed code
//! runs where the type is known, and the pool thread never decodes).

use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Panic, Result};
use crate::wire::Wait;

/// What a worker writes for each item it ran (postcard, one after the other). The failure
/// variants do not involve `R`, so a worker without an `R` at hand writes them as
/// `ItemOutcome<()>` and the parent reads them as any `ItemOutcome<R>`.
///
/// `Ok(r)` is the byte [`OK_TAG`] and then `r`: both sides handle that common case by hand
/// (serde's enum path costs several times the decoding of a small `R`).
#[derive(Serialize, Deserialize)]
pub(crate) enum ItemOutcome<R> {
    Ok(R),
    Panicked {
        message: String,
        location: Option<String>,
    },
    Unencodable {
        reason: String,
    },
    Undecodable {
        reason: String,
    },
}

/// postcard's encoding of the variant index of [`ItemOutcome::Ok`].
pub(crate) const OK_TAG: u8 = 0;

/// Item positions (in the job) that one delivery covers, in the order of its outcomes.
#[derive(Clone, Debug)]
pub(crate) enum Items {
    Range(Range<usize>),
    List(Vec<usize>),
}

impl Items {
    pub(crate) fn len(&self) -> usize {
        match self {
            Items::Range(r) => r.len(),
            Items::List(l) => l.len(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let (range, list) = match self {
            Items::Range(r) => (Some(r.clone()), None),
            Items::List(l) => (None, Some(l.iter().copied())),
        };
        range
            .into_iter()
            .flatten()
            .chain(list.into_iter().flatten())
    }
}

/// Why items failed without an outcome from a worker (cheap to copy to every item).
#[derive(Clone, Debug)]
pub(crate) enum Fail {
    Lost {
        pid: u32,
        signal: Option<i32>,
        code: Option<i32>,
    },
    Timeout(Duration),
    Cancelled,
    Init {
        pid: u32,
        message: String,
        location: Option<String>,
    },
    /// The items could not be sent to a worker that is alive (a dying worker's items are
    /// retried instead): the I/O error, as its errno and text.
    Io {
        op: &'static str,
        errno: Option<i32>,
        message: String,
    },
    /// The item could not be encoded (an `imap` encodes its input as it goes).
    Encode {
        type_name: &'static str,
        reason: String,
    },
    /// The pool was closed (or terminated) before the item could be queued.
    Closed,
}

impl Fail {
    pub(crate) fn error(&self, index: usize) -> Error {
        match self.clone() {
            Fail::Lost { pid, signal, code } => Error::WorkerLost {
                index,
                pid,
                signal,
                code,
            },
            Fail::Timeout(d) => Error::Timeout(d),
            Fail::Cancelled => Error::Cancelled,
            Fail::Init {
                pid,
                message,
                location,
            } => Error::InitializerFailed {
                pid,
                panic: Box::new(Panic { message, location }),
            },
            Fail::Io { op, errno, message } => Error::Io {
                op,
                source: match errno {
                    Some(e) => std::io::Error::from_raw_os_error(e),
                    None => std::io::Error::other(message),
                },
            },
            Fail::Encode { type_name, reason } => Error::Encode { type_name, reason },
            Fail::Closed => Error::Closed,
        }
    }

    /// What to fail items with for `e` (an error cannot be cloned to every item; this can).
    pub(crate) fn from_error(e: &Error) -> Fail {
        match e {
            Error::Io { op, source } => Fail::Io {
                op,
                errno: source.raw_os_error(),
                message: source.to_string(),
            },
            Error::Encode { type_name, reason } => Fail::Encode {
                type_name,
                reason: reason.clone(),
            },
            Error::Closed => Fail::Closed,
            Error::Cancelled => Fail::Cancelled,
            Error::Timeout(d) => Fail::Timeout(*d),
            Error::InitializerFailed { pid, panic } => Fail::Init {
                pid: *pid,
                message: panic.message.clone(),
                location: panic.location.clone(),
            },
            other => Fail::Io {
                op: "pool",
                errno: None,
                message: other.to_string(),
            },
        }
    }
}

/// Outcomes for some items of a job.
pub(crate) enum Delivery {
    /// Encoded `ItemOutcome<R>`s from worker `pid`, one per item.
    Ran {
        items: Items,
        bytes: Vec<u8>,
        pid: u32,
    },
    /// Items that never produced an outcome.
    Failed { items: Items, why: Fail },
}

impl Delivery {
    pub(crate) fn items(&self) -> &Items {
        match self {
            Delivery::Ran { items, .. } | Delivery::Failed { items, .. } => items,
        }
    }

    fn len(&self) -> usize {
        self.items().len()
    }

    /// Decodes every item of this delivery, in order, handing `(index, result)` to `out`.
    pub(crate) fn decode<R: DeserializeOwned>(&self, mut out: impl FnMut(usize, ItemResult<R>)) {
        match self {
            Delivery::Failed { items, why } => items
                .iter()
                .for_each(|i| out(i, Err(Box::new(why.error(i))))),
            Delivery::Ran { items, bytes, pid } => match items {
                Items::Range(r) => decode_outcomes(r.clone(), bytes, *pid, out),
                Items::List(l) => decode_outcomes(l.iter().copied(), bytes, *pid, out),
            },
        }
    }
}

/// Decodes one outcome per index from `bytes`.
fn decode_outcomes<R: DeserializeOwned>(
    indices: impl Iterator<Item = usize>,
    bytes: &[u8],
    pid: u32,
    mut out: impl FnMut(usize, ItemResult<R>),
) {
    let mut rest = bytes;
    let mut indices = indices;
    while let Some(index) = indices.next() {
        let decoded = match rest.split_first() {
            Some((&OK_TAG, r)) => postcard::take_from_bytes::<R>(r).map(|(v, tail)| (Ok(v), tail)),
            _ => postcard::take_from_bytes::<ItemOutcome<R>>(rest)
                .map(|(o, tail)| (outcome_result(o, index, pid), tail)),
        };
        match decoded {
            Ok((result, tail)) => {
                rest = tail;
                out(index, result);
            }
            Err(e) => {
                // Nothing after a bad outcome can be located: the rest fail too.
                let reason = format!("a pool result from worker pid {pid}: {e}");
                out(index, Err(Box::new(decode_error::<R>(reason.clone()))));
                for index in indices {
                    out(index, Err(Box::new(decode_error::<R>(reason.clone()))));
                }
                return;
            }
        }
    }
}

fn decode_error<R>(reason: String) -> Error {
    Error::Decode {
        expected: std::any::type_name::<R>(),
        reason,
    }
}

/// One item's result while it travels inside the pool: the error boxed, so that moving results
/// around costs little more than moving `R`.
pub(crate) type ItemResult<R> = std::result::Result<R, Box<Error>>;

#[inline]
fn outcome_result<R>(outcome: ItemOutcome<R>, index: usize, pid: u32) -> ItemResult<R> {
    match outcome {
        ItemOutcome::Ok(r) => Ok(r),
        failed => Err(Box::new(outcome_error(failed, index, pid))),
    }
}

#[cold]
fn outcome_error<R>(outcome: ItemOutcome<R>, index: usize, pid: u32) -> Error {
    match outcome {
        ItemOutcome::Ok(_) => Error::InvalidState("not a failure"),
        ItemOutcome::Panicked { message, location } => Error::TaskPanicked {
            index,
            pid,
            panic: Box::new(Panic { message, location }),
        },
        ItemOutcome::Unencodable { reason } => Error::Encode {
            type_name: std::any::type_name::<R>(),
            reason: format!("task #{index}'s result, in pool worker pid {pid}: {reason}"),
        },
        ItemOutcome::Undecodable { reason } => Error::Decode {
            expected: "a pool task's argument",
            reason: format!("task #{index}, in pool worker pid {pid}: {reason}"),
        },
    }
}

/// A job's shared state: the pool thread delivers, the user's handles wait and decode.
///
/// Most jobs know their items from the start. An `imap` job is open: its items are added as its
/// input is read, and it is sealed when the input ends (only then can it be done).
pub(crate) struct JobCore {
    state: Mutex<JobState>,
    cond: Condvar,
}

pub(crate) struct JobState {
    /// Deliveries not yet taken (an `imap` takes them; an `AsyncResult` keeps them, so that
    /// `get` can be called again).
    pub(crate) deliveries: Vec<Delivery>,
    /// Items resolved so far (delivered, taken or not).
    resolved: usize,
    /// Items in the job so far.
    pub(crate) total: usize,
    /// No more items will be added.
    sealed: bool,
    /// Some run of the job went to a worker: `cancel` is too late.
    started: bool,
    cancelled: bool,
    waiters: usize,
    on_done: Vec<Box<dyn FnOnce() + Send>>,
    wakers: Vec<Waker>,
}

impl JobState {
    /// Was the job cancelled?
    pub(crate) fn was_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Every item resolved (with a value, an error, or cancelled), and no more will come.
    pub(crate) fn is_done(&self) -> bool {
        self.sealed && self.resolved >= self.total
    }
}

impl JobCore {
    pub(crate) fn new(total: usize) -> JobCore {
        JobCore::with(total, true)
    }

    /// A job whose items are added one by one ([`add_item`](JobCore::add_item)) until it is
    /// [`seal`](JobCore::seal)ed.
    pub(crate) fn open() -> JobCore {
        JobCore::with(0, false)
    }

    fn with(total: usize, sealed: bool) -> JobCore {
        JobCore {
            state: Mutex::new(JobState {
                deliveries: Vec::new(),
                resolved: 0,
                total,
                sealed,
                started: false,
                cancelled: false,
                waiters: 0,
                on_done: Vec::new(),
                wakers: Vec::new(),
            }),
            cond: Condvar::new(),
        }
    }

    /// Items in the job so far.
    pub(crate) fn total(&self) -> usize {
        self.lock().total
    }

    /// Adds an item to an open job; its index, or `None` if the job is over (cancelled).
    pub(crate) fn add_item(&self) -> Option<usize> {
        let mut st = self.lock();
        if st.sealed {
            return None;
        }
        st.total += 1;
        Some(st.total - 1)
    }

    /// Will no more items be added?
    pub(crate) fn is_sealed(&self) -> bool {
        self.lock().sealed
    }

    /// No more items: the job is done once those it has resolved.
    pub(crate) fn seal(&self) {
        let mut st = self.lock();
        if !st.sealed {
            st.sealed = true;
            self.after_change(st);
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds outcomes; wakes waiters, and runs the done-callbacks when the last item resolved.
    pub(crate) fn deliver(&self, d: Delivery) {
        let mut st = self.lock();
        if st.is_done() {
            return; // cancelled already: late results go nowhere
        }
        st.resolved += d.len();
        st.deliveries.push(d);
        self.after_change(st);
    }

    fn after_change(&self, mut st: MutexGuard<'_, JobState>) {
        let done = st.is_done();
        let (callbacks, wakers) = if done {
            (
                std::mem::take(&mut st.on_done),
                std::mem::take(&mut st.wakers),
            )
        } else {
            (Vec::new(), std::mem::take(&mut st.wakers))
        };
        // A notify is a syscall even with nobody waiting: only when someone is.
        if st.waiters > 0 {
            self.cond.notify_all();
        }
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
        for cb in callbacks {
            // A callback's panic must not take the pool thread down with it.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)).is_err() {
                log::error!(target: "procactor::pool", "a done-callback panicked");
            }
        }
    }

    /// Marks the job as having a run on a worker; false if it was cancelled (skip the run).
    pub(crate) fn start(&self) -> bool {
        let mut st = self.lock();
        if st.cancelled || st.is_done() {
            return false;
        }
        st.started = true;
        true
    }

    /// Was the job cancelled?
    pub(crate) fn was_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Is the job over (every item resolved, or cancelled)?
    pub(crate) fn is_finished(&self) -> bool {
        let st = self.lock();
        st.cancelled || st.is_done()
    }

    /// Cancels the job if no run of it has started: its items fail with `Cancelled`.
    pub(crate) fn cancel(&self) -> bool {
        let st = self.lock();
        if st.started || st.is_done() {
            return st.cancelled;
        }
        self.cancel_locked(st);
        true
    }

    /// Cancels whatever has not resolved yet, started or not (an `imap` dropped early,
    /// `terminate`): unresolved items fail with `Cancelled`.
    pub(crate) fn abandon(&self) {
        let st = self.lock();
        if !st.is_done() {
            self.cancel_locked(st);
        }
    }

    fn cancel_locked(&self, mut st: MutexGuard<'_, JobState>) {
        st.cancelled = true;
        st.sealed = true;
        let total = st.total;
        let mut seen = vec![false; total];
        for d in &st.deliveries {
            match d {
                Delivery::Ran { items, .. } | Delivery::Failed { items, .. } => {
                    items.iter().for_each(|i| seen[i] = true)
                }
            }
        }
        let rest: Vec<usize> = (0..total).filter(|&i| !seen[i]).collect();
        st.resolved = total;
        st.deliveries.push(Delivery::Failed {
            items: Items::List(rest),
            why: Fail::Cancelled,
        });
        self.after_change(st);
    }

    /// Runs `cb` once every item resolved (at once if they have).
    pub(crate) fn on_done(&self, cb: Box<dyn FnOnce() + Send>) {
        let mut st = self.lock();
        if st.is_done() {
            drop(st);
            cb();
        } else {
            st.on_done.push(cb);
        }
    }

    /// Registers an async waker, unless the job is done (then false: poll again).
    pub(crate) fn register_waker(&self, waker: &Waker) -> bool {
        let mut st = self.lock();
        if st.is_done() {
            return false;
        }
        if !st.wakers.iter().any(|w| w.will_wake(waker)) {
            st.wakers.push(waker.clone());
        }
        true
    }

    /// Waits until `ready(state)` holds or `wait` runs out (`Err(Timeout)`).
    pub(crate) fn wait_until<'a>(
        &'a self,
        wait: Wait,
        mut ready: impl FnMut(&JobState) -> bool,
    ) -> Result<MutexGuard<'a, JobState>> {
        let mut st = self.lock();
        if ready(&st) {
            return Ok(st);
        }
        // Counted for the whole wait: deliveries notify only while someone waits.
        st.waiters += 1;
        let (mut st, ok) = wait_on(&self.cond, st, wait, &mut ready);
        st.waiters -= 1;
        if ok {
            Ok(st)
        } else {
            Err(wait.expired())
        }
    }

    /// Waits for the whole job.
    pub(crate) fn wait_done(&self, wait: Wait) -> Result<MutexGuard<'_, JobState>> {
        self.wait_until(wait, |st| st.is_done())
    }
}

/// Waits on `cond` until `ready` holds or `wait` runs out; the guard, and whether `ready` holds.
pub(crate) fn wait_on<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    wait: Wait,
    mut ready: impl FnMut(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    let guard = match wait {
        Wait::No => guard,
        Wait::Forever => cond
            .wait_while(guard, |t| !ready(t))
            .unwrap_or_else(|p| p.into_inner()),
        Wait::Until { deadline, .. } => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            cond.wait_timeout_while(guard, left, |t| !ready(t))
                .unwrap_or_else(|p| p.into_inner())
                .0
        }
    };
    let ok = ready(&guard);
    (guard, ok)
}

/// Decodes a finished job's results in item order; the first failure (by index) is the error.
pub(crate) fn collect_all<R: DeserializeOwned>(_job: &JobCore, st: &JobState) -> Result<Vec<R>> {
    let mut slots: Vec<Option<Result<R>>> = Vec::with_capacity(st.total);
    slots.resize_with(st.total, || None);
    for d in &st.deliveries {
        d.decode::<R>(|i, r| {
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(r.map_err(|e| *e));
            }
        });
    }
    slots
        .into_iter()
        .map(|s| s.unwrap_or(Err(Error::Cancelled)))
        .collect()
}

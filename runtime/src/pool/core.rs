//! The parent side of a pool: the workers, the queue of runs waiting for one, dispatch, and the
//! pool thread, which reads the workers' reports, replaces dead workers, blames the one item each
//! death cost, and kills workers whose task ran past its deadline.
//!
//! Each worker has its own channel and at most two batches in flight (one running, one queued
//! behind it, so a worker never idles for a round trip), one when batches are long (so that
//! uneven tasks do not wait behind a long one while another worker idles). Because the pool
//! knows exactly what each worker holds, a death loses one item, never a hang.

use procactor_os::code::SignedCode;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bootstrap::StartMethod;
use crate::error::{Error, ExitReason, Panic, Result};
use crate::pool::blame::{self, Cursor};
use crate::pool::job::{wait_on, Delivery, Fail, Items, JobCore};
use crate::pool::worker::{
    self, BatchHeader, Board, CodePair, InitCall, Report, RunCode, RunHeader, WorkerArgs,
};
use crate::process::{Process, ProcessHandle};
use crate::shm::Shared;
use crate::sys::{self, Poller};
use crate::wire::{self, Channel, Fd, Wait, KIND_VALUE};

/// A batch longer than this (estimated) is not queued behind another one.
const LONG_BATCH: Duration = Duration::from_millis(20);
/// How long a worker may leave its first batch unstarted before an idle one takes it back.
const UNSTARTED_GRACE: Duration = Duration::from_millis(1);
/// Independent tasks are grouped into batches of about this much work.
const BATCH_WORK: Duration = Duration::from_millis(1);
const MAX_BATCH_ITEMS: usize = 1024;
/// A batch's payload stops growing past this (a single run may be larger).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// How long a new worker may take to start and run its initializer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What a pool is built with.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: Option<StartMethod>,
    pub(crate) init: Option<InitSpec>,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) idle_spin: Duration,
}

/// An initializer, kept to start replacement workers.
pub(crate) struct InitSpec {
    pub(crate) entry: SignedCode,
    pub(crate) func: SignedCode,
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

impl InitSpec {
    fn call(&self) -> Result<InitCall> {
        let fds = self
            .fds
            .iter()
            .map(|fd| sys::dup(fd.as_fd()).map(Fd))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("dup", e))?;
        Ok(InitCall {
            entry: self.entry,
            func: self.func,
            bytes: self.bytes.clone(),
            fds,
        })
    }
}

/// Items of one job encoded together: a `map` chunk, or one task. Each item's bytes follow its
/// length (see `items`).
pub(crate) struct RunData {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: u32,
    pub(crate) fds: Vec<OwnedFd>,
}

/// A run waiting for a worker: which function, which items, which of them still to do.
pub(crate) struct Run {
    pub(crate) job: Arc<JobCore>,
    pub(crate) code: CodePair,
    pub(crate) data: Arc<RunData>,
    /// The job index of the run's first item.
    pub(crate) base: usize,
    /// Ordinals already done (or blamed) by an earlier attempt, ascending.
    pub(crate) skip: Vec<u32>,
    pub(crate) chunk: bool,
    /// Deaths of workers that held it, in a row, that named none of its items (see `blame`).
    pub(crate) strikes: u32,
}

impl Run {
    fn runnable(&self) -> usize {
        self.data.count as usize - self.skip.len()
    }

    /// The ordinals this run will run, in order.
    fn ordinals(&self) -> Vec<u32> {
        let mut skip = self.skip.iter().peekable();
        (0..self.data.count)
            .filter(|o| skip.next_if_eq(&o).is_none())
            .collect()
    }

    /// The same run with only `keep` (ascending ordinals) left to do.
    fn retry(&self, keep: &[u32], strikes: u32) -> Run {
        let mut k = keep.iter().peekable();
        Run {
            job: self.job.clone(),
            code: self.code.clone(),
            data: self.data.clone(),
            base: self.base,
            skip: (0..self.data.count)
                .filter(|o| k.next_if_eq(&o).is_none())
                .collect(),
            chunk: self.chunk,
            strikes,
        }
    }

    /// Fails every item this run has left to do.
    fn fail(&self, why: Fail) -> (Arc<JobCore>, Delivery) {
        let items = self
            .ordinals()
            .into_iter()
            .map(|o| self.base + o as usize)
            .collect();
        (
            self.job.clone(),
            Delivery::Failed {
                items: Items::List(items),
                why,
            },
        )
    }
}

/// A run on a worker, and how many of its items were reported.
struct Sent {
    run: Run,
    order: Vec<u32>,
    done: usize,
}

struct InFlight {
    id: u32,
    runs: Vec<Sent>,
    left: usize,
    sent: Instant,
}

struct Worker {
    handle: ProcessHandle<()>,
    chan: Arc<Channel>,
    board: Shared<Board>,
    inflight: VecDeque<InFlight>,
    ready: bool,
    /// Runs given to it (for `max_tasks_per_child`).
    tasks: usize,
    retiring: bool,
    /// The board's cursor when the pool killed it for running past the task timeout.
    timed_out: Option<Cursor>,
    /// The code pairs it was sent whole and keeps (see `RunCode`), in its order.
    codes: Vec<CodePair>,
}

impl Worker {
    /// How to name a run's code to this worker: by index if it has the pair already.
    fn run_code(&mut self, code: &CodePair) -> RunCode {
        let (entry, func) = code.get();
        match self.codes.iter().position(|c| c.same(code)) {
            Some(n) => RunCode::Known(n as u32),
            None if self.codes.len() < worker::CODE_TABLE => {
                self.codes.push(code.clone());
                RunCode::Keep(entry, func)
            }
            None => RunCode::Once(entry, func),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Running,
    /// No new work; the workers end once the work in hand is done.
    Closed,
    Terminating,
    Stopped,
}

struct State {
    pending: VecDeque<Run>,
    workers: Vec<Option<Worker>>,
    phase: Phase,
    /// How a terminate stops the workers: SIGKILL, or SIGTERM first (then SIGKILL for a worker
    /// that does not end in time).
    gently: bool,
    /// A replacement worker's initializer failed: every task fails with this from then on.
    broken: Option<Fail>,
    next_batch: u32,
    /// Moving average of one item's run time in a worker, in nanoseconds (None: no task has
    /// reported yet).
    item_ns: Option<f64>,
    buf: Vec<u8>,
}

pub(crate) struct Core {
    state: Mutex<State>,
    /// Wakes the pool thread (close, terminate).
    wake: OwnedFd,
    stopped: Condvar,
    config: Config,
}

/// Outcomes to hand to jobs once the state lock is released (done-callbacks run user code).
type Out = Vec<(Arc<JobCore>, Delivery)>;

fn deliver_all(out: Out) {
    for (job, d) in out {
        job.deliver(d);
    }
}

impl Core {
    /// Starts the workers, waits until each ran its initializer, and starts the pool thread.
    pub(crate) fn start(config: Config) -> Result<(Arc<Core>, std::thread::JoinHandle<()>)> {
        let wake = sys::eventfd().map_err(|e| Error::io("eventfd", e))?;
        let core = Arc::new(Core {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                workers: Vec::new(),
                phase: Phase::Running,
                gently: false,
                broken: None,
                next_batch: 1,
                item_ns: None,
                buf: Vec::new(),
            }),
            wake,
            stopped: Condvar::new(),
            config,
        });
        let mut started = Vec::new();
        let result = (|| {
            for _ in 0..core.config.processes {
                started.push(core.start_worker()?);
            }
            for w in &mut started {
                core.await_ready(w)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            for w in &started {
                let _ = w.handle.kill();
                let _ = w.handle.join_timeout(READY_TIMEOUT);
            }
            return Err(e);
        }
        core.lock().workers = started.into_iter().map(Some).collect();
        let thread_core = core.clone();
        let thread = crate::per_process::spawn_thread("procactor-pool", move || {
                let core = thread_core.clone();
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    thread_core.pool_thread()
                }));
                if run.is_err() {
                    // A bug, not a user's fault: say so, and fail everything rather than
                    // leave callers waiting for reports nobody reads.
                    log::error!(target: "procactor::pool", "the pool thread panicked; terminating the pool");
                    core.stop_all();
                }
            })
            .map_err(|e| Error::io("spawn the pool thread", e))?;
        Ok((core, thread))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_worker(&self) -> Result<Worker> {
        let (ours, theirs) = Channel::pair()?;
        // Workers report large outcomes in memory files: the pool thread never waits on one.
        let ours = ours.files_only();
        let board = Shared::<Board>::new("procactor-pool-board", 0)?;
        let init = self.config.init.as_ref().map(InitSpec::call).transpose()?;
        let args = WorkerArgs {
            chan: Fd(theirs.into_fd()),
            board: board.clone(),
            init,
            timed: self.config.task_timeout.is_some(),
            idle_spin: self.config.idle_spin,
        };
        let mut p = Process::new(worker::worker_main, args)
            .name("PoolWorker")
            .daemon(true)
            .internal();
        if let Some(m) = self.config.method {
            p = p.start_method(m);
        }
        let handle = p.start()?;
        Ok(Worker {
            handle,
            chan: Arc::new(ours),
            board,
            inflight: VecDeque::new(),
            ready: false,
            tasks: 0,
            retiring: false,
            timed_out: None,
            codes: Vec::new(),
        })
    }

    /// Waits for a new worker's first report (before the pool thread exists).
    fn await_ready(&self, w: &mut Worker) -> Result<()> {
        let report = w.chan.recv(Wait::timeout(READY_TIMEOUT), |f| {
            wire::decode_prefix::<Report>(f.payload, Vec::new()).map(|(r, _)| r)
        });
        match report {
            Ok(Report::Ready) => {
                w.ready = true;
                Ok(())
            }
            Ok(Report::InitFailed { message, location }) => Err(Error::InitializerFailed {
                pid: w.handle.pid(),
                panic: Box::new(Panic { message, location }),
            }),
            Ok(Report::Done { .. }) => Err(Error::Start {
                name: "PoolWorker".into(),
                reason: "the worker reported before it was ready".into(),
            }),
            Err(Error::Disconnected) => Err(w.handle.join().err().unwrap_or(Error::Start {
                name: "PoolWorker".into(),
                reason: "the worker ended before it was ready".into(),
            })),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn processes(&self) -> usize {
        self.config.processes
    }

    /// `Ok` if the pool takes work: not closed, not broken.
    pub(crate) fn check_open(&self) -> Result<()> {
        Self::open_for_work(&self.lock())
    }

    fn open_for_work(st: &State) -> Result<()> {
        if st.phase != Phase::Running {
            return Err(Error::Closed);
        }
        if let Some(why) = &st.broken {
            return Err(why.error(0));
        }
        Ok(())
    }

    /// Queues runs (all of one job, or several) and hands what it can to idle workers.
    pub(crate) fn submit(&self, runs: Vec<Run>) -> Result<()> {
        let mut st = self.lock();
        Self::open_for_work(&st)?;
        st.pending.extend(runs);
        let mut out = Out::new();
        self.dispatch(&mut st, &mut out);
        drop(st);
        deliver_all(out);
        Ok(())
    }

    pub(crate) fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// No more submissions; the workers end once the work in hand is done.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
        }
        drop(st);
        sys::eventfd_signal(self.wake.as_fd());
    }

    /// Kills the workers; everything not finished fails with `Cancelled`.
    pub(crate) fn terminate(&self) {
        self.terminate_with(false);
    }

    /// [`terminate`](Core::terminate), with SIGTERM first if `gently`.
    pub(crate) fn terminate_with(&self, gently: bool) {
        let mut st = self.lock();
        if st.phase != Phase::Stopped {
            st.phase = Phase::Terminating;
            st.gently = gently;
        }
        drop(st);
        sys::eventfd_signal(self.wake.as_fd());
    }

    /// Waits until the pool thread stopped every worker.
    pub(crate) fn wait_stopped(&self, wait: Wait) -> Result<()> {
        let st = self.lock();
        let (_st, stopped) = wait_on(&self.stopped, st, wait, |st| st.phase == Phase::Stopped);
        if stopped {
            Ok(())
        } else {
            Err(wait.expired())
        }
    }

    /// The jobs of the runs waiting for a worker.
    pub(crate) fn pending_jobs(&self) -> Vec<Arc<JobCore>> {
        let st = self.lock();
        let mut jobs: Vec<Arc<JobCore>> = st.pending.iter().map(|r| r.job.clone()).collect();
        jobs.dedup_by(|a, b| Arc::ptr_eq(a, b));
        jobs
    }

    /// The pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let st = self.lock();
        st.workers
            .iter()
            .flatten()
            .map(|w| w.handle.pid())
            .collect()
    }

    /// Hands batches to workers with room, as long as there is work. Items that could not be
    /// sent go to `out`, to be delivered once the lock is released.
    fn dispatch(&self, st: &mut State, out: &mut Out) {
        if st.broken.is_some() || st.phase == Phase::Terminating || st.phase == Phase::Stopped {
            return;
        }
        loop {
            while st.pending.front().is_some_and(|r| r.job.is_finished()) {
                st.pending.pop_front();
            }
            let Some(front) = st.pending.front() else {
                // Nothing waits: an idle worker takes back a batch queued behind a running one.
                if steal_for_idle(st) {
                    continue;
                }
                return;
            };
            // Unknown cost: a chunk is taken for short (queued behind another).
            let est =
                st.item_ns.unwrap_or(0.0) * if front.chunk { front.runnable() } else { 1 } as f64;
            let long = est > LONG_BATCH.as_nanos() as f64;
            let candidates = st
                .workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| Some((i, w.as_ref()?)))
                .filter(|(_, w)| w.ready && !w.retiring);
            let ready = candidates.clone().count();
            let Some((slot, load)) = candidates
                .map(|(i, w)| (i, w.inflight.len()))
                .min_by_key(|&(_, n)| n)
            else {
                return;
            };
            if load >= 2 || (load >= 1 && long) {
                return;
            }
            let allowance = self.config.max_tasks.map(|max| {
                let w = st.workers[slot].as_ref().map_or(0, |w| w.tasks);
                max.saturating_sub(w).max(1)
            });
            let batch = take_batch(st, ready, allowance);
            if batch.is_empty() {
                continue;
            }
            self.send_batch(st, slot, batch, out);
        }
    }

    fn send_batch(&self, st: &mut State, slot: usize, runs: Vec<Run>, out: &mut Out) {
        let id = st.next_batch;
        st.next_batch = st.next_batch.wrapping_add(1).max(1);
        let Some(w) = st.workers[slot].as_mut() else {
            return;
        };
        // The pairs this batch adds to the worker's table: taken back if it does not go.
        let known = w.codes.len();
        let header = BatchHeader {
            id,
            runs: runs
                .iter()
                .map(|r| RunHeader {
                    code: w.run_code(&r.code),
                    count: r.data.count,
                    len: r.data.bytes.len() as u32,
                    nfds: r.data.fds.len() as u32,
                    skip: r.skip.clone(),
                    chunk: r.chunk,
                })
                .collect(),
        };
        let mut buf = std::mem::take(&mut st.buf);
        buf.clear();
        let fds: Vec<RawFd> = runs
            .iter()
            .flat_map(|r| r.data.fds.iter().map(|f| f.as_raw_fd()))
            .collect();
        let sent = wire::encode(&header, &mut buf).and_then(|_| {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(runs.len() + 1);
            parts.push(&buf);
            parts.extend(runs.iter().map(|r| &r.data.bytes[..]));
            let w = st.workers[slot].as_ref().ok_or(Error::Disconnected)?;
            // Detached: never wait for a worker to read (it may be writing to us).
            let fp = wire::fingerprint::<BatchHeader>();
            w.chan.send_parts_detached(KIND_VALUE, fp, &parts, &fds)
        });
        buf.clear();
        st.buf = buf;
        let Some(w) = st.workers[slot].as_mut() else {
            return;
        };
        if sent.is_err() {
            w.codes.truncate(known);
        }
        match sent {
            Ok(()) => {}
            Err(Error::Disconnected) => {
                // The worker is dying: the pool thread sees its channel end, and replaces it.
                // Until then it takes no work; the runs wait for another worker.
                w.ready = false;
                for r in runs.into_iter().rev() {
                    st.pending.push_front(r);
                }
                return;
            }
            Err(e) => {
                // The worker is fine but this batch cannot go (no memory, no descriptors...):
                // sending it again would fail again, so its items fail with the error, and the
                // worker stays ready for other work.
                log::error!(target: "procactor::pool", "could not send a batch to a pool worker: {e}");
                let why = Fail::from_error(&e);
                out.extend(runs.iter().map(|r| r.fail(why.clone())));
                return;
            }
        }
        w.tasks += runs.len();
        let left = runs.iter().map(Run::runnable).sum();
        let runs = runs
            .into_iter()
            .map(|run| Sent {
                order: if run.skip.is_empty() {
                    Vec::new()
                } else {
                    run.ordinals()
                },
                run,
                done: 0,
            })
            .collect();
        w.inflight.push_back(InFlight {
            id,
            runs,
            left,
            sent: Instant::now(),
        });
        if self.config.max_tasks.is_some_and(|max| w.tasks >= max) {
            // Retire: the worker finishes what it holds, reads EOF and exits; it is replaced.
            w.retiring = true;
            sys::shutdown_write(w.chan.as_fd());
        }
    }

    /// The pool thread: reports, deaths, deadlines, close and terminate.
    fn pool_thread(self: Arc<Self>) {
        let mut poller = match Poller::new() {
            Ok(p) => p,
            Err(e) => {
                log::error!(target: "procactor::pool", "pool thread: epoll: {e}");
                self.stop_all();
                return;
            }
        };
        let _ = poller.add(self.wake.as_fd(), 0);
        let mut chans: Vec<Option<Arc<Channel>>> = Vec::new();
        {
            let st = self.lock();
            for (i, w) in st.workers.iter().enumerate() {
                let chan = w.as_ref().map(|w| w.chan.clone());
                if let Some(c) = &chan {
                    let _ = poller.add(c.as_fd(), i as u64 + 1);
                }
                chans.push(chan);
            }
        }
        let mut ready = Vec::new();
        let mut frame = Vec::new();
        loop {
            let next = self.check_deadlines();
            if let Err(e) = poller.wait(next, &mut ready) {
                log::error!(target: "procactor::pool", "pool thread: epoll_wait: {e}");
                self.stop_all();
                return;
            }
            for &token in &ready {
                if token == 0 {
                    sys::eventfd_drain(self.wake.as_fd());
                    continue;
                }
                let slot = token as usize - 1;
                let Some(chan) = chans.get(slot).cloned().flatten() else {
                    continue;
                };
                if !self.read_reports(slot, &chan, &mut frame) {
                    poller.remove(chan.as_fd());
                    chans[slot] = None;
                    if let Some(new) = self.worker_died(slot) {
                        let _ = poller.add(new.as_fd(), token);
                        chans[slot] = Some(new);
                    }
                }
            }
            match self.phase() {
                Phase::Terminating => {
                    self.stop_all();
                    return;
                }
                Phase::Closed if self.wind_down() => return,
                _ => {}
            }
        }
    }

    /// Reads every report waiting on a worker's channel; false when the worker is gone.
    fn read_reports(&self, slot: usize, chan: &Channel, frame: &mut Vec<u8>) -> bool {
        loop {
            let mut tail: Option<Vec<u8>> = None;
            let got = chan.recv_large_into(Wait::No, frame, |f| {
                let (report, rest) = wire::decode_prefix::<Report>(f.payload, Vec::new())?;
                tail = Some(rest.to_vec());
                Ok(report)
            });
            match got {
                Ok(report) => self.on_report(slot, report, tail.unwrap_or_default()),
                Err(Error::Timeout(_)) => return true,
                Err(Error::Disconnected) => return false,
                Err(e) => {
                    // Garbage from a worker: it cannot be trusted with more work.
                    log::error!(target: "procactor::pool", "pool worker sent garbage: {e}");
                    let st = self.lock();
                    if let Some(w) = st.workers[slot].as_ref() {
                        let _ = w.handle.kill();
                    }
                    return true;
                }
            }
        }
    }

    fn on_report(&self, slot: usize, report: Report, mut tail: Vec<u8>) {
        let mut st = self.lock();
        let mut out = Out::new();
        match report {
            Report::Ready => {
                if let Some(w) = st.workers[slot].as_mut() {
                    w.ready = true;
                }
            }
            Report::InitFailed { message, location } => {
                let pid = st.workers[slot].as_ref().map_or(0, |w| w.handle.pid());
                log::error!(
                    target: "procactor::pool",
                    "a replacement pool worker's initializer panicked ({message}); \
                     the pool fails every task from now on"
                );
                st.broken = Some(Fail::Init {
                    pid,
                    message,
                    location,
                });
                fail_pending(&mut st, &mut out);
            }
            Report::Done {
                batch,
                busy_ns,
                segments,
            } => {
                let pid = st.workers[slot].as_ref().map_or(0, |w| w.handle.pid());
                let mut items_done = 0usize;
                if let Some(w) = st.workers[slot].as_mut() {
                    let Some(flight) = w.inflight.iter_mut().find(|f| f.id == batch) else {
                        return;
                    };
                    let mut offset = 0usize;
                    for seg in segments {
                        let Some(sent) = flight.runs.get_mut(seg.run as usize) else {
                            break;
                        };
                        let (count, len) = (seg.count as usize, seg.len as usize);
                        let Some(bytes) = tail.get(offset..offset + len) else {
                            break;
                        };
                        // The usual case, one segment that is the whole tail: move it.
                        let bytes = if offset == 0 && len == tail.len() {
                            std::mem::take(&mut tail)
                        } else {
                            bytes.to_vec()
                        };
                        offset += len;
                        let count = count.min(sent.run.runnable() - sent.done);
                        let base = sent.run.base;
                        let items = if sent.order.is_empty() {
                            Items::Range(base + sent.done..base + sent.done + count)
                        } else {
                            Items::List(
                                sent.order[sent.done..sent.done + count]
                                    .iter()
                                    .map(|&o| base + o as usize)
                                    .collect(),
                            )
                        };
                        sent.done += count;
                        if count > 0 {
                            sent.run.strikes = 0;
                        }
                        flight.left -= count;
                        items_done += count;
                        out.push((sent.run.job.clone(), Delivery::Ran { items, bytes, pid }));
                    }
                    while w.inflight.front().is_some_and(|f| f.left == 0) {
                        w.inflight.pop_front();
                    }
                }
                if items_done > 0 {
                    let per_item = busy_ns as f64 / items_done as f64;
                    st.item_ns = Some(match st.item_ns {
                        Some(avg) => 0.5 * avg + 0.5 * per_item,
                        None => per_item,
                    });
                }
            }
        }
        self.dispatch(&mut st, &mut out);
        drop(st);
        deliver_all(out);
    }

    /// A worker's channel ended: reap it, blame the item it was running, give the rest of its
    /// work to others, and start a replacement. Returns the replacement's channel.
    fn worker_died(&self, slot: usize) -> Option<Arc<Channel>> {
        let w = self.lock().workers[slot].take()?;
        let pid = w.handle.pid();
        let (signal, code) = match w.handle.join_timeout(READY_TIMEOUT) {
            Ok(()) => (None, None),
            Err(e) => match e.exit_reason() {
                Some(&ExitReason::Killed { signal }) => (Some(signal), None),
                Some(&ExitReason::Exited { code }) => (None, Some(code)),
                _ => (None, Some(-1)),
            },
        };
        let normal = signal.is_none() && code.is_none() && w.timed_out.is_none();
        let cursor = w
            .timed_out
            .unwrap_or_else(|| Cursor::from_word(w.board.cursor.load(Ordering::Acquire)));
        let lost = Fail::Lost { pid, signal, code };
        let why = match (w.timed_out, self.config.task_timeout) {
            (Some(_), Some(t)) => Fail::Timeout(t),
            _ => lost.clone(),
        };
        if !normal {
            let how = match (&why, signal, code) {
                (Fail::Timeout(t), _, _) => {
                    format!("was killed: a task ran past its {t:?} timeout")
                }
                (_, Some(s), _) => crate::error::ExitReason::Killed { signal: s }.to_string(),
                (_, None, Some(c)) => format!("exited with code {c}"),
                _ => "ended".to_string(),
            };
            log::warn!(target: "procactor::pool", "pool worker pid {pid} {how}; replacing it");
        }
        // What it held and had not reported, in the order it runs them.
        let mut held = Vec::new();
        let mut left = Vec::new();
        for flight in w.inflight {
            let mut at = Cursor::new(flight.id, 0);
            for sent in flight.runs {
                let ordinals = if sent.order.is_empty() {
                    sent.run.ordinals()
                } else {
                    sent.order.clone()
                };
                let (start, len) = (at, ordinals.len() as u32);
                at = at.plus(len);
                if sent.done < ordinals.len() {
                    held.push(blame::Held {
                        pending: start.plus(sent.done as u32)..start.plus(len),
                        strikes: sent.run.strikes,
                    });
                    left.push((sent.run, ordinals[sent.done..].to_vec()));
                }
            }
        }
        let verdict = blame::blame((!normal).then_some(cursor), &held);
        let mut out = Out::new();
        let mut retry = Vec::new();
        for (i, ((run, mut ordinals), strikes)) in left.into_iter().zip(verdict.strikes).enumerate()
        {
            if let Some((_, k)) = verdict.blamed.filter(|&(r, _)| r == i) {
                let o = ordinals.remove(k as usize);
                let why = if verdict.named {
                    why.clone()
                } else {
                    lost.clone()
                };
                out.push((
                    run.job.clone(),
                    Delivery::Failed {
                        items: Items::List(vec![run.base + o as usize]),
                        why,
                    },
                ));
            }
            if !ordinals.is_empty() {
                retry.push(run.retry(&ordinals, strikes));
            }
        }
        let mut st = self.lock();
        for r in retry.into_iter().rev() {
            st.pending.push_front(r);
        }
        let has_work =
            !st.pending.is_empty() || st.workers.iter().flatten().any(|w| !w.inflight.is_empty());
        let replace = st.broken.is_none()
            && match st.phase {
                Phase::Running => true,
                Phase::Closed => has_work,
                _ => false,
            };
        if st.broken.is_some() {
            fail_pending(&mut st, &mut out);
        }
        drop(st);
        deliver_all(out);
        if !replace {
            return None;
        }
        match self.start_worker() {
            Ok(new) => {
                let chan = new.chan.clone();
                self.lock().workers[slot] = Some(new);
                Some(chan)
            }
            Err(e) => {
                log::error!(target: "procactor::pool", "could not replace a pool worker: {e}");
                let mut st = self.lock();
                if st.workers.iter().all(Option::is_none) {
                    // No worker left and none can start: nothing would ever run.
                    st.broken = Some(Fail::Lost { pid, signal, code });
                    let mut out = Out::new();
                    fail_pending(&mut st, &mut out);
                    drop(st);
                    deliver_all(out);
                }
                None
            }
        }
    }

    /// Kills workers whose item ran past the task timeout; when to check next.
    fn check_deadlines(&self) -> Option<Instant> {
        let timeout = self.config.task_timeout?;
        let limit = timeout.as_nanos() as u64;
        let now = sys::monotonic_ns();
        let mut next = now + limit;
        let mut st = self.lock();
        for w in st.workers.iter_mut().flatten() {
            if w.timed_out.is_some() {
                continue;
            }
            let cursor = Cursor::from_word(w.board.cursor.load(Ordering::Acquire));
            let started = w.board.started_ns.load(Ordering::Relaxed);
            if started == 0 || w.inflight.is_empty() {
                continue;
            }
            if now.saturating_sub(started) >= limit {
                let _ = w.handle.kill();
                w.timed_out = Some(cursor);
            } else {
                next = next.min(started + limit);
            }
        }
        Some(Instant::now() + Duration::from_nanos(next.saturating_sub(now)))
    }

    /// After `close`: once no work is left, ends the workers; true when all are gone.
    fn wind_down(&self) -> bool {
        let mut st = self.lock();
        let busy =
            !st.pending.is_empty() || st.workers.iter().flatten().any(|w| !w.inflight.is_empty());
        if busy {
            return false;
        }
        for w in st.workers.iter_mut().flatten() {
            if !w.retiring {
                w.retiring = true;
                sys::shutdown_write(w.chan.as_fd());
            }
        }
        if st.workers.iter().any(Option::is_some) {
            return false;
        }
        st.phase = Phase::Stopped;
        self.stopped.notify_all();
        true
    }

    /// Kills and reaps every worker; everything unfinished fails with `Cancelled`.
    fn stop_all(&self) {
        let mut st = self.lock();
        st.phase = Phase::Terminating;
        let workers: Vec<Worker> = st.workers.iter_mut().filter_map(Option::take).collect();
        let mut jobs: Vec<Arc<JobCore>> = st.pending.drain(..).map(|r| r.job).collect();
        let gently = st.gently;
        drop(st);
        for w in &workers {
            let _ = if gently {
                w.handle.terminate()
            } else {
                w.handle.kill()
            };
        }
        // One deadline for all after SIGTERM: then SIGKILL for whoever is left.
        let term_deadline = std::time::Instant::now() + TERM_GRACE;
        for w in workers {
            let grace = term_deadline.saturating_duration_since(std::time::Instant::now());
            let wait = if gently { grace } else { READY_TIMEOUT };
            if w.handle.join_timeout(wait).is_err() && gently {
                let _ = w.handle.kill();
                let _ = w.handle.join_timeout(READY_TIMEOUT);
            }
            jobs.extend(
                w.inflight
                    .into_iter()
                    .flat_map(|f| f.runs)
                    .map(|s| s.run.job),
            );
        }
        jobs.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for job in jobs {
            job.abandon();
        }
        let mut st = self.lock();
        st.phase = Phase::Stopped;
        self.stopped.notify_all();
    }
}

/// How long workers sent SIGTERM by a gentle terminate have, all together, before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Takes the next batch off the queue: one `map` chunk, or a group of independent tasks sized to
/// about `BATCH_WORK` (and to a fair share of what waits, so every worker gets some).
fn take_batch(st: &mut State, ready_workers: usize, allowance: Option<usize>) -> Vec<Run> {
    let mut batch: Vec<Run> = Vec::new();
    // Unknown cost: one task per batch until one has reported.
    let by_time = match st.item_ns {
        Some(ns) => (BATCH_WORK.as_nanos() as f64 / ns.max(1.0)) as usize,
        None => 1,
    };
    // (The queue's length, capped: never a walk over it, which may be long.)
    let waiting = st.pending.len().min(MAX_BATCH_ITEMS * 4);
    let fair = waiting.div_ceil(2 * ready_workers.max(1));
    let mut limit = by_time.clamp(1, MAX_BATCH_ITEMS).min(fair.max(1));
    if let Some(a) = allowance {
        limit = limit.min(a);
    }
    let (mut bytes, mut fds) = (0usize, 0usize);
    while let Some(run) = st.pending.front() {
        let first = batch.is_empty();
        if !first
            && (run.chunk
                || batch.len() >= limit
                || bytes + run.data.bytes.len() > MAX_BATCH_BYTES
                || fds + run.data.fds.len() > sys::MAX_FDS)
        {
            break;
        }
        let Some(run) = st.pending.pop_front() else {
            break;
        };
        if !run.job.start() {
            continue; // cancelled while it waited
        }
        bytes += run.data.bytes.len();
        fds += run.data.fds.len();
        let chunk = run.chunk;
        batch.push(run);
        if chunk {
            break;
        }
    }
    batch
}

/// When a worker is idle and another holds a batch it has not started (queued behind its running
/// one, or not begun because it has not been scheduled yet), takes that batch back and queues it
/// again. True if it did.
fn steal_for_idle(st: &mut State) -> bool {
    let ready = |w: &&Worker| w.ready && !w.retiring;
    if !st
        .workers
        .iter()
        .flatten()
        .filter(ready)
        .any(|w| w.inflight.is_empty())
    {
        return false;
    }
    for w in st.workers.iter_mut().flatten() {
        let claimed = w.board.claimed.load(Ordering::Acquire);
        if claimed & worker::REVOKED != 0 {
            continue; // one revocation at a time per worker
        }
        // The batch after the one the worker claimed last (the first, if it claimed none of
        // them yet): it claims batches in order, each by a compare-and-swap from the value read
        // here, which this one makes fail.
        let k = match w.inflight.iter().position(|f| f.id as u64 == claimed) {
            Some(j) => j + 1,
            None => 0,
        };
        if k >= w.inflight.len() {
            continue;
        }
        // A worker that has not begun its first batch yet is given a moment to: it was
        // probably just sent (taking it back would only send it again, often to the same one).
        if k == 0 && w.inflight[0].sent.elapsed() < UNSTARTED_GRACE {
            continue;
        }
        let id = w.inflight[k].id as u64;
        let took_back = w
            .board
            .claimed
            .compare_exchange(
                claimed,
                worker::REVOKED | id,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if !took_back {
            continue;
        }
        let Some(flight) = w.inflight.remove(k) else {
            continue;
        };
        w.tasks = w.tasks.saturating_sub(flight.runs.len());
        for sent in flight.runs.into_iter().rev() {
            st.pending.push_front(sent.run);
        }
        return true;
    }
    false
}

/// Fails every queued run (the pool is broken).
fn fail_pending(st: &mut State, out: &mut Out) {
    let Some(why) = st.broken.clone() else {
        return;
    };
    for run in st.pending.drain(..) {
        out.push(run.fail(why.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, defect 1: a batch of 1,024 tasks is a frame of 1,025 payload parts (plus the
    /// header), more than the kernel takes in one `sendmsg` (UIO_MAXIOV): it failed with
    /// EMSGSIZE. Inline (small) and large payloads, sent as a batch is.
    #[test]
    fn a_frame_of_many_parts_goes_through_whole() {
        let (a, b) = Channel::pair().unwrap();
        for (parts, size) in [(1_025usize, 3usize), (3_000, 1), (2_000, 100)] {
            let data: Vec<Vec<u8>> = (0..parts).map(|i| vec![i as u8; size]).collect();
            let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
            a.send_parts_detached(KIND_VALUE, 42, &refs, &[]).unwrap();
            let mut large = Vec::new();
            let got = b
                .recv_large_into(Wait::timeout(Duration::from_secs(30)), &mut large, |f| {
                    Ok((f.fingerprint, f.payload.to_vec()))
                })
                .unwrap();
            assert_eq!(got, (42, data.concat()), "{parts} parts of {size} bytes");
        }
    }
}

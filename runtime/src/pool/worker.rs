//! The worker process: receives batches of runs on its channel, calls the functions, and sends
//! the outcomes back in flushes. Also the messages between a worker and its pool.
//!
//! A worker keeps its place on a `Board` in shared memory (which item of which batch it is
//! running, and since when), so that when it dies, even by SIGKILL, the pool knows which one item
//! to blame, and which task ran past its deadline.

use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::actor;
use procactor_os::code::{self, CodeRef, SignedCode};

use crate::bootstrap;
use crate::error::{Error, Result};
use crate::pool::blame::Cursor;
use crate::pool::items;
use crate::pool::job::{ItemOutcome, OK_TAG};
use crate::shm::{Layout, Shared};
use crate::sys;
use crate::wire::{self, Channel, Fd, Wait, KIND_VALUE};

procactor_os::shared_struct! {
    /// Where a worker is, in shared memory.
    pub(crate) struct Board {
        /// The [`Cursor`] of the item running (or last run), as its word.
        pub(crate) cursor: AtomicU64,
        /// When that item started (`sys::monotonic_ns`), 0 between items. Kept only when the pool
        /// has a task timeout.
        pub(crate) started_ns: AtomicU64,
        /// The batch the worker took last, or `REVOKED | id` when the pool took batch `id` back
        /// before the worker started it (to give it to an idle worker).
        pub(crate) claimed: AtomicU64,
    }
}

/// Marks a batch the pool took back (see `Board::claimed`).
pub(crate) const REVOKED: u64 = 1 << 63;

impl Layout for Board {
    const MAGIC: u32 = 0x504f_4f4c;
}

/// Parent → worker: the header of a batch; the runs' item bytes follow it in the frame, and
/// their descriptors travel with the frame, run after run.
#[derive(Serialize, Deserialize)]
pub(crate) struct BatchHeader {
    pub(crate) id: u32,
    pub(crate) runs: Vec<RunHeader>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RunHeader {
    /// Which entry point and function run its items.
    pub(crate) code: RunCode,
    /// Items encoded, their bytes, their descriptors.
    pub(crate) count: u32,
    pub(crate) len: u32,
    pub(crate) nfds: u32,
    /// Ordinals (ascending) not to run: they ran before, in a worker that died.
    pub(crate) skip: Vec<u32>,
    /// A `map` chunk: report once at its end (independent tasks report as they finish).
    pub(crate) chunk: bool,
}

/// The entry point (`run_entry::<F, A, R>`) and the user's function of a run, signed (see
/// `procactor_os::code`). A worker checks a pair once: the pool sends it whole the first time
/// and its index in the worker's table after that (a task then carries two bytes of code, not
/// two signatures, and costs no check).
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub(crate) enum RunCode {
    /// A new pair: the worker checks it and keeps it as the next entry of its table.
    Keep(SignedCode, SignedCode),
    /// Entry `n` of the worker's table.
    Known(u32),
    /// A pair used once (the table is full): checked, not kept.
    Once(SignedCode, SignedCode),
}

/// How many pairs a worker keeps (a pool runs few distinct functions; more are sent whole).
pub(crate) const CODE_TABLE: usize = 256;

/// Worker → parent.
#[derive(Serialize, Deserialize)]
pub(crate) enum Report {
    /// The initializer ran (or there is none): send work.
    Ready,
    /// The initializer panicked; the worker exits.
    InitFailed {
        message: String,
        location: Option<String>,
    },
    /// Outcomes of the next items of batch `batch`, in segments (one run each); the encoded
    /// outcomes follow the header in the frame.
    Done {
        batch: u32,
        busy_ns: u64,
        segments: Vec<Segment>,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub(crate) struct Segment {
    /// The run's index in its batch.
    pub(crate) run: u32,
    /// How many of the run's next items, and their bytes.
    pub(crate) count: u32,
    pub(crate) len: u32,
}

pub(crate) use crate::init_fn::Call as InitCall;

/// What a worker process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) chan: Fd,
    pub(crate) board: Shared<Board>,
    pub(crate) init: Option<InitCall>,
    /// The pool has a task timeout: keep `started_ns`.
    pub(crate) timed: bool,
    /// How long to poll for the next batch before sleeping (`PoolBuilder::idle_spin`).
    pub(crate) idle_spin: std::time::Duration,
}

/// `Some((message, location))` when the initializer failed.
type RunEntry =
    fn(func: SignedCode, items: &[u8], fds: Vec<OwnedFd>, run: &RunHeader, w: &mut Worker);

pub(crate) fn run_code<F, A, R>(f: F) -> Result<CodePair>
where
    F: Callable<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let pair = (
        code::sign(run_entry::<F, A, R> as RunEntry)?,
        code::sign(f)?,
    );
    // The pool's runs hold their code by pointer: one shared pair per function, not a copy of
    // both signatures in every queued task.
    RECENT_PAIRS.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(p) = recent.iter().find(|p| *p.0 == pair) {
            return Ok(p.clone());
        }
        let p = CodePair(Arc::new(pair));
        if recent.len() >= RECENT_PAIRS_KEPT {
            recent.remove(0);
        }
        recent.push(p.clone());
        Ok(p)
    })
}

/// The signed entry point and function of a run, shared by the runs of the same function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodePair(Arc<(SignedCode, SignedCode)>);

impl CodePair {
    /// The entry point and the function.
    pub(crate) fn get(&self) -> (SignedCode, SignedCode) {
        *self.0
    }

    /// The same pair, by pointer first (the usual case) or by value.
    pub(crate) fn same(&self, other: &CodePair) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

/// How many pairs a thread keeps to share (a program submits few distinct functions).
const RECENT_PAIRS_KEPT: usize = 8;

thread_local! {
    static RECENT_PAIRS: std::cell::RefCell<Vec<CodePair>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A task function: `fn(A) -> R`, or `fn(A, B) -> R` called with a pair (`starmap`).
pub(crate) trait Callable<A, R>: code::FnPtr {
    fn call(self, arg: A) -> R;
}

impl<A: 'static, R: 'static> Callable<A, R> for fn(A) -> R {
    fn call(self, arg: A) -> R {
        self(arg)
    }
}

impl<A: 'static, B: 'static, R: 'static> Callable<(A, B), R> for fn(A, B) -> R {
    fn call(self, (a, b): (A, B)) -> R {
        self(a, b)
    }
}

/// Flush outcomes of independent tasks when the oldest unreported one is this old.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(2);
/// ... or when this many bytes of outcomes wait: reports then fit in one socket record (with
/// room for their header), which costs far less than the memory file a larger one needs.
const FLUSH_BYTES: usize = wire::INLINE_MAX - 16 * 1024;

/// The worker process's main function.
pub(crate) fn worker_main(args: WorkerArgs) {
    // The pool sends large batches in memory files.
    let chan = Channel::from_fd(args.chan.0).files_only();
    if let Some(init) = args.init {
        if let Some((message, location)) = init.run() {
            let _ = send_report(&chan, &Report::InitFailed { message, location }, &[]);
            return;
        }
    }
    if send_report(&chan, &Report::Ready, &[]).is_err() {
        return;
    }
    let mut w = Worker {
        chan,
        board: args.board,
        timed: args.timed,
        out: Vec::new(),
        segments: Vec::new(),
        open: None,
        batch: 0,
        pos: 0,
        since: Instant::now(),
        busy_from: Instant::now(),
        codes: Vec::new(),
        batch_codes: Vec::new(),
    };
    let mut frame = Vec::new();
    // On one CPU, polling only takes time from the process that would send us work.
    let idle_spin = if sys::usable_cpus() < 2 {
        std::time::Duration::ZERO
    } else {
        args.idle_spin
    };
    let mut idle_since = Instant::now();
    loop {
        let mut fds = Vec::new();
        // Poll for a while first (see `PoolBuilder::idle_spin`), then sleep.
        let wait = if idle_since.elapsed() < idle_spin {
            Wait::No
        } else {
            Wait::Forever
        };
        let got = w.chan.recv_large_into(wait, &mut frame, |f| {
            if f.fingerprint != wire::fingerprint::<BatchHeader>() {
                return Err(Error::Decode {
                    expected: "a pool batch",
                    reason: "a frame of another type".into(),
                });
            }
            fds = f.fds.into();
            // An inline payload lies in the shared receive buffer: copy it out, since the tasks
            // may receive messages of their own while the batch runs.
            Ok((!f.large).then(|| f.payload.to_vec()))
        });
        let inline = match got {
            Ok(v) => v,
            // The pool closed our channel (retire, close) or is gone.
            Err(Error::Disconnected) => return,
            // Nothing yet (polling): let any other thread that wants this core have it.
            Err(Error::Timeout(_)) => {
                std::thread::yield_now();
                continue;
            }
            Err(e) => {
                log::error!(target: "procactor::pool", "pool worker: bad batch: {e}");
                return;
            }
        };
        let payload = inline.as_deref().unwrap_or(&frame);
        if let Err(e) = w.run_batch(payload, fds) {
            log::error!(target: "procactor::pool", "pool worker: unreadable batch: {e}");
            return;
        }
        idle_since = Instant::now();
    }
}

fn send_report(chan: &Channel, report: &Report, tail: &[u8]) -> Result<()> {
    let mut head = Vec::with_capacity(64);
    wire::encode(report, &mut head)?;
    // Detached: a large report goes into a memory file, so the worker never waits for the pool
    // thread to read it (the pool thread may be sending to us at that moment).
    chan.send_parts_detached(
        KIND_VALUE,
        wire::fingerprint::<Report>(),
        &[&head, tail],
        &[],
    )
}

/// A worker's state while it runs a batch.
pub(crate) struct Worker {
    chan: Channel,
    board: Shared<Board>,
    timed: bool,
    /// Encoded outcomes not yet reported, and their segments.
    out: Vec<u8>,
    segments: Vec<Segment>,
    /// The segment being filled: (run, items, start in `out`).
    open: Option<(u32, u32, usize)>,
    batch: u32,
    /// Position of the next item in the batch (over all runs, skipped items not counted).
    pos: u32,
    /// When the oldest unreported outcome was started.
    since: Instant,
    busy_from: Instant,
    /// The checked pairs the pool sent with `RunCode::Keep`, in order.
    codes: Vec<(RunEntry, SignedCode)>,
    /// The code of each run of the batch being handled (kept between batches).
    batch_codes: Vec<Result<(RunEntry, SignedCode)>>,
}

impl Worker {
    /// The entry point and function of a run (checking a new pair).
    fn code(&mut self, code: RunCode) -> Result<(RunEntry, SignedCode)> {
        match code {
            RunCode::Known(n) => self
                .codes
                .get(n as usize)
                .copied()
                .ok_or_else(|| Error::Decode {
                    expected: "a pool batch",
                    reason: format!("code {n} was never sent to this worker"),
                }),
            RunCode::Keep(entry, func) | RunCode::Once(entry, func) => {
                let pair = (CodeRef::<RunEntry>::verify(entry)?.get(), func);
                if matches!(code, RunCode::Keep(..)) && self.codes.len() < CODE_TABLE {
                    self.codes.push(pair);
                }
                Ok(pair)
            }
        }
    }

    fn run_batch(&mut self, payload: &[u8], mut fds: Vec<OwnedFd>) -> Result<()> {
        let (header, rest) = wire::decode_prefix::<BatchHeader>(payload, Vec::new())?;
        // The batch's code pairs join the table even if another worker runs the batch: the
        // pool counted them as sent to this one.
        let mut codes = std::mem::take(&mut self.batch_codes);
        codes.clear();
        for run in &header.runs {
            codes.push(self.code(run.code));
        }
        let ran = self.run_claimed(&header, rest, &mut fds, &mut codes);
        // The buffer is kept for the next batch (no allocation per batch).
        codes.clear();
        self.batch_codes = codes;
        ran
    }

    /// Runs the batch `header` describes (its items in `rest`), if the pool did not take it
    /// back.
    fn run_claimed(
        &mut self,
        header: &BatchHeader,
        mut rest: &[u8],
        fds: &mut Vec<OwnedFd>,
        codes: &mut [Result<(RunEntry, SignedCode)>],
    ) -> Result<()> {
        if !self.claim(header.id) {
            return Ok(()); // the pool gave it to another worker
        }
        self.batch = header.id;
        self.pos = 0;
        self.since = Instant::now();
        self.busy_from = self.since;
        for (index, run) in header.runs.iter().enumerate() {
            let len = run.len as usize;
            let nfds = run.nfds as usize;
            if rest.len() < len || fds.len() < nfds {
                return Err(Error::Decode {
                    expected: "a pool batch",
                    reason: "shorter than its header says".into(),
                });
            }
            let (items, tail) = rest.split_at(len);
            rest = tail;
            let run_fds: Vec<OwnedFd> = fds.drain(..nfds).collect();
            self.open = Some((index as u32, 0, self.out.len()));
            let (entry, func) = std::mem::replace(&mut codes[index], Err(Error::Closed))?;
            entry(func, items, run_fds, run, self);
            self.close_segment();
        }
        self.flush()
    }

    /// Takes batch `id` unless the pool revoked it (one compare-and-swap against the pool's).
    fn claim(&self, id: u32) -> bool {
        let id = id as u64;
        let mut cur = self.board.claimed.load(Ordering::Acquire);
        loop {
            if cur == REVOKED | id {
                return false;
            }
            match self
                .board
                .claimed
                .compare_exchange(cur, id, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    #[inline]
    fn begin_item(&mut self) {
        if self.timed {
            self.board
                .started_ns
                .store(sys::monotonic_ns(), Ordering::Relaxed);
        }
        // Release: a pool that sees this position also sees the start time above.
        self.board
            .cursor
            .store(Cursor::new(self.batch, self.pos).word(), Ordering::Release);
    }

    /// Records one item's outcome.
    #[inline]
    fn end_item<R: Serialize>(&mut self, result: std::thread::Result<R>, run: &RunHeader) {
        if self.timed {
            self.board.started_ns.store(0, Ordering::Relaxed);
        }
        let mark = self.out.len();
        let written = match result {
            // `ItemOutcome::Ok(&r)`, written by hand (see `OK_TAG`).
            Ok(r) => {
                self.out.push(OK_TAG);
                wire::append(&r, &mut self.out)
            }
            .map_err(|e| {
                format!(
                    "{e} (its Serialize implementation failed, or it holds a procactor handle, \
                     which cannot travel back from a pool task)"
                )
            }),
            Err(payload) => {
                let (message, location) = bootstrap::caught_panic(&*payload);
                self.push_outcome(ItemOutcome::Panicked { message, location });
                Ok(())
            }
        };
        if let Err(reason) = written {
            self.out.truncate(mark);
            self.push_outcome(ItemOutcome::Unencodable { reason });
        }
        self.item_done(run);
    }

    /// Records that an item's argument did not decode (`Ok`: postcard's error) or that its
    /// `Deserialize` panicked (`Err`: the payload); the task did not run.
    #[cold]
    #[inline(never)]
    fn bad_argument(
        &mut self,
        why: std::result::Result<postcard::Error, Box<dyn std::any::Any + Send>>,
        run: &RunHeader,
    ) {
        let reason = match why {
            Ok(postcard::Error::DeserializeUnexpectedEnd) => {
                "the bytes end too early for this type".to_string()
            }
            Ok(e) => e.to_string(),
            Err(payload) => {
                let (message, location) = bootstrap::caught_panic(&*payload);
                let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
                format!("its Deserialize implementation panicked{at}: {message}")
            }
        };
        self.undecodable(reason, run);
    }

    /// Records that an item's argument did not decode (the task did not run).
    fn undecodable(&mut self, reason: String, run: &RunHeader) {
        if self.timed {
            self.board.started_ns.store(0, Ordering::Relaxed);
        }
        self.push_outcome(ItemOutcome::Undecodable { reason });
        self.item_done(run);
    }

    fn push_outcome(&mut self, outcome: ItemOutcome<()>) {
        // Strings and options into a Vec: cannot fail.
        let _ = wire::append(&outcome, &mut self.out);
    }

    #[inline]
    fn item_done(&mut self, run: &RunHeader) {
        self.pos += 1;
        if let Some((_, count, _)) = &mut self.open {
            *count += 1;
        }
        let due = if run.chunk {
            self.out.len() >= FLUSH_BYTES
        } else {
            self.out.len() >= FLUSH_BYTES || self.since.elapsed() >= FLUSH_AFTER
        };
        if due {
            // A failed report means the pool is gone; the next receive ends this worker.
            let _ = self.flush();
        }
    }

    fn close_segment(&mut self) {
        if let Some((run, count, start)) = self.open.take() {
            if count > 0 {
                self.segments.push(Segment {
                    run,
                    count,
                    len: (self.out.len() - start) as u32,
                });
            }
        }
    }

    /// Reports the outcomes gathered so far.
    fn flush(&mut self) -> Result<()> {
        let reopen = self.open.map(|(run, _, _)| run);
        self.close_segment();
        if !self.segments.is_empty() {
            // A task's tells (a Manager's pipelined writes among them) are done when its result
            // comes back: whoever reads the results (after `map`) sees their effect, as it would
            // after joining a child. Tasks that told nothing cost one load here.
            if actor::told_since_settle() {
                actor::settle_tells();
            }
            let report = Report::Done {
                batch: self.batch,
                busy_ns: self.busy_from.elapsed().as_nanos() as u64,
                segments: std::mem::take(&mut self.segments),
            };
            let sent = send_report(&self.chan, &report, &self.out);
            self.out.clear();
            sent?;
        }
        self.since = Instant::now();
        self.busy_from = self.since;
        if let Some(run) = reopen {
            self.open = Some((run, 0, 0));
        }
        Ok(())
    }
}

/// Runs the items of one run through the task function `F`.
///
/// The board names each item before its argument is decoded: a worker that dies inside a
/// `Deserialize` (`exit`, `abort`, the OOM killer) costs that item only. A `Deserialize` that
/// panics or fails fails its own item; the items around it still run (each one's bytes are found
/// by its length, see `items`).
fn run_entry<F: Callable<A, R>, A: DeserializeOwned, R: Serialize>(
    func: SignedCode,
    items: &[u8],
    fds: Vec<OwnedFd>,
    run: &RunHeader,
    w: &mut Worker,
) {
    let f = match CodeRef::<F>::verify(func) {
        Ok(f) => f.get(),
        Err(e) => {
            // Not from our pool: no item of the run can be run.
            for _ in (0..run.count).filter(|o| !run.skip.contains(o)) {
                w.begin_item();
                w.undecodable(e.to_string(), run);
            }
            return;
        }
    };
    wire::with_incoming(fds, || {
        let mut rest = items;
        let mut skip = run.skip.iter().copied().peekable();
        for ordinal in 0..run.count {
            let skipped = skip.next_if_eq(&ordinal).is_some();
            let Some((item, tail)) = items::next_item(rest) else {
                // Malformed lengths (not from our pool): nothing from here on can be located.
                let rest = (ordinal + 1..run.count).filter(|&o| skip.next_if_eq(&o).is_none());
                for _ in (!skipped).then_some(ordinal).into_iter().chain(rest) {
                    w.begin_item();
                    w.undecodable("the item's length is malformed".into(), run);
                }
                return;
            };
            rest = tail;
            if skipped {
                continue;
            }
            w.begin_item();
            let mut decoded = false;
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                let arg = postcard::from_bytes::<A>(item)?;
                decoded = true;
                Ok(f.call(arg))
            }));
            // One call of `end_item` (it is inlined), the argument's failures out of line.
            let result = match result {
                Ok(Ok(r)) => Ok(r),
                Err(payload) if decoded => Err(payload),
                Ok(Err(e)) => {
                    w.bad_argument(Ok(e), run);
                    continue;
                }
                Err(payload) => {
                    w.bad_argument(Err(payload), run);
                    continue;
                }
            };
            w.end_item(result, run);
        }
    })
}

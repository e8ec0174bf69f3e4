//! An `imap`'s input, read as its results are taken: at most a window of items is ahead of the
//! results the caller took (queued, running, or done and not yet taken), so an endless input
//! streams in bounded memory, and an input that fails part-way has its earlier results yielded
//! first (as CPython's `imap` does).
//!
//! The input is read in the caller's thread, inside `Imap::next` (and once when the `imap` is
//! made): no thread of its own, so the input needs no `'static` lifetime. It must be `Send` only
//! so that the iterator holding it stays `Send`.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::{Core, Run, RunData};
use super::items;
use super::job::{Delivery, Fail, Items, JobCore};
use super::worker::{self, Callable, CodePair};
use crate::error::Result;

/// Items an `imap` keeps ahead of the results taken, per worker: enough for every worker to have
/// a batch running and one queued behind it, without reading far into an input that may be
/// endless (or expensive to produce).
pub(crate) const WINDOW_PER_WORKER: usize = 32;

/// One item read off the input: its encoding (length first, see `items`) and descriptors.
type Encoded = Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>;

/// Reads the next item and encodes it; `None` at the end of the input.
type Pull<'a> = Box<dyn FnMut() -> Option<Encoded> + Send + 'a>;

struct Input<'a> {
    pull: Pull<'a>,
    /// No more items will be read: the input ended, panicked, or the job is over.
    ended: bool,
    /// The input's panic, resumed in the caller once the results before it were taken.
    panic: Option<Box<dyn Any + Send>>,
}

/// The input of one `imap` job, and where its items go.
pub(crate) struct Feed<'a> {
    core: Arc<Core>,
    job: Arc<JobCore>,
    code: CodePair,
    window: usize,
    // A Mutex only so that the feed is Sync; always reached through `get_mut` (no locking).
    input: Mutex<Input<'a>>,
}

impl<'a> Feed<'a> {
    /// A feed of `items` through `f`, for a new open job.
    pub(crate) fn new<F, A, R, I>(core: Arc<Core>, f: F, items: I) -> Result<Feed<'a>>
    where
        F: Callable<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let code = worker::run_code::<F, A, R>(f)?;
        let mut input = items.into_iter();
        let pull: Pull<'a> = Box::new(move || {
            let item = input.next()?;
            let mut bytes = Vec::new();
            Some(
                items::encode_items(std::slice::from_ref(&item), &mut bytes)
                    .and_then(|fds| Ok((bytes, super::dup_all(&fds)?))),
            )
        });
        let window = WINDOW_PER_WORKER * core.processes();
        Ok(Feed {
            core,
            job: Arc::new(JobCore::open()),
            code,
            window,
            input: Mutex::new(Input {
                pull,
                ended: false,
                panic: None,
            }),
        })
    }

    pub(crate) fn job(&self) -> &Arc<JobCore> {
        &self.job
    }

    fn input(&mut self) -> &mut Input<'a> {
        self.input.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads input and queues it until `window` items are ahead of the `taken` results, or the
    /// input ends. An item that cannot be encoded fails alone; a panic of the input is kept for
    /// [`resume_panic`](Feed::resume_panic) and ends the input.
    pub(crate) fn top_up(&mut self, taken: usize) {
        if self.input().ended {
            return;
        }
        let want = (taken + self.window).saturating_sub(self.job.total());
        let mut runs = Vec::with_capacity(want);
        let mut failed = Vec::new();
        for _ in 0..want {
            let input = self.input();
            let pulled = panic::catch_unwind(AssertUnwindSafe(&mut input.pull));
            let encoded = match pulled {
                Ok(Some(e)) => e,
                Ok(None) => {
                    self.end();
                    break;
                }
                Err(payload) => {
                    self.input().panic = Some(payload);
                    self.end();
                    break;
                }
            };
            let Some(index) = self.job.add_item() else {
                self.end(); // cancelled: the iterator was dropped, or the pool terminated
                break;
            };
            match encoded {
                Ok((bytes, fds)) => runs.push(Run {
                    job: self.job.clone(),
                    code: self.code.clone(),
                    data: Arc::new(RunData {
                        bytes,
                        count: 1,
                        fds,
                    }),
                    base: index,
                    skip: Vec::new(),
                    chunk: false,
                    strikes: 0,
                }),
                Err(e) => failed.push((index, Fail::from_error(&e))),
            }
        }
        for (index, why) in failed {
            self.job.deliver(Delivery::Failed {
                items: Items::List(vec![index]),
                why,
            });
        }
        if runs.is_empty() {
            return;
        }
        let indices: Vec<usize> = runs.iter().map(|r| r.base).collect();
        if let Err(e) = self.core.submit(runs) {
            // Closed, terminated or broken: these items fail with why, and no more are read.
            self.job.deliver(Delivery::Failed {
                items: Items::List(indices),
                why: Fail::from_error(&e),
            });
            self.end();
        }
    }

    /// No more input: the job is done once the items it has are.
    pub(crate) fn end(&mut self) {
        self.input().ended = true;
        self.job.seal();
    }

    /// If the input panicked, resumes its panic in the caller (once).
    pub(crate) fn resume_panic(&mut self) {
        if let Some(payload) = self.input().panic.take() {
            panic::resume_unwind(payload);
        }
    }
}

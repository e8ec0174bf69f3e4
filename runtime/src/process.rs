//! `Process` and `ProcessHandle`: run a Rust function in a new OS process, and join it.
//!
//! A child's return value, its panic, its death by signal and its exit code all come back through
//! [`ProcessHandle::join`]. Every child is reaped: by `join`, by `is_alive`/`exitcode`, and, for
//! handles dropped early, by the next `start` or `active_children` call (as Python does).
//!
//! When a process ends its work (the program's `main` returns or it calls `exit`; a child's
//! function returns), it does what Python's `multiprocessing.util._exit_function` does: its
//! daemon children are terminated, then its other children are joined (see
//! [`Process::daemon`], [`set_exit_join_timeout`]).

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{self, Failure, Outcome, Spec, StartMethod};
use crate::error::{Error, ExitReason, Result};
use crate::logs;
use crate::sys::{self, ExitStatus};
use crate::target::{Portable, Target};
use crate::wire::{Channel, Wait};

/// A function to run in a new process, with its argument and options (a builder, like Python's
/// `Process(target=f, args=...)`). Nothing happens until [`start`](Process::start).
///
/// ```
/// # procactor::init();
/// use procactor::Process;
///
/// fn greet(name: String) -> String {
///     format!("Hello, {name}!")
/// }
///
/// let p = Process::new(greet, "World".to_string()).name("greeter").start()?;
/// assert_eq!(p.name(), "greeter");
/// assert_eq!(p.join()?, "Hello, World!");
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// A non-capturing closure works too (it is a plain function):
///
/// ```
/// # procactor::init();
/// let p = procactor::Process::new(|(a, b): (u32, u32)| a + b, (2, 3)).start()?;
/// assert_eq!(p.join()?, 5);
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// A handle is needed to act on a process, so `kill` before `start` cannot even be written:
///
/// ```compile_fail
/// fn noop(_: ()) {}
/// procactor::Process::new(noop, ()).kill();
/// ```
#[must_use = "a Process does nothing until .start()"]
pub struct Process<A, R> {
    /// The target as a function pointer, or why it cannot run elsewhere (told by `start`).
    f: Result<fn(A) -> R>,
    args: A,
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    start_timeout: Duration,
    await_hello: bool,
    internal: bool,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

impl<A, R> Process<A, R>
where
    A: Portable,
    R: Portable,
{
    /// `f(args)` to run in a child: a function, or a closure that captures nothing (see
    /// [`Target`](crate::Target)); `fn() -> R` with `()` as `args`. `A` and `R` are any serde
    /// types; handles (`Connection`...) inside `args` go to the child.
    ///
    /// ```
    /// # procactor::init();
    /// fn len(v: Vec<u8>) -> usize { v.len() }
    /// assert_eq!(procactor::Process::new(len, vec![1, 2, 3]).start()?.join()?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn new<M>(f: impl Target<A, R, M>, args: A) -> Self {
        Process {
            f: f.into_fn(),
            args,
            name: None,
            daemon: crate::identity::is_daemon(),
            method: None,
            start_timeout: Duration::from_secs(30),
            await_hello: true,
            internal: false,
        }
    }

    /// The child's name (default `Process-N`), seen in errors, logs and `current_process()`.
    ///
    /// ```
    /// # procactor::init();
    /// fn my_name(_: ()) -> String { procactor::current_process().name }
    /// let p = procactor::Process::new(my_name, ()).name("worker-1").start()?;
    /// assert_eq!(p.join()?, "worker-1");
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon. The default is its creator's, as in Python: no in the
    /// program itself, yes in a process started as a daemon (so a daemon's children do not
    /// outlive it silently); this call wins over it. As in Python, when its parent ends its
    /// work (the program's `main` returns or calls `std::process::exit`; a child's function
    /// returns or panics, before it reports):
    ///
    /// * its **daemon** children are terminated (SIGTERM), and not waited for. A daemon also
    ///   dies with its parent however the parent ends, even by SIGKILL (the kernel's
    ///   parent-death signal, or a watcher thread). Actors, pool workers, the manager and the
    ///   fork server are daemons.
    /// * its **other** children still running are then joined: the parent ends after them, and
    ///   their output comes before its end. [`set_exit_join_timeout`] bounds that wait.
    ///
    /// A parent killed by a signal (SIGKILL, or SIGTERM or Ctrl-C's SIGINT with their default
    /// action) runs no exit work and waits for nothing: its non-daemon children outlive it, as
    /// orphans. The same goes for a parent that calls `libc::_exit`, which skips the exit work.
    ///
    /// ```
    /// # procactor::init();
    /// fn serve(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
    /// let p = procactor::Process::new(serve, ()).daemon(true).start()?;
    /// assert!(p.is_alive());
    /// p.kill()?;
    /// # p.join().unwrap_err();
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// How to make the process (default: [`get_start_method`](crate::get_start_method)).
    ///
    /// ```
    /// # procactor::init();
    /// fn pid(_: ()) -> u32 { std::process::id() }
    /// let p = procactor::Process::new(pid, ()).start_method(procactor::StartMethod::Fork).start()?;
    /// assert_eq!(p.join()?, p.pid());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// How long a spawned child may take to reach `procactor::init()` (default 30 s). Past
    /// it, the child is killed and `start` fails with [`Error::Start`].
    ///
    /// ```
    /// # procactor::init();
    /// fn noop(_: ()) {}
    /// let p = procactor::Process::new(noop, ()).start_timeout(std::time::Duration::from_secs(5)).start()?;
    /// p.join()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Returns as soon as the job is handed over, without waiting for a spawned child to reach
    /// `init()`: for callers that wait for the child some other way (an actor's welcome), so
    /// that many children can start at once. A child that never gets there is seen at `join`.
    pub(crate) fn no_hello_wait(mut self) -> Self {
        self.await_hello = false;
        self
    }

    /// A runtime process (a pool worker): not listed by `active_children`.
    pub(crate) fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// Starts the child. Returns once it runs (for `Spawn`: once it reached `init()`).
    ///
    /// ```
    /// # procactor::init();
    /// fn noop(_: ()) {}
    /// let p = procactor::Process::new(noop, ()).start()?;
    /// p.join()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn start(self) -> Result<ProcessHandle<R>> {
        reap_finished();
        // This process's end must end its children (see `end_children_at_exit`).
        crate::exit::at_exit_last(end_children_at_exit);
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        let spec = Spec {
            name: &name,
            daemon: self.daemon,
            method: self.method.unwrap_or_else(bootstrap::get_start_method),
            start_timeout: self.start_timeout,
            await_hello: self.await_hello,
        };
        let f = match &self.f {
            Ok(f) => *f,
            Err(e) => {
                return Err(Error::Start {
                    name: spec.name.to_string(),
                    reason: e.to_string().into(),
                })
            }
        };
        let started = bootstrap::start(&spec, f, &self.args)?;
        // `self.args` drops here: the parent's copies of handles given to the child close now,
        // so the child's death is seen as a disconnect.
        let core = Arc::new(Core {
            name,
            pid: started.pid,
            pidfd: started.pidfd,
            status: Mutex::new(None),
            daemon: self.daemon,
            internal: self.internal,
        });
        children().push(core.clone());
        Ok(ProcessHandle {
            core,
            chan: started.chan,
            outcome: Mutex::new(Slot::Pending),
            _r: PhantomData,
        })
    }
}

/// What the parent knows of one child, shared by its handle and the children registry.
struct Core {
    name: String,
    pid: u32,
    pidfd: OwnedFd,
    status: Mutex<Option<ExitStatus>>,
    daemon: bool,
    internal: bool,
}

impl Core {
    /// Reaps the child if it has ended; its status either way (None: still running).
    fn poll_status(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.is_none() {
            *status = sys::reap(self.pidfd.as_fd(), false).ok().flatten();
        }
        *status
    }

    fn wait_status(&self, wait: Wait) -> Result<ExitStatus> {
        let deadline = wait.deadline();
        loop {
            if let Some(s) = self.poll_status() {
                return Ok(s);
            }
            let ready = sys::wait_readable(&[self.pidfd.as_fd()], deadline)
                .map_err(|e| Error::io("poll", e))?;
            if ready.is_none() {
                return Err(wait.expired());
            }
        }
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo {
            name: self.name.clone(),
            pid: self.pid,
        }
    }
}

procactor_os::per_process! {
    /// This process's children (a forked copy starts with none: see `per_process`).
    static CHILDREN: Vec<Arc<Core>> = Vec::new;
}

fn children() -> std::sync::MutexGuard<'static, Vec<Arc<Core>>> {
    CHILDREN.lock()
}

/// Reaps the children whose handles were dropped, once they have ended.
fn reap_finished() {
    // A child with a handle is that handle's business: only orphaned entries are polled.
    children().retain(|c| Arc::strong_count(c) > 1 || c.poll_status().is_none());
}

/// How long the end of this process waits for its non-daemon children, in nanoseconds
/// (`FOREVER`: as long as they run, as Python does).
static EXIT_JOIN_NS: AtomicU64 = AtomicU64::new(FOREVER);
const FOREVER: u64 = u64::MAX;

/// Bounds how long the end of this process waits for its non-daemon children: `None` (the
/// default) waits as long as they run, as Python does; `Some(d)` waits at most `d` for all of
/// them together, then ends, leaving those still running as orphans (a line on stderr names
/// each). `Some(Duration::ZERO)` does not wait at all. Daemon children are terminated either
/// way (see [`Process::daemon`]).
///
/// The setting belongs to the process that makes it (a `Fork` child starts with a copy);
/// another way out of a long wait is to end the process by a signal, which skips the exit work.
///
/// ```
/// use std::time::Duration;
/// procactor::process::set_exit_join_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(procactor::process::exit_join_timeout(), Some(Duration::from_secs(5)));
/// procactor::process::set_exit_join_timeout(None); // back to Python's: wait for every child
/// assert_eq!(procactor::process::exit_join_timeout(), None);
/// ```
pub fn set_exit_join_timeout(timeout: Option<Duration>) {
    let ns = timeout.map_or(FOREVER, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(FOREVER - 1)
    });
    EXIT_JOIN_NS.store(ns, Ordering::Relaxed);
}

/// The bound [`set_exit_join_timeout`] set (`None`: wait as long as the children run).
///
/// ```
/// assert_eq!(procactor::process::exit_join_timeout(), None);
/// ```
pub fn exit_join_timeout() -> Option<Duration> {
    match EXIT_JOIN_NS.load(Ordering::Relaxed) {
        FOREVER => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

/// The end of this process's work (`bootstrap::run_exit_hooks`: the program's `exit`, or a child
/// whose function returned, before it reports), as Python's `util._exit_function` does it:
/// daemon children are terminated (SIGTERM; not waited for: they could ignore it, and the
/// kernel ends them with us anyway), then every other child still running is joined, for at
/// most the [`exit_join_timeout`].
///
/// May run inside libc's `exit`, where thread-locals may be gone: it uses none (no logging).
pub(crate) fn end_children_at_exit() {
    let kids: Vec<Arc<Core>> = children().clone();
    for c in kids.iter().filter(|c| c.daemon) {
        if c.poll_status().is_none() {
            let _ = sys::signal(c.pidfd.as_fd(), sys::SIGTERM);
        }
    }
    let wait = exit_join_timeout().map_or(Wait::Forever, Wait::timeout);
    for c in kids.iter().filter(|c| !c.daemon) {
        if c.wait_status(wait).is_err() {
            let note = format!(
                "procactor: not waiting any longer for child {:?} (pid {}) at exit; it keeps \
                 running\n",
                c.name, c.pid
            );
            let _ = sys::write_file(std::io::stderr().as_fd(), note.as_bytes());
        }
    }
}

/// The child's report, as far as the parent has read it.
enum Slot<R> {
    Pending,
    Reported(std::result::Result<Outcome<R>, Failure>),
    /// The child ended without a report: it exited or was killed inside its function.
    Silent,
    /// `join` already returned the value.
    Taken,
}

/// A started child process: join it, watch it, signal it.
///
/// ```
/// # procactor::init();
/// use std::time::Duration;
/// use procactor::{Error, Process};
///
/// fn sleepy(_: ()) { std::thread::sleep(Duration::from_secs(30)) }
///
/// let p = Process::new(sleepy, ()).start()?;
/// assert!(p.is_alive());
/// assert_eq!(p.exitcode(), None);
/// assert!(p.join_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
/// p.terminate()?;
/// let err = p.join().unwrap_err();
/// assert_eq!(err.exit_reason(), Some(&procactor::ExitReason::Killed { signal: 15 }));
/// assert_eq!(p.exitcode(), Some(-15));
/// # Ok::<(), procactor::Error>(())
/// ```
#[must_use = "dropping the handle does not wait for the process: `join()` it"]
pub struct ProcessHandle<R> {
    core: Arc<Core>,
    chan: Channel,
    outcome: Mutex<Slot<R>>,
    _r: PhantomData<fn() -> R>,
}

/// The process's pidfd: readable once the process has ended (CPython's `sentinel`), for
/// [`connection::wait`](crate::connection::wait) or any poller.
impl<R> std::os::fd::AsFd for ProcessHandle<R> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.core.pidfd.as_fd()
    }
}

impl<R: DeserializeOwned> ProcessHandle<R> {
    /// Waits for the child to end and returns what its function returned.
    ///
    /// A panic, a signal or an exit from inside the function is [`Error::ProcessFailed`], whose
    /// [`ExitReason`] says which ([`Error::exit_reason`]). The value can be taken once; later calls return
    /// [`Error::AlreadyJoined`] (failures are returned again each time).
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Error, ExitReason, Process};
    /// fn boom(_: ()) { panic!("boom") }
    /// match Process::new(boom, ()).name("bomb").start()?.join() {
    ///     Err(Error::ProcessFailed { name, reason, .. }) => match *reason {
    ///         ExitReason::Panicked { message, location } => {
    ///             assert_eq!((name.as_str(), message.as_str()), ("bomb", "boom"));
    ///             assert!(location.unwrap().contains(".rs:"));
    ///         }
    ///         other => panic!("unexpected: {other:?}"),
    ///     },
    ///     other => panic!("unexpected: {other:?}"),
    /// }
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn join(&self) -> Result<R> {
        self.join_wait(Wait::Forever)
    }

    /// [`join`](ProcessHandle::join), waiting at most `timeout` ([`Error::Timeout`] after;
    /// the child keeps running and can be joined again).
    ///
    /// ```
    /// # procactor::init();
    /// fn quick(x: u8) -> u8 { x }
    /// let p = procactor::Process::new(quick, 7).start()?;
    /// assert_eq!(p.join_timeout(std::time::Duration::from_secs(10))?, 7);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<R> {
        self.join_wait(Wait::timeout(timeout))
    }

    fn join_wait(&self, wait: Wait) -> Result<R> {
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Slot::Pending) {
            // The report first: a large one must be read before the child can exit.
            *slot = match bootstrap::read_outcome::<R>(&self.chan, wait)? {
                Some(report) => Slot::Reported(report),
                None => Slot::Silent,
            };
        }
        let status = self.core.wait_status(wait)?;
        logs::drain();
        let (name, pid) = (self.core.name.clone(), self.core.pid);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Reported(Ok(Outcome::Returned(r))) => Ok(r),
            Slot::Taken => Err(Error::AlreadyJoined { name, pid }),
            other => {
                let err = match &other {
                    Slot::Reported(Ok(Outcome::Panicked { message, location })) => {
                        Error::ProcessFailed {
                            name,
                            pid,
                            reason: Box::new(ExitReason::Panicked {
                                message: message.clone(),
                                location: location.clone(),
                            }),
                        }
                    }
                    Slot::Reported(Err(Failure::Start(reason))) => Error::Start {
                        name,
                        reason: reason.clone().into(),
                    },
                    Slot::Reported(Err(Failure::Decode { expected, reason })) => Error::Start {
                        name,
                        reason: format!(
                            "the child could not decode its argument as `{expected}`: {reason}"
                        )
                        .into(),
                    },
                    Slot::Reported(Err(Failure::Encode { reason, .. })) => Error::Encode {
                        type_name: std::any::type_name::<R>(),
                        reason: format!("in child {name:?} (pid {pid}): {reason}"),
                    },
                    _ => match status {
                        ExitStatus::Signal(signal) => Error::ProcessFailed {
                            name,
                            pid,
                            reason: Box::new(ExitReason::Killed { signal }),
                        },
                        ExitStatus::Code(code) => Error::ProcessFailed {
                            name,
                            pid,
                            reason: Box::new(ExitReason::Exited { code }),
                        },
                        ExitStatus::Lost => Error::StatusLost { name, pid },
                    },
                };
                *slot = other; // failures stay, and are reported again by the next join
                Err(err)
            }
        }
    }
}

impl<R> ProcessHandle<R> {
    /// The child's pid.
    ///
    /// ```
    /// # procactor::init();
    /// fn pid(_: ()) -> u32 { std::process::id() }
    /// let p = procactor::Process::new(pid, ()).start()?;
    /// assert_eq!(p.join()?, p.pid());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.core.pid
    }

    /// The child's name.
    ///
    /// ```
    /// # procactor::init();
    /// fn noop(_: ()) {}
    /// let p = procactor::Process::new(noop, ()).name("n").start()?;
    /// assert_eq!(p.name(), "n");
    /// # p.join()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// True until the child has ended.
    ///
    /// ```
    /// # procactor::init();
    /// fn noop(_: ()) {}
    /// let p = procactor::Process::new(noop, ()).start()?;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        self.core.poll_status().is_none()
    }

    /// Python's `exitcode`: `None` while running, else the exit code, or minus the signal
    /// number that killed it. Also `None` if the status was collected elsewhere (see
    /// [`Error::StatusLost`]); `is_alive` tells the two apart.
    ///
    /// ```
    /// # procactor::init();
    /// fn three(_: ()) { std::process::exit(3) }
    /// let p = procactor::Process::new(three, ()).start()?;
    /// # let _ = p.join();
    /// assert_eq!(p.exitcode(), Some(3));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        match self.core.poll_status()? {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(s) => Some(-s),
            // Ended, but nobody told us how (see `Error::StatusLost`).
            ExitStatus::Lost => None,
        }
    }

    /// Sends SIGTERM. A no-op if the child has already ended.
    ///
    /// ```
    /// # procactor::init();
    /// fn noop(_: ()) {}
    /// let p = procactor::Process::new(noop, ()).start()?;
    /// p.join()?;
    /// p.terminate()?; // already gone: nothing happens
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.signal(sys::SIGTERM)
    }

    /// Sends SIGINT (Python 3.14's `interrupt()`, Ctrl-C's signal): the child ends with
    /// `ExitReason::Killed { signal: 2 }` unless it handles the signal. A no-op if the child
    /// has already ended.
    ///
    /// ```
    /// # procactor::init();
    /// fn forever(_: ()) { loop { std::thread::park() } }
    /// let p = procactor::Process::new(forever, ()).start()?;
    /// p.interrupt()?;
    /// let err = p.join().unwrap_err();
    /// assert_eq!(err.exit_reason(), Some(&procactor::ExitReason::Killed { signal: 2 }));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn interrupt(&self) -> Result<()> {
        self.signal(sys::SIGINT)
    }

    /// Sends SIGKILL. A no-op if the child has already ended.
    ///
    /// ```
    /// # procactor::init();
    /// fn forever(_: ()) { loop { std::thread::park() } }
    /// let p = procactor::Process::new(forever, ()).start()?;
    /// p.kill()?;
    /// let err = p.join().unwrap_err();
    /// assert_eq!(err.exit_reason(), Some(&procactor::ExitReason::Killed { signal: 9 }));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.signal(sys::SIGKILL)
    }

    fn signal(&self, sig: i32) -> Result<()> {
        if self.core.poll_status().is_some() {
            return Ok(());
        }
        // The pidfd names this very process: a recycled pid can never be hit.
        sys::signal(self.core.pidfd.as_fd(), sig).map_err(|e| Error::io("pidfd_send_signal", e))
    }
}

impl<R> std::fmt::Debug for ProcessHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("name", &self.core.name)
            .field("pid", &self.core.pid)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

impl<R> Drop for ProcessHandle<R> {
    fn drop(&mut self) {
        // Reap now if it has ended (and forget it); otherwise the registry reaps it later.
        if self.core.poll_status().is_some() {
            children().retain(|c| !Arc::ptr_eq(c, &self.core));
        }
    }
}

/// A process's name and pid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// `MainProcess` for the program itself, else the name given at start.
    pub name: String,
    /// The process id.
    pub pid: u32,
}

/// This process: `MainProcess` in the program, the given name in a child.
///
/// ```
/// let me = procactor::current_process();
/// assert_eq!(me.pid, std::process::id());
/// assert_eq!(me.name, "MainProcess");
/// ```
pub fn current_process() -> ProcessInfo {
    ProcessInfo {
        name: crate::identity::my_name(),
        pid: sys::getpid(),
    }
}

/// The process that started this one (`None` in the program itself): its name and pid, and
/// whether it still runs (Python's `parent_process()`).
///
/// ```
/// # procactor::init();
/// fn parent(_: ()) -> Option<(u32, bool)> {
///     procactor::process::parent_process().map(|p| (p.pid, p.is_alive()))
/// }
/// assert_eq!(procactor::process::parent_process(), None);
/// let p = procactor::Process::new(parent, ()).start()?;
/// assert_eq!(p.join()?, Some((std::process::id(), true)));
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    crate::identity::child_info().map(|c| ParentProcess {
        name: c.parent_name.clone(),
        pid: c.parent_pid,
    })
}

/// This process's parent, from [`parent_process`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentProcess {
    /// Its name (`MainProcess` for the program itself).
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

impl ParentProcess {
    /// Whether it still runs: it is this process's parent as long as it lives (once it ends,
    /// another process adopts this one), so a recycled pid cannot fool it.
    ///
    /// ```
    /// # procactor::init();
    /// fn alive(_: ()) -> bool { procactor::process::parent_process().unwrap().is_alive() }
    /// assert!(procactor::Process::new(alive, ()).start()?.join()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        sys::getppid() == self.pid
    }

    /// Waits at most `timeout` for it to end ([`Error::Timeout`] if it has not): a child can
    /// wind down once its parent is gone (Python's `parent_process().join()`, with a
    /// deadline).
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// fn waits(_: ()) -> bool {
    ///     let parent = procactor::process::parent_process().unwrap();
    ///     parent.join_timeout(Duration::from_millis(50)).unwrap_err().is_timeout()
    /// }
    /// assert!(procactor::Process::new(waits, ()).start()?.join()?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        // The pidfd first, then the check that the pid is still our parent's: the pidfd then
        // names the parent itself, not a process that reused its pid.
        let fd = match sys::pidfd_open(self.pid) {
            Ok(fd) => fd,
            // No such process: it ended (and was reaped).
            Err(e) if e.raw_os_error() == Some(sys::ESRCH) => return Ok(()),
            Err(e) => return Err(Error::io("pidfd_open", e)),
        };
        if !self.is_alive() {
            return Ok(());
        }
        let wait = Wait::timeout(timeout);
        match sys::wait_readable(&[fd.as_fd()], wait.deadline()) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(wait.expired()),
            Err(e) => Err(Error::io("poll", e)),
        }
    }
}

/// The children of this process that are still running (reaping those that ended).
///
/// ```
/// # procactor::init();
/// fn forever(_: ()) { loop { std::thread::park() } }
/// let p = procactor::Process::new(forever, ()).name("idle").start()?;
/// assert!(procactor::process::active_children().iter().any(|c| c.pid == p.pid()));
/// p.kill()?;
/// let _ = p.join();
/// assert!(!procactor::process::active_children().iter().any(|c| c.pid == p.pid()));
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    reap_finished();
    children()
        .iter()
        .filter(|c| !c.internal && c.poll_status().is_none())
        .map(|c| c.info())
        .collect()
}

/// The number of online CPUs (Python's `os.cpu_count()`).
///
/// ```
/// assert!(procactor::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    sys::cpu_count()
}

impl<A, R> std::fmt::Debug for Process<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("target", &std::any::type_name::<fn(A) -> R>())
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

//! The one error type of procactor. Every variant says which process, which pid and what it said,
//! so the caller can act on it without digging.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `Result<T, procactor::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong across a process boundary.
///
/// Failure of a child is data: a panic, a signal and a non-zero exit each have their own variant.
///
/// ```
/// # procactor::init();
/// use procactor::{Error, Process};
///
/// fn fails(_: ()) -> u32 {
///     std::process::exit(3)
/// }
///
/// let err = Process::new(fails, ()).start()?.join().unwrap_err();
/// assert!(matches!(err, Error::ProcessFailed { .. }));
/// assert_eq!(err.exit_reason(), Some(&procactor::ExitReason::Exited { code: 3 }));
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child failed: it panicked, was ended by a signal (SIGKILL from the OOM killer,
    /// `kill()`, `terminate()`...), or exited (for example through `std::process::exit`)
    /// without returning a value. [`ExitReason`] says which, with the panic's message, the
    /// signal or the code ([`Error::exit_reason`]).
    #[error("process {name:?} (pid {pid}) {}", failed_how(reason))]
    ProcessFailed {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// How it ended: `Panicked`, `Killed` or `Exited`.
        reason: Box<ExitReason>,
    },

    /// A message larger than the receiving end accepts (see
    /// [`Connection::with_max_message_size`](crate::Connection::with_max_message_size) and
    /// [`ActorBuilder::max_message_size`](crate::ActorBuilder::max_message_size)). It was refused
    /// before any of its payload was read; its sender's `send` fails.
    #[error("a message of {size} bytes is larger than this end accepts ({limit} bytes)")]
    TooLarge {
        /// The size its header announced.
        size: u64,
        /// The receiving end's limit.
        limit: u64,
    },

    /// The other end is gone: its handle was dropped, or its process ended.
    #[error("the other end is disconnected (dropped, or its process ended)")]
    Disconnected,

    /// A bounded wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// Bytes arrived that are not a `expected`: garbage, or a message of another type.
    #[error("could not decode a message as `{expected}`: {reason}")]
    Decode {
        /// The type the receiver asked for.
        expected: &'static str,
        /// What was wrong with the bytes.
        reason: String,
    },

    /// A value could not be serialized (for example a `Connection` outside procactor's transport).
    #[error("could not encode a `{type_name}`: {reason}")]
    Encode {
        /// The type being sent.
        type_name: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// The child ended, but its exit status went elsewhere: the program set SIGCHLD to SIG_IGN
    /// (the kernel then reaps children itself), or called `wait()` outside procactor.
    #[error(
        "process {name:?} (pid {pid}) ended, but its exit status was collected elsewhere \
         (SIGCHLD ignored, or a wait() outside procactor)"
    )]
    StatusLost {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
    },

    /// A child could not be started, or could not be bootstrapped (missing `procactor::init()`,
    /// a different binary, a start-up timeout).
    #[error("could not start process {name:?}: {reason}")]
    Start {
        /// The child's name.
        name: String,
        /// What went wrong, and what to do about it.
        reason: Box<str>,
    },

    /// `join` was already given the child's return value; it can be taken only once.
    #[error("process {name:?} (pid {pid}) was already joined and its value taken")]
    AlreadyJoined {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
    },

    /// The operation is not allowed on this end (for example `send` on the read end of a simplex
    /// pipe).
    #[error("{0}")]
    Unsupported(&'static str),

    /// Two sides disagree on a message type: another version of the program, or a wrong type
    /// parameter (`whereis::<Counter>` on a name that holds a `Bank`). Checked when a channel or
    /// an `ActorRef` first meets the other side, before any message is decoded.
    #[error("message schema mismatch: this side speaks `{ours}`, the other side `{theirs}`")]
    SchemaMismatch {
        /// This side's type (and schema).
        ours: Box<str>,
        /// The other side's type.
        theirs: Box<str>,
    },

    /// The actor ended before it answered (or before it could be reached): `reason` says how.
    #[error("actor {name:?} (pid {pid}) died: {reason}")]
    ActorDied {
        /// The actor's name.
        name: String,
        /// The actor's pid.
        pid: u32,
        /// How it ended.
        reason: Box<ExitReason>,
    },

    /// A bounded mailbox is full (`try_` forms only; the others wait).
    #[error("the mailbox of actor {name:?} (pid {pid}) is full")]
    MailboxFull {
        /// The actor's name.
        name: String,
        /// The actor's pid.
        pid: u32,
    },

    /// The actor could not use a message and said why (it did not decode, for example): the
    /// message had no effect. The actor goes on serving.
    #[error("actor {name:?} (pid {pid}) rejected the message: {reason}")]
    Rejected {
        /// The actor's name.
        name: Box<str>,
        /// The actor's pid.
        pid: u32,
        /// What the actor said.
        reason: Box<str>,
    },

    /// The actor handled the message, but its reply could not reach the caller (it did not
    /// encode, or could not be sent): the message had its effect, so sending it again would
    /// handle it twice. The actor goes on serving.
    #[error("actor {name:?} (pid {pid}) handled the message but its reply was lost: {reason}")]
    ReplyLost {
        /// The actor's name.
        name: Box<str>,
        /// The actor's pid.
        pid: u32,
        /// Why the reply could not come.
        reason: Box<str>,
    },

    /// The peer does not hold the authkey (or spoke something else than the handshake): both
    /// sides of a refused connection get this, before any payload byte is read.
    #[error("authentication failed: {0}")]
    Authentication(Box<str>),

    /// `register` with a name another live actor holds.
    #[error("the name {0:?} is already registered to a live actor")]
    NameTaken(String),

    /// A queue, pool or executor was closed: no more `put`s or tasks, and (for `get`) nothing
    /// is left to take.
    #[error("closed: the queue, pool or executor takes no more work")]
    Closed,

    /// A pool task panicked. The pool goes on; `index` is the item's position in its `map`
    /// (0 for `apply`).
    #[error("task #{index} panicked in pool worker (pid {pid}) {panic}")]
    TaskPanicked {
        /// The item's position in its `map` call (0 for a single task).
        index: usize,
        /// The worker that ran it.
        pid: u32,
        /// Its message and location.
        panic: Box<Panic>,
    },

    /// The pool worker running this task died (SIGKILL from the OOM killer, `exit()` inside
    /// the task...). The worker was replaced and the other tasks went on.
    #[error("task #{index} was lost: its pool worker (pid {pid}) {}", lost_how(*signal, *code))]
    WorkerLost {
        /// The item's position in its `map` call (0 for a single task).
        index: usize,
        /// The worker that died.
        pid: u32,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },

    /// The task was cancelled before it finished: `Future::cancel`, `shutdown` with
    /// `cancel_futures`, `Pool::terminate`, or an `imap` dropped before its end.
    #[error("the task was cancelled")]
    Cancelled,

    /// A pool worker's initializer panicked. The pool does not restart workers in a loop: it
    /// fails to build, or (for a replacement worker) fails every task from then on.
    #[error("the pool initializer panicked in worker pid {pid} {panic}")]
    InitializerFailed {
        /// The worker whose initializer failed.
        pid: u32,
        /// Its message and location.
        panic: Box<Panic>,
    },

    /// Nothing to take now: a `try_` receive (`try_get`, `try_recv`) on an empty queue or pipe.
    #[error("nothing is waiting (empty)")]
    Empty,

    /// No room now: `try_put` on a full queue (the item comes back in a [`TrySendError`]).
    #[error("the queue is full")]
    Full,

    /// A `Barrier` was broken (a party timed out, or `abort`/`reset` was called) while waiting
    /// or before this `wait`.
    #[error("the barrier is broken (a party timed out, aborted or reset it)")]
    BrokenBarrier,

    /// A shared object changed size while it was being iterated over (Python's `RuntimeError:
    /// dictionary changed size during iteration`): the iteration stops here rather than skip
    /// or repeat items.
    #[error("{0} changed size during iteration")]
    Changed(String),

    /// A message did not fit in the buffer given to receive it (Python's `BufferTooShort`):
    /// here it is, whole; the connection goes on with the next one.
    #[error("a {}-byte message did not fit in the {room} bytes given", message.len())]
    BufferTooShort {
        /// The message received.
        message: Vec<u8>,
        /// The room there was.
        room: usize,
    },

    /// A `Barrier`'s action panicked, in this party (the last to arrive): the barrier is
    /// broken, and the other parties get [`Error::BrokenBarrier`].
    #[error("the barrier's action panicked {0}")]
    BarrierActionPanicked(Box<Panic>),

    /// The call would block for ever: the calling thread already holds this lock.
    #[error("deadlock: {0}")]
    Deadlock(&'static str),

    /// A call that breaks the object's rules, such as releasing a `BoundedSemaphore` past its
    /// bound or calling `task_done` more often than items were put (Python's `ValueError`).
    #[error("{0}")]
    InvalidState(&'static str),

    /// An index past the end of a managed list (Python's `IndexError`).
    #[error("index {index} is out of range for a list of length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The list's length then.
        len: usize,
    },

    /// A key, value or field that is not there (Python's `KeyError`, `ValueError` of
    /// `list.remove`, `AttributeError` of a namespace): what was looked for.
    #[error("not found: {0}")]
    NotFound(String),

    /// The managed object was freed (its last proxy dropped in every process) before this
    /// call reached the manager.
    #[error("managed object #{id} is gone (freed when its last proxy was dropped)")]
    ObjectGone {
        /// The object's id in its manager.
        id: u64,
    },

    /// An operating-system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What the runtime was doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps a failed system call `op` as [`Error::Io`]; a peer that went away (EPIPE, ECONNRESET,
    /// ENOTCONN) becomes [`Error::Disconnected`] instead.
    pub fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        // A peer that went away is not an I/O failure for the caller: say it plainly.
        match source.raw_os_error() {
            Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => {
                Error::Disconnected
            }
            _ => Error::Io { op, source },
        }
    }

    /// How a process ended, for the errors that say so ([`Error::ProcessFailed`],
    /// [`Error::ActorDied`]).
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{ExitReason, Process};
    /// fn quit() -> u32 { std::process::exit(3) }
    /// let err = Process::new(quit, ()).start()?.join().unwrap_err();
    /// assert_eq!(err.exit_reason(), Some(&ExitReason::Exited { code: 3 }));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn exit_reason(&self) -> Option<&ExitReason> {
        match self {
            Error::ProcessFailed { reason, .. } | Error::ActorDied { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// True for [`Error::Timeout`]: the operation may be retried.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert!(procactor::Error::Timeout(Duration::from_millis(5)).is_timeout());
    /// assert!(!procactor::Error::Disconnected.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }
}

/// A send that did not happen (`try_put`, `put_timeout`, `try_tell`, `tell_timeout`): the value
/// comes back with the reason, as crossbeam's `TrySendError` does, so nothing is lost.
///
/// `?` turns it into an [`Error`] (dropping the value) when you do not need it back.
///
/// ```
/// # procactor::init();
/// let q = procactor::Queue::<String>::bounded(1)?;
/// q.try_put("first".to_string()).map_err(procactor::Error::from)?;
/// let full = q.try_put("second".to_string()).unwrap_err();
/// assert!(full.is_full());
/// assert_eq!(full.into_inner(), "second"); // handed back, not lost
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct TrySendError<T> {
    value: T,
    error: Error,
}

impl<T> TrySendError<T> {
    /// The value that was not sent, and why.
    pub fn new(value: T, error: Error) -> TrySendError<T> {
        TrySendError { value, error }
    }

    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Why it was not sent: [`Error::Full`], [`Error::MailboxFull`], [`Error::Timeout`],
    /// [`Error::Closed`], [`Error::Disconnected`], ...
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// Both parts.
    pub fn into_parts(self) -> (T, Error) {
        (self.value, self.error)
    }

    /// True when there was no room now (a full queue or mailbox): trying later may work.
    pub fn is_full(&self) -> bool {
        matches!(self.error, Error::Full | Error::MailboxFull { .. })
    }

    /// True when a bounded wait for room ran out.
    pub fn is_timeout(&self) -> bool {
        self.error.is_timeout()
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySendError")
            .field("value", &std::any::type_name::<T>())
            .field("error", &self.error)
            .finish()
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<TrySendError<T>> for Error {
    fn from(e: TrySendError<T>) -> Error {
        e.error
    }
}

/// A panic: its message and where it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Panic {
    /// The panic payload, when it was a string.
    pub message: String,
    /// `file:line:column` of the panic.
    pub location: Option<String>,
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.location.as_deref().unwrap_or("<unknown>");
        write!(f, "at {at}: {}", self.message)
    }
}

fn failed_how(reason: &ExitReason) -> String {
    match reason {
        ExitReason::Exited { code } => format!("exited with code {code} before returning a value"),
        other => other.to_string(),
    }
}

fn lost_how(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(s), _) => format!("was killed by signal {s} ({})", signal_name(s)),
        (None, Some(c)) => format!("exited with code {c}"),
        (None, None) => "ended".into(),
    }
}

/// SIGKILL → "SIGKILL": for messages only.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// How an actor (or any process) ended.
///
/// ```
/// use procactor::ExitReason;
/// let r = ExitReason::Killed { signal: 9 };
/// assert!(r.is_abnormal());
/// assert_eq!(r.to_string(), "killed by signal 9 (SIGKILL)");
/// assert!(!ExitReason::Normal.is_abnormal());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitReason {
    /// It stopped normally: `stop()`, `ctx.stop()`, or its supervisor shut it down.
    Normal,
    /// A handler (or `init`, or a hook) panicked.
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic.
        location: Option<String>,
    },
    /// A signal ended it (`kill()`, the OOM killer, `kill -9`).
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// The process exited with this code from inside a handler (`std::process::exit`).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// `init` returned an error, or the actor's process could not start serving (listening on
    /// its address, making its event loop): the actor never started.
    InitFailed {
        /// The error `init` returned, or what failed.
        message: String,
    },
    /// The actor gave up on its own (`Context::fail`; a supervisor past its restart
    /// intensity), or its event loop failed (the kernel refused to wait on its sockets).
    Failed {
        /// Why.
        message: String,
    },
    /// A linked actor died abnormally and this one did not trap exits, so it died too.
    Linked {
        /// The name of the linked actor that died first.
        name: String,
        /// How that one ended.
        reason: Box<ExitReason>,
    },
    /// The process ended without a word (a signal, most likely) and is not a child of this
    /// process, so its exit status belongs to its own parent.
    Unknown,
}

impl ExitReason {
    /// True for every reason except [`Normal`](ExitReason::Normal): what links propagate and
    /// transient children are restarted for.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => write!(f, "stopped normally"),
            ExitReason::Panicked { message, location } => write!(
                f,
                "panicked at {}: {message}",
                location.as_deref().unwrap_or("<unknown>")
            ),
            ExitReason::Killed { signal } => {
                write!(f, "killed by signal {signal} ({})", signal_name(*signal))
            }
            ExitReason::Exited { code } => write!(f, "exited with code {code}"),
            ExitReason::InitFailed { message } => write!(f, "init failed: {message}"),
            ExitReason::Failed { message } => write!(f, "failed: {message}"),
            ExitReason::Linked { name, reason } => {
                write!(f, "linked actor {name:?} died ({reason})")
            }
            ExitReason::Unknown => write!(f, "ended without a word (status unknown here)"),
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// The umbrella error stays small: every `Result` in the API carries it.
    #[test]
    fn the_error_is_at_most_48_bytes() {
        assert!(
            std::mem::size_of::<super::Error>() <= 48,
            "{}",
            std::mem::size_of::<super::Error>()
        );
    }
}

//! The one error type of procactor. Every variant says which process, which pid and what it said,
//! so the caller can act on it without digging.

use std::io;
use std::time::Duration;

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
/// assert!(matches!(err, Error::Exited { code: 3, .. }));
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child panicked; `message` and `location` are those of its panic.
    #[error("process {name:?} (pid {pid}) panicked at {}: {message}", location.as_deref().unwrap_or("<unknown>"))]
    Panicked {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// The panic payload, when it was a string.
        message: String,
        /// `file:line:column` of the panic.
        location: Option<String>,
    },

    /// The child was ended by a signal (SIGKILL from the OOM killer, `kill()`, `terminate()`...).
    #[error("process {name:?} (pid {pid}) was killed by signal {signal} ({})", signal_name(*signal))]
    Killed {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// The signal number (9 for SIGKILL).
        signal: i32,
    },

    /// The child exited (for example through `std::process::exit`) without returning a value.
    #[error("process {name:?} (pid {pid}) exited with code {code} before returning a value")]
    Exited {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// Its exit code.
        code: i32,
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
        reason: String,
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
    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        // A peer that went away is not an I/O failure for the caller: say it plainly.
        match source.raw_os_error() {
            Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => {
                Error::Disconnected
            }
            _ => Error::Io { op, source },
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

/// SIGKILL → "SIGKILL": for messages only.
pub(crate) fn signal_name(signal: i32) -> &'static str {
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

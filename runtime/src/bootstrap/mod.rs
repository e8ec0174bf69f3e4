//! How a child process starts and finds what to run.
//!
//! A child runs a *job*: the address of a function `fn(A) -> R` in this same binary (sent as an
//! offset from a known symbol, and checked against the binary's identity), its serialized
//! argument, and a header (name, daemon flag, parent). Three start methods, as in Python:
//!
//! * `Spawn`: `posix_spawn` of `/proc/self/exe` with one socket inherited; the child's
//!   `procactor::init()` finds it through the `PROCACTOR_BOOT` variable, says hello, and gets its
//!   job. The parent waits for the hello with a deadline while watching the child's pidfd, so a
//!   child that dies or never reaches `init()` is an error, never a hang.
//! * `Fork`: `fork()` and run the job in the copy. The copy closes every other procactor
//!   descriptor it inherited, so pipes keep their disconnect semantics.
//! * `ForkServer`: a single-threaded server process (see `forkserver`) forks children on request.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use procactor_os::code::{self, CodeRef, SignedCode};

mod forkserver;

use crate::error::{Error, Result};
use crate::logs;
use crate::shm::Shared;
use crate::sys::{self, ForkKind};
use crate::wire::{self, Channel, Wait, KIND_VALUE};
use crate::{exit, identity};

/// The environment variable through which a spawned child finds its bootstrap socket.
pub(crate) const BOOT_ENV: &str = "PROCACTOR_BOOT";

/// How a new process is made. Python's start methods.
///
/// ```
/// # procactor::init();
/// use procactor::{Process, StartMethod};
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// for method in [StartMethod::Spawn, StartMethod::Fork, StartMethod::ForkServer] {
///     let p = Process::new(double, 21).start_method(method).start()?;
///     assert_eq!(p.join()?, 42);
/// }
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StartMethod {
    /// Re-execute the current binary (`/proc/self/exe`), which must call `procactor::init()`
    /// first in `main`. The safe default: the child starts from a clean state.
    #[default]
    Spawn,
    /// `fork()` the current process: the fastest start, and the child sees a copy of the parent's
    /// memory. Only the calling thread exists in the child: if other threads held locks (a
    /// logger's, stdout's) at that moment, the child can deadlock on them. procactor logs a
    /// warning when it forks a process that has other threads; prefer `ForkServer` then.
    Fork,
    /// Ask a single-threaded fork server (started on first use, itself spawned) to fork the
    /// child: fork's speed with spawn's clean state.
    ForkServer,
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the start method used by processes that do not choose one (Python's
/// `set_start_method`).
///
/// A second call replaces the default, for processes started after it. (CPython raises unless
/// `force=True`, because its context is global state other code relies on. Here a default is
/// only a default: code that needs a method says so itself.) The equivalent of CPython's
/// `get_context(method)` is choosing per object: [`Process::start_method`](crate::Process),
/// `PoolBuilder::start_method`, `ExecutorBuilder::start_method`.
///
/// ```
/// use procactor::StartMethod;
/// procactor::set_start_method(StartMethod::ForkServer);
/// assert_eq!(procactor::process::get_start_method(), StartMethod::ForkServer);
/// procactor::set_start_method(StartMethod::Spawn);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method as u8, Ordering::Relaxed);
}

/// The start method used by processes that do not choose one.
///
/// ```
/// assert_eq!(procactor::process::get_start_method(), procactor::StartMethod::Spawn);
/// ```
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        1 => StartMethod::Fork,
        2 => StartMethod::ForkServer,
        _ => StartMethod::Spawn,
    }
}

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Call this first in `main` (or put `#[procactor::main]` on it).
///
/// In the program you run, it prepares the runtime (and raises the open-files limit: every pipe
/// end is a descriptor). In a child that procactor spawned by re-executing this binary, it runs
/// the child's function and exits: code after `init()` never runs there. That is why it must
/// come first: anything before it runs again in every spawned child.
///
/// ```
/// procactor::init(); // the first line of `fn main()`
/// let p = procactor::Process::new(|x: u32| x + 1, 1).start()?;
/// assert_eq!(p.join()?, 2);
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn init() {
    if let Some(boot) = std::env::var_os(BOOT_ENV) {
        run_spawned_child(&boot.to_string_lossy());
    }
    INITIALIZED.store(true, Ordering::Release);
    sys::raise_nofile_limit();
    // The process tree's name table and socket directory, made now (one descriptor for the
    // program's life) rather than at the first child, so that what the program holds does not
    // change later; the directory goes at exit.
    if let Err(e) = crate::names::table() {
        log::warn!(target: "procactor::bootstrap", "the name registry could not be made: {e}");
    }
    match identity::session() {
        Ok(_) => exit::watch_exit(),
        Err(e) => log::warn!(target: "procactor::bootstrap", "{e}"),
    }
}

/// For `procactor::test_support!()`: `init()` from a constructor, before the test harness's
/// `main`. Must not unwind (it is called from C).
#[doc(hidden)]
pub fn test_support_init() {
    if panic::catch_unwind(init).is_err() {
        sys::exit_now(70);
    }
}

/// Refuses to start children when that would be a mistake: in a child that skipped `init()`
/// (each one would start more: a fork bomb) and, for methods that re-execute the binary, in a
/// program that never called `init()` (its children could never find their job).
fn check_can_start(name: &str, method: StartMethod) -> Result<()> {
    if std::env::var_os(BOOT_ENV).is_some() {
        return Err(Error::Start {
            name: name.into(),
            reason: "this process was started by procactor but its main did not call \
                     procactor::init() first, so it is running the parent's main again; refusing \
                     to start more processes (that would be a fork bomb). Add `procactor::init();` \
                     as the first line of main (or #[procactor::main])"
                .into(),
        });
    }
    if method != StartMethod::Fork && !INITIALIZED.load(Ordering::Acquire) {
        return Err(Error::Start {
            name: name.into(),
            reason: format!(
                "procactor::init() was never called, so a {method:?} child could not find its job. \
                 Add `procactor::init();` as the first line of main (or put #[procactor::main] on \
                 it). Where main is not yours (integration tests, a library's #[cfg(test)] unit \
                 tests, benches with a harness), write `procactor::test_support!();` once in the \
                 file or test module; in a doctest, call `procactor::init();` first"
            )
            .into(),
        });
    }
    Ok(())
}

/// What the parent asks of a new process.
pub(crate) struct Spec<'a> {
    pub name: &'a str,
    pub daemon: bool,
    pub method: StartMethod,
    pub start_timeout: Duration,
    /// For `Spawn`: wait until the child has reached `init()` (when the job goes early).
    pub await_hello: bool,
}

/// A child that was started: its pid, a pidfd on it, and the channel its outcome comes back on.
pub(crate) struct Started {
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub chan: Channel,
}

/// The part of a job every start method reads before it knows the argument's type.
#[derive(Serialize, Deserialize)]
pub(crate) struct JobHeader {
    pub(crate) exe: (u64, u64),
    /// `entry::<A, R>` and the user's `fn(A) -> R`, signed with the tree's secret below.
    entry: SignedCode,
    func: SignedCode,
    name: String,
    daemon: bool,
    parent_pid: u32,
    parent_name: String,
    /// Whether the thread that made the child is the parent's main thread: only then does the
    /// kernel's parent-death signal mean "the parent process died".
    parent_thread_is_main: bool,
    /// The process tree's session: the scope of actor addresses and registered names.
    session: String,
    /// The tree's secret: it signs the function references sent to its managers.
    session_key: [u8; 32],
}

/// What a child reports after running its function.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    Returned(R),
    Panicked {
        message: String,
        location: Option<String>,
    },
}

/// What a child reports when it could not run its function at all.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Failure {
    Start(String),
    Decode { expected: String, reason: String },
    Encode { type_name: String, reason: String },
}

/// Fingerprints of the frames exchanged during bootstrap.
struct Hello;
struct JobFrame;
pub(crate) fn failure_fingerprint() -> u64 {
    wire::fingerprint::<Failure>()
}

/// The process tree's secret: 256 random bits the root draws, inherited by every descendant
/// through its job (never on any address or in any message to a stranger). It signs the
/// functions sent between the tree's processes (see `procactor_os::code`).
pub(crate) fn session_key() -> [u8; 32] {
    code::tree_key()
}

/// The function-pointer type of a job's entry point: checks and decodes the user's function and
/// argument, runs it, reports the outcome, and returns the exit code.
type Entry = fn(func: SignedCode, args: &[u8], fds: Vec<OwnedFd>, out: &Channel) -> i32;

/// Starts a child running `f(args)` as `spec` says.
pub(crate) fn start<A, R>(spec: &Spec, f: fn(A) -> R, args: &A) -> Result<Started>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    check_can_start(spec.name, spec.method)?;
    let header = JobHeader {
        exe: exe_identity(),
        entry: CodeRef::new(entry::<A, R> as Entry)?.sign(),
        func: CodeRef::new(f)?.sign(),
        name: spec.name.to_string(),
        daemon: spec.daemon,
        parent_pid: sys::getpid(),
        parent_name: identity::my_name(),
        parent_thread_is_main: match spec.method {
            // A fork server's children are children of the thread that launched the server.
            StartMethod::ForkServer => forkserver::launched_from_main_thread(),
            _ => sys::gettid() == sys::getpid(),
        },
        session: identity::session()?,
        session_key: session_key(),
    };
    let sink = logs::sink();
    let names = crate::names::table()?;
    // A forked child (the fork server's too) has the table already, mapped where its parent
    // had it: only an exec'd child is sent it.
    let names = matches!(spec.method, StartMethod::Spawn).then_some(&names);
    let mut payload = Vec::new();
    wire::encode(&header, &mut payload)?;
    let fds = wire::encode(&(sink.as_ref(), &names, args), &mut payload)?;
    match spec.method {
        StartMethod::Spawn => spawn(spec, &payload, &fds),
        StartMethod::Fork => fork(spec, &payload, &fds),
        StartMethod::ForkServer => forkserver::start(spec, &payload, &fds),
    }
}

pub(crate) fn exe_identity() -> (u64, u64) {
    code::exe_identity()
}

fn start_error(name: &str, reason: impl Into<String>) -> Error {
    Error::Start {
        name: name.into(),
        reason: reason.into().into(),
    }
}

/// Re-executes this binary and hands it its job, written at once (a large one in a memory file):
/// the child never waits for it, and we never wait on the child to read it.
fn spawn(spec: &Spec, payload: &[u8], fds: &[RawFd]) -> Result<Started> {
    let (chan, theirs) = Channel::pair()?;
    let pid = sys::spawn_self(
        theirs.as_fd(),
        (BOOT_ENV, &theirs.as_fd().as_raw_fd().to_string()),
    )
    .map_err(|e| start_error(spec.name, format!("posix_spawn of /proc/self/exe: {e}")))?;
    drop(theirs);
    let pidfd = pidfd_of_new_child(pid)?;
    let started = Started { pid, pidfd, chan };
    let job = wire::fingerprint::<JobFrame>();
    let handshake = (|| {
        // Sent at once, whatever its size: a large job goes in a memory file, so the child never
        // makes us wait (not even one that stops, or never reaches `init()` to read it).
        let sent = match started.chan.send_detached(KIND_VALUE, job, payload, fds) {
            Ok(()) => true,
            // The child already ended: the hello wait reports why.
            Err(Error::Disconnected) => false,
            Err(e) => return Err(e),
        };
        if sent && !spec.await_hello {
            return Ok(());
        }
        await_hello(spec, &started)?;
        if !sent {
            return Err(start_error(
                spec.name,
                "the child closed its bootstrap socket",
            ));
        }
        Ok(())
    })();
    if let Err(e) = handshake {
        // Never leave the child behind: kill and reap it before reporting.
        let _ = sys::signal(started.pidfd.as_fd(), sys::SIGKILL);
        let _ = sys::reap(started.pidfd.as_fd(), true);
        return Err(e);
    }
    Ok(started)
}

/// Waits for a spawned child to reach `init()`, at most `spec.start_timeout`.
fn await_hello(spec: &Spec, s: &Started) -> Result<()> {
    let deadline = Instant::now() + spec.start_timeout;
    let missing = "make `procactor::init();` the first line of main (or use #[procactor::main]; \
                   in integration tests, `procactor::test_support!();`)";
    loop {
        let ready = sys::wait_readable(&[s.chan.as_fd(), s.pidfd.as_fd()], Some(deadline))
            .map_err(|e| Error::io("poll", e))?;
        match ready {
            None => {
                return Err(start_error(
                    spec.name,
                    format!(
                        "the child (pid {}) did not call procactor::init() within {:?}: {missing}",
                        s.pid, spec.start_timeout
                    ),
                ))
            }
            Some(0) => {
                match s.chan.recv(Wait::No, |frame| {
                    Ok(frame.fingerprint == wire::fingerprint::<Hello>())
                }) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {
                        return Err(start_error(
                            spec.name,
                            "the child sent garbage instead of hello",
                        ))
                    }
                    Err(Error::Timeout(_)) => continue,
                    Err(Error::Disconnected) => {}
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {}
        }
        // The child ended (or closed its bootstrap socket) before saying hello.
        let status = sys::reap(s.pidfd.as_fd(), true).map_err(|e| Error::io("waitid", e))?;
        return Err(start_error(
            spec.name,
            format!(
                "the child (pid {}) ended ({status:?}) before calling procactor::init(): {missing}",
                s.pid
            ),
        ));
    }
}

/// Forks this process and runs the job in the copy.
fn fork(spec: &Spec, payload: &[u8], fds: &[RawFd]) -> Result<Started> {
    warn_if_threaded();
    let (chan, theirs) = Channel::pair()?;
    // Held across fork(): no other thread can be half-way through changing the registry, and
    // the child finds it consistent.
    let mut live = wire::live_channels();
    // The child only duplicates and closes descriptors, then runs the job (and exits);
    // it touches no lock that another thread of ours may hold, save glibc's fork-safe malloc.
    match sys::fork_child(ForkKind::Fork) {
        Ok(None) => {
            let out = dup_or_exit(theirs.as_fd());
            let args: Vec<OwnedFd> = fds
                .iter()
                .map(|&fd| dup_or_exit(wire::borrow_collected(fd)))
                .collect();
            release_inherited_channels(&mut live);
            drop(live);
            run_job(Channel::from_fd(out), payload, args)
        }
        Ok(Some(pid)) => {
            drop(live);
            drop(theirs);
            let pidfd = pidfd_of_new_child(pid)?;
            Ok(Started { pid, pidfd, chan })
        }
        Err(e) => {
            drop(live);
            Err(start_error(spec.name, format!("fork: {e}")))
        }
    }
}

/// In a forked child: lets go of every channel inherited from the parent (they belong to other
/// processes' pipes, and holding them would hide their peers' disconnection). The objects that
/// own them in the copied memory stay valid (see `sys::release_fd`).
pub(crate) fn release_inherited_channels(live: &mut std::collections::BTreeSet<RawFd>) {
    let Ok(null) = sys::dev_null() else {
        sys::exit_now(71)
    };
    for &fd in live.iter() {
        sys::release_fd(fd, null.as_fd());
    }
    live.clear();
}

/// A pidfd on a child just made. Without one it could not be waited for or signalled safely, so
/// it is killed and reaped before the error is returned: nothing is left behind.
pub(crate) fn pidfd_of_new_child(pid: u32) -> Result<OwnedFd> {
    sys::pidfd_open(pid).map_err(|e| {
        sys::kill_and_reap(pid);
        Error::io("pidfd_open", e)
    })
}

fn dup_or_exit(fd: BorrowedFd) -> OwnedFd {
    sys::dup(fd).unwrap_or_else(|_| sys::exit_now(71))
}

fn warn_if_threaded() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let ours = logs::service_threads();
    let threads = sys::thread_count();
    if threads > 1 + ours && !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            target: "procactor::bootstrap",
            "forking a process with {} other threads: the child has only the forking thread, and \
             locks the others held stay locked in it. Prefer StartMethod::ForkServer or Spawn",
            threads - 1 - ours
        );
    }
}

/// Child side of `Spawn`: called by `init()` when `PROCACTOR_BOOT` is set.
fn run_spawned_child(boot: &str) -> ! {
    // Grandchildren must not mistake themselves for bootstrapping children. No other thread runs
    // yet: this is the first line of main (or a constructor).
    std::env::remove_var(BOOT_ENV);
    let fd: RawFd = match boot.parse() {
        Ok(fd) if fd > 2 && sys::is_open(fd) => fd,
        _ => {
            eprintln!("procactor: {BOOT_ENV}={boot:?} does not name an inherited socket; exiting");
            sys::exit_now(70)
        }
    };
    let owned = sys::adopt_inherited_fd(fd);
    let _ = sys::set_cloexec(owned.as_fd(), true);
    let chan = Channel::from_fd(owned);
    if chan
        .send(KIND_VALUE, wire::fingerprint::<Hello>(), &[], &[])
        .is_err()
    {
        sys::exit_now(70); // the parent is gone
    }
    let job_fp = wire::fingerprint::<JobFrame>();
    let job = chan.recv(Wait::Forever, |frame| {
        if frame.fingerprint != job_fp {
            return Err(start_error("?", "unexpected bootstrap frame"));
        }
        Ok((frame.payload.to_vec(), frame.fds))
    });
    match job {
        Ok((payload, fds)) => run_job(chan, &payload, fds.into()),
        Err(_) => sys::exit_now(70),
    }
}

/// Runs a job in the child process and exits with its code.
pub(crate) fn run_job(out: Channel, payload: &[u8], fds: Vec<OwnedFd>) -> ! {
    let code = match wire::decode_prefix::<JobHeader>(payload, Vec::new()) {
        Err(e) => report_failure(&out, Failure::Start(format!("unreadable job: {e}"))),
        Ok((header, args)) => run_header(&out, header, args, fds),
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_now(code)
}

/// Is this job for this very binary (so that its function offsets mean the same code here)?
pub(crate) fn header_runs_here(h: &JobHeader) -> bool {
    h.exe == exe_identity()
}

#[cfg(test)]
impl JobHeader {
    /// A header as a parent of this binary would write it.
    pub(crate) fn sample() -> JobHeader {
        JobHeader {
            exe: exe_identity(),
            entry: CodeRef::new(entry::<u8, u8> as Entry).unwrap().sign(),
            func: CodeRef::new(std::convert::identity::<u8> as fn(u8) -> u8)
                .unwrap()
                .sign(),
            name: "child".into(),
            daemon: false,
            parent_pid: 1,
            parent_name: "main".into(),
            parent_thread_is_main: true,
            session: "00".repeat(16),
            session_key: [7; 32],
        }
    }
}

fn run_header(out: &Channel, h: JobHeader, args: &[u8], fds: Vec<OwnedFd>) -> i32 {
    if !header_runs_here(&h) {
        return report_failure(
            out,
            Failure::Start("the child runs a different binary than its parent".into()),
        );
    }
    code::adopt_tree_key(h.session_key);
    let entry = match CodeRef::<Entry>::verify(h.entry) {
        Ok(e) => e.get(),
        Err(e) => return report_failure(out, Failure::Start(e.to_string())),
    };
    identity::set_child_info(identity::ChildInfo {
        name: h.name.clone(),
        parent_pid: h.parent_pid,
        parent_name: h.parent_name,
        session: h.session,
        daemon: h.daemon,
    });
    INITIALIZED.store(true, Ordering::Release);
    if h.daemon {
        die_with_parent(h.parent_pid, h.parent_thread_is_main);
    }
    install_panic_hook();
    entry(h.func, args, fds, out)
}

/// Daemon children die with their parent process, however it ends (even by SIGKILL).
fn die_with_parent(parent: u32, parent_thread_is_main: bool) {
    // The kernel's parent-death signal fires when the *thread* that made us ends: exact when that
    // is the main thread (its end is the process's end), wrong for any other thread.
    if parent_thread_is_main && sys::kill_me_when_parent_thread_ends().is_err() {
        sys::exit_now(70);
    }
    // Opened before the check below, so the parent cannot die unseen in between.
    let watch = if parent_thread_is_main {
        None
    } else {
        sys::pidfd_open(parent).ok()
    };
    if !sys::parent_is(parent) {
        sys::exit_now(70); // already gone
    }
    if parent_thread_is_main {
        return;
    }
    let Some(pidfd) = watch else {
        sys::exit_now(70)
    };
    let watcher = crate::per_process::spawn_thread("procactor-daemon-watch", move || {
        let _ = sys::wait_readable(&[pidfd.as_fd()], None);
        sys::kill_self();
    });
    if watcher.is_err() {
        sys::exit_now(70);
    }
}

thread_local! {
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        PANIC_LOCATION.with(|l| *l.borrow_mut() = info.location().map(|l| l.to_string()));
        default(info)
    }));
}

/// The message and location of a panic caught with `catch_unwind` in this thread.
pub(crate) fn caught_panic(payload: &(dyn std::any::Any + Send)) -> (String, Option<String>) {
    (
        panic_message(payload),
        PANIC_LOCATION.with(|l| l.borrow_mut().take()),
    )
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

fn report_failure(out: &Channel, failure: Failure) -> i32 {
    let mut buf = Vec::new();
    if wire::encode(&failure, &mut buf).is_ok() {
        let _ = out.send(KIND_VALUE, failure_fingerprint(), &buf, &[]);
    }
    1
}

/// The entry point of a job whose function is `fn(A) -> R`.
fn entry<A, R>(func: SignedCode, args: &[u8], fds: Vec<OwnedFd>, out: &Channel) -> i32
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    let f = match CodeRef::<fn(A) -> R>::verify(func) {
        Ok(f) => f.get(),
        Err(e) => return report_failure(out, Failure::Start(e.to_string())),
    };
    type Job<A> = (Option<logs::Sink>, Option<Shared<crate::names::Table>>, A);
    let (sink, names, args) = match wire::decode::<Job<A>>(args, fds) {
        Ok(v) => v,
        Err(e) => {
            let (expected, reason) = match e {
                Error::Decode { expected, reason } => (expected.to_string(), reason),
                other => (std::any::type_name::<A>().to_string(), other.to_string()),
            };
            return report_failure(out, Failure::Decode { expected, reason });
        }
    };
    logs::install(sink);
    if let Some(names) = names {
        crate::names::install(names);
    }
    let outcome = match panic::catch_unwind(AssertUnwindSafe(move || f(args))) {
        Ok(r) => Outcome::Returned(r),
        Err(payload) => Outcome::Panicked {
            message: panic_message(&*payload),
            location: PANIC_LOCATION.with(|l| l.borrow_mut().take()),
        },
    };
    // Before the parent hears that it returned (or panicked): what the function left in flight
    // (tells waiting for the flusher) goes out, and its children end as in Python (daemons
    // terminated, the others joined).
    exit::run_exit_hooks();
    let code = if matches!(outcome, Outcome::Returned(_)) {
        0
    } else {
        1
    };
    let mut buf = Vec::new();
    match wire::encode(&outcome, &mut buf) {
        Ok(fds) => {
            // The parent may be gone; there is nobody left to tell then. Detached: a large
            // report waits in a memory file, not for a reader, so this process ends even if its
            // parent never reads it (a parent at its own exit joins without reading).
            let _ = out.send_detached(KIND_VALUE, wire::fingerprint::<Outcome<R>>(), &buf, &fds);
            code
        }
        Err(e) => report_failure(
            out,
            Failure::Encode {
                type_name: std::any::type_name::<R>().into(),
                reason: e.to_string(),
            },
        ),
    }
}

/// Reads a child's outcome frame (`Ok(None)`: the child ended without reporting one).
pub(crate) fn read_outcome<R: DeserializeOwned>(
    chan: &Channel,
    wait: Wait,
) -> Result<Option<Result<Outcome<R>, Failure>>> {
    let want = wire::fingerprint::<Outcome<R>>();
    let res = chan.recv(wait, |frame| {
        if frame.fingerprint == wire::fingerprint::<Hello>() {
            // A child started without waiting for its hello (see `Spec::await_hello`).
            return Ok(None);
        }
        if frame.fingerprint == failure_fingerprint() {
            return wire::decode::<Failure>(frame.payload, frame.fds).map(|f| Some(Err(f)));
        }
        if frame.fingerprint != want {
            return Err(Error::Decode {
                expected: std::any::type_name::<R>(),
                reason: "the child reported a value of another type".into(),
            });
        }
        wire::decode::<Outcome<R>>(frame.payload, frame.fds).map(|o| Some(Ok(o)))
    });
    match res {
        Ok(None) => read_outcome(chan, wait),
        Ok(Some(v)) => Ok(Some(v)),
        Err(Error::Disconnected) => Ok(None),
        Err(e) => Err(e),
    }
}

//! The fork server behind `StartMethod::ForkServer`.
//!
//! A single-threaded process, itself started with `Spawn` on first use (so it is a clean image
//! that stopped in `init()`), forks each child on request with `clone(CLONE_PARENT)`: the child
//! becomes a child of the *requesting* process, which can then wait for it, signal it and read
//! its exit status exactly as for the other start methods. The server is a daemon child: it dies
//! with the program.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::bootstrap::{self, Spec, StartMethod, Started};
use crate::error::{Error, Result};
use crate::sys::{self, ForkKind};
use crate::wire::{self, Channel, Fd, Wait, KIND_VALUE};

struct Server {
    /// Whether the thread that launched it is the main thread (see `bootstrap::die_with_parent`).
    from_main_thread: bool,
    ctl: Channel,
    /// The server process: killed and reaped when it is replaced. Not a `Process` (that layer is
    /// above this one) and not among `active_children`: a daemon, it dies with this process.
    child: Started,
}

impl Server {
    fn kill(self) {
        let _ = sys::signal(self.child.pidfd.as_fd(), sys::SIGKILL);
        let _ = sys::reap(self.child.pidfd.as_fd(), true);
    }
}

procactor_os::per_process! {
    /// Per process: a `Fork` child inherits the entry, but its channel was released at the fork; it
    /// launches a server of its own.
    static SERVER: Option<Server> = || None;
}

struct Request;

/// How long the server may take to answer a request (it only forks).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Forks a child through the server (started, or restarted if it died, on demand).
pub(crate) fn start(spec: &Spec, payload: &[u8], fds: &[RawFd]) -> Result<Started> {
    let mut guard = SERVER.lock();
    for attempt in 0..2 {
        if guard.is_none() {
            *guard = Some(launch(spec)?);
        }
        let server = guard.as_ref().expect("just set");
        match request(server, spec, payload, fds) {
            // The server answered (a child, or why not): it is in step for the next request.
            Ok(started) => return Ok(started),
            Err(e @ Error::Start { .. }) => return Err(e),
            Err(e) => {
                // Gone (killed, OOM) or out of step (a late reply would answer the next request):
                // replace it, and retry once if it was simply gone.
                if let Some(old) = guard.take() {
                    old.kill();
                }
                if attempt > 0 || !matches!(e, Error::Disconnected) {
                    return Err(e);
                }
            }
        }
    }
    Err(Error::Start {
        name: spec.name.into(),
        reason: "the fork server keeps dying".into(),
    })
}

/// Whether children forked by this process's server are children of its main thread (the thread
/// that launched the server, or that will launch it now).
pub(crate) fn launched_from_main_thread() -> bool {
    let guard = SERVER.lock();
    match guard.as_ref() {
        Some(server) => server.from_main_thread,
        None => sys::gettid() == sys::getpid(),
    }
}

fn launch(spec: &Spec) -> Result<Server> {
    let (ctl, theirs) = Channel::pair()?;
    let server = Spec {
        name: "procactor-forkserver",
        daemon: true,
        method: StartMethod::Spawn,
        start_timeout: spec.start_timeout,
        await_hello: true,
    };
    let child = bootstrap::start(&server, serve as fn(Fd), &Fd(theirs.into_fd()))?;
    Ok(Server {
        from_main_thread: sys::gettid() == sys::getpid(),
        ctl,
        child,
    })
}

fn request(server: &Server, spec: &Spec, payload: &[u8], fds: &[RawFd]) -> Result<Started> {
    let (chan, theirs) = Channel::pair()?;
    let mut all = Vec::with_capacity(fds.len() + 1);
    all.push(theirs.as_fd().as_raw_fd());
    all.extend_from_slice(fds);
    server
        .ctl
        .send(KIND_VALUE, wire::fingerprint::<Request>(), payload, &all)?;
    drop(theirs);
    let reply: std::result::Result<u32, String> =
        server.ctl.recv(Wait::timeout(REPLY_TIMEOUT), |frame| {
            wire::decode(frame.payload, frame.fds)
        })?;
    let pid = reply.map_err(|reason| Error::Start {
        name: spec.name.into(),
        reason: reason.into(),
    })?;
    let pidfd = bootstrap::pidfd_of_new_child(pid)?;
    Ok(Started { pid, pidfd, chan })
}

/// The server's loop: one request, one fork, one reply with the pid.
fn serve(ctl: Fd) {
    procactor_os::code::prepare_to_fork();
    let ctl = Channel::from_fd(ctl.0);
    loop {
        // Copy the request out of the receive buffer: the child must not start inside a borrow.
        let request = ctl.recv(Wait::Forever, |frame| {
            if frame.fingerprint != wire::fingerprint::<Request>() || frame.fds.is_empty() {
                return Ok(None);
            }
            Ok(Some((frame.payload.to_vec(), frame.fds)))
        });
        let reply = match request {
            Ok(Some((payload, fds))) => {
                let mut fds: Vec<OwnedFd> = fds.into();
                let boot = fds.remove(0);
                fork_one(&payload, boot, fds)
            }
            Ok(None) => Err("malformed fork request".to_string()),
            Err(Error::Disconnected) => return, // the program ended
            Err(e) => Err(e.to_string()),
        };
        let mut buf = Vec::new();
        if wire::encode(&reply, &mut buf).is_err() || ctl.send(KIND_VALUE, 0, &buf, &[]).is_err() {
            return;
        }
    }
}

fn fork_one(payload: &[u8], boot: OwnedFd, fds: Vec<OwnedFd>) -> std::result::Result<u32, String> {
    let mut live = wire::live_channels();
    // This server is single-threaded; the child closes the server's own channels and
    // runs the job, never returning.
    match sys::fork_child(ForkKind::SiblingOfSelf) {
        Ok(None) => {
            bootstrap::release_inherited_channels(&mut live);
            drop(live);
            bootstrap::run_job(Channel::from_fd(boot), payload, fds)
        }
        Ok(Some(pid)) => Ok(pid),
        Err(e) => Err(format!("fork server: clone: {e}")),
    }
}

//! Who this process is in its tree: its name and parent (for a procactor child), and the
//! tree's session (the private directory its actors listen in). Below everything that names
//! this process: logs, the start methods, `current_process`.

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::sys;

/// Info about this process as a procactor child (set in children only).
#[derive(Clone, Debug)]
pub(crate) struct ChildInfo {
    pub name: String,
    pub parent_pid: u32,
    pub parent_name: String,
    pub session: String,
    /// Started as a daemon: its own children are daemons unless they say otherwise.
    pub daemon: bool,
}

// Per process: a fork server's children (and forked copies) get their own entry.
procactor_os::per_process! {
    static CHILD: Option<ChildInfo> = || None;
}

pub(crate) fn child_info() -> Option<ChildInfo> {
    CHILD.lock().clone()
}

/// Whether this process was started as a daemon.
pub(crate) fn is_daemon() -> bool {
    CHILD.lock().as_ref().is_some_and(|c| c.daemon)
}

/// The session of this process tree: a directory private to this user (mode 0700) that the root
/// program makes, inherited by every descendant. Actors listen on sockets in it, so only
/// processes of this user can even connect to one, and two programs never meet. Its name holds
/// the root's pid and start time (to sweep it away if the root was killed) and 128 random bits.
pub(crate) fn session() -> Result<String> {
    static ROOT: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    if let Some(c) = &*CHILD.lock() {
        return Ok(c.session.clone());
    }
    ROOT.get_or_init(|| make_session().map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| Error::Start {
            name: "procactor".into(),
            reason: format!("no private directory for this program's sockets: {reason}").into(),
        })
}

/// Longest socket path (`sun_path` is 108 bytes, one of them the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// What a socket's name adds to the session directory: `/` and 16 hex digits.
const SOCKET_NAME: usize = 17;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn make_session() -> std::io::Result<String> {
    let uid = sys::getuid();
    let pid = sys::getpid();
    let start = sys::process_start_time(pid).unwrap_or(0);
    let bits = hex(&sys::random_bytes::<16>()?);
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .ok()
        .filter(|d| d.starts_with('/'));
    let mut last = std::io::Error::other("no base directory");
    for base in runtime.iter().map(String::as_str).chain(["/tmp"]) {
        // Ours, or (when another user took the usual name first) a fresh one of our own.
        let mut user = format!("{base}/procactor-{uid}");
        match sys::private_dir(&user) {
            Ok(true) => sweep_stale_sessions(&user),
            Ok(false) => {
                user = format!("{base}/procactor-{uid}-{}", hex(&sys::random_bytes::<8>()?));
                if !sys::private_dir(&user)? {
                    continue;
                }
            }
            Err(e) => {
                last = e;
                continue;
            }
        }
        let dir = format!("{user}/{pid}.{start}.{bits}");
        if dir.len() + SOCKET_NAME > MAX_SOCKET_PATH {
            last = std::io::Error::other(format!("{dir:?} is too long for socket paths"));
            continue;
        }
        match sys::private_dir(&dir) {
            Ok(true) => return Ok(dir),
            Ok(false) => last = std::io::Error::other(format!("{dir:?} is not private")),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Removes the session directories (in `user`) of programs that ended without removing theirs
/// (killed): those whose root pid is gone, or is now another process.
fn sweep_stale_sessions(user: &str) {
    let Ok(entries) = std::fs::read_dir(user) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut parts = name.to_str().unwrap_or("").split('.');
        let (Some(pid), Some(start)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if sys::process_start_time(pid) != Some(start) {
            sys::remove_dir_all(&entry.path().to_string_lossy());
        }
    }
}

/// In the root program, at exit: the session directory goes (its sockets with it).
pub(crate) fn remove_session() {
    if CHILD.lock().is_some() {
        return;
    }
    if let Ok(dir) = session() {
        sys::remove_dir_all(&dir);
    }
}

/// This process's name: its own as a child, `MainProcess` for the program.
pub(crate) fn my_name() -> String {
    child_info().map_or_else(|| "MainProcess".to_string(), |c| c.name)
}

/// Records who this process is (a child, as its job says).
pub(crate) fn set_child_info(info: ChildInfo) {
    *CHILD.lock() = Some(info);
}

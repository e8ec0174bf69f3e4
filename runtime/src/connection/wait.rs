//! [`wait`]: which of several connections, listeners and processes is ready.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::process::ProcessHandle;
use crate::sys::{self, Want};
use crate::wire::Wait;

use super::Listener;

/// What [`wait`] can watch: a [`Connection`] (a message or the peer's end to read), a
/// [`Listener`] (a connection to take), a [`ProcessHandle`] (the process ended: its sentinel).
///
/// ```
/// use procactor::connection::{wait_timeout, Listener, Waitable};
/// let l = Listener::bind("127.0.0.1:0")?;
/// let (a, b) = procactor::Pipe::<u8>::duplex()?;
/// let all: [&dyn Waitable; 2] = [&l, &b];
/// a.send(1)?;
/// assert_eq!(wait_timeout(&all, std::time::Duration::from_secs(30))?, [1]);
/// # Ok::<(), procactor::Error>(())
/// ```
pub trait Waitable: AsFd {
    /// Ready without looking at the descriptor (a message already begun here).
    fn ready_now(&self) -> bool {
        false
    }
}

impl<T> Waitable for Connection<T> {
    fn ready_now(&self) -> bool {
        self.has_begun()
    }
}

impl Waitable for Listener {}

impl<R> Waitable for ProcessHandle<R> {}

/// Waits until at least one of `objects` is ready and returns the indices of those that are
/// (Python's `multiprocessing.connection.wait`), waiting as long as it takes.
///
/// ```
/// # procactor::init();
/// use procactor::connection::wait_timeout;
/// use std::time::Duration;
/// let (a, b) = procactor::Pipe::<u8>::duplex()?;
/// let (c, d) = procactor::Pipe::<u8>::duplex()?;
/// assert!(wait_timeout(&[&b, &d], Duration::ZERO)?.is_empty());
/// c.send(1)?;
/// assert_eq!(procactor::connection::wait(&[&b, &d])?, [1]);
/// fn nap(_: ()) { std::thread::sleep(Duration::from_millis(50)) }
/// let p = procactor::Process::new(nap, ()).start()?;
/// assert_eq!(wait_timeout(&[&b, &p], Duration::from_secs(30))?, [1]); // it ended
/// # drop(a);
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable]) -> Result<Vec<usize>> {
    wait_on(objects, Wait::Forever)
}

/// [`wait`], at most `timeout`: an empty list if none became ready (`Duration::ZERO` polls).
///
/// ```
/// use std::time::Duration;
/// let (_a, b) = procactor::Pipe::<u8>::duplex()?;
/// assert!(procactor::connection::wait_timeout(&[&b], Duration::from_millis(10))?.is_empty());
/// # Ok::<(), procactor::Error>(())
/// ```
pub fn wait_timeout(objects: &[&dyn Waitable], timeout: Duration) -> Result<Vec<usize>> {
    wait_on(objects, Wait::timeout(timeout))
}

fn wait_on(objects: &[&dyn Waitable], wait: Wait) -> Result<Vec<usize>> {
    let now: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].ready_now())
        .collect();
    if !now.is_empty() {
        return Ok(now);
    }
    let fds: Vec<(BorrowedFd, Want)> = objects.iter().map(|o| (o.as_fd(), Want::Read)).collect();
    let ready = sys::wait_ready(&fds, wait.deadline()).map_err(|e| Error::io("poll", e))?;
    Ok((0..ready.len()).filter(|&i| ready[i]).collect())
}

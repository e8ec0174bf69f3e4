//! [`Listener`]: accepts connections, each authenticated (and by default encrypted) before
//! `accept` returns it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Address, ToAddress, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::sys::{self, Want};
use crate::wire::handshake::Accepting;
use crate::wire::{self, Turn, Wait};

/// Handshakes in progress at once, at most: a quarter of the process's descriptor limit (and at
/// most 4096). Connections beyond are closed at once: a client that opens thousands and never
/// speaks must not exhaust our descriptors.
fn max_pending() -> usize {
    (sys::nofile_limit() / 4).clamp(16, 4096) as usize
}

/// Connections taken from the kernel per turn, at most (a flood of connects must not keep one
/// `accept` past its deadline).
const ACCEPTS_PER_TURN: usize = 256;

/// The longest one wait of `accept` holds the listener: a thread that accepts at the same
/// time (with its own timeout) gets its turn this soon.
const SLICE: Duration = Duration::from_millis(50);

/// Listens for connections (Python's `multiprocessing.connection.Listener`).
///
/// Each accepted connection has passed its handshake before [`accept`](Listener::accept)
/// returns it: with an [`authkey`](Listener::authkey), the peer proved it holds the key
/// (mutually), and the link is encrypted unless [`plaintext`](Listener::plaintext) asked for
/// CPython's protocol. Many handshakes run at once, each under its own deadline
/// ([`handshake_timeout`](Listener::handshake_timeout)): a client that connects and never
/// speaks holds up nobody. Without an authkey, only Unix sockets accept, and only peers of our
/// own user (the kernel says who connected).
///
/// ```
/// use procactor::connection::{Client, Listener};
/// let listener = Listener::bind("127.0.0.1:0")?.authkey(b"secret");
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || -> procactor::Result<String> {
///     let conn = Client::new(address).authkey(b"secret").connect::<String>()?;
///     conn.send("ping".to_string())?;
///     conn.recv()
/// });
/// let conn = listener.accept::<String>()?;
/// assert_eq!(conn.recv()?, "ping");
/// conn.send("pong".to_string())?;
/// assert_eq!(client.join().unwrap()?, "pong");
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Listener {
    fd: OwnedFd,
    address: Address,
    authkey: Option<Vec<u8>>,
    plaintext: bool,
    handshake_timeout: Duration,
    limit: u64,
    /// The handshakes in progress, driven by whichever thread accepts (one at a time).
    pending: Turn<Vec<Accepting>>,
}

impl Listener {
    /// Listens at `address` (see [`Address`]; TCP port 0 picks a free port, which
    /// [`address`](Listener::address) tells). An address something else listens on is an error
    /// (`AddrInUse`), as is a Unix path where a file exists.
    ///
    /// ```
    /// use procactor::connection::Listener;
    /// let a = Listener::bind("127.0.0.1:0")?;
    /// assert!(Listener::bind(a.address()).is_err()); // in use
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn bind(address: impl ToAddress) -> Result<Listener> {
        let address = address.to_address()?;
        let fd = sys::listen_stream(address.endpoint(), 1024)
            .map_err(|e| Error::io("bind and listen", e))?;
        let address = match address {
            Address::Tcp(_) => match sys::local_tcp_addr(fd.as_fd()) {
                Ok(Some(a)) => Address::Tcp(a),
                _ => address,
            },
            other => other,
        };
        Ok(Listener {
            fd,
            address,
            authkey: None,
            plaintext: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            limit: wire::DEFAULT_LIMIT,
            pending: Turn::new(Vec::new()),
        })
    }

    /// The key a peer must hold (both sides prove it; CPython's `authkey`). Required for TCP.
    ///
    /// ```
    /// let l = procactor::connection::Listener::bind("127.0.0.1:0")?.authkey(b"secret");
    /// # drop(l);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Listener {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// CPython's protocol: its HMAC challenge, then messages in the clear, so that Python's
    /// `multiprocessing.connection.Client` can connect. Without it, connections are encrypted
    /// and only procactor clients can connect.
    ///
    /// ```
    /// let l = procactor::connection::Listener::bind("127.0.0.1:0")?.authkey(b"k").plaintext();
    /// assert!(l.is_plaintext());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn plaintext(mut self) -> Listener {
        self.plaintext = true;
        self
    }

    /// How long a connected peer has to finish its handshake (10 s unless set).
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = procactor::connection::Listener::bind("127.0.0.1:0")?
    ///     .authkey(b"k")
    ///     .handshake_timeout(Duration::from_secs(2));
    /// # drop(l);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Listener {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest message accepted connections receive (see
    /// [`Connection::with_max_message_size`]).
    ///
    /// ```
    /// let l = procactor::connection::Listener::bind("127.0.0.1:0")?.max_message_size(1 << 20);
    /// # drop(l);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn max_message_size(mut self, bytes: u64) -> Listener {
        self.limit = bytes;
        self
    }

    /// Where it listens (with the port the kernel picked, for port 0).
    ///
    /// ```
    /// use procactor::connection::{Address, Listener};
    /// let l = Listener::bind("127.0.0.1:0")?;
    /// assert!(matches!(l.address(), Address::Tcp(a) if a.port() != 0));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The next connection whose handshake succeeded, waiting as long as it takes. Peers that
    /// fail their handshake are dropped (and logged at debug level); they are not errors of
    /// `accept`.
    ///
    /// ```
    /// use procactor::connection::{Client, Listener};
    /// let l = Listener::bind("@procactor-doc-accept")?; // an abstract name: our user only
    /// let c = Client::new("@procactor-doc-accept");
    /// let t = std::thread::spawn(move || c.connect::<String>()?.send("hi".into()));
    /// assert_eq!(l.accept::<String>()?.recv()?, "hi");
    /// t.join().unwrap()?;
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn accept<T>(&self) -> Result<Connection<T>> {
        self.accept_wait(Wait::Forever)
    }

    /// [`accept`](Listener::accept), waiting at most `timeout` ([`Error::Timeout`] then).
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = procactor::connection::Listener::bind("127.0.0.1:0")?.authkey(b"k");
    /// let e = l.accept_timeout::<u8>(Duration::from_millis(20)).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<Connection<T>> {
        self.accept_wait(Wait::timeout(timeout))
    }

    fn accept_wait<T>(&self, wait: Wait) -> Result<Connection<T>> {
        if self.authkey.is_none() && matches!(self.address, Address::Tcp(_)) {
            return Err(Error::Unsupported(
                "a TCP listener needs an authkey: anyone who can reach the port could connect",
            ));
        }
        loop {
            // Another thread accepting holds the handshakes for at most a slice: wait for the
            // turn within our own deadline.
            let mut pending = self.pending.take(wait)?;
            if let Some(conn) = self.accept_slice(&mut pending, wait.deadline())? {
                return Ok(Connection::from_stream(conn.into_stream(self.limit)));
            }
            drop(pending);
            if wait.deadline().is_some_and(|d| Instant::now() >= d) {
                return Err(wait.expired());
            }
        }
    }

    /// Advances every handshake as far as what arrived allows, dropping the expired and the
    /// failed ones; the first one over, if any.
    fn advance_all(&self, pending: &mut Vec<Accepting>, now: Instant) -> Option<Accepting> {
        let mut i = 0;
        while i < pending.len() {
            let expired = pending[i].deadline().is_some_and(|d| now >= d);
            match pending[i].advance() {
                Ok(true) => return Some(pending.swap_remove(i)),
                Ok(false) if !expired => i += 1,
                Ok(false) => {
                    log::debug!(target: "procactor::connection", "{}: a peer did not finish its handshake in time", self.address);
                    pending.swap_remove(i);
                }
                Err(e) => {
                    log::debug!(target: "procactor::connection", "{}: a handshake failed: {e}", self.address);
                    pending.swap_remove(i);
                }
            }
        }
        None
    }

    /// Takes new connections from the kernel (a bounded number), starting their handshakes.
    /// Out of descriptors, it closes the oldest handshake instead of failing: a flood of
    /// connections must not wedge the listener (nor starve the rest of the process).
    fn take_new(
        &self,
        pending: &mut Vec<Accepting>,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<()> {
        for _ in 0..ACCEPTS_PER_TURN {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            match sys::accept_stream(self.fd.as_fd()) {
                Ok(Some(fd)) => {
                    if let Some(a) = self.start(fd, now, pending.len()) {
                        pending.push(a);
                    }
                }
                Ok(None) => break,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(sys::EMFILE | sys::ENFILE | sys::ENOBUFS | sys::ENOMEM)
                    ) =>
                {
                    log::warn!(target: "procactor::connection", "{}: out of descriptors ({e}): the oldest handshake is closed", self.address);
                    if !pending.is_empty() {
                        pending.remove(0);
                    }
                    break;
                }
                Err(e) => return Err(Error::io("accept", e)),
            }
        }
        Ok(())
    }

    /// One turn: advances handshakes, takes new connections, waits at most one slice.
    fn accept_slice(
        &self,
        pending: &mut Vec<Accepting>,
        deadline: Option<Instant>,
    ) -> Result<Option<Accepting>> {
        let now = Instant::now();
        if let Some(done) = self.advance_all(pending, now) {
            return Ok(Some(done));
        }
        self.take_new(pending, now, deadline)?;
        // The new ones: their first message may be here already.
        if let Some(done) = self.advance_all(pending, now) {
            return Ok(Some(done));
        }
        let mut until = now + SLICE;
        for d in deadline
            .into_iter()
            .chain(pending.iter().filter_map(Accepting::deadline))
        {
            until = until.min(d);
        }
        let mut fds: Vec<(BorrowedFd, Want)> = vec![(self.fd.as_fd(), Want::Read)];
        fds.extend(pending.iter().map(|a| (a.as_fd(), Want::Read)));
        sys::wait_ready(&fds, Some(until)).map_err(|e| Error::io("poll", e))?;
        Ok(None)
    }

    /// Starts the handshake of a new connection, or refuses it (logged).
    fn start(&self, fd: OwnedFd, now: Instant, pending: usize) -> Option<Accepting> {
        let max = max_pending();
        if pending >= max {
            log::warn!(target: "procactor::connection", "{}: {max} handshakes in progress; a new connection is closed", self.address);
            return None;
        }
        if sys::is_unix_socket(fd.as_fd()) {
            let ours = sys::getuid();
            match sys::peer_cred(fd.as_fd()) {
                Ok(c) if c.uid == ours => {}
                Ok(c) => {
                    log::warn!(target: "procactor::connection", "{}: refused a connection from uid {} (pid {})", self.address, c.uid, c.pid);
                    return None;
                }
                Err(_) => return None,
            }
        }
        // A timeout too long to add is as good as a year.
        let deadline = now
            .checked_add(self.handshake_timeout)
            .unwrap_or(now + Duration::from_secs(365 * 86_400));
        match Accepting::start(fd, self.authkey.as_deref(), !self.plaintext, deadline) {
            Ok(a) => Some(a),
            Err(e) => {
                log::debug!(target: "procactor::connection", "{}: a handshake failed: {e}", self.address);
                None
            }
        }
    }

    /// Whether it speaks CPython's plaintext protocol (see [`plaintext`](Listener::plaintext)).
    pub fn is_plaintext(&self) -> bool {
        self.plaintext
    }

    /// Handshakes in progress now.
    ///
    /// ```
    /// let l = procactor::connection::Listener::bind("127.0.0.1:0")?.authkey(b"k");
    /// assert_eq!(l.pending_handshakes(), 0);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn pending_handshakes(&self) -> usize {
        self.pending
            .take(Wait::timeout(SLICE * 2))
            .map_or(0, |p| p.len())
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // As CPython's: a Unix listener removes its socket file.
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "…"))
            .field("plaintext", &self.plaintext)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

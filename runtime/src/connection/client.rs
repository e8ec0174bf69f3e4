//! [`Client`]: connects to a [`Listener`](super::Listener) (or to CPython's), under a deadline.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::{Address, ToAddress, DEFAULT_CONNECT_TIMEOUT};
use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::sys;
use crate::wire;
use crate::wire::handshake::Handshaking;

/// Connects to a listener (Python's `multiprocessing.connection.Client`): a builder; options
/// first, then [`connect`](Client::connect).
///
/// The connect and the handshake together take at most [`timeout`](Client::timeout) (20 s
/// unless set). With an [`authkey`](Client::authkey) both sides prove they hold it, and the
/// link is encrypted unless [`plaintext`](Client::plaintext) asks for CPython's protocol
/// (to talk to a Python `Listener`). Connecting to a Unix socket checks, from the kernel, that
/// its listener runs as our user.
///
/// ```
/// use procactor::connection::{Client, Listener};
/// use procactor::Error;
/// let listener = Listener::bind("127.0.0.1:0")?.authkey(b"right");
/// let address = listener.address().clone();
/// let server = std::thread::spawn(move || listener.accept_timeout::<()>(std::time::Duration::from_millis(500)));
/// let e = Client::new(&address).authkey(b"wrong").connect::<()>().unwrap_err();
/// assert!(matches!(e, Error::Authentication(_)));
/// assert!(server.join().unwrap().is_err()); // nobody got in
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    address: std::result::Result<Address, String>,
    authkey: Option<Vec<u8>>,
    plaintext: bool,
    timeout: Duration,
    limit: u64,
}

impl Client {
    /// A client for `address` (see [`Address`]); an address that does not parse is reported
    /// by [`connect`](Client::connect).
    ///
    /// ```
    /// let c = procactor::connection::Client::new("127.0.0.1:6000");
    /// assert!(c.address().is_some());
    /// assert!(procactor::connection::Client::new("no-port-here").address().is_none());
    /// ```
    pub fn new(address: impl ToAddress) -> Client {
        Client {
            address: address.to_address().map_err(|e| e.to_string()),
            authkey: None,
            plaintext: false,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            limit: wire::DEFAULT_LIMIT,
        }
    }

    /// The address it connects to (`None` if it did not parse: `connect` says why).
    ///
    /// ```
    /// use procactor::connection::{Address, Client};
    /// assert_eq!(Client::new("@x").address(), Some(&Address::Abstract("x".into())));
    /// ```
    pub fn address(&self) -> Option<&Address> {
        self.address.as_ref().ok()
    }

    /// The key to prove we hold, and to demand the listener proves (required for TCP).
    ///
    /// ```
    /// let c = procactor::connection::Client::new("127.0.0.1:6000").authkey(b"secret");
    /// # drop(c);
    /// ```
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Client {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// CPython's protocol (its HMAC challenge, then messages in the clear), to talk to a Python
    /// `multiprocessing.connection.Listener` or a procactor one made with `plaintext()`.
    ///
    /// ```
    /// let c = procactor::connection::Client::new("127.0.0.1:6000").authkey(b"k").plaintext();
    /// # drop(c);
    /// ```
    pub fn plaintext(mut self) -> Client {
        self.plaintext = true;
        self
    }

    /// The most the connect and the handshake may take together.
    ///
    /// ```
    /// use std::time::Duration;
    /// // TEST-NET-1: nobody answers there.
    /// let c = procactor::connection::Client::new("192.0.2.1:9")
    ///     .authkey(b"k")
    ///     .timeout(Duration::from_millis(100));
    /// assert!(c.connect::<()>().is_err());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The largest message the connection receives.
    ///
    /// ```
    /// let c = procactor::connection::Client::new("@x").max_message_size(1 << 20);
    /// # drop(c);
    /// ```
    pub fn max_message_size(mut self, bytes: u64) -> Client {
        self.limit = bytes;
        self
    }

    /// Connects, authenticates, and returns the connection for messages of type `T`.
    /// [`Error::Timeout`] if the listener did not answer in time, [`Error::Authentication`] if
    /// either side does not hold the key (or the protocols differ: the message says which).
    pub fn connect<T>(&self) -> Result<Connection<T>> {
        let address = self.address.clone().map_err(|why| Error::Io {
            op: "parse the address",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        })?;
        if self.authkey.is_none() && matches!(address, Address::Tcp(_)) {
            return Err(Error::Unsupported(
                "a TCP connection needs an authkey: without one, anyone could pose as the listener",
            ));
        }
        let deadline = Instant::now().checked_add(self.timeout);
        let fd = sys::connect_stream(address.endpoint(), deadline).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::Timeout(self.timeout)
            } else {
                Error::io("connect", e)
            }
        })?;
        if sys::is_unix_socket(fd.as_fd()) {
            let cred = sys::peer_cred(fd.as_fd()).map_err(|e| Error::io("SO_PEERCRED", e))?;
            if cred.uid != sys::getuid() {
                return Err(Error::Authentication(
                    format!(
                        "the socket at {address} is listened on by uid {} (pid {}), not by us",
                        cred.uid, cred.pid
                    )
                    .into(),
                ));
            }
        }
        let mut hs = Handshaking::new(fd, deadline);
        let keys = match (&self.authkey, self.plaintext) {
            (None, _) => None,
            (Some(key), true) => {
                hs.cpython_connect(key)?;
                None
            }
            (Some(key), false) => Some(hs.sealed_connect(key)?),
        };
        Ok(Connection::from_stream(hs.into_stream(keys, self.limit)))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "…"))
            .field("plaintext", &self.plaintext)
            .field("timeout", &self.timeout)
            .finish()
    }
}

//! Where a [`Listener`](super::Listener) listens and a [`Client`](super::Client) connects.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys::Endpoint;

/// A TCP address, a Unix socket path or a Linux abstract socket name (CPython's `AF_INET` and
/// `AF_UNIX` families). Parsed from a string: `"@name"` is an abstract name, anything with a `/`
/// a path, and anything else `host:port` (`"127.0.0.1:0"`: port 0 lets the kernel pick one). A
/// host name is resolved at once, waited for at most 10 s ([`Error::Timeout`] past that).
///
/// ```
/// use procactor::connection::Address;
/// let tcp: Address = "127.0.0.1:6000".parse()?;
/// assert!(matches!(tcp, Address::Tcp(a) if a.port() == 6000));
/// assert!(matches!("/tmp/app.sock".parse()?, Address::Unix(_)));
/// assert_eq!("@app".parse::<Address>()?, Address::Abstract("app".into()));
/// assert_eq!(tcp.to_string(), "127.0.0.1:6000");
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Tcp(SocketAddr),
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A Unix socket with this name in Linux's abstract namespace (no file).
    Abstract(String),
}

impl Address {
    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        match self {
            Address::Tcp(a) => Endpoint::Tcp(*a),
            Address::Unix(p) => Endpoint::Path(p),
            Address::Abstract(n) => Endpoint::Abstract(n.as_bytes()),
        }
    }

    /// Whether only this host can reach it (a Unix socket, or a TCP loopback address).
    ///
    /// ```
    /// use procactor::connection::Address;
    /// assert!("127.0.0.1:1".parse::<Address>()?.is_local());
    /// assert!(!"10.0.0.1:1".parse::<Address>()?.is_local());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn is_local(&self) -> bool {
        match self {
            Address::Tcp(a) => a.ip().is_loopback(),
            _ => true,
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        if let Some(name) = s.strip_prefix('@') {
            return Ok(Address::Abstract(name.to_string()));
        }
        if s.contains('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        resolve(s, RESOLVE_TIMEOUT)
    }
}

/// The longest a host name's resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first address a host name (`"host:port"`) resolves to, waited for at most `timeout`. The
/// system's resolver cannot be interrupted: it runs on a thread of its own, which a timed-out
/// caller leaves to finish alone.
fn resolve(s: &str, timeout: Duration) -> Result<Address> {
    let bad = |why: String| Error::Io {
        op: "resolve an address",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    };
    if !s.contains(':') {
        return Err(bad(format!(
            "{s:?} is not an address (host:port, a path, or @name)"
        )));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = s.to_string();
    std::thread::Builder::new()
        .name("procactor-resolve".into())
        .spawn(move || {
            let _ = tx.send(name.to_socket_addrs().map(|mut a| a.next()));
        })
        .map_err(|e| Error::io("spawn a resolver thread", e))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(Some(a))) => Ok(Address::Tcp(a)),
        Ok(Ok(None)) => Err(bad(format!("{s:?} resolves to no address"))),
        Ok(Err(e)) => Err(bad(format!("{s:?}: {e}"))),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

/// What [`Listener::bind`](super::Listener::bind) and [`Client::new`](super::Client::new) take:
/// an [`Address`], a `SocketAddr`, or a string to parse.
///
/// ```
/// use procactor::connection::{Address, ToAddress};
/// let a: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
/// assert_eq!(a.to_address()?, Address::Tcp(a));
/// assert_eq!("@n".to_address()?, Address::Abstract("n".into()));
/// # Ok::<(), procactor::Error>(())
/// ```
pub trait ToAddress {
    /// The address (a string that does not parse is an error).
    fn to_address(&self) -> Result<Address>;
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp(*self))
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }
}

impl<A: ToAddress + ?Sized> ToAddress for &A {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_resolve_under_a_deadline_and_non_addresses_fail_at_once() {
        let local = resolve("localhost:1", RESOLVE_TIMEOUT).unwrap();
        assert!(local.is_local(), "{local}");
        let t = std::time::Instant::now();
        assert!("no-port-here".parse::<Address>().is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        // A wait of nothing gives up at once (or the answer was already there).
        match resolve("localhost:1", Duration::ZERO) {
            Ok(a) => assert!(a.is_local()),
            Err(e) => assert!(e.is_timeout(), "{e}"),
        }
    }
}

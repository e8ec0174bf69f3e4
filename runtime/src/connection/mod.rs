//! Connections between programs and hosts: [`Listener`], [`Client`] and [`wait`] (Python's
//! `multiprocessing.connection`).
//!
//! A connection is the same [`Connection<T>`](crate::Connection) a [`Pipe`](crate::Pipe) gives,
//! over a byte stream (TCP, a Unix path, an abstract name) instead of a socket pair: typed
//! `send`/`recv`, `send_bytes`/`recv_bytes`, `poll` and every `_timeout` form. Values that
//! carry descriptors (a `Queue`, a pipe's end) stay on their host: sending one is an error.
//!
//! **Security.** With an authkey, both sides prove they hold it before `accept`/`connect`
//! return. Two protocols:
//! - encrypted (the default): a Noise handshake keyed by the authkey (`NNpsk0`, X25519,
//!   ChaCha20-Poly1305, BLAKE2s; see `procactor_os::noise`), then every message sealed: a
//!   peer without the key learns nothing and can change nothing;
//! - [`plaintext`](Listener::plaintext), CPython's: its mutual HMAC challenge
//!   (`#CHALLENGE#{sha256}…`, as 3.12 sends it; 3.11's HMAC-MD5 answers accepted, as 3.12
//!   does), then CPython's frames in the clear. A Python program's `Client(address,
//!   authkey=key)` / `Listener(...)` with `send_bytes`/`recv_bytes` interoperates byte for
//!   byte.
//!
//! TCP needs an authkey. Unix sockets without one accept only our own user's processes (the
//! kernel says who connected, `SO_PEERCRED`), and a client checks the listener's user too.
//!
//! ```
//! use procactor::connection::{Client, Listener};
//! let listener = Listener::bind("127.0.0.1:0")?.authkey(b"key");
//! let client = Client::new(listener.address()).authkey(b"key");
//! let t = std::thread::spawn(move || client.connect::<u64>()?.recv());
//! listener.accept::<u64>()?.send(7)?;
//! assert_eq!(t.join().unwrap()?, 7);
//! # Ok::<(), procactor::Error>(())
//! ```

mod address;
mod client;
mod listener;
mod wait;

use std::time::Duration;

pub use address::{Address, ToAddress};
pub use client::Client;
pub use listener::Listener;
pub use wait::{wait, wait_timeout, Waitable};

/// How long a connected peer has to finish its handshake, unless the listener says otherwise.
///
/// ```
/// assert_eq!(procactor::connection::DEFAULT_HANDSHAKE_TIMEOUT.as_secs(), 10);
/// ```
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client's connect and handshake may take together, unless it says otherwise.
///
/// ```
/// assert_eq!(procactor::connection::DEFAULT_CONNECT_TIMEOUT.as_secs(), 20);
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

//! `Pipe` and `Connection<T>`: Python's `multiprocessing.Pipe`, typed.
//!
//! A `Connection<T>` is one end of a SEQPACKET socket pair, or (made by
//! [`Listener`](crate::connection::Listener) and [`Client`](crate::connection::Client)) of a
//! byte stream between hosts, with the same methods. Messages are whole records: never
//! merged, never split, from 0 bytes to hundreds of MiB (large ones use a side stream, see
//! `wire`). Ends are ordinary values: pass one to a child as a `Process` argument, or send it
//! inside a message, and the descriptor travels with it.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::wire::stream::{Parts, Stream};
use crate::wire::{self, Channel, Wait, KIND_BYTES, KIND_VALUE};

/// Makes pairs of connected [`Connection`]s, like Python's `multiprocessing.Pipe()`.
///
/// ```
/// # procactor::init();
/// use procactor::{Connection, Pipe, Process};
///
/// fn child(conn: Connection<String>) {
///     conn.send("hello from the child".to_string()).unwrap();
/// }
///
/// let (parent_end, child_end) = Pipe::<String>::duplex()?;
/// let p = Process::new(child, child_end).start()?;
/// assert_eq!(parent_end.recv()?, "hello from the child");
/// p.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Pipe<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// Two ends that can both send and receive (`Pipe(duplex=True)`).
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<u64>::duplex()?;
    /// a.send(1)?;
    /// b.send(b.recv()? + 1)?;
    /// assert_eq!(a.recv()?, 2);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn duplex() -> Result<(Connection<T>, Connection<T>)> {
        let (a, b) = Channel::pair()?;
        Ok((
            Connection::new(a, Mode::Duplex),
            Connection::new(b, Mode::Duplex),
        ))
    }

    /// A one-way pipe: `(reader, writer)`, in Python's order (`Pipe(duplex=False)`).
    ///
    /// ```
    /// let (rx, tx) = procactor::Pipe::<String>::simplex()?;
    /// tx.send("one way".into())?;
    /// assert_eq!(rx.recv()?, "one way");
    /// assert!(rx.send("back".into()).is_err()); // the reader cannot send
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn simplex() -> Result<(Connection<T>, Connection<T>)> {
        let (a, b) = Channel::pair()?;
        Ok((
            Connection::new(a, Mode::ReadOnly),
            Connection::new(b, Mode::WriteOnly),
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    Duplex,
    ReadOnly,
    WriteOnly,
}

/// One end of a [`Pipe`]: sends and receives values of type `T`.
///
/// Every method takes `&self`, and an end may be shared by threads (`Sync`): each receive takes
/// one whole message. Clone an end to hold it twice (the descriptor is duplicated); the other
/// end sees [`Error::Disconnected`] once every copy is dropped or its process has ended.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = procactor::Pipe::<u32>::duplex()?;
/// assert!(matches!(b.try_recv(), Err(procactor::Error::Empty)));
/// assert!(b.recv_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
/// drop(a);
/// assert!(matches!(b.recv(), Err(procactor::Error::Disconnected)));
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Connection<T> {
    link: Link,
    mode: Mode,
    fingerprint: u64,
    // fn(T) -> T: the end neither owns nor shares a T, so it is Send + Sync for any T.
    _t: PhantomData<fn(T) -> T>,
}

/// What carries an end's messages.
enum Link {
    /// One end of a SEQPACKET socket pair (a [`Pipe`]): records, and descriptors with them.
    Local(Channel),
    /// A byte stream ([`Listener`](crate::connection::Listener),
    /// [`Client`](crate::connection::Client)): whole messages framed on it, sealed or not.
    Net(Arc<Stream>),
}

/// What a value sent on a stream starts with (raw bytes from `send_bytes`, or from a CPython
/// peer, do not): a marker, then the type's fingerprint.
const TYPED: &[u8; 4] = b"\0PAv";

impl<T> Connection<T> {
    fn new(chan: Channel, mode: Mode) -> Self {
        Self::with_link(Link::Local(chan), mode)
    }

    fn with_link(link: Link, mode: Mode) -> Self {
        Connection {
            link,
            mode,
            fingerprint: wire::fingerprint::<T>(),
            _t: PhantomData,
        }
    }

    /// An end over a stream whose handshake is done.
    pub(crate) fn from_stream(stream: Stream) -> Self {
        Self::with_link(Link::Net(Arc::new(stream)), Mode::Duplex)
    }

    /// The stream under a network end (`None` for a pipe's end, or a stream shared with a
    /// clone of this end).
    pub(crate) fn into_stream(self) -> Option<Stream> {
        match self.link {
            Link::Net(s) => Arc::try_unwrap(s).ok(),
            Link::Local(_) => None,
        }
    }

    /// Bytes read from a network end's socket so far (0 for a pipe's end).
    pub(crate) fn bytes_received(&self) -> u64 {
        match &self.link {
            Link::Net(s) => s.received(),
            Link::Local(_) => 0,
        }
    }

    /// `send_bytes`, waiting for room at most as `wait` allows.
    pub(crate) fn send_bytes_wait(&self, bytes: &[u8], wait: Wait) -> Result<()> {
        self.check(true)?;
        match &self.link {
            Link::Local(chan) if matches!(wait, Wait::Forever) => {
                chan.send(KIND_BYTES, 0, bytes, &[])
            }
            Link::Local(chan) => match chan.send_wait(KIND_BYTES, 0, bytes, &[], wait)? {
                true => Ok(()),
                false => Err(wait.expired()),
            },
            Link::Net(s) => s.send(&[bytes], wait),
        }
    }

    /// Whether a message is begun here (part of it read by a receive that timed out): `poll`
    /// and `wait` count it as readable whatever the socket says.
    pub(crate) fn has_begun(&self) -> bool {
        match &self.link {
            Link::Net(s) => s.has_buffered(),
            Link::Local(chan) => chan.has_begun(),
        }
    }

    /// Whether this end can receive (Python's `readable`): false only for a simplex pipe's
    /// write end.
    ///
    /// ```
    /// let (rx, tx) = procactor::Pipe::<u8>::simplex()?;
    /// assert!(rx.readable() && !rx.writable());
    /// assert!(tx.writable() && !tx.readable());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn readable(&self) -> bool {
        !matches!(self.mode, Mode::WriteOnly)
    }

    /// Whether this end can send (Python's `writable`): false only for a simplex pipe's read
    /// end.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<u8>::duplex()?;
    /// assert!(a.writable() && b.writable() && a.readable());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn writable(&self) -> bool {
        !matches!(self.mode, Mode::ReadOnly)
    }

    fn check(&self, sending: bool) -> Result<()> {
        match (self.mode, sending) {
            (Mode::ReadOnly, true) => Err(Error::Unsupported(
                "this is the read end of a simplex pipe: it cannot send",
            )),
            (Mode::WriteOnly, false) => Err(Error::Unsupported(
                "this is the write end of a simplex pipe: it cannot receive",
            )),
            _ => Ok(()),
        }
    }

    /// Sends raw bytes, not encoded (Python's `send_bytes`). The other end reads them with
    /// [`recv_bytes`](Connection::recv_bytes); `recv` there reports a decode error. Blocks as
    /// [`send`](Connection::send) does.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<()>::duplex()?;
    /// a.send_bytes(b"raw")?;
    /// assert_eq!(b.recv_bytes()?, b"raw");
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.send_bytes_wait(bytes, Wait::Forever)
    }

    /// [`send_bytes`](Connection::send_bytes), waiting for room at most `timeout` (see
    /// [`send_timeout`](Connection::send_timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = procactor::Pipe::<()>::duplex()?;
    /// a.send_bytes_timeout(b"soon", Duration::from_secs(1))?;
    /// assert_eq!(b.recv_bytes()?, b"soon");
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn send_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.send_bytes_wait(bytes, Wait::timeout(timeout))
    }

    /// Receives one message as bytes, whatever was sent (for a value: its encoding).
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<u8>::duplex()?;
    /// a.send_bytes(&[])?;
    /// assert!(b.recv_bytes()?.is_empty());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_wait(Wait::Forever)
    }

    /// [`recv_bytes`](Connection::recv_bytes), waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_a, b) = procactor::Pipe::<u8>::duplex()?;
    /// assert!(b.recv_bytes_timeout(Duration::ZERO).unwrap_err().is_timeout());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_wait(Wait::timeout(timeout))
    }

    /// Receives one message's bytes into `buf` (replacing its contents) and returns their
    /// length. Reusing one buffer spares a fresh allocation per message: for large messages
    /// that is most of the cost. Python's `recv_bytes_into`.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<()>::duplex()?;
    /// // A large message is handed over while it is read, so it is sent from another thread.
    /// let sender = std::thread::spawn(move || {
    ///     a.send_bytes(&vec![7; 1 << 20]).unwrap();
    ///     a.send_bytes(b"short").unwrap();
    /// });
    /// let mut buf = Vec::new();
    /// assert_eq!(b.recv_bytes_into(&mut buf)?, 1 << 20);
    /// assert_eq!(b.recv_bytes_into(&mut buf)?, 5);
    /// assert_eq!(buf, b"short");
    /// sender.join().unwrap();
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_bytes_into_wait(buf, Wait::Forever)
    }

    /// [`recv_bytes_into`](Connection::recv_bytes_into), waiting at most `timeout` for the
    /// whole message (a large one not whole by then is kept for the next receive, as with
    /// [`recv_timeout`](Connection::recv_timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_a, b) = procactor::Pipe::<()>::duplex()?;
    /// let mut buf = Vec::new();
    /// assert!(b.recv_bytes_into_timeout(&mut buf, Duration::from_millis(1)).unwrap_err().is_timeout());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_bytes_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.recv_bytes_into_wait(buf, Wait::timeout(timeout))
    }

    /// Receives raw bytes into `buf` from position `offset` on (Python's
    /// `recv_bytes_into(buffer, offset)`): how many. A message longer than the room left is
    /// [`Error::BufferTooShort`], which holds the whole message; the connection goes on with
    /// the next one. An `offset` past the end of `buf` is an error before anything is read.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<()>::duplex()?;
    /// let mut buf = [0u8; 8];
    /// a.send_bytes(b"abc")?;
    /// assert_eq!(b.recv_bytes_into_slice(&mut buf, 2)?, 3);
    /// assert_eq!(&buf[..5], b"\0\0abc");
    /// a.send_bytes(b"far too long")?;
    /// match b.recv_bytes_into_slice(&mut buf, 0) {
    ///     Err(procactor::Error::BufferTooShort { message, room: 8 }) => assert_eq!(message, b"far too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_bytes_into_slice(&self, buf: &mut [u8], offset: usize) -> Result<usize> {
        self.recv_bytes_into_slice_wait(buf, offset, Wait::Forever)
    }

    /// [`recv_bytes_into_slice`](Connection::recv_bytes_into_slice), waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_a, b) = procactor::Pipe::<()>::duplex()?;
    /// let mut buf = [0u8; 8];
    /// let e = b.recv_bytes_into_slice_timeout(&mut buf, 0, Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_bytes_into_slice_timeout(
        &self,
        buf: &mut [u8],
        offset: usize,
        timeout: Duration,
    ) -> Result<usize> {
        self.recv_bytes_into_slice_wait(buf, offset, Wait::timeout(timeout))
    }

    fn recv_bytes_into_slice_wait(
        &self,
        buf: &mut [u8],
        offset: usize,
        wait: Wait,
    ) -> Result<usize> {
        let Some(room) = buf.len().checked_sub(offset) else {
            return Err(Error::InvalidState(
                "the offset is past the end of the buffer",
            ));
        };
        let message = self.recv_bytes_wait(wait)?;
        if message.len() > room {
            return Err(Error::BufferTooShort { message, room });
        }
        buf[offset..offset + message.len()].copy_from_slice(&message);
        Ok(message.len())
    }

    fn recv_bytes_into_wait(&self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        self.check(false)?;
        let chan = match &self.link {
            Link::Local(chan) => chan,
            Link::Net(s) => {
                *buf = s.recv(wait)?;
                return Ok(buf.len());
            }
        };
        let inline = chan.recv_large_into(wait, buf, |frame| {
            Ok((!frame.large).then(|| frame.payload.to_vec()))
        })?;
        if let Some(bytes) = inline {
            buf.clear();
            buf.extend_from_slice(&bytes);
        }
        Ok(buf.len())
    }

    fn recv_bytes_wait(&self, wait: Wait) -> Result<Vec<u8>> {
        self.check(false)?;
        let chan = match &self.link {
            Link::Local(chan) => chan,
            Link::Net(s) => return s.recv(wait),
        };
        let mut large = Vec::new();
        let inline = chan.recv_large_into(wait, &mut large, |frame| {
            Ok((!frame.large).then(|| frame.payload.to_vec()))
        })?;
        Ok(inline.unwrap_or(large))
    }

    /// True if a message (or the other end's disconnection) is waiting; waits up to `timeout`
    /// for one. Python's `poll`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = procactor::Pipe::<u8>::duplex()?;
    /// assert!(!b.poll(Duration::ZERO)?);
    /// a.send(7)?;
    /// assert!(b.poll(Duration::from_secs(1))?);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        self.check(false)?;
        match &self.link {
            Link::Local(chan) => chan.poll(Wait::timeout(timeout)),
            Link::Net(s) => s.poll(Wait::timeout(timeout)),
        }
    }

    /// Turns this end into its socket descriptor (a SEQPACKET Unix socket for a pipe's end, the
    /// stream socket for a network connection: a sealed one's keys are lost with the end).
    ///
    /// ```
    /// use procactor::{Connection, Pipe};
    /// let (a, b) = Pipe::<u32>::duplex()?;
    /// let b: Connection<u32> = Connection::from_fd(b.into_fd());
    /// a.send(5)?;
    /// assert_eq!(b.recv()?, 5);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn into_fd(self) -> OwnedFd {
        match self.link {
            Link::Local(chan) => chan.into_fd(),
            Link::Net(s) => match Arc::try_unwrap(s) {
                Ok(s) => s.into_fd(),
                Err(shared) => shared
                    .as_fd()
                    .try_clone_to_owned()
                    .expect("duplicating a Connection's descriptor"),
            },
        }
    }

    /// Wraps a descriptor obtained from [`into_fd`](Connection::into_fd) (in this process or
    /// another) as a duplex end for messages of type `T`. If the other end sends another type,
    /// `recv` reports [`Error::Decode`].
    ///
    /// ```
    /// use procactor::{Connection, Error, Pipe};
    /// let (a, b) = Pipe::<u64>::duplex()?;
    /// let b: Connection<String> = Connection::from_fd(b.into_fd());
    /// a.send(42)?;
    /// assert!(matches!(b.recv(), Err(Error::Decode { .. })));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Self {
        Connection::new(Channel::from_fd(fd), Mode::Duplex)
    }

    /// This end with another limit on the messages it receives (in bytes, as sent: a value's
    /// encoding, or the bytes of `send_bytes`). A larger message is refused before any of it is
    /// read: the receive fails with [`Error::TooLarge`] and the sender's `send` fails too. The
    /// default is [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE) (1 GiB); the
    /// limit bounds the memory a peer can make this end allocate. It travels with the end.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<()>::duplex()?;
    /// let b = b.with_max_message_size(1 << 20);
    /// assert_eq!(b.max_message_size(), 1 << 20);
    /// let sender = std::thread::spawn(move || a.send_bytes(&vec![0; 2 << 20]));
    /// assert!(matches!(b.recv_bytes(), Err(procactor::Error::TooLarge { size, .. }) if size == 2 << 20));
    /// assert!(sender.join().unwrap().is_err()); // the sender learns it too
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn with_max_message_size(mut self, bytes: u64) -> Self {
        match &mut self.link {
            Link::Local(chan) => chan.set_limit(bytes),
            Link::Net(s) => s.set_limit(bytes),
        }
        self
    }

    /// The largest message this end receives (see
    /// [`with_max_message_size`](Connection::with_max_message_size)).
    ///
    /// ```
    /// let (a, _b) = procactor::Pipe::<u8>::duplex()?;
    /// assert_eq!(a.max_message_size(), procactor::pipe::DEFAULT_MAX_MESSAGE_SIZE);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn max_message_size(&self) -> u64 {
        match &self.link {
            Link::Local(chan) => chan.limit(),
            Link::Net(s) => s.limit(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends one value. Handles inside `value` (other `Connection`s...) go with it;
    /// [`Error::Disconnected`] if the other end is gone.
    ///
    /// Byte buffers are best sent as `serde_bytes::ByteBuf` (or with
    /// [`send_bytes`](Connection::send_bytes)): serde encodes a plain `Vec<u8>` one value per
    /// byte, which is many times slower for large buffers.
    ///
    /// Like an OS pipe, it blocks while the other end's buffer (about 200 KiB) is full. A message
    /// above 64 KiB is handed over on a stream of its own *while the receiver reads it*: `send`
    /// returns once the receiver has taken all but the last buffer-full. So a thread must not
    /// send a large message to an end only it reads, and two processes should not both send
    /// large messages to each other before either reads.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<Vec<u32>>::duplex()?;
    /// a.send(vec![1, 2, 3])?;
    /// assert_eq!(b.recv()?, [1, 2, 3]);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn send(&self, value: T) -> Result<()> {
        self.send_wait(value, Wait::Forever)
    }

    /// [`send`](Connection::send), waiting for room at most `timeout` ([`Error::Timeout`]
    /// then, and nothing was sent; for a network connection, a send that times out half-way
    /// through a message closes the connection, whose peer would otherwise read a torn one).
    /// A large message on a pipe goes in a memory file, so the wait is only for the room its
    /// header needs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = procactor::Pipe::<u64>::duplex()?;
    /// // Nobody reads `_b`: its buffer fills, then a send gives up.
    /// let full = loop {
    ///     if let Err(e) = a.send_timeout(7, Duration::from_millis(10)) {
    ///         break e;
    ///     }
    /// };
    /// assert!(full.is_timeout());
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<()> {
        self.send_wait(value, Wait::timeout(timeout))
    }

    fn send_wait(&self, value: T, wait: Wait) -> Result<()> {
        self.check(true)?;
        SEND_BUF.with(|buf| {
            // A value sent from inside a Serialize impl would find the buffer taken: use a fresh one.
            let mut fresh = Vec::new();
            let mut guard = buf.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut fresh,
            };
            buf.clear();
            let res = match &self.link {
                Link::Local(chan) => wire::encode(&value, buf).and_then(|fds| {
                    if matches!(wait, Wait::Forever) {
                        return chan.send(KIND_VALUE, self.fingerprint, buf, &fds);
                    }
                    match chan.send_wait(KIND_VALUE, self.fingerprint, buf, &fds, wait)? {
                        true => Ok(()),
                        false => Err(wait.expired()),
                    }
                }),
                // No descriptor can cross: a handle inside is refused before it is touched (a
                // network connection inside is not handed over).
                Link::Net(s) => match wire::encode_plain(&value, buf) {
                    Err(Error::Encode { reason, .. }) if reason == wire::HANDLE_OUTSIDE => {
                        Err(Error::Unsupported(
                            "a value that carries descriptors (a Connection, a Queue...) cannot \
                             cross a network connection",
                        ))
                    }
                    Err(e) => Err(e),
                    Ok(()) => s.send(&[TYPED, &self.fingerprint.to_le_bytes(), buf], wait),
                },
            };
            if buf.capacity() > wire::INLINE_MAX * 4 {
                *buf = Vec::new(); // don't keep a huge buffer after one large message
            }
            res
        })
    }

    /// Receives one value, waiting as long as it takes; [`Error::Disconnected`] once the other
    /// end is gone (dropped, or its process ended) and nothing is left to read.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<(u8, String)>::duplex()?;
    /// a.send((1, "one".into()))?;
    /// assert_eq!(b.recv()?, (1, "one".to_string()));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv(&self) -> Result<T> {
        self.recv_wait(Wait::Forever)
    }

    /// Receives one value, waiting at most `timeout` for all of it ([`Error::Timeout`] after).
    /// A large message whose sender is slow (or stopped) half-way is not lost when the timeout
    /// comes: what arrived is kept, and the next receive that starts on this end in this
    /// process (on this handle or a clone of it) goes on with it. Two limits: a receive already
    /// waiting in another thread at that moment waits for the message after it first; and if
    /// every handle of the end is dropped or sent away before the message is finished, the
    /// message is dropped and its sender's `send` fails.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = procactor::Pipe::<u8>::duplex()?;
    /// a.send(3)?;
    /// assert_eq!(b.recv_timeout(Duration::from_secs(1))?, 3);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv_wait(Wait::timeout(timeout))
    }

    /// Receives a value if one is waiting: `Err(Empty)` if not (as every `try_` receive),
    /// `Err(Disconnected)` if the other end is gone.
    ///
    /// ```
    /// use procactor::Error;
    /// let (a, b) = procactor::Pipe::<u8>::duplex()?;
    /// assert!(matches!(b.try_recv(), Err(Error::Empty)));
    /// a.send(9)?;
    /// assert_eq!(b.try_recv()?, 9);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn try_recv(&self) -> Result<T> {
        match self.recv_wait(Wait::No) {
            Err(Error::Timeout(_)) => Err(Error::Empty),
            other => other,
        }
    }

    fn recv_wait(&self, wait: Wait) -> Result<T> {
        self.check(false)?;
        // Checked from the header, before a large payload is read: a message of another type
        // is refused unread.
        let of_our_type = |kind: u8, fingerprint: u64| {
            let expected = std::any::type_name::<T>();
            if kind != KIND_VALUE {
                return Err(Error::Decode {
                    expected,
                    reason: "raw bytes (send_bytes) arrived: read them with recv_bytes".into(),
                });
            }
            if fingerprint != self.fingerprint {
                return Err(Error::Decode {
                    expected,
                    reason: format!(
                        "the sender's end sends another type (fingerprint {:#018x}, expected {:#018x})",
                        fingerprint, self.fingerprint
                    ),
                });
            }
            Ok(())
        };
        let chan = match &self.link {
            Link::Local(chan) => chan,
            Link::Net(s) => {
                let msg = s.recv(wait)?;
                let fp = msg
                    .strip_prefix(TYPED)
                    .and_then(|rest| rest.get(..8))
                    .map(|fp| u64::from_le_bytes(fp.try_into().expect("8 bytes")));
                let Some(fp) = fp else {
                    return Err(Error::Decode {
                        expected: std::any::type_name::<T>(),
                        reason: "raw bytes arrived (send_bytes, or a CPython peer): read them \
                                 with recv_bytes"
                            .into(),
                    });
                };
                of_our_type(KIND_VALUE, fp)?;
                return wire::decode(&msg[TYPED.len() + 8..], Vec::new());
            }
        };
        chan.recv_checked(
            wait,
            &mut Vec::new(),
            |h| of_our_type(h.kind, h.fingerprint),
            |frame| {
                of_our_type(frame.kind, frame.fingerprint)?;
                wire::decode(frame.payload, frame.fds)
            },
        )
    }
}

thread_local! {
    static SEND_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<T> Connection<T> {
    /// Another handle on the same end (the descriptor is duplicated); fails only when the
    /// process is out of descriptors.
    ///
    /// ```
    /// let (a, b) = procactor::Pipe::<u8>::duplex()?;
    /// let a2 = a.try_clone()?;
    /// drop(a);
    /// a2.send(1)?; // still connected through the copy
    /// assert_eq!(b.recv()?, 1);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        let link = match &self.link {
            Link::Local(chan) => Link::Local(chan.try_clone()?),
            Link::Net(s) => Link::Net(s.clone()),
        };
        Ok(Connection {
            link,
            mode: self.mode,
            fingerprint: self.fingerprint,
            _t: PhantomData,
        })
    }
}

impl<T> Clone for Connection<T> {
    /// Another handle on the same end (see [`try_clone`](Connection::try_clone)).
    ///
    /// # Panics
    /// If the process is out of file descriptors.
    fn clone(&self) -> Self {
        self.try_clone()
            .expect("duplicating a Connection's descriptor")
    }
}

impl<T> AsFd for Connection<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.link {
            Link::Local(chan) => chan.as_fd(),
            Link::Net(s) => s.as_fd(),
        }
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("type", &std::any::type_name::<T>())
            .field("mode", &self.mode)
            .field(
                "link",
                match &self.link {
                    Link::Local(chan) => chan as &dyn fmt::Debug,
                    Link::Net(s) => s as &dyn fmt::Debug,
                },
            )
            .finish()
    }
}

/// On the wire: the descriptor (by index into the record's SCM_RIGHTS list), the message type's
/// name (checked on arrival) and the mode; for a network end, its stream's state.
#[derive(Serialize, Deserialize)]
struct WireEnd<F> {
    fd: F,
    type_name: String,
    mode: Mode,
    limit: u64,
    net: Option<Parts>,
}

/// A pipe's end travels as a duplicate (both processes may use it). A network end *moves*: it
/// is retired here when it is serialized (a sealed stream must have one owner, or two
/// processes would seal under the same nonces), and it fails to serialize while a message is
/// half-read or half-sent on it, or where no descriptor can go (a network connection, a
/// `Queue` item): then it stays here, usable. If the message it was serialized into is not
/// delivered after all (a `Process` that fails to start), the connection is lost with it.
impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let net = match &self.link {
            Link::Local(_) => None,
            Link::Net(_) if !wire::collecting_fds() => {
                return Err(wire::refuse_encode(wire::HANDLE_OUTSIDE));
            }
            Link::Net(stream) => Some(stream.hand_over().map_err(wire::refuse_encode)?),
        };
        WireEnd {
            fd: wire::SendFd(self.as_fd()),
            type_name: std::any::type_name::<T>().to_string(),
            mode: self.mode,
            limit: self.max_message_size(),
            net,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let end = WireEnd::<wire::Fd>::deserialize(d)?;
        let expected = std::any::type_name::<T>();
        if end.type_name != expected {
            return Err(crate::wire::refuse(format!(
                "a Connection<{}> arrived where a Connection<{expected}> was expected",
                end.type_name
            )));
        }
        if let Some(parts) = end.net {
            let stream = Stream::from_parts(end.fd.0, parts);
            return Ok(Connection::with_link(Link::Net(Arc::new(stream)), end.mode));
        }
        let mut chan = Channel::from_fd(end.fd.0);
        chan.set_limit(end.limit);
        Ok(Connection::new(chan, end.mode))
    }
}

impl<T> std::fmt::Debug for Pipe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pipe")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

//! Handshakes on a stream socket, before it carries messages: CPython's mutual challenge
//! (both roles), and procactor's encrypted one ([`noise`](crate::noise)). The client side
//! ([`Handshaking`]) runs blocking under one deadline; the listener side ([`Accepting`]) is a
//! state machine driven without blocking, so that a listener keeps many in progress at once.
//! Every message read here is at most a few hundred bytes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::cpython;
use crate::error::{Error, Result};
use crate::noise::{self, Opener, Sealer};
use crate::sys::{self, Read, Want};
use crate::wire::stream::{write_until, Stream};

/// A socket during its handshake: frames read and written under one deadline, with what was
/// read past the handshake kept for the stream.
#[derive(Debug)]
pub struct Handshaking {
    fd: OwnedFd,
    inbuf: Vec<u8>,
    deadline: Option<Instant>,
}

impl Handshaking {
    /// A connected non-blocking socket whose handshake must be over by `deadline`.
    pub fn new(fd: OwnedFd, deadline: Option<Instant>) -> Handshaking {
        Handshaking {
            fd,
            inbuf: Vec::new(),
            deadline,
        }
    }

    fn expired(&self) -> Error {
        Error::Authentication("the peer did not finish the handshake in time".into())
    }

    /// Writes one CPython frame.
    pub fn write_frame(&mut self, payload: &[u8]) -> Result<()> {
        let (h, n) = cpython::frame_header(payload.len());
        let mut data = h[..n].to_vec();
        data.extend_from_slice(payload);
        self.write_raw(&data)
    }

    fn write_raw(&mut self, data: &[u8]) -> Result<()> {
        if write_until(self.fd.as_fd(), data, self.deadline)? < data.len() {
            return Err(self.expired());
        }
        Ok(())
    }

    /// Reads one CPython frame of at most `max` bytes (a longer one is refused unread).
    pub fn read_frame(&mut self, max: usize) -> Result<Vec<u8>> {
        loop {
            if let Some(frame) = self.try_frame(max)? {
                return Ok(frame);
            }
            if !sys::wait_ready(&[(self.fd.as_fd(), Want::Read)], self.deadline)
                .map_err(|e| Error::io("poll", e))?[0]
            {
                return Err(self.expired());
            }
        }
    }

    /// A whole CPython frame of at most `max` bytes if one is here, reading what the socket has
    /// without waiting (`None`: not whole yet).
    fn try_frame(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some((len, h)) = cpython::parse_frame_header(&self.inbuf, max as u64)
                .map_err(|e| Error::Authentication(format!("a handshake message: {e}").into()))?
            {
                // Bounded by `max` (a few hundred bytes): no overflow.
                let end = h + len as usize;
                if self.inbuf.len() >= end {
                    let rest = self.inbuf.split_off(end);
                    let mut frame = std::mem::replace(&mut self.inbuf, rest);
                    frame.drain(..h);
                    return Ok(Some(frame));
                }
            }
            if !self.fill_now(max + cpython::MAX_HEADER)? {
                return Ok(None);
            }
        }
    }

    /// A whole sealed message if one is here, without waiting.
    fn try_sealed(&mut self, opener: &mut Opener, max: usize) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(len) = noise::sealed_len(&self.inbuf, max as u64)? {
                // Bounded by `max` + the tag: no overflow.
                let end = noise::SEALED_HEADER + len as usize;
                if self.inbuf.len() >= end {
                    let rest = self.inbuf.split_off(end);
                    let mut msg = std::mem::replace(&mut self.inbuf, rest);
                    opener.open(&mut msg)?;
                    return Ok(Some(msg));
                }
            }
            if !self.fill_now(max + noise::SEALED_HEADER + noise::TAG)? {
                return Ok(None);
            }
        }
    }

    /// Reads what is there, without waiting: false if nothing was.
    fn fill_now(&mut self, max: usize) -> Result<bool> {
        match sys::read_append(self.fd.as_fd(), &mut self.inbuf, max, false)
            .map_err(|e| Error::io("recv", e))?
        {
            Read::Bytes(_) => Ok(true),
            Read::WouldBlock => Ok(false),
            Read::Eof => Err(Error::Authentication(
                "the peer closed the connection during the handshake".into(),
            )),
        }
    }

    /// CPython's mutual challenge, as its `Client` runs it: answer, then deliver.
    pub fn cpython_connect(&mut self, authkey: &[u8]) -> Result<()> {
        self.answer(authkey)?;
        self.deliver(authkey)
    }

    fn deliver(&mut self, authkey: &[u8]) -> Result<()> {
        let challenge = cpython::challenge()?;
        self.write_frame(&challenge)?;
        let response = self.read_frame(cpython::HANDSHAKE_MAX)?;
        match cpython::verify(authkey, &challenge, &response) {
            Ok(()) => self.write_frame(cpython::WELCOME),
            Err(e) => {
                let _ = self.write_frame(cpython::FAILURE);
                Err(e)
            }
        }
    }

    fn answer(&mut self, authkey: &[u8]) -> Result<()> {
        let challenge = self.read_frame(cpython::HANDSHAKE_MAX)?;
        if challenge == SEALED_BANNER {
            return Err(Error::Authentication(
                "the listener encrypts its connections (procactor's default) and this client \
                 asked for CPython's plaintext protocol: connect without `plaintext()`"
                    .into(),
            ));
        }
        let answer = cpython::answer(authkey, &challenge)?;
        self.write_frame(&answer)?;
        let verdict = self.read_frame(cpython::HANDSHAKE_MAX)?;
        if verdict != cpython::WELCOME {
            return Err(Error::Authentication(
                "the peer refused our answer: it holds another authkey".into(),
            ));
        }
        Ok(())
    }

    /// The encrypted handshake, connecting side.
    pub fn sealed_connect(&mut self, authkey: &[u8]) -> Result<(Sealer, Opener)> {
        let banner = self.read_frame(cpython::HANDSHAKE_MAX)?;
        if banner.starts_with(cpython::CHALLENGE) {
            return Err(Error::Authentication(
                "the listener speaks CPython's plaintext protocol (a Python Listener, or a \
                 procactor one with `plaintext()`): connect with `plaintext()` if this link may \
                 carry data in the clear"
                    .into(),
            ));
        }
        if banner != SEALED_BANNER {
            return Err(Error::Authentication(
                "the listener is not a procactor listener of this version".into(),
            ));
        }
        let mut hs = noise::Handshake::initiator(authkey)?;
        let first = hs.write(&[])?;
        self.write_frame(&first)?;
        let second = self.read_frame(noise::HANDSHAKE_MAX)?;
        hs.read(&second)?;
        let (mut sealer, opener, hash) = hs.finish()?;
        let mut confirm = Vec::new();
        sealer.seal(&noise::confirm(&hash), &mut confirm)?;
        self.write_raw(&confirm)?;
        Ok((sealer, opener))
    }

    /// The stream, once the handshake is over.
    pub fn into_stream(self, keys: Option<(Sealer, Opener)>, limit: u64) -> Stream {
        Stream::new(self.fd, keys, self.inbuf, limit)
    }
}

impl AsFd for Handshaking {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Where an accepted connection's handshake stands.
enum Step {
    /// No authkey (a Unix socket, whose peer the kernel vouched for): nothing to exchange.
    Open,
    /// CPython's challenge: we delivered `challenge` and wait for the answer.
    Answer(Vec<u8>),
    /// CPython's challenge: we welcomed the peer and wait for its own challenge.
    Challenge,
    /// CPython's challenge: we answered and wait for the verdict.
    Verdict,
    /// Sealed: banner sent, waiting for Noise's first message.
    First(Box<noise::Handshake>),
    /// Sealed: our message sent, waiting for the peer's sealed confirmation.
    Confirm(Sealer, Opener, [u8; 32]),
    /// Over: the keys, if sealed.
    Done(Option<(Sealer, Opener)>),
}

/// An accepted connection's handshake, driven without blocking: a listener keeps many of them
/// in progress at once, so that a client that connects and never speaks holds up nobody (and
/// is dropped at its deadline).
pub struct Accepting {
    hs: Handshaking,
    step: Step,
    authkey: Vec<u8>,
}

impl Accepting {
    /// Starts the handshake on an accepted socket: sends what the listener sends first.
    /// `authkey` `None` means none (only for peers the kernel vouched for).
    pub fn start(
        fd: OwnedFd,
        authkey: Option<&[u8]>,
        sealed: bool,
        deadline: Instant,
    ) -> Result<Accepting> {
        let mut hs = Handshaking::new(fd, Some(deadline));
        let step = match (authkey, sealed) {
            (None, _) => Step::Open,
            (Some(_), false) => {
                let challenge = cpython::challenge()?;
                hs.write_frame(&challenge)?;
                Step::Answer(challenge)
            }
            (Some(key), true) => {
                hs.write_frame(SEALED_BANNER)?;
                Step::First(Box::new(noise::Handshake::responder(key)?))
            }
        };
        Ok(Accepting {
            hs,
            step,
            authkey: authkey.unwrap_or_default().to_vec(),
        })
    }

    /// When this handshake is given up.
    pub fn deadline(&self) -> Option<Instant> {
        self.hs.deadline
    }

    /// Goes as far as what has arrived allows, without waiting: true once the handshake is
    /// over. An error ends it (the peer does not hold the key, or broke the protocol).
    pub fn advance(&mut self) -> Result<bool> {
        loop {
            let step = std::mem::replace(&mut self.step, Step::Open);
            self.step = match step {
                Step::Open => Step::Done(None),
                Step::Done(keys) => {
                    self.step = Step::Done(keys);
                    return Ok(true);
                }
                Step::Answer(challenge) => {
                    let Some(response) = self.hs.try_frame(cpython::HANDSHAKE_MAX)? else {
                        self.step = Step::Answer(challenge);
                        return Ok(false);
                    };
                    if let Err(e) = cpython::verify(&self.authkey, &challenge, &response) {
                        let _ = self.hs.write_frame(cpython::FAILURE);
                        return Err(e);
                    }
                    self.hs.write_frame(cpython::WELCOME)?;
                    Step::Challenge
                }
                Step::Challenge => {
                    let Some(challenge) = self.hs.try_frame(cpython::HANDSHAKE_MAX)? else {
                        self.step = Step::Challenge;
                        return Ok(false);
                    };
                    let answer = cpython::answer(&self.authkey, &challenge)?;
                    self.hs.write_frame(&answer)?;
                    Step::Verdict
                }
                Step::Verdict => {
                    let Some(verdict) = self.hs.try_frame(cpython::HANDSHAKE_MAX)? else {
                        self.step = Step::Verdict;
                        return Ok(false);
                    };
                    if verdict != cpython::WELCOME {
                        return Err(Error::Authentication(
                            "the peer refused our answer: it holds another authkey".into(),
                        ));
                    }
                    Step::Done(None)
                }
                Step::First(mut hs) => {
                    let Some(first) = self.hs.try_frame(noise::HANDSHAKE_MAX)? else {
                        self.step = Step::First(hs);
                        return Ok(false);
                    };
                    hs.read(&first)?;
                    let second = hs.write(&[])?;
                    self.hs.write_frame(&second)?;
                    let (sealer, opener, hash) = hs.finish()?;
                    Step::Confirm(sealer, opener, hash)
                }
                Step::Confirm(sealer, mut opener, hash) => {
                    let Some(c) = self.hs.try_sealed(&mut opener, noise::HANDSHAKE_MAX)? else {
                        self.step = Step::Confirm(sealer, opener, hash);
                        return Ok(false);
                    };
                    if c != noise::confirm(&hash) {
                        return Err(Error::Authentication(
                            "the peer's confirmation did not match the handshake".into(),
                        ));
                    }
                    Step::Done(Some((sealer, opener)))
                }
            };
        }
    }

    /// The stream, once [`advance`](Accepting::advance) said the handshake is over.
    pub fn into_stream(self, limit: u64) -> Stream {
        let keys = match self.step {
            Step::Done(keys) => keys,
            _ => None,
        };
        self.hs.into_stream(keys, limit)
    }
}

impl AsFd for Accepting {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.hs.as_fd()
    }
}

impl std::fmt::Debug for Accepting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepting")
            .field("fd", &self.hs.fd)
            .field("deadline", &self.hs.deadline)
            .finish_non_exhaustive()
    }
}

/// What an encrypting listener sends first. A CPython client takes it for a challenge and fails
/// at once ("expected challenge"), instead of waiting for one until the listener gives up.
pub const SEALED_BANNER: &[u8] = b"#PROCACTOR-SEALED-1# (encrypted: connect with procactor)";

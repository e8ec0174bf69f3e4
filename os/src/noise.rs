//! Encryption between procactor peers, without I/O: a Noise handshake keyed by the authkey, then
//! one authenticated seal per message.
//!
//! **Handshake.** `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` (through `snow`): each side makes a
//! fresh X25519 key pair, the pre-shared key (derived from the authkey, see [`psk`]) is mixed in
//! before the first message, so that only a peer holding the authkey can write a first message
//! the responder opens, or a second one the initiator opens; the shared secret of the two
//! ephemeral keys gives each connection keys of its own (forward secrecy: a stolen authkey
//! does not open connections recorded earlier). No static keys: "holds the authkey" is the only
//! identity, as with CPython's challenge. The initiator then sends a sealed copy of the
//! handshake hash ([`confirm`]) so that the responder knows the initiator is live, not a
//! replay of an old first message.
//!
//! **Messages.** After the handshake each direction has a ChaCha20-Poly1305 key and a counter:
//! a message is its 8-byte big-endian ciphertext length, then the ciphertext and its 16-byte
//! tag, sealed under nonce = the counter (Noise's layout: 4 zero bytes, the counter in little
//! endian) with the length as associated data. A message replayed, reordered, cut or altered
//! fails to open. One seal per message (not Noise's 64 KiB transport messages): the length is
//! checked against the receiver's limit before anything is allocated, and the keys and
//! counters are plain values, so that a connection can move to a child process.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The Noise protocol name: both sides must use the same one.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake: a peer of another protocol version fails it.
const PROLOGUE: &[u8] = b"procactor connection 1";
/// The length prefix of a sealed message.
pub const SEALED_HEADER: usize = 8;
/// The tag each sealed message carries.
pub const TAG: usize = 16;
/// The largest handshake message (an ephemeral key, a tag and a short payload).
pub const HANDSHAKE_MAX: usize = 256;

fn refused(why: impl Into<String>) -> Error {
    Error::Authentication(why.into().into_boxed_str())
}

/// The 32-byte Noise pre-shared key for `authkey` (any length): SHA-256 of a domain label and
/// the key, so the same authkey used for CPython's HMAC challenge gives an unrelated key here.
///
/// ```
/// use procactor_os::noise::psk;
/// assert_eq!(psk(b"secret"), psk(b"secret"));
/// assert_ne!(psk(b"secret"), psk(b"secret2"));
/// ```
pub fn psk(authkey: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"procactor noise psk 1\0");
    h.update(authkey);
    h.finalize().into()
}

/// One side of a handshake in progress.
///
/// ```
/// use procactor_os::noise::{Handshake, TAG};
/// let (mut i, mut r) = (Handshake::initiator(b"key")?, Handshake::responder(b"key")?);
/// r.read(&i.write(&[])?)?;
/// i.read(&r.write(&[])?)?;
/// let ((mut seal, _, h1), (_, mut open, h2)) = (i.finish()?, r.finish()?);
/// assert_eq!(h1, h2);
/// let mut msg = Vec::new();
/// seal.seal(b"hello", &mut msg)?;
/// assert_eq!(msg.len(), 8 + 5 + TAG);
/// open.open(&mut msg)?;
/// assert_eq!(msg, b"hello");
/// # Ok::<(), procactor_os::error::Error>(())
/// ```
pub struct Handshake(snow::HandshakeState);

impl Handshake {
    /// The side that connects (writes first).
    pub fn initiator(authkey: &[u8]) -> Result<Handshake> {
        Self::build(authkey, true)
    }

    /// The side that accepts.
    pub fn responder(authkey: &[u8]) -> Result<Handshake> {
        Self::build(authkey, false)
    }

    fn build(authkey: &[u8], initiator: bool) -> Result<Handshake> {
        let params = PATTERN.parse().map_err(|e| refused(format!("{e}")))?;
        let key = psk(authkey);
        let b = snow::Builder::new(params)
            .prologue(PROLOGUE)
            .and_then(|b| b.psk(0, &key))
            .map_err(|e| refused(format!("setting up the handshake: {e}")))?;
        let state = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(|e| refused(format!("setting up the handshake: {e}")))?;
        Ok(Handshake(state))
    }

    /// The next message to send, carrying `payload` (encrypted).
    pub fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; HANDSHAKE_MAX];
        let n = self
            .0
            .write_message(payload, &mut out)
            .map_err(|e| refused(format!("writing a handshake message: {e}")))?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads the peer's next message and returns its payload. A peer without the authkey (or
    /// with another protocol version) fails here with [`Error::Authentication`].
    pub fn read(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > HANDSHAKE_MAX {
            return Err(refused(format!(
                "a handshake message of {} bytes",
                message.len()
            )));
        }
        let mut out = vec![0u8; HANDSHAKE_MAX];
        let n = self.0.read_message(message, &mut out).map_err(|_| {
            refused("the peer's handshake did not open: it does not hold the same authkey")
        })?;
        out.truncate(n);
        Ok(out)
    }

    /// The keys of the finished handshake: what this side seals with and what it opens with,
    /// and the handshake hash (for [`confirm`]).
    pub fn finish(mut self) -> Result<(Sealer, Opener, [u8; 32])> {
        if !self.0.is_handshake_finished() {
            return Err(refused("the handshake is not finished"));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&self.0.get_handshake_hash()[..32]);
        let (k1, k2) = self.0.dangerously_get_raw_split();
        let (send, recv) = if self.0.is_initiator() {
            (k1, k2)
        } else {
            (k2, k1)
        };
        Ok((Sealer(Keyed::new(send)), Opener(Keyed::new(recv)), hash))
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.0.is_initiator())
            .field("finished", &self.0.is_handshake_finished())
            .finish()
    }
}

/// What the initiator seals and the responder checks last: the handshake hash, under a label.
pub fn confirm(hash: &[u8; 32]) -> Vec<u8> {
    let mut c = b"procactor confirm ".to_vec();
    c.extend_from_slice(hash);
    c
}

/// A key and the counter of the next message under it. Plain values, so that a connection can
/// move to another process (which then goes on where this one stopped).
#[derive(Serialize, Deserialize)]
struct Keyed {
    key: [u8; 32],
    next: u64,
    /// The cipher of `key`, made once (not part of the state that moves). ring's
    /// ChaCha20-Poly1305: its assembly seals a few bytes several times faster than a portable
    /// implementation, which is most of an encrypted round trip's cost.
    #[serde(skip)]
    cipher: Option<LessSafeKey>,
}

impl Clone for Keyed {
    fn clone(&self) -> Keyed {
        Keyed {
            key: self.key,
            next: self.next,
            cipher: None,
        }
    }
}

impl Keyed {
    fn new(key: [u8; 32]) -> Keyed {
        Keyed {
            key,
            next: 0,
            cipher: None,
        }
    }

    fn nonce(&mut self) -> Result<Nonce> {
        // Noise's limit: the last counter value is reserved.
        if self.next == u64::MAX {
            return Err(refused(
                "this connection sealed 2^64-1 messages: open a new one",
            ));
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.next.to_le_bytes());
        self.next += 1;
        // Unique: the counter only goes up, and a moved state is retired where it was.
        Ok(Nonce::assume_unique_for_key(n))
    }

    fn cipher(&mut self) -> Result<&LessSafeKey> {
        if self.cipher.is_none() {
            let key = UnboundKey::new(&CHACHA20_POLY1305, &self.key)
                .map_err(|_| refused("a key of the wrong length"))?;
            self.cipher = Some(LessSafeKey::new(key));
        }
        Ok(self.cipher.as_ref().expect("made above"))
    }
}

/// Seals the messages one side sends.
#[derive(Clone, Serialize, Deserialize)]
pub struct Sealer(Keyed);

impl Sealer {
    /// Appends the sealed form of `plaintext` to `out`: its length, then ciphertext and tag.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let nonce = self.0.nonce()?;
        let len = (plaintext.len() + TAG) as u64;
        let header = len.to_be_bytes();
        out.reserve(SEALED_HEADER + plaintext.len() + TAG);
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .cipher()?
            .seal_in_place_separate_tag(nonce, Aad::from(&header), &mut out[start..])
            .map_err(|_| refused("sealing a message"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// Opens the messages the other side sent, in order.
#[derive(Clone, Serialize, Deserialize)]
pub struct Opener(Keyed);

/// The length a sealed message's header announces (ciphertext and tag), `None` if `buf` does not
/// hold the header yet. Over `limit` + the tag is [`Error::TooLarge`], before anything is read.
///
/// ```
/// use procactor_os::noise::sealed_len;
/// assert_eq!(sealed_len(&[0, 0, 0, 0, 0, 0, 0, 20], 100)?, Some(20));
/// assert_eq!(sealed_len(&[0; 7], 100)?, None);
/// assert!(sealed_len(&[0, 0, 0, 0, 0, 0, 1, 0], 100).is_err());
/// # Ok::<(), procactor_os::error::Error>(())
/// ```
pub fn sealed_len(buf: &[u8], limit: u64) -> Result<Option<u64>> {
    let Some(h) = buf.get(..SEALED_HEADER) else {
        return Ok(None);
    };
    let len = u64::from_be_bytes(h.try_into().expect("8 bytes"));
    if len < TAG as u64 {
        return Err(Error::Decode {
            expected: "a sealed message",
            reason: format!("a sealed length of {len} bytes, shorter than its tag"),
        });
    }
    if len - TAG as u64 > limit {
        return Err(Error::TooLarge {
            size: len - TAG as u64,
            limit,
        });
    }
    Ok(Some(len))
}

impl Opener {
    /// Opens one sealed message in place: `msg` is its header, ciphertext and tag; on success
    /// it is cut down to the plaintext. Anything altered, replayed or out of order fails.
    pub fn open(&mut self, msg: &mut Vec<u8>) -> Result<()> {
        if msg.len() < SEALED_HEADER + TAG {
            return Err(refused("a sealed message shorter than its tag"));
        }
        let nonce = self.0.nonce()?;
        let header: [u8; SEALED_HEADER] = msg[..SEALED_HEADER].try_into().expect("8 bytes");
        let tag_at = msg.len() - TAG;
        self.0
            .cipher()?
            .open_in_place(nonce, Aad::from(&header), &mut msg[SEALED_HEADER..])
            .map_err(|_| {
                refused("a message failed to open: altered, replayed or out of order on the way")
            })?;
        msg.truncate(tag_at);
        msg.drain(..SEALED_HEADER);
        Ok(())
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("next", &self.0.next)
            .finish()
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("next", &self.0.next)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Side = (Sealer, Opener, [u8; 32]);

    fn pair(a: &[u8], b: &[u8]) -> Result<(Side, Side)> {
        let mut i = Handshake::initiator(a)?;
        let mut r = Handshake::responder(b)?;
        let m1 = i.write(&[])?;
        r.read(&m1)?;
        let m2 = r.write(&[])?;
        i.read(&m2)?;
        Ok((i.finish()?, r.finish()?))
    }

    #[test]
    fn the_same_authkey_gives_both_sides_the_same_keys_and_hash() {
        let ((mut is, mut io, ih), (mut rs, mut ro, rh)) = pair(b"k", b"k").unwrap();
        assert_eq!(ih, rh);
        for text in [&b""[..], b"hello", &[7u8; 100_000]] {
            let mut m = Vec::new();
            is.seal(text, &mut m).unwrap();
            assert_eq!(
                sealed_len(&m, 1 << 20).unwrap(),
                Some((text.len() + TAG) as u64)
            );
            assert!(m.len() == text.len() + SEALED_HEADER + TAG);
            ro.open(&mut m).unwrap();
            assert_eq!(m, text);
            let mut back = Vec::new();
            rs.seal(text, &mut back).unwrap();
            io.open(&mut back).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn another_authkey_fails_at_the_first_message() {
        let e = pair(b"right", b"wrong").map(|_| ()).unwrap_err();
        assert!(matches!(e, Error::Authentication(_)), "{e}");
    }

    #[test]
    fn altered_replayed_and_reordered_messages_do_not_open() {
        let ((mut s, _, _), (_, mut o, _)) = pair(b"k", b"k").unwrap();
        let (mut m1, mut m2) = (Vec::new(), Vec::new());
        s.seal(b"one", &mut m1).unwrap();
        s.seal(b"two", &mut m2).unwrap();
        // Out of order: the second first.
        let mut o2 = o.clone();
        assert!(o2.open(&mut m2.clone()).is_err());
        // Altered: one bit of the ciphertext, of the tag, of the length.
        for at in [SEALED_HEADER, m1.len() - 1, 7] {
            let mut bad = m1.clone();
            bad[at] ^= 1;
            assert!(o.clone().open(&mut bad).is_err(), "bit at {at}");
        }
        let mut good = m1.clone();
        o.open(&mut good).unwrap();
        assert_eq!(good, b"one");
        // Replayed: the first again.
        assert!(o.clone().open(&mut m1.clone()).is_err());
        o.open(&mut m2).unwrap();
        assert_eq!(m2, b"two");
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_reading() {
        let e = sealed_len(&(1000u64 + TAG as u64).to_be_bytes(), 999).unwrap_err();
        assert!(matches!(
            e,
            Error::TooLarge {
                size: 1000,
                limit: 999
            }
        ));
        assert!(sealed_len(&3u64.to_be_bytes(), 999).is_err());
    }
}

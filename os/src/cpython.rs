//! CPython's `multiprocessing.connection` protocol on the wire, without I/O: its frames and its
//! authkey challenge, so that a Python program's `Listener`/`Client` and ours understand each
//! other byte for byte. The connection layer drives these over its sockets.
//!
//! **Frames.** A message is a 4-byte big-endian signed length and the payload; a payload longer
//! than `i32::MAX` bytes is announced by `-1` and an 8-byte big-endian length (CPython 3.8+).
//!
//! **The challenge** (mutual: the listener delivers then answers, the client answers then
//! delivers), as CPython 3.12 does it, and as it still accepts from 3.11:
//! 1. the deliverer sends `#CHALLENGE#` and a message: `{sha256}` and 40 random bytes;
//! 2. the answerer sends the HMAC of the whole message under the authkey: `{sha256}` and the
//!    HMAC-SHA256; a legacy answerer (CPython ≤ 3.11) sends the raw 16-byte HMAC-MD5 of the
//!    same message instead, which is accepted (MD5 is what 3.11 can do; the MAC covers the
//!    `{sha256}` prefix, so a man in the middle cannot swap the prefix);
//! 3. the deliverer sends `#WELCOME#` or `#FAILURE#`.
//!
//! A legacy challenge (20 bytes, no prefix) is answered with the raw HMAC-MD5, as 3.12 does. Every
//! handshake message is at most [`HANDSHAKE_MAX`] bytes: a peer cannot make us read more before
//! it proved it holds the key.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::sys;

/// What a challenge starts with.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The deliverer's answer to a right digest.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// The deliverer's answer to a wrong digest.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// The largest handshake message either side reads (CPython reads them with `recv_bytes(256)`).
pub const HANDSHAKE_MAX: usize = 256;

/// Random bytes in a challenge we deliver (CPython 3.12's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// A legacy (≤ 3.11) challenge's length: no digest prefix, HMAC-MD5.
const LEGACY_MESSAGE_LENGTH: usize = 20;
/// A legacy answer's length: a raw HMAC-MD5.
const MD5_LENGTH: usize = 16;
/// The longest digest name CPython accepts in braces (`sha3_384`).
const MAX_DIGEST_NAME: usize = 8;

/// The largest frame header: `-1` and an 8-byte length.
pub const MAX_HEADER: usize = 12;

/// The header of a frame of `len` payload bytes, and how many of its bytes to send.
///
/// ```
/// use procactor_os::cpython::frame_header;
/// assert_eq!(frame_header(5), ([0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0], 4));
/// let (big, n) = frame_header(1 << 31);
/// assert_eq!(&big[..n], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
/// ```
pub fn frame_header(len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    match i32::try_from(len) {
        Ok(small) => {
            h[..4].copy_from_slice(&small.to_be_bytes());
            (h, 4)
        }
        Err(_) => {
            h[..4].copy_from_slice(&(-1i32).to_be_bytes());
            h[4..].copy_from_slice(&(len as u64).to_be_bytes());
            (h, MAX_HEADER)
        }
    }
}

/// Reads a frame header at the front of `buf`: the payload's length and the header's, `None`
/// if `buf` does not hold the whole header yet. A length over `limit` is an error before any
/// payload byte is read (so is a negative length other than `-1`).
///
/// ```
/// use procactor_os::cpython::parse_frame_header;
/// assert_eq!(parse_frame_header(&[0, 0, 1, 0, 9, 9], 1024)?, Some((256, 4)));
/// assert_eq!(parse_frame_header(&[0, 0], 1024)?, None);
/// assert!(parse_frame_header(&[0, 0, 4, 1], 1024).is_err()); // 1025 > limit
/// # Ok::<(), procactor_os::error::Error>(())
/// ```
pub fn parse_frame_header(buf: &[u8], limit: u64) -> Result<Option<(u64, usize)>> {
    let Some(first) = buf.get(..4) else {
        return Ok(None);
    };
    let small = i32::from_be_bytes(first.try_into().expect("4 bytes"));
    let (len, header) = match small {
        -1 => match buf.get(4..MAX_HEADER) {
            None => return Ok(None),
            Some(rest) => (
                u64::from_be_bytes(rest.try_into().expect("8 bytes")),
                MAX_HEADER,
            ),
        },
        n if n < 0 => {
            return Err(Error::Decode {
                expected: "a frame length",
                reason: format!("a negative length ({n})"),
            })
        }
        n => (n as u64, 4),
    };
    if len > limit {
        return Err(Error::TooLarge { size: len, limit });
    }
    Ok(Some((len, header)))
}

/// A challenge to deliver: `#CHALLENGE#{sha256}` and 40 random bytes. Keep it to check the
/// answer with [`verify`].
///
/// ```
/// let c = procactor_os::cpython::challenge()?;
/// assert!(c.starts_with(b"#CHALLENGE#{sha256}"));
/// assert_eq!(c.len(), 11 + 8 + 40);
/// # Ok::<(), procactor_os::error::Error>(())
/// ```
pub fn challenge() -> Result<Vec<u8>> {
    let random = sys::random_bytes::<MESSAGE_LENGTH>().map_err(|e| Error::io("getrandom", e))?;
    let mut c = Vec::with_capacity(CHALLENGE.len() + 8 + MESSAGE_LENGTH);
    c.extend_from_slice(CHALLENGE);
    c.extend_from_slice(b"{sha256}");
    c.extend_from_slice(&random);
    Ok(c)
}

/// The answer to `challenge` (a whole challenge frame, `#CHALLENGE#` included) under `authkey`:
/// `{sha256}` and the HMAC-SHA256 for a prefixed challenge, the raw HMAC-MD5 for a legacy one.
///
/// ```
/// use procactor_os::cpython::{answer, challenge, verify};
/// let c = challenge()?;
/// let a = answer(b"key", &c)?;
/// assert!(a.starts_with(b"{sha256}") && a.len() == 8 + 32);
/// verify(b"key", &c, &a)?;
/// assert!(verify(b"other key", &c, &a).is_err());
/// # Ok::<(), procactor_os::error::Error>(())
/// ```
pub fn answer(authkey: &[u8], challenge: &[u8]) -> Result<Vec<u8>> {
    let Some(message) = challenge.strip_prefix(CHALLENGE) else {
        return Err(refused("the peer did not send a challenge"));
    };
    if message.len() < LEGACY_MESSAGE_LENGTH {
        return Err(refused(format!(
            "a challenge of {} bytes is too short",
            message.len()
        )));
    }
    match digest_and_payload(message)? {
        (Digest::Legacy, _) => Ok(mac(Digest::Md5, authkey, message)),
        (digest, _) => {
            let mut a = format!("{{{}}}", digest.name()).into_bytes();
            a.extend_from_slice(&mac(digest, authkey, message));
            Ok(a)
        }
    }
}

/// Checks `response` to the `challenge` we delivered, under `authkey`: `Ok` if the peer holds
/// the key, [`Error::Authentication`] otherwise. A legacy (unprefixed, 16-byte) response is an
/// HMAC-MD5, what CPython ≤ 3.11 sends.
pub fn verify(authkey: &[u8], challenge: &[u8], response: &[u8]) -> Result<()> {
    let message = challenge
        .strip_prefix(CHALLENGE)
        .ok_or_else(|| refused("not a challenge we delivered"))?;
    let (digest, theirs) = digest_and_payload(response)?;
    let digest = match digest {
        Digest::Legacy => Digest::Md5,
        d => d,
    };
    let ours = mac(digest, authkey, message);
    if ours.len() != theirs.len() {
        return Err(refused(format!(
            "a {} digest of {} bytes, not {}",
            digest.name(),
            theirs.len(),
            ours.len()
        )));
    }
    if !bool::from(ours.ct_eq(theirs)) {
        return Err(refused("the digest received was wrong"));
    }
    Ok(())
}

/// A digest CPython may name in a challenge or an answer (`md5`, `sha256`, `sha384`; its
/// `sha3_*` are refused here, with a clear error), or the legacy unprefixed form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Legacy,
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn name(self) -> &'static str {
        match self {
            Digest::Legacy | Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }
}

/// The digest a message names and its payload (CPython's `_get_digest_name_and_payload`): a
/// 16- or 20-byte message is legacy; otherwise `{name}payload`.
fn digest_and_payload(message: &[u8]) -> Result<(Digest, &[u8])> {
    if [LEGACY_MESSAGE_LENGTH, MD5_LENGTH].contains(&message.len()) {
        return Ok((Digest::Legacy, message));
    }
    let named = message.strip_prefix(b"{").and_then(|rest| {
        let close = rest
            .iter()
            .take(MAX_DIGEST_NAME + 1)
            .position(|&b| b == b'}')?;
        Some((&rest[..close], &rest[close + 1..]))
    });
    match named {
        Some((b"md5", payload)) => Ok((Digest::Md5, payload)),
        Some((b"sha256", payload)) => Ok((Digest::Sha256, payload)),
        Some((b"sha384", payload)) => Ok((Digest::Sha384, payload)),
        Some((other, _)) => Err(refused(format!(
            "the digest {:?} is not supported (md5, sha256, sha384 are)",
            String::from_utf8_lossy(other)
        ))),
        None => Err(refused(format!(
            "a handshake message of {} bytes without a digest prefix",
            message.len()
        ))),
    }
}

fn mac(digest: Digest, key: &[u8], message: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        m.update(message);
        m.finalize().into_bytes().to_vec()
    }
    match digest {
        Digest::Legacy | Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
        Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
        Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
    }
}

fn refused(why: impl Into<String>) -> Error {
    Error::Authentication(why.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A peer's bytes, whatever they are, are refused or accepted: never a panic, never a
        /// length over the limit.
        #[test]
        fn garbage_is_refused_never_panicked_on(bytes in proptest::collection::vec(0u8..=255, 0..300)) {
            let c = challenge().unwrap();
            let _ = verify(b"k", &c, &bytes);
            let mut theirs = CHALLENGE.to_vec();
            theirs.extend_from_slice(&bytes);
            let _ = answer(b"k", &theirs);
            let _ = answer(b"k", &bytes);
            if let Ok(Some((len, n))) = parse_frame_header(&bytes, 1 << 20) {
                proptest::prop_assert!(len <= 1 << 20 && n <= bytes.len());
            }
        }

        /// Any key, any challenge of a legal length: our answer checks, another key's does not.
        #[test]
        fn an_answer_checks_under_its_key_only(
            key in proptest::collection::vec(0u8..=255, 0..80),
            digest in proptest::sample::select(vec!["", "{md5}", "{sha256}", "{sha384}"]),
            random in proptest::collection::vec(0u8..=255, 20..120),
        ) {
            // A legacy challenge is exactly 20 bytes; a prefixed one any length past its prefix.
            let body: Vec<u8> = match digest {
                "" => random[..20].to_vec(),
                d => [d.as_bytes(), &random].concat(),
            };
            let c = [CHALLENGE, &body].concat();
            let a = answer(&key, &c).unwrap();
            proptest::prop_assert!(verify(&key, &c, &a).is_ok());
            let other = [&key[..], &[1u8][..]].concat();
            proptest::prop_assert!(verify(&other, &c, &a).is_err());
        }
    }

    #[test]
    fn headers_round_trip_at_the_edges() {
        for len in [
            0usize,
            1,
            255,
            256,
            i32::MAX as usize,
            1 << 31,
            (1 << 40) + 7,
        ] {
            let (h, n) = frame_header(len);
            assert_eq!(
                parse_frame_header(&h[..n], u64::MAX).unwrap(),
                Some((len as u64, n))
            );
            // Any shorter prefix is incomplete, never misread.
            for cut in 0..n {
                assert_eq!(parse_frame_header(&h[..cut], u64::MAX).unwrap(), None);
            }
        }
        assert!(parse_frame_header(&(-2i32).to_be_bytes(), u64::MAX).is_err());
        let (h, n) = frame_header(1 << 31);
        assert!(matches!(
            parse_frame_header(&h[..n], 1 << 30),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn a_legacy_challenge_gets_a_raw_md5_and_a_legacy_answer_is_checked_as_one() {
        let mut c = CHALLENGE.to_vec();
        c.extend_from_slice(&[7u8; 20]);
        let a = answer(b"k", &c).unwrap();
        assert_eq!(a.len(), 16);
        verify(b"k", &c, &a).unwrap();
        // A 3.11 answerer to our prefixed challenge: raw HMAC-MD5 over the whole message.
        let ours = challenge().unwrap();
        let legacy = mac(Digest::Md5, b"k", &ours[CHALLENGE.len()..]);
        verify(b"k", &ours, &legacy).unwrap();
        assert!(verify(b"j", &ours, &legacy).is_err());
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        let c = challenge().unwrap();
        for bad in [
            &b""[..],
            b"{sha256}",
            b"{sha3_256}0123456789012345678901234567890123456789",
            b"{nope}xx",
            b"{sha256",
            &[0u8; 17],
            &[0xffu8; 255],
        ] {
            assert!(
                matches!(verify(b"k", &c, bad), Err(Error::Authentication(_))),
                "{bad:?}"
            );
        }
        assert!(answer(b"k", b"#CHALLENGE#short").is_err());
        assert!(answer(b"k", b"#WELCOME#").is_err());
    }

    #[test]
    fn an_answer_may_name_another_digest_but_must_hold_the_key() {
        // As CPython: the answerer may name another allowed digest; its MAC is still over our
        // whole message (prefix included), so it must hold the key.
        let c = challenge().unwrap();
        let mut md5_named = b"{md5}".to_vec();
        md5_named.extend_from_slice(&mac(Digest::Md5, b"k", &c[CHALLENGE.len()..]));
        verify(b"k", &c, &md5_named).unwrap();
        let mut forged = b"{md5}".to_vec();
        forged.extend_from_slice(&[0u8; 16]);
        assert!(verify(b"k", &c, &forged).is_err());
    }
}

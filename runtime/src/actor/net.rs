//! Callers on other hosts: what an actor's event loop and a caller say to each other on an
//! encrypted network stream (the serving side is `endpoint/net.rs`).
//!
//! The stream is handed to the actor's process once its handshake (the authkey, the keys) is
//! over; someone in that process chose to serve it, with a *tag* the actor sees as
//! [`Control::net_tag`](super::context::Control) for every message from it. Then, each message
//! one sealed frame, postcard-encoded:
//! - caller → actor: [`Up::Hello`] first (protocol, the schemas it speaks, its heartbeat
//!   timeout), then asks, tells and pings;
//! - actor → caller: [`Down::Welcome`] (or [`Down::Refused`], and the stream closes), then one
//!   reply or failure per ask, and a tick ([`Down::Pong`]) every quarter of the heartbeat
//!   timeout, from a thread of its own (heard even while the actor is busy).
//!
//! Nothing from a network caller carries descriptors: payloads decode without any, and a reply
//! that would carry one is refused. The actor decides what a network caller may ask (the
//! manager takes only the operations of a remote session).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The version of this protocol: an actor refuses a caller of another.
pub(crate) const PROTOCOL: u32 = 3;

/// The heartbeat timeouts an actor keeps, at least and at most (a caller's is clamped).
pub(crate) const HEARTBEAT_MIN_MS: u64 = 100;
pub(crate) const HEARTBEAT_MAX_MS: u64 = 3_600_000;

/// Caller to actor.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Up<'a> {
    /// The first message: the protocol version, the fingerprints of the message and reply
    /// types the caller speaks, and how long the actor may go without hearing from it.
    Hello {
        protocol: u32,
        msg: u64,
        reply: u64,
        heartbeat_ms: u64,
    },
    /// A message whose reply is awaited, as `id`.
    Ask { id: u64, payload: &'a [u8] },
    /// A message without a reply.
    Tell { payload: &'a [u8] },
    /// Still here (not answered: the actor's ticks say it is still there).
    Ping,
}

/// Actor to caller.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Down<'a> {
    /// The answer to a hello: the actor's pid and name, and the heartbeat timeout it keeps
    /// (the caller's, clamped to 100 ms ..= 1 h).
    Welcome {
        pid: u32,
        name: String,
        heartbeat_ms: u64,
    },
    /// Why the hello was refused (the stream closes after it).
    Refused { reason: String },
    /// The reply to the ask `id`.
    Reply { id: u64, payload: &'a [u8] },
    /// Why the ask `id` has no reply; `handled`: the message was handled (its reply could not
    /// be sent), so sending it again would handle it twice.
    Failed {
        id: u64,
        handled: bool,
        reason: String,
    },
    /// A tick: still here.
    Pong,
}

/// Encodes one message of the protocol.
pub(crate) fn encode<T: Serialize>(m: &T, out: &mut Vec<u8>) -> Result<()> {
    let mut buf = std::mem::take(out);
    buf.clear();
    *out = postcard::to_extend(m, buf).map_err(|e| Error::Encode {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Decodes one message of the protocol (borrowing its payload from `bytes`).
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Decode {
        expected: std::any::type_name::<T>(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let mut buf = Vec::new();
        encode(
            &Up::Ask {
                id: 7,
                payload: b"abc",
            },
            &mut buf,
        )
        .unwrap();
        match decode::<Up>(&buf).unwrap() {
            Up::Ask { id, payload } => assert_eq!((id, payload), (7, &b"abc"[..])),
            other => panic!("{other:?}"),
        }
        assert!(decode::<Down>(&[0xff, 0xff, 0xff]).is_err());
        // A payload length past the bytes there: refused, nothing allocated for it.
        assert!(decode::<Up>(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}

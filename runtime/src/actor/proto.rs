//! What travels on an actor's connections: addresses, the hello exchange, and batches of
//! envelopes.
//!
//! An actor listens on a SEQPACKET socket in the session's private directory
//! (`<session dir>/<id>`);
//! every process that talks to it opens one connection, says hello (its role and, for callers,
//! the message schema it speaks) and gets a welcome or a refusal. Then:
//! - caller → actor: frames of kind [`BATCH`], each a run of envelopes `[op u8][len u32]
//!   [nfds u8][id u64, asks only][payload]`, so many tells cost one system call;
//! - actor → caller: one frame per reply ([`REPLY`] or [`FAILED`], the request id in the frame's
//!   fingerprint field), and the actor's last words ([`EXIT`]) before it ends.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ExitReason, Result};
use crate::message::Schema;

/// Frame kinds (the wire module's own kinds are 1 and 2).
pub(crate) const HELLO: u8 = 20;
pub(crate) const WELCOME: u8 = 21;
pub(crate) const REFUSED: u8 = 22;
pub(crate) const BATCH: u8 = 23;
pub(crate) const REPLY: u8 = 24;
pub(crate) const FAILED: u8 = 25;
pub(crate) const EXIT: u8 = 26;

/// What a [`FAILED`] frame says: why there is no reply, and whether the message was handled
/// (its reply then could not be encoded or sent: sending it again would handle it twice).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Failure {
    pub handled: bool,
    pub reason: String,
}

/// Envelope operations.
pub(crate) const OP_TELL: u8 = 1;
pub(crate) const OP_ASK: u8 = 2;
pub(crate) const OP_SYS: u8 = 3;

/// The address of an actor incarnation.
pub(crate) fn actor_addr(session: &str, id: u64) -> String {
    format!("{session}/{id:016x}")
}

/// Who is connecting, and why.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Role {
    /// Will send messages of this schema and read replies.
    Caller {
        msg: (String, u64),
        reply: (String, u64),
    },
    /// Only wants the actor's last words.
    Monitor,
    /// A link from the actor `name`: each side's death is the other's business.
    Link { name: String, pid: u32, id: u64 },
}

impl Role {
    pub(crate) fn caller(msg: Schema, reply: Schema) -> Role {
        Role::Caller {
            msg: (msg.name.into(), msg.fingerprint),
            reply: (reply.name.into(), reply.fingerprint),
        }
    }
}

/// The actor's answer to a hello.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Welcome {
    pub name: String,
    pub pid: u32,
    pub id: u64,
    /// Its own address (a caller that came by a registered name learns it here).
    pub addr: String,
    /// The bounded mailbox's capacity; its gate (shared memory) comes as the frame's descriptor.
    pub capacity: Option<u32>,
    /// Our slot in the gate's per-connection table.
    pub slot: u32,
    /// The largest record (a batch of envelopes) the actor takes.
    pub limit: u64,
}

/// System messages, sent in order with the others.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Sys {
    /// Handle what came before, then end normally.
    Stop,
    /// Answer `id` (an empty reply) once everything sent before it on this connection was
    /// handled: a process that ends waits for this, so that its tells are handled before its
    /// parent learns that it ended.
    Sync { id: u64 },
}

/// One envelope's header, as parsed.
pub(crate) struct Envelope<'a> {
    pub op: u8,
    pub id: u64,
    pub nfds: usize,
    pub payload: &'a [u8],
}

const FIXED: usize = 6;

/// Writes an envelope header into `out` (exactly [`header_len`] bytes).
pub(crate) fn write_header(out: &mut [u8], op: u8, id: u64, len: usize, nfds: usize) {
    out[0] = op;
    out[1..5].copy_from_slice(&(len as u32).to_le_bytes());
    out[5] = nfds as u8;
    if op == OP_ASK {
        out[FIXED..FIXED + 8].copy_from_slice(&id.to_le_bytes());
    }
}

/// Size of an envelope's header.
pub(crate) fn header_len(op: u8) -> usize {
    if op == OP_ASK {
        FIXED + 8
    } else {
        FIXED
    }
}

/// Splits a batch into envelopes; `Err` on the first malformed one (the rest of that batch is
/// unreadable, the connection is not).
pub(crate) fn next_envelope<'a>(batch: &mut &'a [u8]) -> Result<Option<Envelope<'a>>> {
    let b = *batch;
    if b.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Error::Decode {
        expected: "an actor envelope",
        reason: why.into(),
    };
    if b.len() < FIXED {
        return Err(bad("truncated header"));
    }
    let op = b[0];
    if !matches!(op, OP_TELL | OP_ASK | OP_SYS) {
        return Err(bad("unknown operation"));
    }
    let len = u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as usize;
    let nfds = b[5] as usize;
    let head = header_len(op);
    if b.len() < head || b.len() - head < len {
        return Err(bad("truncated payload"));
    }
    let id = if op == OP_ASK {
        u64::from_le_bytes(b[FIXED..FIXED + 8].try_into().expect("8 bytes"))
    } else {
        0
    };
    *batch = &b[head + len..];
    Ok(Some(Envelope {
        op,
        id,
        nfds,
        payload: &b[head..head + len],
    }))
}

/// What an actor's last words say.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct LastWords {
    pub reason: ExitReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_header(buf: &mut Vec<u8>, op: u8, id: u64, len: usize, nfds: usize) {
        let at = buf.len();
        buf.resize(at + header_len(op), 0);
        write_header(&mut buf[at..], op, id, len, nfds);
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_an_error() {
        let mut buf = Vec::new();
        put_header(&mut buf, OP_TELL, 0, 3, 0);
        buf.extend_from_slice(b"abc");
        put_header(&mut buf, OP_ASK, 77, 1, 2);
        buf.push(9);
        let mut rest = &buf[..];
        let a = next_envelope(&mut rest).unwrap().unwrap();
        assert_eq!((a.op, a.payload), (OP_TELL, &b"abc"[..]));
        let b = next_envelope(&mut rest).unwrap().unwrap();
        assert_eq!((b.op, b.id, b.nfds, b.payload), (OP_ASK, 77, 2, &[9u8][..]));
        assert!(next_envelope(&mut rest).unwrap().is_none());
        let mut garbage = &[7u8, 1, 2][..];
        assert!(next_envelope(&mut garbage).is_err());
        let mut short = &[OP_TELL, 200, 0, 0, 0, 0, 1][..];
        assert!(next_envelope(&mut short).is_err());
    }
}

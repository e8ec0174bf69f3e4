//! Frames on the wire, and how values with descriptors inside are encoded.
//!
//! Every message is one SEQPACKET record (atomic, never merged or split, even with several
//! writers) that starts with a 9-byte header: a kind byte and the 64-bit fingerprint of the
//! message type, so that a `Connection<String>` fed a `u64` reports a decode error instead of a
//! garbled value. Payloads above [`INLINE_MAX`] travel on a stream socket made for that one message
//! and passed along with the header record: the record stays atomic, the bulk moves at stream
//! speed, and a sender that dies half-way leaves the receiver an EOF, never a torn message.
//!
//! Handles that own descriptors (a `Connection` inside a message or in `Process` arguments)
//! serialize as an index into the record's SCM_RIGHTS list, through a thread-local context that
//! exists only while procactor encodes or decodes a frame.
//!
//! One idea per module: [`codec`] (values to bytes, and descriptors inside values),
//! [`deadline`] (how long an operation may wait) and [`channel`] (framed records on a socket);
//! [`stream`] carries whole messages on a byte stream (TCP), for `connection`, after the
//! [`handshake`] that authenticates (and keys) it; [`turn`] is exclusive use under a deadline.

pub mod channel;
pub mod codec;
pub mod deadline;
pub mod handshake;
pub mod stream;
pub mod turn;

pub use channel::*;
pub use codec::*;
pub use deadline::*;
pub use turn::{Held, Turn};

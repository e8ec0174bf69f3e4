//! What the fuzz tests (`crate::fuzz`) feed to the actor protocol's decoders: valid samples to
//! mutate, and the decoders themselves.

use super::proto::{self, LastWords, Role, Sys, Welcome};
use crate::error::ExitReason;
use crate::message::Schema;
use crate::wire;

fn encoded<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut b = Vec::new();
    wire::encode(v, &mut b).expect("encodes");
    b
}

/// Valid batches: a tell, an ask, a system message, one after the other.
pub(crate) fn sample_batches() -> Vec<Vec<u8>> {
    let mut batch = Vec::new();
    for (op, id, payload) in [
        (proto::OP_TELL, 0, encoded(&(1u8, 2u64))),
        (proto::OP_ASK, 77, encoded(&"question".to_string())),
        (proto::OP_SYS, 0, encoded(&Sys::Sync { id: 5 })),
    ] {
        let at = batch.len();
        batch.resize(at + proto::header_len(op), 0);
        proto::write_header(&mut batch[at..], op, id, payload.len(), 0);
        batch.extend_from_slice(&payload);
    }
    vec![batch.clone(), batch[..batch.len() / 2].to_vec(), Vec::new()]
}

/// The envelope after `rest`'s front, as the actor's loop reads it: its payload's length.
pub(crate) fn next_envelope(rest: &mut &[u8]) -> crate::error::Result<Option<usize>> {
    Ok(proto::next_envelope(rest)?.map(|e| e.payload.len()))
}

/// Valid hellos, welcomes, system messages and last words.
pub(crate) fn sample_handshakes() -> Vec<Vec<u8>> {
    let schema = Schema::of::<u64>("fuzz");
    vec![
        encoded(&Role::caller(schema, schema)),
        encoded(&Role::Monitor),
        encoded(&Role::Link {
            name: "peer".into(),
            pid: 42,
            id: 7,
        }),
        encoded(&Welcome {
            name: "actor".into(),
            pid: 9,
            id: 3,
            addr: "procactor/x/a/y".into(),
            capacity: Some(4),
            slot: 1,
            limit: 1 << 20,
        }),
        encoded(&Sys::Stop),
        encoded(&Sys::Sync { id: 12 }),
        encoded(&LastWords {
            reason: ExitReason::Panicked {
                message: "boom".into(),
                location: None,
            },
        }),
    ]
}

/// Every handshake decoder on `bytes` (results dropped: only panics and hangs matter).
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = wire::decode::<Role>(bytes, Vec::new());
    let _ = wire::decode::<Welcome>(bytes, Vec::new());
    let _ = wire::decode::<Sys>(bytes, Vec::new());
    let _ = wire::decode::<LastWords>(bytes, Vec::new());
    let _ = wire::decode::<String>(bytes, Vec::new());
}

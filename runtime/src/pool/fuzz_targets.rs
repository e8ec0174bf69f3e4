//! What the fuzz tests (`crate::fuzz`) feed to the pool's decoders: a worker's reports and its
//! encoded outcomes (which the pool reads from its worker processes), and a batch's header and
//! item layout (which a worker reads from the pool).

use super::items;
use super::job::{Delivery, ItemOutcome, Items, OK_TAG};
use super::worker::{BatchHeader, Report, RunCode, RunHeader, Segment};
use crate::wire;

fn encoded<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut b = Vec::new();
    wire::encode(v, &mut b).expect("encodes");
    b
}

/// Valid reports, each followed by the encoded outcomes of its segments.
pub(crate) fn reports() -> Vec<Vec<u8>> {
    let mut outcomes = vec![OK_TAG];
    wire::append(&(7u64, "seven".to_string()), &mut outcomes).expect("encodes");
    outcomes.extend(encoded(&ItemOutcome::<()>::Panicked {
        message: "boom".into(),
        location: Some("here".into()),
    }));
    let mut done = encoded(&Report::Done {
        batch: 3,
        busy_ns: 1000,
        segments: vec![Segment {
            run: 0,
            count: 2,
            len: outcomes.len() as u32,
        }],
    });
    done.extend(&outcomes);
    vec![
        done,
        encoded(&Report::Ready),
        encoded(&Report::InitFailed {
            message: "no".into(),
            location: None,
        }),
    ]
}

/// The pool's decoding of a report and of the outcomes after it (as `(u64, String)` results).
pub(crate) fn decode_report(bytes: &[u8]) {
    let Ok((report, tail)) = wire::decode_prefix::<Report>(bytes, Vec::new()) else {
        return;
    };
    if let Report::Done { segments, .. } = report {
        let count: usize = segments.iter().map(|s| s.count as usize).sum();
        let d = Delivery::Ran {
            items: Items::Range(0..count.min(1 << 16)),
            bytes: tail.to_vec(),
            pid: 1,
        };
        d.decode::<(u64, String)>(|_, _| {});
    }
}

/// A valid batch: its header, then two items laid out as a run.
pub(crate) fn batches() -> Vec<Vec<u8>> {
    let mut run = Vec::new();
    items::encode_items(&[(1u64, "a".to_string()), (2, "bb".into())], &mut run).expect("encodes");
    let code = procactor_os::code::CodeRef::new(std::convert::identity::<u64> as fn(u64) -> u64)
        .expect("code of this binary")
        .sign();
    let mut b = encoded(&BatchHeader {
        id: 9,
        runs: vec![RunHeader {
            code: RunCode::Keep(code, code),
            count: 2,
            len: run.len() as u32,
            nfds: 0,
            skip: vec![1],
            chunk: true,
        }],
    });
    b.extend(run);
    vec![b]
}

/// A worker's reading of a batch's header and its items' layout (not their functions).
pub(crate) fn decode_batch(bytes: &[u8]) {
    let Ok((header, mut rest)) = wire::decode_prefix::<BatchHeader>(bytes, Vec::new()) else {
        return;
    };
    for run in header.runs {
        let len = (run.len as usize).min(rest.len());
        let (mut run_bytes, tail) = rest.split_at(len);
        rest = tail;
        while let Some((item, after)) = items::next_item(run_bytes) {
            let _ = wire::decode::<(u64, String)>(item, Vec::new());
            run_bytes = after;
        }
    }
}

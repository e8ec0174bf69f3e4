//! What the fuzz tests (`crate::fuzz`) feed to the manager's decoders: a hosted object of each
//! kind, valid requests and operations to mutate, and the decoders themselves.

use super::proto::{eq_ptr, Packed, Request};
use super::server::Hosted;
use super::{dict, list, set, value};

/// A kind of hosted object: its name, one object, and valid encoded operations on it.
pub(crate) type Target = (&'static str, Box<dyn Hosted>, Vec<Vec<u8>>);

/// Each kind of hosted object, with valid encoded operations on it.
pub(crate) fn objects() -> Vec<Target> {
    let (value_ops, ns_ops) = value::fuzz_samples();
    let (value_obj, ns_obj) = value::fuzz_objects();
    vec![
        ("list", list::fuzz_object(), list::fuzz_samples()),
        ("dict", dict::fuzz_object(), dict::fuzz_samples()),
        ("set", set::fuzz_object(), set::fuzz_samples()),
        ("value", value_obj, value_ops),
        ("namespace", ns_obj, ns_ops),
    ]
}

/// Applies one encoded operation, as the manager does (the result is dropped: only panics and
/// hangs matter, and that the object stays usable).
pub(crate) fn call(obj: &mut dyn Hosted, op: &[u8]) -> bool {
    let mut out = Packed {
        bytes: Vec::new(),
        fds: Vec::new(),
    };
    obj.call(op, Vec::new(), &mut out).is_ok()
}

/// Valid requests of every kind, encoded.
pub(crate) fn requests() -> Vec<Vec<u8>> {
    let packed = || Packed::encode(&"op".to_string()).expect("encodes");
    let make = eq_ptr::<u64>().unwrap();
    [
        Request::Create {
            make,
            init: packed(),
        },
        Request::Call {
            obj: 1,
            kind: 2,
            op: packed(),
        },
        Request::Lend {
            obj: 1,
            lend: 77,
            line: 3,
        },
        Request::Release { obj: 1 },
        Request::Count,
    ]
    .iter()
    .map(|r| Packed::encode(r).expect("encodes").bytes)
    .collect()
}

/// The manager's request decoder on `bytes`.
pub(crate) fn decode_request(bytes: &[u8]) {
    let _ = crate::wire::decode::<Request<Packed>>(bytes, Vec::new());
}

//! How a run's items lie in its bytes: each item's length (a varint, as postcard writes them),
//! then its encoding. Any item can be found without decoding the ones before it, so a retried run
//! skips what was done (or blamed) without running anyone's `Deserialize` again, and an item that
//! fails to decode costs only itself, not the rest of its chunk.

use std::cell::RefCell;
use std::os::fd::RawFd;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::wire;

/// Appends `items` to `buf`, each after its length; returns the descriptors of the handles inside
/// them, numbered across the whole run (the worker decodes every item of a run against the
/// run's one list of descriptors).
pub(crate) fn encode_items<T: Serialize>(items: &[T], buf: &mut Vec<u8>) -> Result<Vec<RawFd>> {
    let run = Run {
        items,
        out: RefCell::new(buf),
    };
    // One encoding context for the whole run: `wire::encode` numbers the descriptors of the
    // handles inside the items as `Run::serialize` writes them into `buf`.
    match wire::encode(&run, &mut Vec::new()) {
        Ok(fds) => Ok(fds),
        Err(Error::Encode { reason, .. }) => Err(Error::Encode {
            type_name: std::any::type_name::<T>(),
            reason,
        }),
        Err(e) => Err(e),
    }
}

/// A run's items, written length first into `out` when serialized (the serializer itself gets
/// nothing but a unit): the items then get their descriptors numbered by `wire::encode` without
/// `wire` knowing about the pool's layout.
struct Run<'a, 'b, T> {
    items: &'a [T],
    out: RefCell<&'b mut Vec<u8>>,
}

impl<T: Serialize> Serialize for Run<'_, '_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut out = self.out.borrow_mut();
        let buf: &mut Vec<u8> = &mut out;
        for item in self.items {
            let at = buf.len();
            // Room for a one-byte length, the usual case; a longer one is moved in after.
            buf.push(0);
            wire::append(item, buf).map_err(serde::ser::Error::custom)?;
            let len = buf.len() - at - 1;
            if len < 0x80 {
                buf[at] = len as u8;
            } else {
                let mut prefix = [0u8; 10];
                let n = put_varint(len as u64, &mut prefix);
                buf.splice(at..at + 1, prefix[..n].iter().copied());
            }
        }
        ().serialize(s)
    }
}

/// Splits the next item off `bytes`: its encoding, and the bytes after it. `None` if the length is
/// malformed or runs past the end (never from our own pool).
#[inline]
pub(crate) fn next_item(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_varint(bytes)?;
    let len = usize::try_from(len).ok()?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Writes `v` as a LEB128 varint; returns how many bytes.
fn put_varint(mut v: u64, out: &mut [u8; 10]) -> usize {
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[n] = byte;
            return n + 1;
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

/// Reads a LEB128 varint off the front of `bytes`.
#[inline]
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    if let Some((&b, rest)) = bytes.split_first() {
        if b < 0x80 {
            return Some((b as u64, rest));
        }
    }
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = (b & 0x7f) as u64;
        if i == 9 && bits > 1 {
            return None; // past 64 bits
        }
        v |= bits << (7 * i);
        if b < 0x80 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (item, rest) = next_item(bytes)?;
            out.push(item);
            bytes = rest;
        }
        Some(out)
    }

    #[test]
    fn every_item_can_be_found_without_decoding_the_others() {
        // Short and long items: one-byte and multi-byte lengths.
        let items: Vec<Vec<u8>> = vec![
            vec![],
            vec![1; 3],
            vec![2; 127],
            vec![3; 128],
            vec![4; 70_000],
        ];
        let mut buf = Vec::new();
        assert!(encode_items(&items, &mut buf).unwrap().is_empty());
        let found = split_all(&buf).unwrap();
        assert_eq!(found.len(), items.len());
        for (bytes, item) in found.iter().zip(&items) {
            assert_eq!(&postcard::from_bytes::<Vec<u8>>(bytes).unwrap(), item);
        }
    }

    #[test]
    fn varints_round_trip_and_garbage_is_refused() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = [0u8; 10];
            let n = put_varint(v, &mut out);
            let mut with_tail = out[..n].to_vec();
            with_tail.push(0xAA);
            assert_eq!(take_varint(&with_tail), Some((v, &[0xAA][..])), "{v}");
            // The same bytes postcard writes for a u64.
            assert_eq!(&out[..n], &postcard::to_allocvec(&v).unwrap()[..]);
        }
        assert_eq!(take_varint(&[]), None);
        assert_eq!(take_varint(&[0x80, 0x80]), None, "unterminated");
        assert_eq!(take_varint(&[0xff; 11]), None, "past 64 bits");
        // A length past the end of the bytes.
        assert_eq!(next_item(&[5, 1, 2]), None);
        assert_eq!(next_item(&[2, 1, 2]), Some((&[1u8, 2][..], &[][..])));
    }
}

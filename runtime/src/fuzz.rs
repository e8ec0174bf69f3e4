//! Property-based fuzzing (proptest) of every decoder that reads a peer's bytes, with generated
//! frames and with mutations of valid ones (bits flipped, bytes cut, inserted or overwritten).
//! A decoder may refuse anything; it must never panic, loop, read past its input or leave the
//! channel unusable. `PROCACTOR_FUZZ_CASES` sets the cases per decoder (default 512); each test
//! prints its count (`cargo test -- --nocapture`). The integration test `tests/fuzz.rs` does the
//! same against live processes.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::actor::fuzz_targets as actor;
use crate::bootstrap::{self, Failure, JobHeader, Outcome};
use crate::error::Error;
use crate::manager::fuzz_targets as manager;
use crate::pool::fuzz_targets as pool;
use crate::sys;
use crate::wire::{self, Channel, Wait, KIND_BYTES, KIND_VALUE};

fn cases() -> u32 {
    std::env::var("PROCACTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Runs `test` on `cases()` inputs drawn from `strategy`; panics with the smallest failing one.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let n = cases();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("fuzz {name}: {e}");
    }
    println!("fuzz: {name}: {n} cases");
}

/// One change to a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Cut(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Cut),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                bytes[i] ^= 1 << b;
            }
            Mutation::Set(i, v) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                bytes[i] = *v;
            }
            Mutation::Insert(i, v) => {
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, v.iter().copied());
            }
            Mutation::Cut(i) if !bytes.is_empty() => {
                let i = at(*i, bytes.len());
                bytes.remove(i);
            }
            Mutation::Truncate(i) => {
                let n = at(*i, bytes.len() + 1);
                bytes.truncate(n);
            }
            _ => {}
        }
    }
    bytes
}

/// Arbitrary bytes, or one of `samples` (valid encodings) with a few mutations.
fn bytes_like(samples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = samples.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (0..n, proptest::collection::vec(mutation(), 0..6))
            .prop_map(move |(i, muts)| apply(samples[i].clone(), &muts)),
    ]
}

fn encoded<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut b = Vec::new();
    wire::encode(v, &mut b).expect("encodes");
    b
}

#[test]
fn actor_envelopes() {
    fuzz(
        "actor envelopes",
        bytes_like(actor::sample_batches()),
        |batch| {
            let mut rest = &batch[..];
            let mut seen = 0;
            while let Ok(Some(payload_len)) = actor::next_envelope(&mut rest) {
                prop_assert!(payload_len <= batch.len());
                seen += 1;
                // Every envelope takes bytes: no endless loop on any input.
                prop_assert!(seen <= batch.len());
            }
            Ok(())
        },
    );
}

#[test]
fn actor_hellos_welcomes_and_system_messages() {
    fuzz(
        "actor hellos, welcomes, system messages, last words",
        bytes_like(actor::sample_handshakes()),
        |bytes| {
            actor::decode_all(&bytes);
            Ok(())
        },
    );
}

#[test]
fn job_headers_and_outcomes() {
    let header = JobHeader::sample();
    let samples = vec![
        encoded(&header),
        encoded(&Outcome::<(u64, String)>::Returned((7, "x".into()))),
        encoded(&Outcome::<u8>::Panicked {
            message: "boom".into(),
            location: Some("here".into()),
        }),
        encoded(&Failure::Decode {
            expected: "u8".into(),
            reason: "bad".into(),
        }),
    ];
    fuzz("job headers and outcomes", bytes_like(samples), |bytes| {
        let _ = wire::decode_prefix::<JobHeader>(&bytes, Vec::new());
        let _ = wire::decode::<Outcome<(u64, String)>>(&bytes, Vec::new());
        let _ = wire::decode::<Failure>(&bytes, Vec::new());
        Ok(())
    });
    // A header that decodes is still checked against this binary before anything runs.
    let mut other = header;
    other.exe.1 ^= 1;
    assert!(!bootstrap::header_runs_here(&other));
}

#[test]
fn manager_requests_and_operations() {
    fuzz(
        "manager requests",
        bytes_like(manager::requests()),
        |bytes| {
            manager::decode_request(&bytes);
            Ok(())
        },
    );
    for (kind, mut obj, samples) in manager::objects() {
        let name = format!("manager {kind} operations");
        let obj = std::cell::RefCell::new(&mut obj);
        let first = samples[0].clone();
        fuzz(&name, bytes_like(samples), |op| {
            let mut obj = obj.borrow_mut();
            // Anything may be refused; a refusal must not break the object.
            manager::call(&mut ***obj, &op);
            prop_assert!(
                manager::call(&mut ***obj, &first),
                "a valid operation failed"
            );
            Ok(())
        });
    }
}

#[test]
fn pool_reports_outcomes_and_batches() {
    fuzz(
        "pool reports and outcomes",
        bytes_like(pool::reports()),
        |bytes| {
            pool::decode_report(&bytes);
            Ok(())
        },
    );
    fuzz(
        "pool batch headers and item layouts",
        bytes_like(pool::batches()),
        |bytes| {
            pool::decode_batch(&bytes);
            Ok(())
        },
    );
}

/// A record as a hostile peer may write it: header bytes, payload, and maybe a descriptor.
#[derive(Clone, Debug)]
struct Record {
    bytes: Vec<u8>,
    side: Side,
}

#[derive(Clone, Debug)]
enum Side {
    None,
    /// A memory file of this many bytes.
    File(u32),
    /// A stream that delivers these bytes, then closes (or stalls, if `stall`).
    Stream(Vec<u8>, bool),
    DevNull,
}

fn record() -> impl Strategy<Value = Record> {
    let fingerprint = prop_oneof![Just(wire::fingerprint::<(u64, String)>()), any::<u64>()];
    let side = prop_oneof![
        Just(Side::None),
        (0u32..200_000).prop_map(Side::File),
        (
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<bool>()
        )
            .prop_map(|(b, stall)| Side::Stream(b, stall)),
        Just(Side::DevNull),
    ];
    // Inline frames: any kind byte, a real payload or noise.
    let inline = (
        any::<u8>(),
        fingerprint.clone(),
        prop_oneof![
            Just(encoded(&(5u64, "five".to_string()))),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
        side.clone(),
    )
        .prop_map(|(kind, fp, payload, side)| (kind, fp, payload, side));
    // Large frames: a length that matches what the side carries, exceeds it, or is anything.
    let large = (
        prop_oneof![Just(KIND_VALUE | 0x80), Just(KIND_BYTES | 0x80)],
        fingerprint,
        side,
        prop_oneof![Just(0i64), -3i64..64, any::<u32>().prop_map(i64::from)],
    )
        .prop_map(|(kind, fp, side, delta)| {
            let carried = match &side {
                Side::File(n) => i64::from(*n),
                Side::Stream(b, _) => b.len() as i64,
                _ => 0,
            };
            let len = (carried + delta).max(0) as u64;
            (kind, fp, len.to_le_bytes().to_vec(), side)
        });
    (
        prop_oneof![inline, large],
        proptest::collection::vec(mutation(), 0..3),
        any::<bool>(),
    )
        .prop_map(|((kind, fp, payload, side), muts, mutate)| {
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&fp.to_le_bytes());
            bytes.extend_from_slice(&payload);
            Record {
                bytes: if mutate { apply(bytes, &muts) } else { bytes },
                side,
            }
        })
}

/// Writes `r` to `fd` as one record; returns what must stay open while it is read.
fn send_record(fd: std::os::fd::BorrowedFd, r: &Record) -> Vec<OwnedFd> {
    let mut keep = Vec::new();
    let side: Option<OwnedFd> = match &r.side {
        Side::None => None,
        Side::File(n) => {
            let f = rustix::fs::memfd_create("fuzz", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
            rustix::fs::ftruncate(&f, u64::from(*n)).unwrap();
            Some(f)
        }
        Side::Stream(bytes, stall) => {
            let (mine, theirs) = sys::stream_pair().unwrap();
            let _ = sys::write_all(mine.as_fd(), bytes);
            if *stall {
                keep.push(mine);
            }
            Some(theirs)
        }
        Side::DevNull => Some(sys::dev_null().unwrap()),
    };
    let fds: Vec<_> = side.iter().map(|f| f.as_fd()).collect();
    let _ = sys::send_record_with(fd, &[std::io::IoSlice::new(&r.bytes)], &fds, false);
    keep
}

#[test]
fn pipe_frames() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    // How the receives ended: a fuzz run that never reached a path proves nothing about it.
    static OUTCOMES: [AtomicUsize; 6] = [const { AtomicUsize::new(0) }; 6];
    const NAMES: [&str; 6] = [
        "ok",
        "decode",
        "too large",
        "timed out",
        "disconnected",
        "other",
    ];
    fuzz(
        "pipe frames (typed, bytes, large with memory files, streams, stalls)",
        proptest::collection::vec(record(), 1..6),
        |records| {
            let (a, mut b) = Channel::pair().unwrap();
            b.set_limit(1 << 20);
            let mut keep = Vec::new();
            for r in &records {
                keep.extend(send_record(a.as_fd(), r));
            }
            for _ in &records {
                let typed = b.recv_checked(
                    Wait::timeout(Duration::from_millis(20)),
                    &mut Vec::new(),
                    |_| Ok(()),
                    |f| wire::decode::<(u64, String)>(f.payload, f.fds),
                );
                let i = match &typed {
                    Ok(_) => 0,
                    Err(Error::Decode { .. }) => 1,
                    Err(Error::TooLarge { .. }) => 2,
                    Err(Error::Timeout(_)) => 3,
                    Err(Error::Disconnected) => 4,
                    Err(_) => 5,
                };
                OUTCOMES[i].fetch_add(1, Relaxed);
                if i == 3 {
                    break; // a stalled stream: kept for the next receive, which we skip
                }
            }
            drop(keep);
            // Whatever came before, the channel still carries a good frame, whole.
            let mut good = Vec::new();
            wire::encode(&(9u64, "nine".to_string()), &mut good).unwrap();
            a.send(KIND_VALUE, wire::fingerprint::<(u64, String)>(), &good, &[])
                .unwrap();
            let good = (9u64, "nine".to_string());
            let mut got = None;
            for _ in 0..records.len() + 1 {
                match b.recv(Wait::timeout(Duration::from_secs(5)), |f| {
                    wire::decode::<(u64, String)>(f.payload, f.fds)
                }) {
                    Ok(v) if v == good => {
                        got = Some(v);
                        break;
                    }
                    Err(Error::Timeout(_)) => break,
                    // A fuzzed record that is still a valid frame, or one refused.
                    Ok(_) | Err(_) => {}
                }
            }
            prop_assert_eq!(got, Some(good));
            Ok(())
        },
    );
    let seen: Vec<String> = NAMES
        .iter()
        .zip(&OUTCOMES)
        .map(|(n, c)| format!("{n} {}", c.load(Relaxed)))
        .collect();
    println!("fuzz: pipe frame receives: {}", seen.join(", "));
}
